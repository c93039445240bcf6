"""Faults a user hits: each one a clear refusal (exit code + message) or the right number, never a wrong number."""

from __future__ import annotations

import functools
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import EXPERIMENTS, compose_eval, run_config, synthetic_coco_stuff_root
from PIL import Image

import diffseg.network
import eval.data.geometry
import eval.data.preparation
from diffseg import DiffSeg, KMeansSegmenter, resolution_weights
from diffseg.preprocess import LabelFormatError, load_label, preprocess_label
from diffseg.testing.tiny import tiny_backbone
from eval.data.coco_stuff import CocoStuff27
from eval.data.download import DownloadError, download
from eval.data.loader import SkipCorrupt, Skipped
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.report.tables import ablation_tables, collect_runs
from eval.run import evaluate
from eval.run.merge import merge_runs
from eval.run.unknown_labels import UnknownLabelsError
from eval.spec import SettingError, build_spec

REPO = Path(__file__).resolve().parents[1]

FAST = ["model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0", "progress=false", "device=cpu",
        "methods.kmeans_c.segmenter.n_init=1", "methods.kmeans_s.segmenter.n_init=1"]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=2, seed=3)


def compose(root: Path, out: Path, *extra: str):
    return run_config(root, out, *extra, fast=["experiment=coco_stuff27", *FAST])


