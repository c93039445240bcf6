"""Trustworthy numbers: a run knows its settings, refuses to mix them, never reports success on nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import (
    FAST_DIFFSEG,
    assert_multi_segment,
    compose_eval,
    run_config,
    synthetic_coco_stuff_root,
    totals,
)
from PIL import Image

from diffseg.backbone import StableDiffusionBackbone
from eval.compare import main as compare_main
from eval.data.coco_stuff import CocoStuff27
from eval.data.loader import DuplicateIdsError
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.report.tables import collect_runs, write_tables
from eval.run import NoImagesError, evaluate, identity, run_cli
from eval.run.identity import CodeVersionError, ContentMismatchError, RunMismatchError, code_version_of
from eval.run.identity import main as identity_main
from eval.run.interrupt import RunInterrupted
from eval.run.merge import MergeError, merge_runs
from eval.run.merge import main as merge_main

REPO = Path(__file__).resolve().parents[1]
FAST = FAST_DIFFSEG


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=6, seed=11)


def run(root: Path, out: Path, *extra: str) -> dict:
    return evaluate(run_config(root, out, *extra))


scores = totals


@pytest.fixture(scope="module")
def full(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, assert_multi_segment(run(root, out))  # totals that depend on the maps, not on the labels alone


def perturb_records(folder: Path, name: str = "per_image.jsonl") -> None:
    """Give the first evaluated record of ``folder`` the second one's stats (what a wrong record read would do)."""
    path = folder / name
    records = [json.loads(line) for line in path.read_text().splitlines()]
    done = [r for r in records if "methods" in r]
    assert done[0]["methods"] != done[1]["methods"]
    done[0]["methods"] = json.loads(json.dumps(done[1]["methods"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_changed_setting_in_the_same_folder_is_refused_and_old_results_untouched(root, full):
    out, result = full
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(RunMismatchError) as info:
        run(root, out, "methods.diffseg.segmenter.kl_threshold=0.5")
    message = str(info.value)
    assert "methods.diffseg.segmenter.kl_threshold: 1.1 -> 0.5" in message
    assert "new folder" in message
    with pytest.raises(RunMismatchError, match=r"model.timestep: 300 -> 200"):
        run(root, out, "model.timestep=200")
    with pytest.raises(RunMismatchError, match=r"model.head_chunk: null -> 2"):  # the chunking rounds the maps
        run(root, out, "model.head_chunk=2")
    assert (out / "metrics.json").read_bytes() == before
    # The same command again resumes: nothing recomputed, the same numbers.
    again = run(root, out)
    assert again["timing"]["images_this_invocation"] == 0
    assert scores(again) == scores(result)


def test_selection_and_speed_settings_may_differ_in_one_folder(root, full, tmp_path):
    _, result = full
    # Every image is batched as in `full` (batches of 2), so the totals may be compared exactly:
    # the CPU UNet's floats depend on which images share a batch.
    first = run(root, tmp_path, "dataset.limit=2")
    assert first["methods"]["DiffSeg"]["images"] == 2
    assert first["provenance"]["partial"] and "partial: 2 of 6 images" in first["provenance"]["notes"]
    extended = run(root, tmp_path, "num_workers=1")
    assert extended["timing"]["images_this_invocation"] == 4
    assert scores(extended) == scores(result)
    assert not extended["provenance"]["partial"]
    assert result["provenance"]["batch_sizes"] == {"2": 6}
    assert not any("batch sizes" in n for n in result["provenance"]["notes"])
    again = run(root, tmp_path, "batch_size=1")  # another batch size is accepted in the same folder
    assert again["timing"]["images_this_invocation"] == 0 and scores(again) == scores(result)


def test_a_folder_built_from_several_batch_sizes_says_so(root, tmp_path):
    # Numbers are not compared here: the CPU UNet's floats depend on which images share a batch.
    run(root, tmp_path, "dataset.limit=2", "batch_size=1")
    extended = run(root, tmp_path, "batch_size=2")
    records = [json.loads(line) for line in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert [r["batch_size"] for r in records] == [1, 1, 2, 2, 2, 2]
    assert extended["provenance"]["batch_sizes"] == {"1": 2, "2": 4}
    assert "several batch sizes: 1 (2 images), 2 (4 images)" in " ".join(extended["provenance"]["notes"])


def test_each_record_carries_its_thread_count_and_the_provenance_counts_them(root, tmp_path):
    """25.12: CPU sums depend on torch's thread count, so a folder made at several counts says so."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run(root, tmp_path, "dataset.limit=2")
        torch.set_num_threads(2)
        extended = run(root, tmp_path)
    finally:
        torch.set_num_threads(threads)
    records = [json.loads(line) for line in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in records] == [1, 1, 2, 2, 2, 2]
    assert extended["provenance"]["threads"] == {"1": 2, "2": 4}
    assert "several CPU thread counts: 1 (2 images), 2 (4 images)" in " ".join(extended["provenance"]["notes"])


def test_records_from_an_older_version_are_refused(root, tmp_path):
    (tmp_path / "per_image.jsonl").write_text('{"id": "x", "methods": {}}\n')
    with pytest.raises(RunMismatchError, match="older version"):
        run(root, tmp_path)


def test_zero_images_is_an_error_and_writes_nothing(root, tmp_path):
    with pytest.raises(NoImagesError, match="no image was evaluated"):
        run(root, tmp_path / "a", "dataset.limit=0")
    assert not (tmp_path / "a" / "metrics.json").exists()


def test_every_image_skipped_is_an_error_and_max_skipped_fails_the_run(tmp_path):
    data = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(data, num_images=3, seed=2)
    labels = {i: (data / "annotation_val2017" / f"{i}.png").read_bytes() for i in ids}
    for i in ids:  # every label the wrong size
        Image.fromarray(np.zeros((5, 7), np.uint8)).save(data / "annotation_val2017" / f"{i}.png")
    with pytest.raises(NoImagesError, match="3 skipped"):
        run(data, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()
    # One image fixed: 2 of 3 skipped is above max_skipped=0.5 ...
    (data / "annotation_val2017" / f"{ids[0]}.png").write_bytes(labels[ids[0]])
    with pytest.raises(NoImagesError, match="max_skipped=0.5"):
        run(data, tmp_path / "out", "max_skipped=0.5")
    # ... and below max_skipped=0.7 the run succeeds, saying how many were skipped.
    result = run(data, tmp_path / "out", "max_skipped=0.7")
    assert result["methods"]["DiffSeg"]["images"] == 1 and len(result["skipped"]) == 2
    assert "partial: 1 of 3 images, 2 skipped" in result["provenance"]["notes"]


def test_sigterm_finishes_the_batch_and_the_resume_equals_an_uninterrupted_run(root, full, tmp_path, monkeypatch):
    _, clean = full
    original = StableDiffusionBackbone.unet_pass
    calls = {"n": 0}

    def preempted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the first batch is being computed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionBackbone, "unet_pass", preempted)
    with pytest.raises(RunInterrupted) as info:
        run(root, tmp_path)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert calls["n"] == 1  # stopped between batches, after recording the first one
    assert len((tmp_path / "per_image.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(StableDiffusionBackbone, "unet_pass", original)
    twin = tmp_path.parent / f"{tmp_path.name}_twin"
    shutil.copytree(tmp_path, twin)
    resumed = run(root, tmp_path)
    assert resumed["timing"]["images_this_invocation"] == 4
    assert scores(resumed) == scores(clean)
    # Twin: the resume replays the records it reads; one wrong record read changes the totals.
    perturb_records(twin)
    assert scores(run(root, twin)) != scores(clean)
    log = (tmp_path / "run.log").read_text()
    assert "run folder:" in log and "6 of 6 selected images evaluated" in log


def test_cli_sigterm_exits_143_and_the_printed_command_resumes_a_folder_with_space_and_unicode(tmp_path):
    data = tmp_path / "coco"
    write_synthetic_coco_stuff(data, num_images=16, seed=4)
    out = tmp_path / "my runs" / "résultat ü"
    cmd = [sys.executable, "-m", "eval.run", *FAST, "batch_size=1", f"dataset.root={data}",
           f'hydra.run.dir="{out}"']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    records = out / "per_image.jsonl"
    while time.time() < deadline and not (records.exists() and records.stat().st_size):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    done = len(records.read_text().splitlines())
    assert 1 <= done < 16
    assert not (out / "metrics.json").exists()
    printed = err.split("resume with: ", 1)[1].strip().splitlines()[0]
    argv = shlex.split(printed)  # as a POSIX shell reads it
    assert argv[0] in ("python", sys.executable) and argv[1:3] == ["-m", "eval.run"]  # the interpreter that ran it
    assert f'hydra.run.dir="{out}"' in argv
    resumed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)  # exactly as printed
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((out / "metrics.json").read_text())
    assert result["methods"]["DiffSeg"]["images"] == 16
    assert result["timing"]["images_this_invocation"] == 16 - done


def test_cli_mismatch_exits_2_and_zero_images_exits_1(root, full, tmp_path):
    out, _ = full
    base = [sys.executable, "-m", "eval.run", *FAST, f"dataset.root={root}"]
    mismatch = subprocess.run([*base, f"hydra.run.dir={out}", "model.noise=true"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert mismatch.returncode == 2 and "model.noise: false -> true" in mismatch.stderr
    empty = subprocess.run([*base, f"hydra.run.dir={tmp_path}", "dataset.limit=0"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode == 1 and "no image was evaluated" in empty.stderr


def test_identity_cli_gives_one_folder_per_setting(root, capsys):
    args = [*FAST, f"dataset.root={root}", "--prefix", "outputs/x"]
    assert identity_main(args) == 0
    a = capsys.readouterr().out.strip()
    assert identity_main([*args, "dataset.limit=3", "batch_size=1"]) == 0
    assert capsys.readouterr().out.strip() == a  # selection and speed: same folder
    assert identity_main([*args, "methods.diffseg.segmenter.kl_threshold=0.5"]) == 0
    b = capsys.readouterr().out.strip()
    assert a.startswith("outputs/x/") and b.startswith("outputs/x/") and a != b


@pytest.fixture(scope="module")
def shards(root, tmp_path_factory):
    """Two shards at ``batch_size=1``: a shard's batches hold other images than one run's at batch_size=2, and
    the CPU UNet's floats depend on them (about 1e-6, enough to move a segment boundary)."""
    base = tmp_path_factory.mktemp("shards")
    made = {}
    for name, extra in [("s0", ["dataset.shard=0/2"]), ("s1", ["dataset.shard=1/2"]),
                        ("s1_kl05", ["dataset.shard=1/2", "methods.diffseg.segmenter.kl_threshold=0.5"])]:
        run(root, base / name, "batch_size=1", *extra)
        made[name] = base / name
    return made


def test_merge_equals_one_run_and_records_shard_versions(root, shards, tmp_path):
    clean = assert_multi_segment(run(root, tmp_path / "one_run", "batch_size=1"))
    merged = merge_runs([shards["s0"], shards["s1"]], tmp_path / "m")
    assert scores(merged) == scores(clean)
    # Twin: the merge sums the records it reads; one wrong record in a shard changes the totals.
    wrong = tmp_path / "s1_wrong"
    shutil.copytree(shards["s1"], wrong)
    perturb_records(wrong)
    assert scores(merge_runs([shards["s0"], wrong], tmp_path / "m_wrong")) != scores(clean)
    assert not merged["provenance"]["partial"]
    assert [m["shard"] for m in merged["merged_from"]] == ["0/2", "1/2"]
    assert all("torch" in m["versions"] for m in merged["merged_from"])


def test_merge_refuses_mixed_settings_incomplete_and_duplicate_sets(shards, tmp_path):
    with pytest.raises(MergeError, match=r"kl_threshold: 1.1 -> 0.5"):
        merge_runs([shards["s0"], shards["s1_kl05"]], tmp_path / "a")
    with pytest.raises(MergeError, match="missing 1/2"):
        merge_runs([shards["s0"]], tmp_path / "b")
    with pytest.raises(MergeError, match="given twice"):
        merge_runs([shards["s1"], shards["s1"], shards["s0"]], tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert merge_main([str(shards["s0"]), "--out", str(tmp_path / "d")]) == 2
    partial = merge_runs([shards["s0"]], tmp_path / "e", allow_partial=True)
    assert partial["provenance"]["partial"]
    assert "partial: 3 of 6 images, incomplete shard set" in partial["provenance"]["notes"]
    md = (write_tables(collect_runs([tmp_path / "e"]), tmp_path / "t")[0]).read_text()
    assert "3 of 6 images" in md


def test_tables_mark_random_weights_and_non_default_settings_without_any_flag(root, full, tmp_path):
    out, _ = full
    other = run(root, tmp_path / "kl05", "methods.diffseg.segmenter.kl_threshold=0.5", "dataset.size=512",
                "dataset.limit=1")
    assert other["provenance"]["non_default"]["DiffSeg"]["segmenter.kl_threshold"] == [0.5, 1.1]
    write_tables(collect_runs([out, tmp_path / "kl05"]), tmp_path / "tables")
    md = (tmp_path / "tables" / "coco_stuff27.md").read_text()
    assert md.startswith("**RANDOM WEIGHTS")
    assert "SYNTHETIC DATA" in md.splitlines()[0]
    rows = [line for line in md.splitlines() if line.startswith("| DiffSeg")]
    assert len(rows) == 2 and all("(random weights)" in r for r in rows)
    assert any("kl_threshold=0.5" in r for r in rows) and any("dataset.size=128" in r for r in rows)
    assert "72.5" not in md  # the paper's SD 1.4 claim is never quoted beside a tiny-random model's rows
    csv = (tmp_path / "tables" / "coco_stuff27.csv").read_text()
    assert csv.splitlines()[0].startswith("method,banner,") and "RANDOM WEIGHTS" in csv.splitlines()[1]
    # With an eval.compare output beside the tables, the main table shows its bootstrap intervals,
    # labelled with the compare output's level; too few images give "n/a (k images)".
    images = len(json.loads((out / "metrics.json").read_text())["image_ids"])
    assert compare_main([str(out), "--out", str(tmp_path / "t2" / "compare"), "--resamples", "200"]) == 0
    write_tables(collect_runs([out]), tmp_path / "t2")
    md2 = (tmp_path / "t2" / "coco_stuff27.md").read_text()
    assert "mIoU 95% CI" in md2 and f"n/a ({images} images)" in md2
    assert compare_main([str(out), "--out", str(tmp_path / "t2" / "compare"), "--resamples", "200",
                         "--permutations", "200", "--confidence", "0.9", "--min-images", "1",
                         "--min-class-images", "1"]) == 0  # 1: no class with ground truth is rare (the classes
    # only predicted, in no image's ground truth, which several segments per image give, are not counted)
    ci = json.loads((tmp_path / "t2" / "compare" / "compare.json").read_text())["methods"]
    (low, high) = next(iter(ci.values()))["miou"][1:3]
    write_tables(collect_runs([out]), tmp_path / "t2")
    md2 = (tmp_path / "t2" / "coco_stuff27.md").read_text()
    assert "mIoU 90% CI" in md2 and "95% CI" not in md2 and f"[{low:.1f}, {high:.1f}]" in md2
    assert json.loads((out / "metrics.json").read_text())["provenance"]["random_weights"] is True


def test_a_folder_without_any_record_takes_the_new_settings(root, tmp_path):
    with pytest.raises(NoImagesError):
        run(root, tmp_path, "dataset.limit=0")  # writes run.json, records nothing
    first = json.loads((tmp_path / "run.json").read_text())["fingerprint"]
    result = run(root, tmp_path, "dataset.limit=1", "methods.diffseg.segmenter.kl_threshold=0.9")
    assert result["provenance"]["fingerprint"] != first
    assert json.loads((tmp_path / "run.json").read_text())["fingerprint"] == result["provenance"]["fingerprint"]
    with pytest.raises(RunMismatchError):  # now it holds a record: other settings are refused again
        run(root, tmp_path, "dataset.limit=1")


def test_a_resume_under_another_code_version_exits_2_unless_allowed(root, full, tmp_path, monkeypatch, capsys):
    _, clean = full
    base = identity.code_version()
    old = {**base, "git": "a" * 40, "dirty": False, "id": "a" * 12}
    new = {**base, "git": "a" * 40, "dirty": True, "diff_sha256": "b" * 64, "id": "a" * 12 + "+diff." + "b" * 12}
    monkeypatch.setattr(identity, "code_version", lambda: dict(old))
    run(root, tmp_path, "dataset.limit=2")
    monkeypatch.setattr(identity, "code_version", lambda: dict(new))  # same commit, another uncommitted diff
    with pytest.raises(CodeVersionError) as info:
        run(root, tmp_path)
    message = str(info.value)
    assert f"made by code version {'a' * 12}; this is {'a' * 12}+diff.{'b' * 12}" in message
    assert "allow_code_change=true" in message
    cfg = compose_eval([*FAST, f"dataset.root={root}", f"paths.output_dir={tmp_path}"])
    assert run_cli(cfg) == 2 and "code version" in capsys.readouterr().err
    assert len((tmp_path / "per_image.jsonl").read_text().splitlines()) == 2  # nothing appended
    mixed = run(root, tmp_path, "allow_code_change=true")
    assert scores(mixed) == scores(clean)
    assert mixed["provenance"]["code_versions"] == {"a" * 12: 2, f"{'a' * 12}+diff.{'b' * 12}": 4}
    assert any(n.startswith("mixed code versions: ") for n in mixed["provenance"]["notes"])
    records = [json.loads(line) for line in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert [r["code"] for r in records] == ["a" * 12] * 2 + [new["id"]] * 4
    write_tables(collect_runs([tmp_path]), tmp_path / "tables")
    rows = [line for line in (tmp_path / "tables" / "coco_stuff27.md").read_text().splitlines()
            if line.startswith("| DiffSeg")]
    assert len(rows) == 1 and "(mixed code versions)" in rows[0]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True, env=env).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_code_version_names_the_commit_and_hashes_the_uncommitted_diff(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    commit = git(tmp_path, "rev-parse", "HEAD").strip()
    clean = code_version_of(tmp_path)
    assert clean["git"] == commit and clean["dirty"] is False and clean["id"] == commit[:12]
    (tmp_path / "a.py").write_text("x = 2\n")
    two = code_version_of(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    three = code_version_of(tmp_path)
    assert two["dirty"] and two["id"].startswith(commit[:12] + "+diff.")
    assert two["id"] != three["id"]  # the same commit with another diff is another version
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version_of(tmp_path)["id"] == two["id"]


def test_another_dataset_with_the_same_ids_is_refused_in_the_folder(root, tmp_path, capsys):
    other = tmp_path / "other"
    assert write_synthetic_coco_stuff(other, num_images=6, seed=12) == CocoStuff27(root, size=128).all_ids
    out = tmp_path / "run"
    run(root, out, "dataset.limit=4")
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert all(r["root"] == str(root) and len(r["files"]["image"]) == 64 for r in records)
    with pytest.raises(ContentMismatchError) as info:
        run(other, out)
    message = str(info.value)
    assert f"image {records[0]['id']}" in message and str(root) in message and str(other) in message
    cfg = compose_eval([*FAST, f"dataset.root={other}", f"paths.output_dir={out}"])
    assert run_cli(cfg) == 2 and "other image and label files" in capsys.readouterr().err
    assert len((out / "per_image.jsonl").read_text().splitlines()) == 4
    # The same files under another root (a moved dataset) resume.
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert run(moved, out)["timing"]["images_this_invocation"] == 2


def test_a_duplicated_id_is_refused_before_any_work(root, tmp_path, capsys):
    data = tmp_path / "coco"
    shutil.copytree(root, data)
    listing = data / "Coco164kFull_Stuff_Coarse_7.txt"
    ids = listing.read_text().split()
    listing.write_text("\n".join([*ids, ids[2]]) + "\n")
    with pytest.raises(DuplicateIdsError, match=rf"duplicate image ids in {listing}: {ids[2]} \(x2\)"):
        CocoStuff27(data, size=128)
    out = tmp_path / "run"
    cfg = compose_eval([*FAST, f"dataset.root={data}", f"paths.output_dir={out}"])
    assert run_cli(cfg) == 2
    assert f"{ids[2]} (x2)" in capsys.readouterr().err
    assert not (out / "run.json").exists() and not (out / "per_image.jsonl").exists()
    assert identity_main([*FAST, f"dataset.root={data}", "--prefix", "x"]) == 2


def test_merge_never_writes_into_an_input_or_over_results_without_force(shards, tmp_path):
    s0, s1 = shards["s0"], shards["s1"]
    before = {p.name: p.read_bytes() for p in s0.iterdir() if p.is_file()}
    with pytest.raises(MergeError, match="is one of the shards"):
        merge_runs([s0, s1], s0)
    with pytest.raises(MergeError, match="is one of the shards"):
        merge_runs([s0, s1], s1, force=True)  # --force never touches an input
    assert merge_main([str(s0), str(s1), "--out", str(s0), "--force"]) == 2
    assert {p.name: p.read_bytes() for p in s0.iterdir() if p.is_file()} == before
    out = tmp_path / "merged"
    first = merge_runs([s0, s1], out)
    with pytest.raises(MergeError, match=r"already holds results \(metrics.json, per_image.jsonl, run.json\)"):
        merge_runs([s0, s1], out)
    (out / "per_image.rank1.jsonl").write_text('{"id": "stale"}\n')
    again = merge_runs([s0, s1], out, force=True)
    assert again["methods"] == first["methods"] and not (out / "per_image.rank1.jsonl").exists()
    assert first["provenance"]["code_versions"] == {identity.code_version()["id"]: 6}
