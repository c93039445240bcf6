"""Speed of the explorer's re-segmentation from kept attention: ``python -m eval.bench.explore``.

At SD 1.x sizes: the tiny random backbone at 512 px gives the 64, 32, 16 and 8 self-attention maps
of SD 1.x (one backbone pass, kept), the anchor grid is 16 x 16. Timed per re-segmentation (median
of ``--repeats``, wall clock, each path warmed up once), each against the plain path from the same
kept per-resolution attention:

* ``kl threshold``: the threshold slider moves (``eval.explore.session.ImageSession.segment`` with
  the aggregated attention and the first merge's anchor distances kept): the explorer's target is
  < 0.3 s on the 2-core development CPU;
* ``anchor grid / precision``: the anchor distances are recomputed;
* ``aggregation weights``: the aggregation is recomputed too.

The plain path is ``DiffSeg(...)(aggregate_attention(maps))`` (what a re-segmentation costs without
the kept tensors). The masks of both paths must be identical (checked). Prints one line per case
with both times and their ratio; ``--out FILE`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffseg import DiffSeg, aggregate_attention
from eval.atomic import write_json_atomic
from eval.bench.provenance import run_provenance
from eval.bench.report import header_lines
from eval.explore.session import ImageSession, SegmentParams, weights_from
from eval.run.cache import AttentionCache

__all__ = ["TARGET_SECONDS", "main", "render", "run_bench"]

TARGET_SECONDS = 0.3
TINY_ATTENTION_SCALE = 5.0  # as make demo and the explorer's --model tiny


def _median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _image(size: int, seed: int) -> np.ndarray:
    """A synthetic picture with a few flat regions (so DiffSeg finds several segments)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 8, size / 3)]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return (image + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)


def run_bench(repeats: int = 5, size: int = 512, seed: int = 0) -> dict[str, Any]:
    """Time the cases of the module docstring; returns ``{"cases": [...], ...}`` with what produced them
    (:func:`eval.bench.provenance.run_provenance`, taken before the first timing)."""
    from diffseg.testing.tiny import tiny_backbone

    provenance = run_provenance(torch.device("cpu"))
    AttentionCache.clear_memory()
    backbone = tiny_backbone(attention_scale=TINY_ATTENTION_SCALE, device="cpu", input_size=size)
    session = ImageSession(backbone, output_size=512)
    name = session.add_array(_image(size, seed), "bench").name
    start = time.perf_counter()
    maps, _ = session.attention(name, 300)
    backbone_seconds = time.perf_counter() - start
    batched = {s: m[None] for s, m in maps.items()}

    cases = []
    state = {"i": 0}
    thresholds = (1.1, 1.0, 1.2)

    def threshold_step() -> Any:  # the slider moves: a new threshold each call, everything else kept
        state["i"] += 1
        return session.segment(name, SegmentParams(kl_threshold=thresholds[state["i"] % 3]))

    def anchors_step() -> Any:  # M or the precision changes: the anchor distances are recomputed
        state["i"] += 1
        session._distances.clear()
        return session.segment(name, SegmentParams(kl_threshold=1.1, num_points=16))

    def weights_step() -> Any:  # the weights change: aggregation and distances recomputed
        state["i"] += 1
        session._distances.clear()
        session._aggregated.clear()
        return session.segment(name, SegmentParams(kl_threshold=1.1, weights=weights_from({64: 0.6, 32: 0.2,
                                                                                          16: 0.1, 8: 0.1})))

    def plain(threshold: float, weights: dict[int, float] | None = None) -> Callable[[], np.ndarray]:
        return lambda: DiffSeg(kl_threshold=threshold)(aggregate_attention(batched, weights))[0].numpy()

    for label, fast, base in (
        ("kl threshold", threshold_step, plain(thresholds[(repeats + 1) % 3])),
        ("anchor grid / precision", anchors_step, plain(1.1)),
        ("aggregation weights", weights_step, plain(1.1, {64: 0.6, 32: 0.2, 16: 0.1, 8: 0.1})),
    ):
        state["i"] = 0
        fast_s, seg = _median_seconds(fast, repeats)
        base_s, mask = _median_seconds(base, repeats)
        same = bool(np.array_equal(seg.mask, mask))
        cases.append({"case": label, "explorer_s": round(fast_s, 4), "plain_s": round(base_s, 4),
                      "ratio": round(base_s / fast_s, 2), "segments": seg.segments, "identical_masks": same,
                      "target_s": TARGET_SECONDS if label == "kl threshold" else None})
    AttentionCache.clear_memory()
    return {
        **provenance,
        "what": "re-segmentation from kept attention at SD 1.x sizes (64 x 64 maps, 16 x 16 anchors, 512 px masks)",
        "backbone": f"{backbone.name} (random weights; speed does not depend on the weight values)",
        "maps": {str(s): list(m.shape) for s, m in maps.items()},
        "backbone_pass_s": round(backbone_seconds, 3),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cases": cases,
    }


def render(report: dict[str, Any]) -> str:
    """The report as text: what produced it (:func:`eval.bench.report.header_lines`), the setup, one line per case."""
    lines = [*header_lines(report),
             f"explorer re-segmentation, {report['what']}; backbone pass {report['backbone_pass_s']:.1f} s (once), "
             f"{report['threads']} threads, load average {report['load_average']}",
             f"{'case':<26}{'explorer s':>12}{'plain s':>10}{'ratio':>8}{'segments':>10}  identical  target"]
    for c in report["cases"]:
        target = ""
        if c["target_s"] is not None:
            target = f"< {c['target_s']} s: {'met' if c['explorer_s'] < c['target_s'] else 'MISSED'}"
        lines.append(f"{c['case']:<26}{c['explorer_s']:>12.3f}{c['plain_s']:>10.3f}{c['ratio']:>7.2f}x"
                     f"{c['segments']:>10}  {str(c['identical_masks']):<9}  {target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.explore", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON (not replaced)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        print(f"error: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    report = run_bench(repeats=max(1, args.repeats))
    print(render(report))
    if args.out is not None:
        write_json_atomic(args.out, report)
        print(f"wrote {args.out}")
    if not all(c["identical_masks"] for c in report["cases"]):
        print("error: the explorer's masks differ from DiffSeg's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
