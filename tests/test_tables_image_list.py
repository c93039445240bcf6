"""Rows on a non-standard image list say so and are never set beside a claim (issue 26.2, tables side)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eval.report.ledger import load_ledger
from eval.report.tables import (
    ablation_tables,
    collect_runs,
    main_table,
    protocol_sensitivity_tables,
    write_tables,
)

SHA = "0123456789abcdef" * 4
NOTE = "non-standard image list: 4 images, sha256 0123456789ab"


def _run(folder: Path, standard: bool | None, ablation=None, protocol="diffseg", fingerprint="a" * 16,
         source: str | None = None, miou: float = 40.0) -> None:
    prov = {"fingerprint": fingerprint, "random_weights": False, "synthetic_data": False, "partial": False,
            "images": {"evaluated": 4, "skipped": 0, "selected": 4, "dataset": 4}, "non_default": {}, "notes": []}
    if standard is not None:
        prov["image_list"] = {"standard": standard, "name": "custom", "count": 4, "sha256": SHA}
        prov["notes"] = ["image list: custom (4 images), not the benchmark's"] if not standard else []
    if source:
        prov["rescored"] = {"source_fingerprint": source}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "methods": {"DiffSeg": {"acc": 60.0, "miou": miou, "images": 4, "mean_segments": 5.0}},
        "image_ids": ["1", "2", "3", "4"],
        "run": {"name": "r", "dataset": "coco_stuff27", "model": "sd14", "ablation": ablation, "protocol": protocol,
                "geometry": "diffseg"},
        "provenance": prov}))


@pytest.mark.parametrize("standard", [None, True])
def test_standard_or_unrecorded_list_keeps_the_claim(tmp_path, standard):
    _run(tmp_path / "r", standard)
    df = main_table(collect_runs([tmp_path]), "coco_stuff27", load_ledger())
    assert df.loc["DiffSeg", "claims"] == "[1] 72.5 / 43.6 (ours -12.5 / -3.6, secondary)"
    assert df.loc["DiffSeg", "notes"] == ""


def test_non_standard_list_says_so_and_gets_no_claim(tmp_path):
    _run(tmp_path / "r", False)
    df = main_table(collect_runs([tmp_path]), "coco_stuff27", load_ledger())
    assert df.loc["DiffSeg", "notes"] == NOTE
    assert df.loc["DiffSeg", "claims"] == "not compared: non-standard image list"
    assert df.attrs["claims"] == [[]] and df.attrs["sources"] == []
    write_tables(collect_runs([tmp_path]), tmp_path / "out")
    md = (tmp_path / "out" / "coco_stuff27.md").read_text()
    assert "(ours " not in md and "72.5" not in md and NOTE in md
    csv = pd.read_csv(tmp_path / "out" / "coco_stuff27.csv", index_col=0)
    assert csv.loc["DiffSeg", "notes"] == NOTE


def test_ablation_and_sensitivity_rows_carry_the_note(tmp_path):
    _run(tmp_path / "a", False, ablation={"param": "kl_threshold", "value": 0.9})
    _run(tmp_path / "b", True, ablation={"param": "kl_threshold", "value": 1.1}, fingerprint="b" * 16)
    df = ablation_tables(collect_runs([tmp_path]))["kl_threshold"]
    assert df["notes"].tolist() == [NOTE, ""]
    _run(tmp_path / "src", False, fingerprint="c" * 16)
    _run(tmp_path / "re", False, protocol="diffcut", fingerprint="d" * 16, source="c" * 16)
    [sens] = protocol_sensitivity_tables(collect_runs([tmp_path / "src", tmp_path / "re"])).values()
    assert sens.loc["DiffSeg", "notes"] == NOTE
