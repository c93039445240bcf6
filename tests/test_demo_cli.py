"""`python -m eval.demo`: a fresh start deletes only the demo's own run folder, refuses bad settings before
writing anything, prints its main table and banner, shows progress per image and lists what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra_compose import compose_eval

import diffseg.backbone
from eval import demo
from eval.data.base import DatasetNotFoundError
from eval.instantiate import build_dataset

REPO = Path(__file__).resolve().parents[1]
# A fast demo: 128 px (16 x 16 attention), 2 images; everything else as `make demo` runs it.
FAST = ["dataset.size=128", "model.size=128", "grid_images=1"]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (folders as b"<dir>")."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def _demo_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "eval.demo", "--data", str(tmp_path / "data"), "--outputs",
               str(tmp_path / "out"), "--results", str(tmp_path / "res"), *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("images", ["0", "13", "-1"])
def test_demo_refuses_an_image_count_outside_its_ids_with_one_line(tmp_path, images):
    done = _demo_cli(tmp_path, "--images", images)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--images" in lines[0] and "[1, 12]" in lines[0] and images in lines[0]
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data, run folder or results


def test_demo_refuses_a_run_folder_it_did_not_make_and_changes_nothing(tmp_path):
    run = tmp_path / "out" / demo.RUN_NAME
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"real": "run"}')
    (tmp_path / "out" / "sentinel.txt").write_text("mine")
    before = _tree(tmp_path)
    done = _demo_cli(tmp_path, "--images", "1")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run) in lines[0] and "not made by the demo" in lines[0]
    assert _tree(tmp_path) == before


def test_demo_refuses_data_that_is_not_its_synthetic_root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpg").write_bytes(b"a real file")
    before = _tree(tmp_path)
    assert demo.main(["--data", str(tmp_path / "data"), "--outputs", str(tmp_path / "out"),
                      "--results", str(tmp_path / "res"), "--images", "1"]) == 2
    assert _tree(tmp_path) == before


def test_a_fresh_demo_start_deletes_only_the_demos_own_run_folder(tmp_path, capsys, monkeypatch):
    """--outputs naming a folder of real runs: only <outputs>/coco_stuff27 (the demo's, marked) is replaced."""
    passes = []
    real_pass = diffseg.backbone.StableDiffusionBackbone.unet_pass

    def counted(self, images, *args, **kwargs):
        passes.append(images.shape[0])
        return real_pass(self, images, *args, **kwargs)

    monkeypatch.setattr(diffseg.backbone.StableDiffusionBackbone, "unet_pass", counted)
    out = tmp_path / "outputs"
    real = out / "coco_stuff27_real" / "abc123"
    real.mkdir(parents=True)
    (real / "metrics.json").write_text('{"a real": "run"}')
    (out / "sentinel.txt").write_text("keep me")
    old_demo = out / demo.RUN_NAME
    old_demo.mkdir()
    (old_demo / demo.DEMO_MARKER).write_text("made by the demo")
    (old_demo / "stale.txt").write_text("from an earlier demo")
    written = demo.run_demo(tmp_path / "data", out, tmp_path / "res", 2, fresh=True, overrides=FAST)

    assert (out / "sentinel.txt").read_text() == "keep me"
    assert (real / "metrics.json").read_text() == '{"a real": "run"}'
    assert not (old_demo / "stale.txt").exists() and (old_demo / "metrics.json").is_file()
    assert (old_demo / demo.DEMO_MARKER).is_file()  # the next fresh start may delete it again
    # one run, one backbone pass per image (the KL sweep reads the same attention)
    assert sum(passes) == 2 and len(passes) == 2
    assert {p.name for p in written} >= {"coco_stuff27.md", "README.md", "qualitative_demo.png", "metrics.json"}
    assert any(p.name.startswith("ablation_") and p.suffix == ".png" for p in written)  # the sweep figure
    # what it printed: the banner, the main table (every main method), and every file it wrote
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.out
    for method in ("DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"):
        assert f"| {method} " in captured.out
    listing = demo.file_listing(written)
    every = sorted(p for root in (tmp_path / "data", old_demo, tmp_path / "res") for p in root.rglob("*")
                   if p.is_file())
    assert sorted(written) == every  # every file under the three folders is one it names
    assert all(any(line == str(p) or (line.startswith(str(p.parent / "*")) and p.suffix in line)
                   for line in listing) for p in written)
    # the progress bar moved with the first image (batch size 1), not after a batch of 4
    assert " 1/2 " in captured.err


def test_demo_main_lists_what_it_wrote(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: [tmp_path / "a.md", *[tmp_path / "m" / f"{i}.png"
                                                                                for i in range(6)]])
    assert demo.main(["--data", str(tmp_path / "d"), "--outputs", str(tmp_path / "o"), "--results",
                      str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "wrote 7 files" in out and f"  {tmp_path / 'a.md'}\n" in out
    assert f"  {tmp_path / 'm' / '*.png'}  (6 files)\n" in out


def test_a_missing_demo_dataset_says_make_demo(tmp_path):
    cfg = compose_eval(["experiment=demo", f"dataset.root={tmp_path / 'none'}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(cfg.dataset)
    message = str(info.value)
    assert "`make demo`" in message and "data-coco" not in message and str(tmp_path / "none") in message


def test_the_demo_run_shows_progress_per_image_and_holds_the_sweep(tmp_path):
    cfg = compose_eval([f"experiment={demo.EXPERIMENT}", f"paths.output_dir={tmp_path}"])
    assert cfg.batch_size == 1 and cfg.progress
    tagged = [m for m in cfg.methods.values() if m is not None and m.ablation is not None]
    assert sorted(m.ablation.value for m in tagged) == [0.5, 0.7, 0.9, 1.1, 1.3]
    assert {m.name for m in cfg.methods.values() if m is not None and m.ablation is None} == {
        "DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"}