def run_eval_cli(root: Path, out: Path, *extra: str, timeout: int) -> subprocess.CompletedProcess:
    """``python -m eval.run`` as :func:`compose` configures it, run folder ``out``; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "eval.run", "experiment=coco_stuff27", *FAST, f"dataset.root={root}",
         f"hydra.run.dir={out}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------- only unreadable files skip an image
class _Items:
    ids = ["a", "b"]

    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise self.error


def test_unreadable_file_is_skipped_but_a_value_error_is_not():
    skipped = SkipCorrupt(_Items(OSError("cannot identify image file x.jpg")))[1]
    assert isinstance(skipped, Skipped) and skipped.image_id == "b" and "x.jpg" in skipped.message
    with pytest.raises(ValueError, match="bug"):
        SkipCorrupt(_Items(ValueError("a bug")))[0]


def test_a_preprocessing_bug_fails_the_run_instead_of_skipping(coco_root, tmp_path, monkeypatch):
    def broken(image, size):
        raise ValueError("bug in pre-processing")

    monkeypatch.setattr(eval.data.geometry, "preprocess_image", broken)
    with pytest.raises(ValueError, match="bug in pre-processing"):
        evaluate(compose(coco_root, tmp_path))
    assert not (tmp_path / "metrics.json").exists()


# --------------------------------------------------------------- degenerate settings refused before the folder
@pytest.mark.parametrize(("override", "words"), [
    ("aggregation.weights={16: nan, 8: 1.0}", ["aggregation.weights.16", "finite weight >= 0"]),
    ("aggregation.weights={16: -1.0, 8: 1.0}", ["aggregation.weights.16", "finite weight >= 0"]),
    ("aggregation.weights={16: 0.0, 8: 0}", ["aggregation.weights", "all weights are 0"]),
    ("model.timestep=5000", ["model.timestep", "[0, 1000)", "5000"]),
    ("model.timestep=-5", ["model.timestep", "[0, 1000)", "-5"]),
    ("max_skipped=-1", ["max_skipped", "[0, 1]"]),
    ("max_unknown_label_fraction=2", ["max_unknown_label_fraction", "[0, 1]"]),
    ("batch_size=0", ["batch_size", "integer >= 1"]),
    ("dataset.limit=-1", ["dataset.limit", "integer >= 0"]),
    ("dataset.shard=2/2", ["dataset.shard", "0 <= i < n"]),
    ("methods.diffseg.segmenter.kl_threshold=nan", ["methods.diffseg.segmenter", "kl_threshold"]),
    ("methods.diffseg.segmenter.num_points=1", ["methods.diffseg.segmenter", "num_points"]),
    ("methods.kmeans_c.segmenter.num_clusters=0", ["methods.kmeans_c.segmenter", "num_clusters"]),
    ("device=cuda", ["device", "CUDA is not available"]),
])
def test_degenerate_settings_are_refused_before_the_run_folder_exists(coco_root, tmp_path, override, words):
    if override.startswith("device=cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    with pytest.raises(SettingError) as info:
        evaluate(compose(coco_root, out, override))
    assert all(w in str(info.value) for w in words), str(info.value)
    assert not out.exists()


def test_every_experiment_passes_validation(tmp_path):
    for name in EXPERIMENTS:
        build_spec(compose_eval([f"experiment={name}", "device=cpu", f"paths.output_dir={tmp_path}"]))


def test_the_cli_exits_2_naming_every_bad_setting(coco_root, tmp_path):
    out = tmp_path / "run"
    proc = run_eval_cli(coco_root, out, "batch_size=0", "model.timestep=5000", "max_skipped=-1", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for key in ("batch_size", "model.timestep", "max_skipped"):
        assert key in proc.stderr
    assert not (out / "run.json").exists() and not (out / "per_image.jsonl").exists()


def test_the_library_raises_on_non_finite_or_negative_inputs():
    attention = torch.full((1, 4, 4, 4, 4), 1 / 16)
    assert DiffSeg(kl_threshold=0.5, num_points=2, output_size=4)(attention).shape == (1, 4, 4)
    for bad in (float("nan"), float("inf"), -1.0):
        broken = attention.clone()
        broken[0, 1, 1, 1, 1] = bad
        with pytest.raises(ValueError, match="attention: holds"):
            DiffSeg(kl_threshold=0.5, num_points=2, output_size=4)(broken)
        with pytest.raises(ValueError, match="attention: holds"):
            KMeansSegmenter(num_clusters=2, output_size=4)(broken)
    for weights, words in (({8: float("nan")}, "finite"), ({8: -1.0, 4: 1.0}, "finite"),
                           ({8: 0.0, 4: 0.0}, "all weights are 0"), ({2: 1.0}, "not among the captured sides")):
        with pytest.raises(ValueError, match=words):
            resolution_weights([8, 4], weights)
    backbone = tiny_backbone(input_size=128)
    for timestep in (1000, -5):
        with pytest.raises(ValueError, match=r"timestep: expected an integer in \[0, 1000\)"):
            backbone.unet_pass(torch.zeros(1, 3, 128, 128), timestep)


# --------------------------------------------------------------- labels read as what they are
def _recode(path: Path, value: int, box: tuple[int, int, int, int] | None = None) -> None:
    """Set the pixels of ``box`` (left, top, right, bottom; None = all) of an index label to ``value``."""
    label = np.array(Image.open(path))
    if box is None:
        label[:] = value
    else:
        left, top, right, bottom = box
        label[top:bottom, left:right] = value
    Image.fromarray(label).save(path)


def _unknown_at_eval_size(path: Path, size: int, value: int) -> int:
    return int((preprocess_label(load_label(path), size) == value).sum())


def test_unknown_label_values_are_counted_reported_and_bounded(tmp_path):
    root = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(root, num_images=2, seed=6)
    label = root / "annotation_val2017" / f"{ids[1]}.png"
    _recode(label, 190, (0, 0, 40, 30))  # a class recoded to a value COCO-Stuff does not use
    expected = _unknown_at_eval_size(label, 128, 190)
    assert expected > 0
    result = evaluate(compose(root, tmp_path / "a", "max_unknown_label_fraction=1"))
    unknown = result["unknown_labels"]
    assert unknown["pixels"] == expected and unknown["images"] == {ids[1]: expected}
    assert unknown["fraction"] == pytest.approx(expected / (2 * 128 * 128))
    assert "hold values outside the dataset's classes" in (tmp_path / "a" / "run.log").read_text()
    # Scored as ignored: the valid pixels are those of the known classes only.
    assert result["methods"]["DiffSeg"]["valid"] == sum(int((CocoStuff27(root, size=128)[i][1] >= 0).sum())
                                                        for i in range(2))
    # Above the default bound (0.001) the run is refused and writes no metrics.json.
    with pytest.raises(UnknownLabelsError, match="max_unknown_label_fraction=0.001") as info:
        evaluate(compose(root, tmp_path / "b"))
    assert ids[1] in str(info.value)
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_merged_shards_carry_the_unknown_label_counts_of_one_run(tmp_path):
    root = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(root, num_images=3, seed=6)
    label = root / "annotation_val2017" / f"{ids[2]}.png"
    _recode(label, 190, (0, 0, 40, 30))
    expected = _unknown_at_eval_size(label, 128, 190)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, out in enumerate(shards):
        evaluate(compose(root, out, "max_unknown_label_fraction=1", f"dataset.shard={i}/2"))
    merged = merge_runs(shards, tmp_path / "merged")
    assert merged["unknown_labels"]["pixels"] == expected and merged["unknown_labels"]["images"] == {ids[2]: expected}
    assert merged["unknown_labels"]["fraction"] == pytest.approx(expected / (3 * 128 * 128))
    assert merged["unknown_labels"]["max_fraction"] == 1


def test_a_whole_label_of_another_value_is_refused(tmp_path):
    root = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(root, num_images=2, seed=6)
    _recode(root / "annotation_val2017" / f"{ids[0]}.png", 200)
    with pytest.raises(UnknownLabelsError, match=r"50\.0000% of the label pixels"):
        evaluate(compose(root, tmp_path / "out"))


def test_an_rgb_colour_label_is_refused_with_exit_2(tmp_path):
    root = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(root, num_images=2, seed=6)
    path = root / "annotation_val2017" / f"{ids[0]}.png"
    index = np.array(Image.open(path)).astype(np.int64)
    colours = np.stack([index, (index * 7) % 256, (index * 13) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(colours, mode="RGB").save(path)
    with pytest.raises(LabelFormatError, match="colour"):
        load_label(path)
    # Gray stored as RGB is still an index map; a colour map reads colour labels.
    Image.fromarray(np.repeat(index[..., None], 3, axis=2).astype(np.uint8), mode="RGB").save(tmp_path / "gray.png")
    assert torch.equal(load_label(tmp_path / "gray.png"), torch.from_numpy(index.astype(np.int64)))
    Image.fromarray(colours, mode="RGB").save(tmp_path / "colour.png")
    colour_map = {tuple(int(c) for c in colours[y, x]): int(index[y, x]) for y, x in np.ndindex(index.shape)}
    assert torch.equal(load_label(tmp_path / "colour.png", colour_map), torch.from_numpy(index.astype(np.int64)))
    out = tmp_path / "run"
    proc = run_eval_cli(root, out, "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null",
                   timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"label {path} is a colour (RGB) image" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "metrics.json").exists()


# --------------------------------------------------------------- sweep rows labelled by what each method ran with
def _sweep_run(folder: Path, tag_value: float, diffseg_kl: float) -> None:
    def scores(x):
        return {"acc": x, "miou": x / 2, "images": 4, "mean_segments": 3.0}

    config = {"dataset": {"name": "coco_stuff27", "kl_threshold": 0.4},
              "model": {"name": "tiny-random", "timestep": 300},
              "methods": {"diffseg": {"name": "DiffSeg", "segmenter": {"kl_threshold": diffseg_kl}},
                          "diffseg_fp32": {"name": "DiffSeg-fp32", "segmenter": {"kl_threshold": 0.4}},
                          "kmeans_c": {"name": "K-Means-C", "segmenter": {"num_clusters": 6}}}}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "methods": {"DiffSeg": scores(10 * diffseg_kl), "DiffSeg-fp32": scores(7.0), "K-Means-C": scores(5.0)},
        "config": config, "run": {"name": "sweep", "dataset": "coco_stuff27", "model": "tiny-random",
                                  "ablation": {"param": "kl_threshold", "value": tag_value}},
        "provenance": {"random_weights": True, "synthetic_data": True, "partial": False, "notes": []}}))


def test_sweep_rows_come_from_each_methods_recorded_setting_not_the_tag(tmp_path):
    # The README's sweep: only DiffSeg's threshold varies; the last tag is wrong on purpose (says 0.9, ran at 0.5).
    for i, (tag, kl) in enumerate([(0.3, 0.3), (0.4, 0.4), (0.9, 0.5)]):
        _sweep_run(tmp_path / str(i), tag, kl)
    df = ablation_tables(collect_runs([tmp_path]))["kl_threshold"]
    assert list(df.index) == [0.3, 0.4, 0.5]
    assert list(df.columns) == ["DiffSeg ACC", "DiffSeg mIoU"]
    assert df.loc[0.5, "DiffSeg ACC"] == pytest.approx(5.0)
    notes = " ".join(df.attrs["notes"])
    assert "DiffSeg-fp32: ran at kl_threshold=0.4 in every run" in notes
    assert "K-Means-C: has no kl_threshold setting" in notes


def test_no_torchvision_notice_on_import():
    proc = subprocess.run([sys.executable, "-c", "import diffseg.testing.tiny, eval.run.runner"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "requires torchvision" not in proc.stderr + proc.stdout


# --------------------------------------------------------------- offline: stop quickly, name every file, no folders
def test_offline_prepare_coco_names_every_file_quickly_and_makes_no_folder(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("prepare_offline_under_test", REPO / "datasets" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)

    def dead(host, port, timeout):  # a dead network: packets dropped, nothing answers
        time.sleep(30)

    monkeypatch.setattr(diffseg.network, "_probe", dead)
    monkeypatch.setattr(eval.data.preparation, "unreachable",
                        functools.partial(diffseg.network.unreachable, timeout=0.5))
    root, downloads = tmp_path / "data" / "coco", tmp_path / "data" / "downloads"
    start = time.monotonic()
    assert prepare.main(["--quiet", "coco", "--root", str(root), "--downloads", str(downloads)]) == 2
    # the dead probe sleeps 30 s: finishing well under that shows the 0.5 s bound held, whatever the machine's load
    assert time.monotonic() - start < 20
    err = capsys.readouterr().err
    for name in ("Coco164kFull_Stuff_Coarse_7.txt", "val2017.zip", "stuffthingmaps_trainval2017.zip",
                 "CompVis/stable-diffusion-v1-4"):
        assert name in err
    assert "no answer within 0.5 s" in err and not (tmp_path / "data").exists()


def test_a_host_that_cannot_be_resolved_is_not_retried(tmp_path, monkeypatch):
    calls = []

    def no_dns(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(DownloadError, match="cannot be resolved"):
        download("http://nowhere.invalid/x.zip", tmp_path / "x.zip", progress=False, retries=2, backoff=5)
    assert len(calls) == 1
