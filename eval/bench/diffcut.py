"""Speed of DiffCut's clustering against the release-style port: ``python -m eval.bench.diffcut``.

Both sides get the same features: synthetic, well-separated clustered maps shaped like SSD-1B's
DiffCut features (32 x 32 locations, 1280 channels;
:func:`diffseg.testing.features.clustered_features`). Timed per image:

* fast: :class:`diffseg.DiffCut` (tau 0.5, alpha 10, mask 128; Lanczos Fiedler vectors, one matrix
  product for all thresholds, per-node submatrices), one image per call;
* baseline: :func:`eval.bench.baselines.naive_diffcut.naive_diffcut`, the release's procedure as it runs (float32
  dense ``eigh`` per node, a Python loop over the 100 thresholds, full-size affinity copies).

Both produce the (128, 128) cluster map of every image; the masks must be identical (checked,
reported). Times are seconds measured by :class:`torch.utils.benchmark.Timer` (accelerator
synchronised; :func:`eval.bench.timing.timed`), each after one untimed warm-up run. Output: a table on
stdout; ``--out FILE`` also writes the numbers as JSON (refuses to overwrite an existing file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch

from diffseg import DiffCut
from diffseg.devices import resolve_device
from diffseg.testing.features import clustered_features
from eval.bench.baselines.naive_diffcut import naive_diffcut
from eval.bench.cli import add_common_options, run_and_report
from eval.bench.provenance import run_provenance
from eval.bench.report import header_lines
from eval.bench.timing import timed
from eval.markdown import markdown_rows

__all__ = ["main", "run_bench"]


def run_bench(
    images: int = 3,
    side: int = 32,
    clusters: int = 8,
    channels: int = 1280,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Time both implementations on ``images`` feature maps; returns per-image seconds, medians, ratio, equality."""
    dev = resolve_device(device)
    provenance = run_provenance(dev)
    fast = DiffCut(tau=0.5, alpha=10, mask_size=128)
    rows = []
    for seed in range(images):
        features, _ = clustered_features(side, clusters, channels, seed=seed)
        features = features.to(dev)
        fast_masks, fast_s = timed(lambda f=features: fast(f)[0])
        naive_masks, naive_s = timed(lambda f=features: naive_diffcut(f[0]))
        rows.append(
            {
                "seed": seed,
                "fast_s": fast_s,
                "naive_s": naive_s,
                "identical": bool(torch.equal(fast_masks.cpu(), naive_masks.cpu())),
                "clusters_fast": int(fast_masks.unique().numel()),
                "clusters_naive": int(naive_masks.unique().numel()),
            }
        )
    fast_total = sum(r["fast_s"] for r in rows)
    naive_total = sum(r["naive_s"] for r in rows)
    return {
        "features": {"images": images, "side": side, "clusters": clusters, "channels": channels},
        "settings": {"tau": 0.5, "alpha": 10, "mask_size": 128},
        **provenance,
        "rows": rows,
        "fast_median_s": statistics.median(r["fast_s"] for r in rows),
        "naive_median_s": statistics.median(r["naive_s"] for r in rows),
        "speedup": naive_total / fast_total,
        "all_identical": all(r["identical"] for r in rows),
        "guard_hits": fast.guard_hits,
    }


def _table(result: dict[str, Any]) -> str:
    f = result["features"]
    lines = [
        *header_lines(result),
        f"DiffCut clustering, {f['images']} synthetic images of {f['side']}x{f['side']} locations x {f['channels']} "
        f"channels ({f['clusters']} well-separated clusters), tau 0.5, alpha 10, 128x128 masks",
        "",
    ]
    header = ["seed", "release-style (s)", "diffseg.DiffCut (s)", "ratio", "masks identical", "clusters"]
    rows = [[r["seed"], f"{r['naive_s']:.3f}", f"{r['fast_s']:.3f}", f"{r['naive_s'] / r['fast_s']:.1f}x",
             "yes" if r["identical"] else "NO", f"{r['clusters_fast']} / {r['clusters_naive']}"]
            for r in result["rows"]]
    lines += markdown_rows(header, rows, ["---:"] * 4 + [":---:", "---:"]).splitlines()
    lines += [
        "",
        f"median per image: release-style {result['naive_median_s']:.3f} s, DiffCut {result['fast_median_s']:.3f} s",
        f"speed-up (total time ratio): {result['speedup']:.1f}x; masks identical on all images: "
        f"{'yes' if result['all_identical'] else 'NO'}; recursion guard hits: {result['guard_hits']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.diffcut", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="number of synthetic feature maps (default 3)")
    parser.add_argument("--side", type=int, default=32, help="feature map side (32 = SSD-1B at 1024 px)")
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1280, help="1280 = SDXL/SSD-1B down_blocks[-1]")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    add_common_options(parser, "torch CPU threads for both sides (default: torch's default)")
    args = parser.parse_args(argv)
    result = run_and_report(parser, args, lambda: run_bench(args.images, args.side, args.clusters, args.channels,
                                                            args.device), _table)
    return 0 if result["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
