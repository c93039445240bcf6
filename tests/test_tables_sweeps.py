"""Sweep tables: rows from recorded settings, labelled by model id, collisions refused (issue 25.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.report.tables import ablation_tables, collect_runs, expand_method_ablations, write_tables


def _scores(x: float) -> dict:
    return {"acc": x, "miou": x / 2, "images": 4, "mean_segments": 3.0}


def _run(folder: Path, methods: dict, nodes: dict, ablation: dict, model: str = "CompVis/stable-diffusion-v1-4",
         timestep: int = 300, seed: int = 0, name: str = "sweep") -> None:
    config = {"dataset": {"name": "coco_stuff27", "kl_threshold": 1.1}, "seed": seed,
              "model": {"name": model, "timestep": timestep,
                        "backbone": {"_target_": "diffseg.backbone.StableDiffusionBackbone.from_pretrained",
                                     "model_id": model, "input_size": 512}},
              "methods": nodes}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "methods": methods, "config": config,
        "run": {"name": name, "dataset": "coco_stuff27", "model": model, "ablation": ablation},
        "provenance": {"random_weights": False, "synthetic_data": False, "partial": False, "notes": []}}))


DIFFSEG = {"name": "DiffSeg", "segmenter": {"kl_threshold": 1.1}}
KMEANS = {"name": "K-Means-C", "segmenter": {"num_clusters": 6}}
DIFFCUT = {"name": "DiffCut", "features": {"timestep": 50, "noise_seed": 42}, "segmenter": {"tau": 0.5}}


def test_backbone_sweep_rows_are_model_ids(tmp_path):
    for i, (model, x) in enumerate([("segmind/SSD-1B", 30.0), ("CompVis/stable-diffusion-v1-4", 40.0)]):
        _run(tmp_path / str(i), {"DiffSeg": _scores(x), "K-Means-C": _scores(x - 10)},
             {"diffseg": DIFFSEG, "kmeans_c": KMEANS}, {"param": "backbone", "value": model}, model=model)
    df = ablation_tables(collect_runs([tmp_path]))["backbone"]
    assert list(df.index) == ["CompVis/stable-diffusion-v1-4", "segmind/SSD-1B"]
    assert df.index.name == "model"
    assert df.loc["segmind/SSD-1B", "DiffSeg ACC"] == 30.0
    assert df.loc["CompVis/stable-diffusion-v1-4", "K-Means-C mIoU"] == 15.0


def test_timestep_sweep_keeps_diffseg_beside_diffcut(tmp_path):
    for i, t in enumerate([100, 300, 500]):
        _run(tmp_path / str(i), {"DiffSeg": _scores(t / 10), "DiffCut": _scores(44.0)},
             {"diffseg": DIFFSEG, "diffcut": DIFFCUT}, {"param": "timestep", "value": t}, timestep=t)
    df = ablation_tables(collect_runs([tmp_path]))["timestep"]
    assert list(df.index) == [100, 300, 500]
    assert list(df.columns) == ["DiffSeg ACC", "DiffSeg mIoU"]
    assert df["DiffSeg ACC"].tolist() == [10.0, 30.0, 50.0]
    assert "DiffCut: ran at timestep=50 in every run of the sweep; not varied, left out" in df.attrs["notes"]


def test_in_run_variant_row_comes_from_its_own_setting(tmp_path):
    tags = {"t05": 0.5, "t09": 0.9, "t13": 1.3}
    nodes = {k: {"name": f"DiffSeg@kl={v}", "ablation": {"param": "kl_threshold", "value": v, "method": "DiffSeg"},
                 "segmenter": {"kl_threshold": v}} for k, v in tags.items()}
    nodes["t05"]["segmenter"]["kl_threshold"] = 0.2  # methods.t05.segmenter.kl_threshold=0.2 on the command line
    methods = {f"DiffSeg@kl={v}": {**_scores(100 * v), "ablation": nodes[k]["ablation"]} for k, v in tags.items()}
    _run(tmp_path / "run", methods, nodes, None)
    df = ablation_tables(collect_runs([tmp_path]))["kl_threshold"]
    assert list(df.index) == [0.2, 0.9, 1.3]
    assert df.loc[0.2, "DiffSeg ACC"] == 50.0  # the variant tagged 0.5 ran at 0.2


def test_in_run_sweep_beside_its_plain_method_writes_through_write_tables(tmp_path):
    """write_tables expands in-run variants, then ablation_tables does again: the second pass must leave the
    virtual runs as they are (expanding them again read every variant's value from the plain method's node,
    so DiffSeg at 1.1 and its variant tagged 0.5 collided at 1.1, as the demo's one-run sweep did)."""
    tags = {"t05": 0.5, "t11": 1.1}
    nodes = {k: {"name": f"DiffSeg@kl={v}", "ablation": {"param": "kl_threshold", "value": v, "method": "DiffSeg"},
                 "segmenter": {"kl_threshold": v}} for k, v in tags.items()}
    nodes["diffseg"] = {"name": "DiffSeg", "segmenter": {"kl_threshold": 1.1}}
    methods = {f"DiffSeg@kl={v}": {**_scores(100 * v), "ablation": nodes[k]["ablation"]} for k, v in tags.items()}
    methods["DiffSeg"] = _scores(110.0)
    _run(tmp_path / "run", methods, nodes, None)
    runs = collect_runs([tmp_path])
    once = expand_method_ablations(runs)
    assert expand_method_ablations(once) == once
    written = {p.name for p in write_tables(runs, tmp_path / "out", [])}
    assert "ablation_kl_threshold.md" in written
    df = ablation_tables(once)["kl_threshold"]
    assert list(df.index) == [0.5, 1.1] and df["DiffSeg ACC"].tolist() == pytest.approx([50.0, 110.0])


def _kl_sweep(root: Path, model: str, offset: float, values=(0.9, 1.1)) -> None:
    for v in values:
        _run(root / f"{model.replace('/', '_')}_{v}_{offset}",
             {"DiffSeg": _scores(100 * v + offset), "K-Means-C": _scores(5.0)},
             {"diffseg": {"name": "DiffSeg", "segmenter": {"kl_threshold": v}}, "kmeans_c": KMEANS},
             {"param": "kl_threshold", "value": v}, model=model)


def test_two_models_under_one_run_name_get_a_table_each(tmp_path):
    _kl_sweep(tmp_path, "CompVis/stable-diffusion-v1-4", 0.0)
    _kl_sweep(tmp_path, "segmind/SSD-1B", 1.0)
    tables = ablation_tables(collect_runs([tmp_path]))
    assert sorted(tables) == ["kl_threshold_modelCompVis_stable-diffusion-v1-4", "kl_threshold_modelsegmind_SSD-1B"]
    sd, ssd = tables["kl_threshold_modelCompVis_stable-diffusion-v1-4"], tables["kl_threshold_modelsegmind_SSD-1B"]
    assert sd["DiffSeg ACC"].tolist() == pytest.approx([90.0, 110.0])
    assert ssd["DiffSeg ACC"].tolist() == pytest.approx([91.0, 111.0])
    assert sd.attrs["model"] == "CompVis/stable-diffusion-v1-4"
    written = {p.name for p in write_tables(collect_runs([tmp_path]), tmp_path / "out", [])}
    assert "ablation_kl_threshold_modelsegmind_SSD-1B.md" in written
    md = (tmp_path / "out" / "ablation_kl_threshold_modelsegmind_SSD-1B.md").read_text()
    assert "model segmind/SSD-1B" in md.splitlines()[0]


def test_two_runs_of_one_model_at_one_value_are_refused(tmp_path):
    _kl_sweep(tmp_path, "CompVis/stable-diffusion-v1-4", 0.0)
    _kl_sweep(tmp_path, "CompVis/stable-diffusion-v1-4", 1.0, values=(1.1,))
    with pytest.raises(ValueError, match=r"DiffSeg ran at kl_threshold=1.1 in .* and .*one row cannot hold both"):
        ablation_tables(collect_runs([tmp_path]))
