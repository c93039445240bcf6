"""Faults a user hits: each one a clear refusal (exit code + message) or the right number, never a wrong number."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra_compose import compose_eval

import eval.data.base
from eval.data.loader import SkipCorrupt, Skipped
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate

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
