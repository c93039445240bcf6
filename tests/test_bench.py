"""The benchmark (eval/bench/pipeline.py and its eval/bench_* pieces): where reports go, what they call
measured, and the mask comparison of the backbone precision check."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.bench import pipeline as bench
from eval.bench.postprocessing import postprocessing_headline
from eval.bench.precision import matched_pixel_changes, summarise_changes
from eval.bench.report import (
    DEFAULT_OUT_DIR,
    E2E_SUM,
    MEASURED,
    new_output_stem,
    output_stem,
    render_markdown,
    render_table,
)
from eval.bench.timing import timed

REPO = Path(__file__).resolve().parents[1]
KIND = "cuda" if torch.cuda.is_available() else "cpu"


def _quick_headline(monkeypatch):
    """The real headline on small attention (sides 16/8/4/2) so a test takes seconds."""

    def headline(device, threshold=1.1, num_points=16, seed=0):
        return postprocessing_headline(device, threshold, 4, seed, sides=(16, 8, 4, 2))

    monkeypatch.setattr(bench, "postprocessing_headline", headline)


# ------------------------------------------------------------------------------------- the mask comparison
def test_matched_pixel_changes_ignores_renumbering_and_counts_moved_pixels():
    a = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
    renumbered = torch.tensor([[7, 7, 3, 3], [7, 7, 3, 3], [5, 5, 5, 5]])
    same = matched_pixel_changes(a, renumbered)
    assert same == {"pixels": 12, "changed": 0, "raw_changed": 12, "segments_reference": 3, "segments_other": 3}
    moved = renumbered.clone()
    moved[0, 2] = 7  # one pixel of segment 1 joins segment 0
    moved[2, 0] = 3  # one pixel of segment 2 joins segment 1
    result = matched_pixel_changes(a, moved)
    assert result["changed"] == 2 and result["raw_changed"] == 12


def test_matched_pixel_changes_counts_an_unmatched_segment_as_changed():
    a = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [2, 2, 2, 2, 2]])  # sizes 4, 6, 5
    merged = torch.tensor([[4, 4, 4, 4, 4], [4, 4, 4, 4, 4], [9, 9, 9, 9, 9]])  # 0 and 1 merged
    result = matched_pixel_changes(a, merged)
    # 4 <-> segment 1 (6 px), 9 <-> segment 2 (5 px): the 4 px of segment 0 have no partner
    assert result["changed"] == 4
    assert result["segments_reference"] == 3 and result["segments_other"] == 2
    # and the other way round (the split side is the reference of nothing): same count
    assert matched_pixel_changes(merged, a)["changed"] == 4
    assert matched_pixel_changes(a, a)["changed"] == 0 and matched_pixel_changes(a, a)["raw_changed"] == 0
    # the identity pairing is one candidate, so matching never reports more than the raw count
    assert result["changed"] <= result["raw_changed"]


def test_matched_pixel_changes_rejects_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        matched_pixel_changes(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 5, dtype=torch.long))


def test_summarise_changes_weights_by_pixels():
    per_image = [
        {"pixels": 100, "changed": 10, "raw_changed": 50, "segments_reference": 4, "segments_other": 5},
        {"pixels": 300, "changed": 0, "raw_changed": 30, "segments_reference": 2, "segments_other": 2},
    ]
    s = summarise_changes(per_image)
    assert s["images"] == 2
    assert s["changed_fraction"] == pytest.approx(10 / 400)
    assert s["max_image_changed_fraction"] == pytest.approx(0.1)
    assert s["raw_changed_fraction"] == pytest.approx(80 / 400)
    assert s["segments_float32"] == 3 and s["segments_fast"] == 3.5


# ------------------------------------------------------------------------------------------- output paths
def test_default_output_never_names_an_existing_or_committed_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    committed = sorted((REPO / "results" / "bench").glob("*"))
    assert committed, "expected committed bench results"
    # the committed files, and a report already at this second's default name, in the working directory
    for path in committed:
        (tmp_path / "results" / "bench").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "results" / "bench" / path.name)
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    taken = DEFAULT_OUT_DIR / f"bench_{KIND}_20300102T030405Z"
    taken.parent.mkdir(parents=True)
    taken.with_name(taken.name + ".md").write_text("earlier run\n")
    stems = [new_output_stem(KIND, now=now), new_output_stem(KIND, now=now),
             new_output_stem(KIND, "postprocessing", now=now)]
    names = [s.name for s in stems]
    assert names == [f"bench_{KIND}_20300102T030405Z-1", f"bench_{KIND}_20300102T030405Z-2",
                     f"bench_{KIND}_postprocessing_20300102T030405Z"]
    for stem in stems:
        assert stem.parent == DEFAULT_OUT_DIR and not stem.is_relative_to("results")
        assert stem.with_name(stem.name + ".json").stat().st_size == 0  # reserved, empty
        assert not stem.with_name(stem.name + ".md").exists()
    assert (tmp_path / taken.with_name(taken.name + ".md")).read_text() == "earlier run\n"
    committed_names = {p.name for p in committed}
    for stem in stems:
        assert not {stem.name + ".json", stem.name + ".md"} & committed_names
    # output_stem without --out is such a new stem; with --out it is what was asked
    fresh = output_stem(None, KIND)
    assert fresh.parent == DEFAULT_OUT_DIR and fresh.name.startswith(f"bench_{KIND}_")
    assert output_stem(Path("results/bench/bench_cpu.json"), KIND) == Path("results/bench/bench_cpu")
    assert output_stem(Path("a/b.md"), KIND) == Path("a/b")
    assert output_stem(Path("a/b"), KIND) == Path("a/b")


def test_outputs_folder_is_git_ignored():
    ignored = (REPO / ".gitignore").read_text().split()
    assert f"{DEFAULT_OUT_DIR.parts[0]}/" in ignored


def test_out_naming_a_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "is a folder" in capsys.readouterr().err


def test_postprocessing_only_honours_out_and_leaves_committed_results_alone(tmp_path, monkeypatch):
    _quick_headline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "results" / "bench", tmp_path / "results" / "bench")
    before = {p.name: p.read_bytes() for p in (tmp_path / "results" / "bench").iterdir()}

    assert bench.main(["--postprocessing-only"]) == 0  # default: a new file, nothing committed touched
    after = {p.name: p.read_bytes() for p in (tmp_path / "results" / "bench").iterdir()}
    assert after == before
    (new,) = sorted((tmp_path / DEFAULT_OUT_DIR).glob("*.json"))
    assert new.name.startswith(f"bench_{KIND}_postprocessing_")
    report = json.loads(new.read_text())
    assert report["stages"] == [] and report["postprocessing"]["sides"] == [16, 8, 4, 2]
    loads = report["device"]["load_average_1m"], report["device"]["load_average_1m_end"]
    assert all(isinstance(x, float) and x >= 0 for x in loads)  # how busy the machine was, start and end
    assert new.with_suffix(".md").read_text() == render_markdown(report)

    out = tmp_path / "elsewhere" / "mine"
    assert bench.main(["--postprocessing-only", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "elsewhere" / "mine.json").read_text())["postprocessing"]["ours_s"] > 0
    assert (tmp_path / "elsewhere" / "mine.md").is_file()
    assert len(list((tmp_path / DEFAULT_OUT_DIR).glob("*.json"))) == 1


def test_out_does_not_drop_the_official_segmentor_row_unless_forced(tmp_path, monkeypatch, capsys):
    _quick_headline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(bench.OFFICIAL_ENV, raising=False)
    committed = REPO / "results" / "bench" / "bench_cpu_postprocessing.json"
    assert json.loads(committed.read_text())["postprocessing"]["official_s"] > 0
    target = tmp_path / "bench_cpu_postprocessing"
    shutil.copy(committed, target.with_suffix(".json"))
    old = committed.read_bytes()

    assert bench.main(["--postprocessing-only", "--out", str(target)]) == 2
    assert target.with_suffix(".json").read_bytes() == old
    err = capsys.readouterr().err
    assert "official TensorFlow segmentor" in err and "--force" in err
    (kept,) = (tmp_path / DEFAULT_OUT_DIR).glob("*.json")  # this run's report is not lost
    assert json.loads(kept.read_text())["postprocessing"]["official_s"] is None

    assert bench.main(["--postprocessing-only", "--out", str(target), "--force"]) == 0
    assert json.loads(target.with_suffix(".json").read_text())["postprocessing"]["official_s"] is None


# ------------------------------------------------------------------------------------ what is measured
def _stages_with_baselines(seconds: dict[str, float]) -> dict[str, bench.Stage]:
    stages = {name: bench.Stage(name, "fast", "base") for name in bench.STAGES}
    for name, s in seconds.items():
        stages[name].fast_s, stages[name].fast_images = s / 2, 1
        stages[name].baseline_s, stages[name].baseline_images = 2 * s, 2  # s per image
    return stages


def test_end_to_end_baseline_is_labelled_as_a_sum():
    seconds = {name: float(i + 1) for i, name in enumerate(bench.STAGES[:-1])}
    stages = _stages_with_baselines(seconds)
    stages["end to end"].fast_s, stages["end to end"].fast_images = 6.0, 2
    bench.label_as_sum(stages, images=3)
    row = stages["end to end"].row()
    assert row["baseline_how"] == E2E_SUM
    assert row["baseline_s_per_image"] == pytest.approx(sum(seconds.values()))  # 45 s
    assert row["ratio"] == pytest.approx(45 / 3)
    assert "sum" in row["baseline"] and "sum" in row["note"]
    assert all(stages[n].row()["baseline_how"] == MEASURED for n in bench.STAGES[:-1])
    report = {"device": {"kind": "cpu", "name": "test CPU"}, "versions": {"torch": "x"},
              "config": {"model": "m", "images": 2, "baseline_images": 1, "batch_size": 2, "workers": 1,
                         "num_points": 4, "kl_threshold": 1.1, "kmeans_n_init": 1, "image_size": 512},
              "stages": [stages[n].row() for n in bench.STAGES],
              "postprocessing": {"what": "w", "input": "i", "segments": 1, "ours_s": 1.0, "naive_s": 2.0,
                                 "ratio_vs_naive": 2.0, "agreement_vs_naive": 1.0, "official_s": None,
                                 "official_note": "skipped"}}
    md = render_markdown(report)
    e2e_line = next(line for line in md.splitlines() if line.startswith("| end to end |"))
    assert "45.0 (sum)" in e2e_line and "15.0x (sum)" in e2e_line
    aggregation_line = next(line for line in md.splitlines() if line.startswith("| aggregation |"))
    assert "(sum)" not in aggregation_line
    assert E2E_SUM in md and E2E_SUM in render_table(report)


def test_a_measured_end_to_end_baseline_is_not_called_a_sum():
    stages = _stages_with_baselines({name: 1.0 for name in bench.STAGES})
    row = stages["end to end"].row()
    assert row["baseline_how"] == MEASURED
    stages["end to end"].baseline_s = None
    assert stages["end to end"].row()["baseline_how"] == "not run"


# ------------------------------------------------------------------------------------------- the whole run
def test_bench_runs_every_stage_and_the_precision_check(tmp_path, monkeypatch):
    _quick_headline(monkeypatch)
    out = tmp_path / "run"
    argv = ["--tiny", "--images", "2", "--batch-size", "2", "--workers", "1", "--num-points", "4",
            "--kmeans-n-init", "1", "--image-size", "128", "--fast-dtype", "bfloat16", "--out", str(out)]
    assert bench.main(argv) == 0
    data = json.loads((tmp_path / "run.json").read_text())
    md = (tmp_path / "run.md").read_text()
    assert md == render_markdown(data)
    rows = {row["stage"]: row for row in data["stages"]}
    assert list(rows) == list(bench.STAGES)
    for row in rows.values():
        assert row["fast_s_per_image"] > 0 and row["baseline_s_per_image"] > 0, row
        assert row["ratio"] > 0 and np.isfinite(row["ratio"]), row
    e2e = rows["end to end"]
    if KIND == "cpu":  # CPU default: the baseline chain is not run, its stages are summed
        assert e2e["baseline_how"] == E2E_SUM and data["config"]["e2e_baseline"] == E2E_SUM
        per_stage = sum(r["baseline_s_per_image"] for name, r in rows.items() if name != "end to end")
        assert e2e["baseline_s_per_image"] == pytest.approx(per_stage)
        assert "(sum)" in next(line for line in md.splitlines() if line.startswith("| end to end |"))
    else:
        assert e2e["baseline_how"] == MEASURED
    assert data["config"]["dtype"] == "float32" and data["config"]["image_size"] == 128

    prec = data["precision"]
    assert prec["fast_dtype"] == "bfloat16" and prec["fast_dtype_reason"] == "chosen with --fast-dtype"
    assert prec["kl_threshold"] == 1.1 and prec["num_points"] == 4
    assert prec["random_weights"] is True and "RANDOM WEIGHTS" in md
    assert prec["images"] == 2 and set(prec["backbone_s_per_image"]) == {"float32", prec["fast_dtype"]}
    for summary in prec["diffseg"].values():
        assert summary["images"] == 2
        assert 0.0 <= summary["changed_fraction"] <= summary["raw_changed_fraction"] <= 1.0
        assert summary["segments_float32"] >= 1 and summary["segments_fast"] >= 1


def test_precision_only_writes_its_own_new_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--precision-only", "--images", "1", "--image-size", "128", "--num-points", "4"]
    assert bench.main(argv) == 0
    (path,) = (tmp_path / DEFAULT_OUT_DIR).glob("*.json")
    assert path.name.startswith(f"bench_{KIND}_precision_")
    report = json.loads(path.read_text())
    assert report["stages"] == [] and "postprocessing" not in report
    assert report["precision"]["images"] == 1 and report["precision"]["image_size"] == 128
    assert report["precision"]["fast_dtype"] == "float16"  # the default, on every device
    md = path.with_suffix(".md").read_text()
    assert "## Backbone precision" in md and "Post-processing" not in md


def test_make_bench_writes_no_committed_file():
    lines = (REPO / "Makefile").read_text().splitlines()
    recipe = lines[lines.index("bench: $(STAMP)") + 1]
    assert recipe.strip() == "$(PY) -m eval.bench $(BENCH_ARGS)"  # default output: a new file under outputs/
    assert bench.parse_args([]).out is None


def test_timed_runs_through_the_benchmark_timer_after_one_warm_up():
    calls = []
    threads = torch.get_num_threads()

    def work():
        calls.append(torch.get_num_threads())
        return len(calls)

    result, seconds = timed(work, repeats=3)
    assert calls == [threads] * 6  # per repeat: one untimed warm-up run and one timed run, the caller's threads
    assert result == 6 and 0 < seconds < 5
    assert torch.get_num_threads() == threads
