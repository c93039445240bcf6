"""Compare methods with confidence intervals and tests: ``python -m eval.compare RUN_DIR... --out DIR``.

Every run folder keeps the matching stats (tp, fp, fn per class, valid pixels) of every
method on every image (``per_image.jsonl``). From them, for every method of the given runs
(:func:`eval.stats.comparison.compare_runs` reads the runs, does the statistics and writes the
files; this module is its command line):

* the dataset-level ACC and mIoU (exactly the numbers of ``metrics.json``) with a bootstrap-t
  interval over images (``--interval bca`` / ``percentile`` for the others);
* for every pair of methods, the paired interval of the difference, the studentised paired
  bootstrap p-value of "equal dataset-level metric" and the sign-flip p-value
  (exchangeability), each with its Monte Carlo standard error (``--permutations`` draws),
  Holm-adjusted over all pairs and both metrics, and the smallest difference the data
  detect with 80% power;
* per-class IoU intervals and per-class differences (Holm over pairs x classes).

Fewer than ``--min-images`` images (30) give no interval and no test, a class in fewer
than ``--min-class-images`` images (5) no per-class interval: bounds are ``null`` in
``compare.json`` with the reason, ``n/a (3 images)`` in the tables. Runs that differ only
in seeds (``-m seed=0,1,2``) become one method with its seed spread and an interval over
images and seeds.

Runs are combined only when they share the dataset and the evaluated image set; with
``intersect=True`` they are compared on their common images, and the output says so.
Each run's provenance (random weights, synthetic data, partial data) is copied into the
output and marks the method labels.

Output folder: ``compare.json``, ``compare.md`` (all tables, worst / best image ids,
figures), ``methods.csv``, ``pairs.csv``, ``per_class_iou.csv``, ``per_class_iou.png``,
``per_image_miou.png`` and ``extremes_<method>.png`` (plus ``masks_<method>.png`` when the
run saved masks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from eval.folder.layout import COMPARE_MD
from eval.stats.analysis import INTERVALS
from eval.stats.comparison import compare_runs
from eval.stats.report import fmt_interval, fmt_p
from eval.stats.runs import CompareError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 2 when the runs cannot be compared."""
    parser = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with metrics.json and per_image.jsonl)")
    parser.add_argument("--out", required=True, help="output folder for compare.json, tables and figures")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the intervals (2000)")
    parser.add_argument("--permutations", type=int, default=10000,
                        help="draws of each p-value: bootstrap resamples of the studentised test and sign flips "
                             "(10000; the Monte Carlo SE of p = 0.01 is then 0.001)")
    parser.add_argument("--interval", choices=INTERVALS, default="bootstrap-t", help="interval kind (bootstrap-t)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage (0.95)")
    parser.add_argument("--min-images", type=int, default=30, help="fewer images: no interval, no test (30)")
    parser.add_argument("--min-class-images", type=int, default=5,
                        help="a class in fewer images gets no per-class interval (5)")
    parser.add_argument("--intersect", action="store_true",
                        help="compare on the images common to all runs instead of refusing different image sets")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.runs, args.out, resamples=args.resamples, seed=args.seed, intersect=args.intersect,
                              confidence=args.confidence, interval=args.interval, permutations=args.permutations,
                              min_images=args.min_images, min_class_images=args.min_class_images)
    except (CompareError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result['methods'])} method(s), {result['images']} images, {args.resamples} resamples, "
          f"{result['permutations']} permutations: statistics in {result['_seconds']:.2f} s")
    for entry in result["methods"].values():
        refused = entry.get("refused") or {}
        print(f"{entry['label']:40s} ACC {fmt_interval(entry['acc'], refused=refused.get('acc')):>20s}  "
              f"mIoU {fmt_interval(entry['miou'], refused=refused.get('miou')):>20s}")
    for name, entry in result["pairs"].items():
        print(f"{name:40s} ΔmIoU {fmt_interval(entry['miou'], True, entry.get('refused')):>20s}  "
              f"p {fmt_p(entry['test']['miou'])}")
    print(Path(args.out) / COMPARE_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
