"""Calibration of the intervals and tests by simulation: ``python -m eval.stats.calibration``.

Populations of per-image matching stats with known dataset-level scores. An image i holds
class c with probability ``freq[c]``; its pixel count is Poisson with mean ``size[c] * g_i``
(``g_i`` ~ Gamma(2, 1/2): image scale). A method recovers each pixel with probability
``recall[c] * q_i`` (``q_i`` ~ Beta(4, 2): image quality, shared by the methods, so their
errors are correlated as on real data) and adds Poisson false positives with mean
``fp_mean[c] * h_i`` where ``h_i`` is 1 (errors spread evenly) or ``(1 - q_i) / E[1 - q]``
(errors where images are hard). All expectations are closed-form, so the population ACC,
IoU and mIoU (ratios of expected sums) are exact.

* :func:`coverage`: the share of samples whose interval covers the population ACC / mIoU, and
  the share refused;
* :func:`rejections`: the share of samples in which the paired tests reject at 0.05, for two
  methods with equal per-class population IoU but different error profiles (the studentised
  test's null holds) or for exchangeable methods (both tests' nulls hold);
* ``python -m eval.stats.calibration`` prints the figures of the acceptance criteria (300
  samples, 27 classes; ``--samples`` / ``--resamples`` for quicker runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eval.stats.analysis import ImageStats, analyse

C = 27
Q_MEAN = 4 / 6  # E[q], q ~ Beta(4, 2)


@dataclass(frozen=True)
class Method:
    recall: np.ndarray  # (C,) per-pixel recall at image quality 1
    fp_mean: np.ndarray  # (C,) expected false positives per image
    hard_images: bool = False  # false positives concentrated on low-quality images

    def population(self, freq: np.ndarray, size: np.ndarray) -> dict[str, float | np.ndarray]:
        """Exact population ACC, per-class IoU (C,) and mIoU, x100."""
        count = freq * size
        tp = count * self.recall * Q_MEAN
        iou = 100.0 * tp / (count + self.fp_mean)
        return {"acc": 100.0 * tp.sum() / count.sum(), "iou": iou, "miou": float(iou.mean())}


def classes(long_tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(freq, size) of the 27 classes: moderate frequencies, or a long tail down to 2 %."""
    rng = np.random.default_rng(27)
    if long_tail:
        freq = np.clip(0.7 * (np.arange(1, C + 1) ** -0.9), 0.02, None)
    else:
        freq = rng.uniform(0.15, 0.6, C)
    size = rng.uniform(500, 4000, C)
    return freq, size


def method(seed: int = 0, quality: float = 0.75) -> Method:
    """A method with class effects: recall around ``quality``, false positives around 30 % of the class's pixels."""
    rng = np.random.default_rng(1000 + seed)
    freq, size = classes()
    recall = np.clip(rng.normal(quality, 0.15, C), 0.1, 1.0)
    fp_mean = rng.uniform(0.1, 0.5, C) * freq * size
    return Method(recall, fp_mean)


def equal_iou_pair(long_tail: bool = False) -> tuple[Method, Method]:
    """A conservative and an aggressive method with the same population IoU per class.

    B recovers more pixels (recall x 1.25) and pays with more false positives, concentrated
    on hard images; its false-positive means are solved so that every class's IoU equals A's.
    """
    freq, size = classes(long_tail)
    a = method(1, quality=0.6)
    a = Method(a.recall, a.fp_mean * 0.5)
    recall_b = np.minimum(a.recall * 1.25, 1.0)
    count = freq * size
    iou_a = a.population(freq, size)["iou"] / 100.0
    fp_b = count * recall_b * Q_MEAN / iou_a - count
    assert (fp_b > 0).all()
    return a, Method(recall_b, fp_b, hard_images=True)


def draw(rng: np.random.Generator, samples: int, images: int, methods: list[Method],
         long_tail: bool = False) -> list[list[ImageStats]]:
    """``samples`` independent samples of ``images`` images, each method's stats on the same images.

    Returns ``out[s][m]``: the stats of method ``m`` in sample ``s``.
    """
    freq, size = classes(long_tail)
    shape = (samples, images, C)
    q = rng.beta(4.0, 2.0, (samples, images, 1))
    g = rng.gamma(2.0, 0.5, (samples, images, 1))
    count = rng.poisson(size * g * (rng.random(shape) < freq))
    hard = (1.0 - q) / (1.0 - Q_MEAN)
    out: list[list[ImageStats]] = [[] for _ in range(samples)]
    for m in methods:
        tp = rng.binomial(count, np.clip(m.recall * q, 0.0, 1.0))
        fp = rng.poisson(m.fp_mean * (hard if m.hard_images else np.ones_like(q)))
        for s in range(samples):
            out[s].append(ImageStats(tp[s], fp[s], count[s] - tp[s], count[s].sum(1)))
    return out


