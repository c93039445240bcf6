"""The ledger matches claims by method, backbone and settings (issue 25.13a)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.report.ledger import load_ledger
from eval.report.tables import collect_runs, main_table


def _diffcut_run(folder: Path, model: str, tau: float, refine: bool, non_default: dict, method: str = "DiffCut",
                 protocol: str = "diffcut") -> None:
    node = {"name": method, "features": {"timestep": 50, "noise_seed": 42},
            "segmenter": {"tau": tau, "alpha": 10, "mask_size": 128, "refine": refine}}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "methods": {method: {"acc": 60.0, "miou": 40.0, "images": 2175, "mean_segments": 5.0}},
        "config": {"model": {"name": model, "size": 1024 if "SSD" in model else 512, "timestep": 300},
                   "dataset": {"name": "coco_stuff27", "size": 128}, "methods": {"diffcut": node}},
        "run": {"name": "x", "dataset": "coco_stuff27", "model": model, "ablation": None, "protocol": protocol,
                "subset": "curated"},
        "provenance": {"random_weights": False, "synthetic_data": False, "partial": False,
                       "non_default": {method: non_default}, "notes": []}}))


def _claimed_miou(folder: Path) -> list[float]:
    df = main_table(collect_runs([folder]), "coco_stuff27", load_ledger(), protocol="diffcut")
    [row] = df.attrs["claims"]
    return sorted(c["miou"] for c in row)


def test_ssd1b_row_gets_only_the_ssd1b_claims(tmp_path):
    _diffcut_run(tmp_path / "r", "segmind/SSD-1B", 0.5, False, {})
    assert _claimed_miou(tmp_path / "r") == [46.1, 49.1]  # not the SD 1.4 ablation's 45.2


def test_sd14_row_at_the_claims_settings_gets_the_sd14_claim(tmp_path):
    changed = {"model.name": ["CompVis/stable-diffusion-v1-4", "segmind/SSD-1B"], "model.size": [512, 1024],
               "segmenter.tau": [0.2, 0.5]}
    _diffcut_run(tmp_path / "r", "CompVis/stable-diffusion-v1-4", 0.2, True, changed)
    assert _claimed_miou(tmp_path / "r") == [45.2]
    df = main_table(collect_runs([tmp_path / "r"]), "coco_stuff27", load_ledger(), protocol="diffcut")
    assert df.attrs["claims"][0][0]["d_miou"] == pytest.approx(40.0 - 45.2)


@pytest.mark.parametrize("tau, refine", [(0.5, True), (0.2, False)])
def test_sd14_row_at_other_settings_gets_no_claim(tmp_path, tau, refine):
    changed = {"model.name": ["CompVis/stable-diffusion-v1-4", "segmind/SSD-1B"], "model.size": [512, 1024]}
    if tau != 0.5:
        changed["segmenter.tau"] = [tau, 0.5]
    _diffcut_run(tmp_path / "r", "CompVis/stable-diffusion-v1-4", tau, refine, changed)
    assert _claimed_miou(tmp_path / "r") == []


def test_ledger_backbone_without_model_ids_is_refused(tmp_path):
    path = tmp_path / "numbers.yaml"
    path.write_text("backbones: {SD 1.4: [sd14]}\nclaims:\n  - {method: DiffSeg, dataset: voc21, protocol: diffseg, "
                    "backbone: SD 2.1, miou: 1.0, status: secondary, source: x}\n")
    with pytest.raises(ValueError, match="names backbone 'SD 2.1', which the `backbones:` map lacks"):
        load_ledger(path)
