"""A run folder under faults: held by another run, read-only, a full disk, a damaged or edited run.json."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_compose import FAST_DIFFSEG, run_config, synthetic_coco_stuff_root, totals
from omegaconf import OmegaConf

from eval.run import evaluate, hydra_quote, run_cli, run_folder
from eval.run.identity import RunMismatchError
from eval.run.run_folder import CheckRunFolder, FolderLock, FolderLockedError, RunFolderError

REPO = Path(__file__).resolve().parents[1]
FAST = FAST_DIFFSEG


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=4, seed=31)


cfg = run_config


scores = totals


@pytest.fixture(scope="module")
def clean(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, evaluate(cfg(root, out))


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(root, tmp_path, capsys):
    with FolderLock(tmp_path):
        with pytest.raises(FolderLockedError) as info:
            evaluate(cfg(root, tmp_path))
        message = str(info.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in message and "in use" in message
        assert run_cli(cfg(root, tmp_path)) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
        assert not (tmp_path / "per_image.jsonl").exists() and not (tmp_path / "run.json").exists()
    # Released: the folder is free again.
    assert evaluate(cfg(root, tmp_path, "dataset.limit=1"))["methods"]["DiffSeg"]["images"] == 1


def test_the_lock_holds_across_processes_and_the_cli_exits_2(root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):
        proc = subprocess.run([sys.executable, "-m", "eval.run", *FAST, f"dataset.root={root}",
                               f"hydra.run.dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"is in use by another run (pid {os.getpid()} on host {socket.gethostname()}" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "per_image.jsonl").exists()


def test_an_unwritable_folder_is_one_line_and_exit_2(root, tmp_path, monkeypatch, capsys):
    def read_only(path, flags, mode=0o777):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(run_folder, "_open_lock_file", read_only)
    assert run_cli(cfg(root, tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"cannot write in the run folder {tmp_path} (Permission denied)" in err and "hydra.run.dir" in err
    assert not (tmp_path / "run.json").exists()


def test_the_hydra_callback_stops_before_hydra_writes_into_an_unwritable_folder(tmp_path, monkeypatch, capsys):
    def denied(folder):
        raise RunFolderError(f"cannot write in the run folder {folder} (Read-only file system): make it writable")

    monkeypatch.setattr(run_folder, "check_writable", denied)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "x")}, "sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit) as info:
        CheckRunFolder().on_run_start(config)
    assert info.value.code == 2
    assert f"error: cannot write in the run folder {tmp_path / 'x'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        CheckRunFolder().on_multirun_start(config)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_really_refused_by_the_cli(root, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "eval.run", *FAST, f"dataset.root={root}",
                               f"hydra.run.dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        out.chmod(0o755)
    assert proc.returncode == 2 and f"cannot write in the run folder {out}" in proc.stderr
    assert "Traceback" not in proc.stderr and list(out.iterdir()) == []


def failing_fsync(monkeypatch, is_target, after: int = 0):
    """Make ``os.fsync`` raise ENOSPC on the files ``is_target(fd)`` picks, after ``after`` successful calls."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        if is_target(fd):
            calls["n"] += 1
            if calls["n"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def same_file(fd: int, path: Path) -> bool:
    return path.exists() and os.path.samestat(os.fstat(fd), os.stat(path))


def test_a_full_disk_stops_with_one_line_keeps_whole_records_and_resumes(root, clean, tmp_path, monkeypatch, capsys):
    records = tmp_path / "per_image.jsonl"
    failing_fsync(monkeypatch, lambda fd: same_file(fd, records), after=1)  # the second batch's append fails
    assert run_cli(cfg(root, tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"No space left on device writing {records}" in err
    assert "free space" in err and "run the same command again" in err and "Traceback" not in err
    lines = records.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["methods"] for line in lines)  # the failed batch cut back
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.undo()
    resumed = evaluate(cfg(root, tmp_path))
    assert resumed["timing"]["images_this_invocation"] == 2 and scores(resumed) == scores(clean[1])


def test_a_full_disk_while_writing_metrics_leaves_the_old_file_whole(root, tmp_path, monkeypatch, capsys):
    import diffseg.atomic

    evaluate(cfg(root, tmp_path, "dataset.limit=2"))
    before = (tmp_path / "metrics.json").read_bytes()
    temps: list[Path] = []
    real_create = diffseg.atomic._create_temp

    def create(path):
        fd, tmp = real_create(path)
        if path.name == "metrics.json":
            temps.append(tmp)
        return fd, tmp

    monkeypatch.setattr(diffseg.atomic, "_create_temp", create)
    failing_fsync(monkeypatch, lambda fd: any(same_file(fd, t) for t in temps))
    assert run_cli(cfg(root, tmp_path, "dataset.limit=2")) == 2
    assert f"No space left on device writing {tmp_path / 'metrics.json'}" in capsys.readouterr().err
    assert temps and (tmp_path / "metrics.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def done_folder(root, tmp_path):
    out = tmp_path / "done"
    evaluate(cfg(root, out, "dataset.limit=2"))
    return out


def test_an_invalid_run_json_is_one_line_and_exit_2(root, done_folder, capsys):
    (done_folder / "run.json").write_text('{"fingerprint": "abc", "settings": {')
    records = (done_folder / "per_image.jsonl").read_bytes()
    assert run_cli(cfg(root, done_folder, "dataset.limit=2")) == 2
    err = capsys.readouterr().err
    assert f"{done_folder / 'run.json'} is not valid JSON" in err and "Restore it" in err
    assert "Traceback" not in err and (done_folder / "per_image.jsonl").read_bytes() == records


def test_an_edited_run_json_is_caught_by_its_own_fingerprint(root, done_folder):
    path = done_folder / "run.json"
    content = json.loads(path.read_text())
    # Claim the results were made at another threshold, fingerprint kept: resuming at that threshold
    # would otherwise mix results of two thresholds.
    content["settings"]["methods"]["diffseg"]["segmenter"]["kl_threshold"] = 0.5
    path.write_text(json.dumps(content))
    with pytest.raises(RunMismatchError, match=r"run.json was edited: its settings and data give fingerprint"):
        evaluate(cfg(root, done_folder, "dataset.limit=2", "methods.diffseg.segmenter.kl_threshold=0.5"))
    with pytest.raises(RunMismatchError, match="was edited"):
        evaluate(cfg(root, done_folder, "dataset.limit=2"))


@pytest.mark.parametrize("path", ["/tmp/plain-run_1.2/x", "/tmp/a b/ü", "/tmp/it's", 'q"uote', "C:\\dir\\",
                                  "/t/${x}", "/t/a=b,c [1]", "/t/~u", "/t/日本語"])
def test_hydra_quote_round_trips_through_hydras_override_parser(path):
    override = OverridesParser.create().parse_override(f"hydra.run.dir={hydra_quote(path)}")
    assert OmegaConf.create({"d": override.value()}).d == path
