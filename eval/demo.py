"""``make demo``: the whole pipeline offline, from nothing, in a few minutes on a CPU.

1. writes a small synthetic dataset in the real COCO-Stuff-27 on-disk layout
   (JPEG images, fine PNG labels with 255 = unlabelled, ids from the curated
   list's format) under ``datasets/demo_coco_stuff27``;
2. runs the main experiment (DiffSeg, DiffSeg-fp32, K-Means-C, K-Means-S) and
   the KL-threshold ablation with the tiny random-weight backbone;
3. writes the tables, the sweep figure and the qualitative grid to
   ``results/demo/``, every file marked (from the runs' provenance) as random weights on synthetic data.

The numbers say nothing about DiffSeg: the backbone has random weights.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from eval.config_path import config_dir
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.report.tables import collect_runs, write_tables
from eval.run import evaluate

DEMO_IDS = ["000000000139", "000000000285", "000000000632", "000000000724", "000000000776",
            "000000000785", "000000000802", "000000000872", "000000000885", "000000001000",
            "000000001268", "000000001296"]


# Demo runs: (folder name, experiment overrides). All use the tiny random backbone on the CPU.
DEMO_RUNS = [
    ("coco_stuff27", ["experiment=demo"]),
    ("ablation_kl_threshold", ["experiment=ablation_kl_threshold", "model=tiny", "device=cpu",
                               "model.backbone.attention_scale=5.0"]),
]


def run_demo(data_root: Path, outputs: Path, results: Path, num_images: int, fresh: bool) -> list[Path]:
    """Generate data if missing, run the demo experiments, write tables; returns written paths."""
    if fresh:
        shutil.rmtree(outputs, ignore_errors=True)
    if not (data_root / "Coco164kFull_Stuff_Coarse_7.txt").exists():
        write_synthetic_coco_stuff(data_root, num_images=num_images, seed=0, ids=DEMO_IDS[:num_images])
    for name, overrides in DEMO_RUNS:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("eval", overrides=[
                *overrides, f"dataset.root={data_root}", f"dataset.limit={num_images}",
                f"paths.output_dir={outputs / name}", "batch_size=4", "num_workers=2",
            ])
        print(f"[demo] {name}: {num_images} synthetic images, tiny random backbone -> {outputs / name}")
        evaluate(cfg)
    results.mkdir(parents=True, exist_ok=True)
    grid = outputs / "coco_stuff27" / "qualitative.png"
    if grid.exists():
        shutil.copyfile(grid, results / "qualitative_demo.png")
    return write_tables(collect_runs([outputs]), results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/demo_coco_stuff27", help="synthetic dataset root")
    parser.add_argument("--outputs", default="outputs/demo", help="run folders")
    parser.add_argument("--results", default="results/demo", help="tables and figures")
    parser.add_argument("--images", type=int, default=8, help="number of synthetic images (at most 12)")
    parser.add_argument("--resume", action="store_true", help="keep earlier demo run folders (resume them)")
    args = parser.parse_args(argv)
    written = run_demo(Path(args.data), Path(args.outputs), Path(args.results), min(args.images, 12),
                       fresh=not args.resume)
    print("[demo] wrote:")
    for p in written:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
