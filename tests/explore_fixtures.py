"""Shared by the explorer tests: a finished synthetic run folder with saved masks (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra_compose import compose_eval

from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate

RUN_OVERRIDES = [
    "experiment=demo",           # tiny random backbone, synthetic COCO-Stuff layout, save_masks=true
    "dataset.size=128",          # 16 x 16 attention: fast
    "batch_size=3",
    "num_workers=0",
    "progress=false",
    "methods.diffseg_fp32=null",
    "methods.kmeans_s=null",
    "methods.kmeans_c.segmenter.n_init=1",
]


_RUNS: dict[int, Path] = {}


def synthetic_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (DiffSeg, K-Means-C) on 3 synthetic images with PNG masks, made once per test session."""
    key = id(tmp_path_factory)
    if key not in _RUNS:
        root = tmp_path_factory.mktemp("explore_data")
        write_synthetic_coco_stuff(root, num_images=3, seed=5)
        out = tmp_path_factory.mktemp("explore_run")
        evaluate(compose_eval([*RUN_OVERRIDES, f"dataset.root={root}", f"paths.output_dir={out}"]))
        _RUNS[key] = out
    return _RUNS[key]
