"""Shared by the explorer tests: a finished synthetic run folder with saved masks (made once per session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra_compose import compose_eval

from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate
from eval.run.mask_files import method_stem
from eval.run.records import read_records

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


SCREENSHOT_RUN = Path("outputs") / "synthetic_run"


def relative_run_copy(source: Path, workdir: Path) -> Path:
    """``source`` copied to ``workdir/outputs/synthetic_run``; returns the relative ``outputs/synthetic_run``.

    The caller makes ``workdir`` the working directory (``monkeypatch.chdir``) and gives the explorer the
    relative path, so the page (and the README's screenshot) names the run as a user's command would, not by
    a temporary absolute path.
    """
    shutil.copytree(source, workdir / SCREENSHOT_RUN)
    return SCREENSHOT_RUN


def disjoint_copy(source: Path, target: Path) -> dict[str, str]:
    """``source`` copied to ``target`` with every method renamed "<name> [kl_threshold=0.5]",
    as an ablation names them: two runs with no method in common. Returns the renaming."""
    shutil.copytree(source, target)
    metrics = json.loads((source / "metrics.json").read_text())
    rename = {m: f"{m} [kl_threshold=0.5]" for m in metrics["methods"]}
    metrics["methods"] = {rename[m]: v for m, v in metrics["methods"].items()}
    (target / "metrics.json").write_text(json.dumps(metrics))
    records = read_records(target / "per_image.jsonl")
    for record in records.values():
        record["methods"] = {rename[m]: v for m, v in record["methods"].items()}
    (target / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    for old, new in rename.items():
        (target / "masks" / method_stem(old)).rename(target / "masks" / method_stem(new))
    return rename
