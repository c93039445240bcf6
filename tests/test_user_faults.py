"""Faults a user hits: each one a clear refusal (exit code + message) or the right number, never a wrong number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra_compose import EXPERIMENTS, compose_eval

import eval.data.base
from diffseg import DiffSeg, KMeansSegmenter, resolution_weights
from diffseg.tiny import tiny_backbone
from eval.data.loader import SkipCorrupt, Skipped
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate
from eval.settings import SettingError, validate

REPO = Path(__file__).resolve().parents[1]

FAST = ["model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0", "progress=false", "device=cpu",
        "methods.kmeans_c.segmenter.n_init=1", "methods.kmeans_s.segmenter.n_init=1"]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=2, seed=3)
    return root


def compose(root: Path, out: Path, *extra: str):
    return compose_eval(["experiment=coco_stuff27", *FAST, f"dataset.root={root}", f"paths.output_dir={out}", *extra])


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

    monkeypatch.setattr(eval.data.base, "preprocess_image", broken)
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
        validate(compose_eval([f"experiment={name}", "device=cpu", f"paths.output_dir={tmp_path}"]))


def test_the_cli_exits_2_naming_every_bad_setting(coco_root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.run", "experiment=coco_stuff27", *FAST, f"dataset.root={coco_root}",
         f"hydra.run.dir={out}", "batch_size=0", "model.timestep=5000", "max_skipped=-1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
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
