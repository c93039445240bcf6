"""The analysis CLIs on bad input (issue 26.5) and their files (issue 26.10): plain CSVs, stale tables, seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from eval.report.tables import collect_runs, main_table, write_tables
from eval.run.provenance import RANDOM_BANNER

REPO = Path(__file__).resolve().parents[1]


def _cli(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _run(folder: Path, methods: dict, ablation=None, seed=0, random_weights=False, name="coco_stuff27") -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "methods": {m: {"acc": a, "miou": a / 2, "images": 4, "mean_segments": 3.0} for m, a in methods.items()},
        "config": {"seed": seed, "methods": {}},
        "run": {"name": name, "dataset": "coco_stuff27", "model": "sd14", "ablation": ablation},
        "provenance": {"random_weights": random_weights, "synthetic_data": False, "partial": False, "notes": []}}))
    return folder


def _one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_tables_missing_folder_exits_2_and_writes_nothing(tmp_path):
    _run(tmp_path / "outputs" / "a", {"DiffSeg": 40.0})
    proc = _cli("eval.tables", "multirun/", "outputs/", "--out", "results/", cwd=tmp_path)  # the README's command
    _one_error_line(proc, "multirun")
    assert not (tmp_path / "results").exists()


def test_tables_corrupt_metrics_exits_2_and_writes_nothing(tmp_path):
    _run(tmp_path / "outputs" / "a", {"DiffSeg": 40.0})
    (tmp_path / "outputs" / "b").mkdir()
    (tmp_path / "outputs" / "b" / "metrics.json").write_text('{"methods": {"DiffSeg": ')  # cut short
    proc = _cli("eval.tables", "outputs/", "--out", "results/", cwd=tmp_path)
    _one_error_line(proc, str(Path("outputs") / "b" / "metrics.json"), "not valid JSON")
    assert not (tmp_path / "results").exists()
    (tmp_path / "outputs" / "b" / "metrics.json").write_text("[1, 2]")
    _one_error_line(_cli("eval.tables", "outputs/", "--out", "results/", cwd=tmp_path), "not a metrics.json")
    assert not (tmp_path / "results").exists()


def test_tables_and_compare_out_naming_a_file_exit_2(tmp_path):
    _run(tmp_path / "outputs" / "a", {"DiffSeg": 40.0})
    (tmp_path / "results").write_text("mine\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_error_line(_cli("eval.tables", "outputs/", "--out", "results", cwd=tmp_path), "results is a file")
    _one_error_line(_cli("eval.tables", "outputs/", "--out", "results/sub", cwd=tmp_path), "results is a file")
    _one_error_line(_cli("eval.compare", "outputs/a", "--out", "results", cwd=tmp_path), "results is a file")
    assert (tmp_path / "results").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_tables_refused_sweep_exits_2_and_writes_nothing(tmp_path):
    for i in range(2):  # two runs of one model at one swept value
        _run(tmp_path / "outputs" / str(i), {"DiffSeg": 40.0 + i}, ablation={"param": "kl_threshold", "value": 0.9},
             name="sweep")
    proc = _cli("eval.tables", "outputs/", "--out", "results/", cwd=tmp_path)
    _one_error_line(proc, "kl_threshold=0.9", "one row cannot hold both")
    assert not (tmp_path / "results").exists()


def test_csv_parses_with_plain_read_csv_banner_as_column(tmp_path):
    _run(tmp_path / "runs" / "a", {"DiffSeg": 40.0, "K-Means-C": 30.0}, random_weights=True)
    write_tables(collect_runs([tmp_path / "runs"]), tmp_path / "out", [])
    csv = pd.read_csv(tmp_path / "out" / "coco_stuff27.csv", index_col=0)
    assert list(csv.columns[:3]) == ["banner", "ACC", "mIoU"]
    assert csv.loc["DiffSeg (random weights)", "ACC"] == 40.0
    assert csv.loc["K-Means-C (random weights)", "mIoU"] == 15.0
    assert set(csv["banner"]) == {RANDOM_BANNER}


def test_stale_tables_of_an_earlier_call_are_removed_others_kept(tmp_path):
    _run(tmp_path / "runs" / "main", {"DiffSeg": 40.0})
    for i, v in enumerate([0.9, 1.1]):
        _run(tmp_path / "runs" / "sweep" / str(i), {"DiffSeg": 40.0 + i},
             ablation={"param": "kl_threshold", "value": v}, name="sweep")
    out = tmp_path / "results"
    out.mkdir()
    (out / "mine.png").write_bytes(b"not ours")
    (out / "notes.md").write_text("mine")
    proc = _cli("eval.tables", "runs/", "--out", "results/", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "ablation_kl_threshold.md").is_file() and (out / "ablation_kl_threshold.png").is_file()
    proc = _cli("eval.tables", "runs/main", "--out", "results/", cwd=tmp_path)  # the sweep is no longer given
    assert proc.returncode == 0, proc.stderr
    for name in ("ablation_kl_threshold.md", "ablation_kl_threshold.csv", "ablation_kl_threshold.png"):
        assert not (out / name).exists(), name
        assert f"removed stale table: {Path('results') / name}" in proc.stdout
    assert (out / "coco_stuff27.md").is_file() and (out / "README.md").is_file()
    assert (out / "mine.png").read_bytes() == b"not ours" and (out / "notes.md").read_text() == "mine"
    assert "ablation_kl_threshold" not in (out / "README.md").read_text()


def test_seed_runs_are_named_by_their_seed(tmp_path):
    for seed, acc in ((0, 30.0), (1, 32.0), (2, 34.0)):
        _run(tmp_path / f"seed{seed}", {"K-Means-C": acc, "DiffSeg": 40.0 + seed}, seed=seed)
    df = main_table(collect_runs([tmp_path]), "coco_stuff27", [])
    assert df.loc["K-Means-C (sd14, seed 1)", "ACC"] == 32.0
    assert df.loc["K-Means-C (sd14, seed 2)", "mIoU"] == 17.0
    assert df.loc["DiffSeg (sd14, seed 0)", "ACC"] == 40.0
