"""Refused runs and merges change nothing; shards of different data are never merged; merged folders keep masks.

Each refusal is checked on the exit status, the one line it prints and a snapshot of the
folder (tree, bytes and modification times) taken before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra_compose import run_config, synthetic_coco_stuff_root, totals
from PIL import Image

import eval.run.merge as merge_module
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.rescore import rescore
from eval.run import evaluate, run_cli
from eval.run.coco_results import mask_to_records
from eval.run.mask_files import MASK_DIR, load_saved_masks, read_saved_mask
from eval.run.merge import MergeError, merge_runs
from eval.run.merge import main as merge_main
from eval.run.run_folder import FolderLock
from eval.spec import SettingError

REPO = Path(__file__).resolve().parents[1]
# DiffSeg alone on 128 px images, tiny backbone with sharpened attention and a lower merge threshold:
# several segments per image (asserted where a total must depend on the masks), a few seconds per run.
FAST = ["experiment=coco_stuff27_diffseg", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0",
        "progress=false", "device=cpu", "grid_images=0", "model.backbone.attention_scale=5.0",
        "methods.diffseg.segmenter.kl_threshold=0.5"]


def cfg(root: Path, out: Path, *extra: str):
    return run_config(root, out, *extra, fast=FAST)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: files by bytes and modification time, folders by name."""
    out: dict[str, tuple] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = ("dir",) if path.is_dir() else (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eval.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=4, seed=31)


