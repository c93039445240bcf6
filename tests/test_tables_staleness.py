"""Intervals shown in the tables only while their compare output matches the run (issue 25.4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eval.report.tables import collect_runs, main_table, protocol_sensitivity_tables
from eval.run.records import RunRecords, write_metrics
from eval.run.totals import accumulate, method_scores
from eval.stats.comparison import compare_runs, load_intervals

C = 4


def _write_run(folder: Path, n: int, seed: int = 0, shift: int = 0) -> Path:
    """A run folder as the runner writes it (per_image.jsonl, then metrics.json from the same records)."""
    if folder.exists():
        shutil.rmtree(folder)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        count = rng.integers(50, 400, C)
        tp = rng.integers(0, count + 1) // (1 + shift)
        records.append({"id": f"{i:012d}", "fingerprint": "abc", "methods": {"DiffSeg": {
            "tp": tp.tolist(), "fp": rng.integers(0, 60, C).tolist(), "fn": (count - tp).tolist(),
            "valid": int(count.sum()), "segments": 5}}})
    RunRecords(folder).append(records)
    scores = method_scores(accumulate(records, C), {"DiffSeg": None})
    write_metrics(folder, scores, records, run={"name": "coco_stuff27", "dataset": "coco_stuff27", "model": "sd14"},
                  config={"dataset": {"num_classes": C}})
    return folder


def _table(run: Path, cmp: Path):
    return main_table(collect_runs([run]), "coco_stuff27", [], compare_dir=cmp)


def test_interval_of_current_compare_output_is_shown(tmp_path):
    run = _write_run(tmp_path / "run", 6)
    saved = compare_runs([run], tmp_path / "cmp", resamples=30, min_images=2)
    df = _table(run, tmp_path / "cmp")
    low, high = saved["methods"]["DiffSeg"]["miou"][1:]
    assert df.loc["DiffSeg", "mIoU 95% CI"] == f"[{low:.1f}, {high:.1f}]"
    assert df.loc["DiffSeg", "notes"] == ""


def test_run_extended_after_compare_gets_no_interval(tmp_path):
    run = _write_run(tmp_path / "run", 3)
    compare_runs([run], tmp_path / "cmp", resamples=30, min_images=2)
    _write_run(tmp_path / "run", 6)  # the run extended to 6 images after the comparison
    df = _table(run, tmp_path / "cmp")
    assert df.loc["DiffSeg", "images"] == 6
    assert df.loc["DiffSeg", "mIoU 95% CI"] == "n/a (stale compare output)"
    assert df.loc["DiffSeg", "ACC 95% CI"] == "n/a (stale compare output)"
    assert "compared 3 images, metrics.json now has 6" in df.loc["DiffSeg", "notes"]
    assert load_intervals(tmp_path / "cmp", run)["DiffSeg"]["miou"] is None


def test_same_count_other_images_or_other_points_is_stale(tmp_path):
    run = _write_run(tmp_path / "run", 6)
    compare_runs([run], tmp_path / "cmp", resamples=30, min_images=2)
    meta = json.loads((run / "metrics.json").read_text())
    # same count, another image set (a different list of 6 ids)
    other = {**meta, "image_ids": [f"{i:012d}" for i in range(10, 16)]}
    stale = load_intervals(tmp_path / "cmp", run, metrics=other)["DiffSeg"]["stale"]
    assert "another image set of 6 images" in stale
    # same images, other numbers (the run was re-made under other settings)
    moved = {**meta, "methods": {"DiffSeg": {**meta["methods"]["DiffSeg"], "miou": meta["methods"]["DiffSeg"]["miou"]
                                             + 1.0}}}
    stale = load_intervals(tmp_path / "cmp", run, metrics=moved)["DiffSeg"]["stale"]
    assert stale.endswith("in metrics.json; re-run eval.compare") and "mIoU" in stale
    assert load_intervals(tmp_path / "cmp", run, metrics=meta)["DiffSeg"].get("stale") is None


def _sens_run(folder: Path, protocol: str, ids: list[str], miou: float, rescored: bool) -> None:
    folder.mkdir(parents=True)
    prov = {"fingerprint": "b" * 16 if rescored else "a" * 16, "partial": False}
    if rescored:
        prov["rescored"] = {"source_fingerprint": "a" * 16}
    run = {"name": "voc21", "dataset": "voc21", "model": "sd14", "ablation": None, "protocol": protocol,
           "geometry": "diffseg"}
    (folder / "metrics.json").write_text(json.dumps({
        "methods": {"DiffSeg": {"acc": 70.0, "miou": miou, "images": len(ids)}}, "image_ids": ids, "run": run,
        "provenance": prov}))


@pytest.mark.parametrize("same", [True, False])
def test_protocol_sensitivity_only_on_one_image_set(tmp_path, same):
    ids = [f"{i:012d}" for i in range(6)]
    _sens_run(tmp_path / "src", "diffseg", ids, 40.0, rescored=False)
    _sens_run(tmp_path / "re", "diffcut", ids if same else ids[:3], 35.0, rescored=True)
    tables = protocol_sensitivity_tables(collect_runs([tmp_path]))
    if same:
        [df] = tables.values()
        assert df.loc["DiffSeg"].tolist() == [70.0, 40.0, 70.0, 35.0]
    else:
        assert tables == {}  # 6 images beside 3: never one table
