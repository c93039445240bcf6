"""Tests of the result tables and figures (eval.report.tables, eval.report.figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.report.figures import colorize, default_palette, overlay
from eval.report.ledger import Claim, load_ledger
from eval.report.tables import (
    ablation_tables,
    collect_runs,
    main,
    main_table,
    protocol_sensitivity_tables,
    write_tables,
)
from eval.run.provenance import RANDOM_BANNER, UNKNOWN_BANNER
from eval.run.qualitative import qualitative_grid

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


def test_ledger_file():
    claims = load_ledger()
    by_key = {(c.method, c.dataset, c.protocol, c.backbone, c.source.split(",")[0]): c for c in claims}
    paper = by_key[("DiffSeg", "coco_stuff27", "diffseg", "SD 1.4", "DiffSeg paper (arXiv 2308.12469)")]
    assert (paper.acc, paper.miou) == (72.5, 43.6)
    rerun = [c for c in claims if c.method == "DiffSeg" and c.protocol == "diffcut"]
    assert {c.dataset: c.miou for c in rerun} == {"voc21": 49.8, "context60": 48.8, "coco_object81": 23.2,
                                                 "coco_stuff27": 44.2, "cityscapes": 16.8, "ade20k150": 37.7}
    diffcut = sorted(c.miou for c in claims if c.method == "DiffCut" and c.dataset == "coco_stuff27")
    assert diffcut == [45.2, 46.1, 49.1]  # SD 1.4 ablation, Seg4Diff's listing, the DiffCut paper
    assert all(c.status in ("confirmed", "secondary") and c.source for c in claims)
    sd14 = next(c for c in claims if c.method == "DiffCut" and c.backbone == "SD 1.4")
    assert sd14.settings["segmenter.tau"] == 0.2 and "issue 5" in sd14.source


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
    df = main_table(runs, "coco_stuff27", load_ledger())
    assert list(df.index) == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert df.loc["DiffSeg", "ACC"] == pytest.approx(70.04)  # unrounded in the frame
    assert df.loc["DiffSeg", "protocol"] == "diffseg"
    assert df.loc["DiffSeg", "claims"] == "[1] 72.5 / 43.6 (ours -2.5 / -2.3, secondary)"
    [claim] = df.attrs["claims"][0]
    assert claim["d_acc"] == pytest.approx(70.04 - 72.5) and claim["d_miou"] == pytest.approx(41.26 - 43.6)
    assert df.loc["DiffSeg-fp32", "claims"] == "" and df.attrs["claims"][1] == []
    assert main_table(runs, "cityscapes", []).empty


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
            "ablation_kl_threshold.png", ".eval_tables_manifest.json", "README.md"} == names

    md = (out / "coco_stuff27.md").read_text(encoding="utf-8")
    assert "| DiffSeg | 70.0 | 41.3 | 5.43 | 12 | diffseg | [1] 72.5 / 43.6 (ours -2.5 / -2.3, secondary) |  |" in md
    assert "| K-Means-C | 60.0 | 30.0 | 6.00 | 12 | diffseg |  |  |" in md
    assert not md.startswith("**")  # no banner
    assert "- [1] DiffSeg (SD 1.4), coco_stuff27 (curated images), protocol diffseg: ACC 72.5, mIoU 43.6" in md

    csv = pd.read_csv(out / "coco_stuff27.csv", index_col=0, )
    assert csv.loc["DiffSeg", "ACC"] == 70.0
    assert csv.loc["DiffSeg", "mIoU"] == 41.3
    assert csv.loc["DiffSeg", "claims"].startswith("[1] 72.5 / 43.6")
    assert csv.loc["DiffSeg", "protocol"] == "diffseg"
    assert csv.loc["K-Means-S", "images"] == 12

    abl = (out / "ablation_kl_threshold.md").read_text(encoding="utf-8")
    rows = [line for line in abl.splitlines() if line.startswith("| 0.9") or line.startswith("| 1.")]
    assert [r.split("|")[1].strip() for r in rows] == ["0.9", "1.1", "1.3"]
    assert "| 1.1 | 61.1 | 31.1 | 50.0 | 20.0 |" in abl
    assert "ablation_kl_threshold.png" in abl
    abl_csv = pd.read_csv(out / "ablation_kl_threshold.csv", index_col=0, )
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
        if path.suffix == ".md":
            first = path.read_text(encoding="utf-8").splitlines()[0]
            assert RANDOM_BANNER in first, path.name
        elif path.suffix == ".csv":  # plain CSV: the banner is the first column of every row
            csv = pd.read_csv(path, index_col=0)
            assert list(csv.columns)[0] == "banner", path.name
            assert all(RANDOM_BANNER in b for b in csv["banner"]), path.name
    csv = pd.read_csv(out / "coco_stuff27.csv", index_col=0)
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


def _protocol_run(folder: Path, protocol: str, methods: dict, fingerprint: str, rescored_from: str | None = None,
                  geometry: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prov = {**_provenance(), "fingerprint": fingerprint}
    if rescored_from:
        prov["rescored"] = {"source_fingerprint": rescored_from}
    run = {"name": "voc21", "dataset": "voc21", "model": "sd14", "ablation": None, "protocol": protocol,
           "geometry": geometry}
    (folder / "metrics.json").write_text(json.dumps({"methods": methods, "run": run, "provenance": prov}))


def test_claims_render_beside_rows_of_their_protocol_only(tmp_path):
    _protocol_run(tmp_path / "a", "diffseg", {"DiffSeg": _method(80.0, 52.0)}, "a" * 16)
    _protocol_run(tmp_path / "b", "diffcut", {"DiffSeg": _method(75.0, 47.3)}, "b" * 16)
    _protocol_run(tmp_path / "c", "diffcut", {"DiffSeg": _method(70.0, 45.0)}, "c" * 16, rescored_from="a" * 16,
                  geometry="diffseg")
    ledger = [Claim("DiffSeg", "voc21", "diffcut", "paper X, Table 2", "secondary", miou=49.8),
              Claim("DiffSeg", "voc21", "diffcut", "paper Y, Table 1", "confirmed", acc=76.0, miou=50.0),
              Claim("DiffSeg", "voc21", "diffseg", "paper Z", "secondary", miou=51.0)]
    runs = collect_runs([tmp_path])
    native = main_table(runs, "voc21", ledger, protocol="diffcut")
    assert list(native["ACC"]) == [75.0]  # neither the diffseg run nor the re-scored one
    assert native.iloc[0]["claims"] == ("[1] - / 49.8 (ours - / -2.5, secondary); "
                                        "[2] 76.0 / 50.0 (ours -1.0 / -2.7, confirmed)")
    assert [c["d_miou"] for c in native.attrs["claims"][0]] == [pytest.approx(-2.5), pytest.approx(-2.7)]
    assert main_table(runs, "voc21", ledger).iloc[0]["claims"] == "[1] - / 51.0 (ours - / +1.0, secondary)"
    rescored = main_table(runs, "voc21", ledger, protocol="diffcut scoring, diffseg geometry")
    assert list(rescored["ACC"]) == [70.0] and rescored.iloc[0]["claims"] == ""  # geometry differs: no claim
    written = {p.name for p in write_tables(runs, tmp_path / "out", ledger)}
    assert {"voc21.md", "voc21.diffcut.md", "voc21.diffcut_scoring_diffseg_geometry.md"} <= written
    md = (tmp_path / "out" / "voc21.diffcut.md").read_text()
    assert "| DiffSeg | 75.0 | 47.3 |" in md and "80.0" not in md
    assert "- [2] DiffSeg, voc21, protocol diffcut: ACC 76.0, mIoU 50.0; paper Y, Table 1; confirmed" in md


def test_protocol_sensitivity_table(tmp_path):
    _protocol_run(tmp_path / "a", "diffseg", {"DiffSeg": _method(80.0, 52.0), "K-Means-C": _method(60.0, 30.0)},
                  "a" * 16)
    _protocol_run(tmp_path / "c", "diffcut", {"DiffSeg": _method(70.0, 45.0), "K-Means-C": _method(55.0, 28.0)},
                  "c" * 16, rescored_from="a" * 16, geometry="diffseg")
    _protocol_run(tmp_path / "d", "diffcut", {"DiffSeg": _method(71.0, 46.0)}, "d" * 16)  # other predictions
    tables = protocol_sensitivity_tables(collect_runs([tmp_path]))
    assert list(tables) == ["voc21_" + "a" * 16]
    df = tables["voc21_" + "a" * 16]
    assert list(df.columns) == ["diffseg ACC", "diffseg mIoU", "diffcut scoring, diffseg geometry ACC",
                                "diffcut scoring, diffseg geometry mIoU"]
    assert df.loc["K-Means-C"].tolist() == [60.0, 30.0, 55.0, 28.0]
    written = {p.name for p in write_tables(collect_runs([tmp_path]), tmp_path / "out", [])}
    assert f"protocol_sensitivity_voc21_{'a' * 16}.md" in written
    assert "Protocol sensitivity" in (tmp_path / "out" / "README.md").read_text()
