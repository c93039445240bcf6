"""Tests of the result tables and figures (eval.tables, eval.figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.figures import colorize, default_palette, overlay, qualitative_grid
from eval.provenance import RANDOM_BANNER, UNKNOWN_BANNER
from eval.tables import (
    ablation_tables,
    collect_runs,
    load_paper_numbers,
    main,
    main_table,
    write_tables,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _method(acc, miou, segments=5.43, images=12):
    return {"acc": acc, "miou": miou, "iou": [miou] + [None] * 26, "tp": [0] * 27, "fp": [0] * 27,
            "fn": [0] * 27, "valid": 1000, "images": images, "mean_segments": segments}


def _provenance(random_weights=False):
    return {"fingerprint": "0" * 16, "random_weights": random_weights, "synthetic_data": False, "partial": False,
            "images": {"evaluated": 12, "skipped": 0, "selected": 12, "dataset": 12}, "non_default": {},
            "notes": ["random-weight backbone"] if random_weights else []}


def _write_run(folder: Path, methods, name, dataset="coco_stuff27", demo=False, ablation=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"methods": methods, "config": {"dataset": {"name": dataset}}, "versions": {"torch": "x"},
            "run": {"name": name, "dataset": dataset, "model": "sd14", "ablation": ablation},
            "provenance": _provenance(random_weights=demo)}
    path = folder / "metrics.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _make_runs(root: Path, demo=False) -> list[Path]:
    main_dir = root / "main"
    _write_run(main_dir, {"DiffSeg": _method(70.04, 41.26), "DiffSeg-fp32": _method(65.55, 38.0),
                          "K-Means-C": _method(60.0, 30.0, segments=6.0), "K-Means-S": _method(62.5, 33.3)},
               "coco_stuff27", demo=demo)
    sweep = root / "multirun" / "2024-01-01"
    for i, value in enumerate([1.3, 0.9, 1.1]):  # not in order on purpose
        _write_run(sweep / str(i), {"DiffSeg": _method(60 + value, 30 + value),
                                    "K-Means-C": _method(50.0, 20.0)},
                   "ablation_kl_threshold", demo=demo, ablation={"param": "kl_threshold", "value": value})
    return [main_dir, root / "multirun"]


def test_paper_numbers_file():
    paper = load_paper_numbers()
    assert paper["coco_stuff27"]["DiffSeg"]["acc"] == 72.5
    assert paper["coco_stuff27"]["DiffSeg"]["miou"] == 43.6
    assert paper["cityscapes"]["DiffSeg"]["acc"] == 76.0
    assert paper["cityscapes"]["DiffSeg"]["miou"] == 21.2
    for ds in ("coco_stuff27", "cityscapes"):
        for method, ref in paper[ds].items():
            expected = "DiffCut paper" if method == "DiffCut" else "2308.12469"
            assert expected in ref["source"], method
            if "not confirmed" in ref["source"]:
                assert ref["acc"] is None and ref["miou"] is None, method


def test_collect_runs_recursive(tmp_path):
    dirs = _make_runs(tmp_path)
    runs = collect_runs(dirs)
    assert len(runs) == 4
    assert all(Path(r["_path"]).name == "metrics.json" for r in runs)
    assert len(collect_runs([tmp_path, dirs[0] / "metrics.json"])) == 4  # duplicates dropped
    with pytest.raises(FileNotFoundError):
        collect_runs([tmp_path / "missing"])


def test_main_table_values(tmp_path):
    runs = collect_runs(_make_runs(tmp_path))
    df = main_table(runs, "coco_stuff27", load_paper_numbers())
    assert list(df.index) == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert df.loc["DiffSeg", "ACC"] == pytest.approx(70.04)  # unrounded in the frame
    assert df.loc["DiffSeg", "paper ACC"] == 72.5
    assert np.isnan(df.loc["DiffSeg-fp32", "paper ACC"])
    assert main_table(runs, "cityscapes", {}).empty


def test_ablation_table_sorted(tmp_path):
    tables = ablation_tables(collect_runs(_make_runs(tmp_path)))
    assert list(tables) == ["kl_threshold"]
    df = tables["kl_threshold"]
    assert list(df.index) == [0.9, 1.1, 1.3]
    assert list(df.columns) == ["DiffSeg ACC", "DiffSeg mIoU", "K-Means-C ACC", "K-Means-C mIoU"]
    assert df.loc[1.1, "DiffSeg ACC"] == pytest.approx(61.1)


def test_write_tables(tmp_path):
    runs = collect_runs(_make_runs(tmp_path / "runs"))
    out = tmp_path / "out"
    written = write_tables(runs, out)
    names = {p.name for p in written}
    assert {"coco_stuff27.md", "coco_stuff27.csv", "ablation_kl_threshold.md", "ablation_kl_threshold.csv",
            "ablation_kl_threshold.png", "README.md"} == names

    md = (out / "coco_stuff27.md").read_text(encoding="utf-8")
    assert "| DiffSeg | 70.0 | 41.3 | 5.43 | 12 | 72.5 | 43.6 |  |" in md
    assert "| K-Means-C | 60.0 | 30.0 | 6.00 | 12 |  |  |  |" in md
    assert not md.startswith("**")  # no banner
    assert "2308.12469" in md

    csv = pd.read_csv(out / "coco_stuff27.csv", index_col=0, comment="#")
    assert csv.loc["DiffSeg", "ACC"] == 70.0
    assert csv.loc["DiffSeg", "mIoU"] == 41.3
    assert csv.loc["DiffSeg", "paper mIoU"] == 43.6
    assert np.isnan(csv.loc["K-Means-S", "paper ACC"])
    assert csv.loc["K-Means-S", "images"] == 12

    abl = (out / "ablation_kl_threshold.md").read_text(encoding="utf-8")
    rows = [line for line in abl.splitlines() if line.startswith("| 0.9") or line.startswith("| 1.")]
    assert [r.split("|")[1].strip() for r in rows] == ["0.9", "1.1", "1.3"]
    assert "| 1.1 | 61.1 | 31.1 | 50.0 | 20.0 |" in abl
    assert "ablation_kl_threshold.png" in abl
    abl_csv = pd.read_csv(out / "ablation_kl_threshold.csv", index_col=0, comment="#")
    assert list(abl_csv.index) == [0.9, 1.1, 1.3]

    assert (out / "ablation_kl_threshold.png").read_bytes()[:8] == PNG_MAGIC
    readme = (out / "README.md").read_text(encoding="utf-8")
    for name in ("coco_stuff27.md", "ablation_kl_threshold.md", "ablation_kl_threshold.png"):
        assert name in readme
    assert not list(out.glob(".*.tmp"))  # no temp files left behind


def test_random_weight_banner_on_every_file_from_provenance(tmp_path):
    out = tmp_path / "out"
    written = write_tables(collect_runs(_make_runs(tmp_path / "runs", demo=True)), out)
    for path in written:
        if path.suffix in {".md", ".csv"}:
            first = path.read_text(encoding="utf-8").splitlines()[0]
            assert RANDOM_BANNER in first, path.name
    csv = pd.read_csv(out / "coco_stuff27.csv", index_col=0, comment="#")
    assert csv.loc["DiffSeg (random weights)", "ACC"] == 70.0


def test_results_without_provenance_are_marked_unknown(tmp_path):
    path = _write_run(tmp_path / "old", {"DiffSeg": _method(70.0, 40.0)}, "coco_stuff27")
    data = json.loads(path.read_text())
    del data["provenance"]
    path.write_text(json.dumps(data))
    write_tables(collect_runs([tmp_path / "old"]), tmp_path / "out")
    assert (tmp_path / "out" / "coco_stuff27.md").read_text().startswith(f"**{UNKNOWN_BANNER}")


def test_cli(tmp_path, capsys):
    dirs = _make_runs(tmp_path / "runs")
    out = tmp_path / "tables"
    assert main([str(d) for d in dirs] + ["--out", str(out)]) == 0
    assert (out / "coco_stuff27.md").is_file()
    assert "README.md" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(out)]) == 1


def test_colorize_and_overlay():
    mask = np.array([[0, 1], [-1, 300]])
    rgb = colorize(mask)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[1, 0].tolist() == [0, 0, 0]
    assert rgb[0, 0].tolist() != rgb[0, 1].tolist()
    np.testing.assert_array_equal(colorize(mask), rgb)  # deterministic
    palette = default_palette()
    assert len({tuple(c) for c in palette[:60]}) == 60 and not (palette == 0).all(axis=1).any()
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay(image, mask)
    assert blended[1, 0].tolist() == [100, 100, 100]


def test_qualitative_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(-1, 3, (16, 16)) for _ in range(2)]
    masks = {"DiffSeg": [rng.integers(0, 4, (16, 16)) for _ in range(2)],
             "K-Means-C": [rng.integers(0, 6, (8, 8)) for _ in range(2)]}  # resized to the image
    path = qualitative_grid(images, labels, masks, tmp_path / "grid.png", class_names=["a", "b", "c"])
    assert path == tmp_path / "grid.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError):
        qualitative_grid(images, labels[:1], masks, tmp_path / "bad.png")