@pytest.fixture(scope="module")
def other_root(root, tmp_path_factory) -> Path:
    """The same ids and layout as ``root``, other pixels in every image."""
    folder = tmp_path_factory.mktemp("coco_other") / "coco"
    shutil.copytree(root, folder)
    for path in sorted((folder / "val2017").glob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(255 - pixels).save(path, quality=95)
    return folder


@pytest.fixture(scope="module")
def full(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, evaluate(cfg(root, out, "batch_size=1"))  # batch 1 everywhere: shards batch other images together


@pytest.fixture(scope="module")
def png_shards(root, tmp_path_factory):
    base = tmp_path_factory.mktemp("png_shards")
    for i in range(2):
        evaluate(cfg(root, base / f"s{i}", f"dataset.shard={i}/2", "save_masks=png", "batch_size=1"))
    return [base / "s0", base / "s1"]


# --------------------------------------------------------------- 25.3: merge checks the data and carries the masks
def test_merge_refuses_shards_of_different_data_and_writes_nothing(root, other_root, png_shards, tmp_path, capsys):
    mixed = tmp_path / "s1_other"
    evaluate(cfg(other_root, mixed, "dataset.shard=1/2", "save_masks=png"))
    before = {d: snapshot(d) for d in (png_shards[0], mixed)}
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match="shards of different data are never merged"):
        merge_runs([png_shards[0], mixed], out)
    assert merge_main([str(png_shards[0]), str(mixed), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "made from other image files" in line and str(mixed) in line
    assert not out.exists() and {d: snapshot(d) for d in before} == before
    # Neither root readable here: nothing shows the shards hold the same data, so no merge.
    hidden = [root.with_name(root.name + "_moved"), other_root.with_name("moved")]
    root.rename(hidden[0])
    other_root.rename(hidden[1])
    try:
        with pytest.raises(MergeError, match="none of which can be read here"):
            merge_runs([png_shards[0], mixed], out)
    finally:
        hidden[0].rename(root)
        hidden[1].rename(other_root)
    assert not out.exists()


def test_merge_equals_one_run_carries_png_masks_and_rescores(full, png_shards, tmp_path):
    _, clean = full
    assert clean["methods"]["DiffSeg"]["mean_segments"] >= 3  # the totals depend on the masks
    out = tmp_path / "merged"
    merged = merge_runs(png_shards, out)
    assert totals(merged) == totals(clean)
    for key in ("image_list", "threads"):  # the shards' provenance carries over
        assert merged["provenance"][key] == clean["provenance"][key]
    assert merged["provenance"]["image_list"]["count"] == 4
    ids = merged["image_ids"]
    assert len(ids) == 4
    for image_id in ids:
        source = next(d for d in png_shards if (d / MASK_DIR / "DiffSeg" / f"{image_id}.png").exists())
        assert (out / MASK_DIR / "DiffSeg" / f"{image_id}.png").read_bytes() == \
            (source / MASK_DIR / "DiffSeg" / f"{image_id}.png").read_bytes()
    assert sorted(p.stem for p in (out / MASK_DIR / "DiffSeg").iterdir()) == ids
    again = rescore(out, "diffseg", tmp_path / "rescored")  # reads the merged folder's masks
    assert totals(again) == totals(merged)


def test_merge_totals_follow_the_records_it_reads(png_shards, tmp_path, monkeypatch):
    """Twin of the equality test: a changed record read from a shard changes the merged totals."""
    honest = merge_runs(png_shards, tmp_path / "a")
    real = merge_module.load_run_records

    def perturbed(folder):
        records = real(folder)
        first = records[sorted(records)[0]]
        stats = first["methods"]["DiffSeg"]
        stats["tp"] = [t + 1 for t in stats["tp"]]
        return records

    monkeypatch.setattr(merge_module, "load_run_records", perturbed)
    changed = merge_runs(png_shards, tmp_path / "b")
    assert totals(changed) != totals(honest)
    assert sum(changed["methods"]["DiffSeg"]["tp"]) == sum(honest["methods"]["DiffSeg"]["tp"]) + 2 * 27


def test_merge_carries_coco_masks(tmp_path):
    root = tmp_path / "coco"
    write_synthetic_coco_stuff(root, num_images=2, seed=7)
    shards = [tmp_path / f"c{i}" for i in range(2)]
    for i, out in enumerate(shards):
        evaluate(cfg(root, out, f"dataset.shard={i}/2", "save_masks=coco"))
    merged = merge_runs(shards, tmp_path / "merged")
    kind, results = load_saved_masks(tmp_path / "merged", "DiffSeg")
    assert kind == "coco" and sorted(results.image_ids) == merged["image_ids"]
    for out in shards:
        shard_kind, shard_masks = load_saved_masks(out, "DiffSeg")
        for image_id in shard_masks.image_ids:
            assert np.array_equal(read_saved_mask(kind, results, image_id),
                                  read_saved_mask(shard_kind, shard_masks, image_id))
    # Shards that saved masks differently are not merged (the merged folder would lack some).
    plain = tmp_path / "c1_plain"
    evaluate(cfg(root, plain, "dataset.shard=1/2"))
    with pytest.raises(MergeError, match="saved masks differently"):
        merge_runs([shards[0], plain], tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


# --------------------------------------------------------------- 25.13b: a stale COCO part line never wins
def test_a_resumed_coco_run_never_takes_a_stale_rank_part(root, tmp_path):
    clean = tmp_path / "clean"
    evaluate(cfg(root, clean, "dataset.limit=3", "batch_size=1", "save_masks=coco"))
    out = tmp_path / "resumed"
    evaluate(cfg(root, out, "dataset.limit=2", "batch_size=1", "save_masks=coco"))
    third = json.loads((clean / "metrics.json").read_text())["image_ids"]
    done = set(json.loads((out / "metrics.json").read_text())["image_ids"])
    (stale_id,) = [i for i in third if i not in done]
    # A rank of a torchrun resume wrote this image's masks and was killed before appending its records.
    stale_mask = np.indices((128, 128)).sum(0) % 2  # a checkerboard no segmenter gives
    stale = {"image_id": stale_id, "records": mask_to_records(stale_mask, stale_id, {0: 0, 1: 0})}
    (out / MASK_DIR / "DiffSeg.rank1.coco.jsonl").write_text(json.dumps(stale) + "\n")
    evaluate(cfg(root, out, "dataset.limit=3", "batch_size=1", "save_masks=coco"))
    kind, clean_masks = load_saved_masks(clean, "DiffSeg")
    _, resumed_masks = load_saved_masks(out, "DiffSeg")
    expected = read_saved_mask(kind, clean_masks, stale_id)
    assert not np.array_equal(expected, stale_mask)
    assert np.array_equal(read_saved_mask(kind, resumed_masks, stale_id), expected)
    assert stale_id not in (out / MASK_DIR / "DiffSeg.rank1.coco.jsonl").read_text()


# --------------------------------------------------------------- 25.6: save_masks checked up front, kept per folder
def test_save_masks_is_validated_before_the_folder_exists(root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SettingError, match="save_masks: expected false, true/png or coco, got 'maybe'"):
        evaluate(cfg(root, out, "save_masks=maybe"))
    assert not out.exists()


@pytest.mark.parametrize(("made", "then"), [("png", "coco"), ("coco", "png"), ("false", "png")])
def test_a_resume_with_another_save_masks_is_refused_before_anything_is_written(root, tmp_path, capsys, made, then):
    out = tmp_path / "run"
    evaluate(cfg(root, out, "dataset.limit=2", f"save_masks={made}"))
    before = snapshot(out)
    assert run_cli(cfg(root, out, "dataset.limit=3", f"save_masks={then}")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "save_masks" in line and f'-> "{then}"' in line
    assert snapshot(out) == before


# --------------------------------------------------------------- 26.3: a smaller selection is refused
def test_a_smaller_limit_on_a_finished_folder_is_refused_and_changes_nothing(root, tmp_path, capsys):
    out = tmp_path / "run"
    evaluate(cfg(root, out, "dataset.limit=3"))
    before = snapshot(out)
    assert run_cli(cfg(root, out, "dataset.limit=2")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "holds results of 1 image(s) outside this run's selection of 2" in line and "dataset.limit=2" in line
    assert snapshot(out) == before
    # The folder's own selection (or a larger one) still resumes: metrics.json and records agree.
    result = evaluate(cfg(root, out, "dataset.limit=3"))
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert result["methods"]["DiffSeg"]["images"] == 3 == len({r["id"] for r in records})
    assert result["methods"]["DiffSeg"]["tp"] == np.sum([r["methods"]["DiffSeg"]["tp"] for r in records],
                                                        axis=0).tolist()


# --------------------------------------------------------------- 26.4, 25.7, 26.8: the command line
@pytest.mark.parametrize(("override", "words"), [
    ("methods.diffseg.segmenter.num_points=1000", "num_points: expected an integer in [2, 64]"),
    ("dataset.size=100", "num_points: expected an integer in [2, 12]"),
    ("save_masks=maybe", "save_masks: expected false, true/png or coco, got 'maybe'"),
])
def test_settings_are_refused_before_the_folder_exists(root, tmp_path, override, words):
    out = tmp_path / "run"
    proc = cli("experiment=demo", f"dataset.root={root}", "device=cpu", "num_workers=0", f"hydra.run.dir={out}",
               override)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert words in one_error_line(proc.stderr)
    assert not out.exists()


def test_one_log_per_run_and_a_refused_run_changes_nothing_in_the_folder(root, tmp_path):
    out = tmp_path / "run"
    args = [*FAST, f"dataset.root={root}", "dataset.limit=2", f"hydra.run.dir={out}"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    logs = sorted(p.name for p in out.iterdir() if p.suffix == ".log")
    assert logs == ["run.log"]
    assert "methods.diffseg.segmenter.kl_threshold=0.5" in (out / ".hydra" / "overrides.yaml").read_text()
    assert "2 of 2 selected images evaluated" in (out / "run.log").read_text()
    before = snapshot(out)
    # Another threshold: refused (the folder's results were made at 0.5), the folder untouched.
    other = cli(*args, "methods.diffseg.segmenter.kl_threshold=0.9")
    assert other.returncode == 2
    assert "kl_threshold: 0.5 -> 0.9" in other.stderr and "Traceback" not in other.stderr
    assert snapshot(out) == before
    # The same while another run holds the folder.
    with FolderLock(out):
        held = snapshot(out)
        locked = cli(*args, "methods.diffseg.segmenter.kl_threshold=0.9")
        assert locked.returncode == 2 and "Traceback" not in locked.stderr
        assert snapshot(out) == held