def coverage(images: int, samples: int, long_tail: bool = False, resamples: int = 1000,
             seed: int = 0, **options) -> dict[str, float]:
    """Share of samples whose mIoU / ACC interval covers the population value, and the share refused.

    Coverage is over the samples that got an interval (ACC: all of them; mIoU: those not refused).
    ``options`` go to :func:`eval.stats.analysis.analyse` (e.g. ``interval="bca"``).
    """
    freq, size = classes(long_tail)
    m = method(0)
    truth = m.population(freq, size)
    data = draw(np.random.default_rng([seed, images, int(long_tail)]), samples, images, [m], long_tail)
    hits = {"acc": 0, "miou": 0, "refused": 0}
    for s in range(samples):
        out = analyse({"m": data[s][0]}, resamples=resamples, seed=s, **options)["methods"]["m"]
        hits["acc"] += out["acc"][1] <= truth["acc"] <= out["acc"][2]
        if out["miou"][1] is None:
            hits["refused"] += 1
            continue
        hits["miou"] += out["miou"][1] <= truth["miou"] <= out["miou"][2]
    reported = samples - hits["refused"]
    return {"acc": hits["acc"] / samples, "miou": hits["miou"] / reported if reported else float("nan"),
            "refused": hits["refused"] / samples}


def rejections(images: int, samples: int, pair: str, draws: int = 1000, seed: int = 0) -> dict[str, float]:
    """Share of samples in which the paired tests reject (p <= 0.05) for a pair of methods.

    Args:
        pair: ``"equal-iou"`` (:func:`equal_iou_pair`: the studentised test's null holds for the mIoU,
            not the sign-flip test's; their ACCs differ) or ``"exchangeable"`` (one method twice: both nulls).
        draws: bootstrap resamples of the studentised test and sign flips.
    """
    methods = list(equal_iou_pair()) if pair == "equal-iou" else [method(0)] * 2
    data = draw(np.random.default_rng([seed, images, 7]), samples, images, methods)
    counts = {"acc": 0, "miou": 0, "signflip_miou": 0, "refused": 0}
    for s in range(samples):
        out = analyse({"a": data[s][0], "b": data[s][1]}, resamples=draws, seed=s)["pairs"]["a vs b"]
        counts["refused"] += out["miou"][3] is None  # a refused test rejects nothing
        counts["acc"] += (out["acc"][3] or 1.0) <= 0.05
        counts["miou"] += (out["miou"][3] or 1.0) <= 0.05
        counts["signflip_miou"] += out["signflip"]["miou"]["p"] <= 0.05
    return {k: v / samples for k, v in counts.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the calibration figures (coverage of the 95% intervals, level of the paired tests)."""
    parser = argparse.ArgumentParser(prog="python -m eval.stats.calibration", description=main.__doc__)
    parser.add_argument("--samples", type=int, default=300, help="simulated samples per figure (300)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per sample (1000)")
    parser.add_argument("--interval", default="bootstrap-t", help="interval kind (bootstrap-t)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the simulated samples (0)")
    parser.add_argument("--only", choices=("coverage", "level"), help="print only these figures")
    parser.add_argument("--images", type=int, nargs="+", help="only these sample sizes (default 50 200; 50 1000)")
    args = parser.parse_args(argv)
    print(f"27 classes, {args.samples} samples (seed {args.seed}), {args.resamples} resamples, 95% {args.interval} "
          "intervals, tests at 0.05")
    if args.only != "level":
        for long_tail, images in ((False, 50), (False, 200), (True, 50), (True, 200)):
            if args.images and images not in args.images:
                continue
            start = time.perf_counter()
            got = coverage(images, args.samples, long_tail, args.resamples, args.seed, interval=args.interval)
            print(f"coverage {'long-tailed' if long_tail else 'moderate'} n={images}: mIoU {got['miou']:.3f} "
                  f"(refused {got['refused']:.3f}), ACC {got['acc']:.3f}  [{time.perf_counter() - start:.0f} s]",
                  flush=True)
    if args.only != "coverage":
        for pair in ("equal-iou", "exchangeable"):
            for images in args.images or (50, 1000):
                start = time.perf_counter()
                got = rejections(images, args.samples, pair, args.resamples, args.seed)
                print(f"rejections {pair} n={images}: studentised mIoU {got['miou']:.3f} "
                      f"(refused {got['refused']:.3f}), ACC {got['acc']:.3f}, "
                      f"sign-flip mIoU {got['signflip_miou']:.3f}  [{time.perf_counter() - start:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
