"""Class names of a run: those its own config recorded (``dataset=folder``'s ``class_names``), then the dataset's.

eval.compare (compare.json and its tables) and the explorer name the classes of a ``dataset=folder``
run by ``metrics.json["config"]["dataset"]["class_names"]`` (they said ``class i``: the folder
dataset's class list is per run, ``eval.data.classes.dataset_classes("folder") == ()``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eval.data.classes import dataset_classes
from eval.data.coco_stuff import COCO_STUFF27_CLASSES
from eval.explore.runs import RunError, RunFolder
from eval.run.records import RunRecords, write_metrics
from eval.run.totals import accumulate, method_scores
from eval.stats.analysis import ImageStats
from eval.stats.comparison import compare_runs
from eval.stats.runs import CompareError, class_names

NAMES = ["sky", "road", "car"]
IDS = [f"img_{i:03d}" for i in range(6)]


def _stats(seed: int, num_classes: int) -> ImageStats:
    rng = np.random.default_rng(seed)
    count = rng.integers(0, 300, (len(IDS), num_classes)) * (rng.random((len(IDS), num_classes)) < 0.7)
    count[:, 1] = np.maximum(count[:, 1], 10) * (np.arange(len(IDS)) % 2)  # class 1 in every second image
    tp = rng.binomial(count, 0.6)
    return ImageStats(tp, rng.poisson(30, count.shape), count - tp, count.sum(1))


def _write_run(folder: Path, dataset: str, dataset_config: dict, num_classes: int, seed: int = 0) -> Path:
    """A finished run folder (per_image.jsonl, then metrics.json from the same records) of one method."""
    stats = _stats(seed, num_classes)
    records = [{"id": image_id, "fingerprint": "abc", "methods": {"DiffSeg": {
        "tp": stats.tp[i].tolist(), "fp": stats.fp[i].tolist(), "fn": stats.fn[i].tolist(),
        "valid": int(stats.valid[i]), "segments": 4}}} for i, image_id in enumerate(IDS)]
    RunRecords(folder).append(records)
    scores = method_scores(accumulate(records, num_classes), {"DiffSeg": None})
    write_metrics(folder, scores, records, run={"name": folder.name, "dataset": dataset, "model": "sd14"},
                  config={"dataset": {"name": dataset, "num_classes": num_classes, **dataset_config}})
    return folder


def test_the_folder_dataset_has_no_class_list_of_its_own():
    assert dataset_classes("folder") == ()  # per run: the recorded config names them


def test_compare_names_the_classes_a_folder_run_recorded(tmp_path):
    runs = [_write_run(tmp_path / f"run{i}", "folder", {"class_names": NAMES}, 3, seed=i) for i in range(2)]
    compare = compare_runs(runs, tmp_path / "cmp", resamples=50, min_images=1, min_class_images=1)
    assert compare["classes"] == NAMES
    per_class = "\n".join(p.read_text() for p in (tmp_path / "cmp").iterdir() if p.suffix in (".md", ".csv"))
    assert "road" in per_class and "class 1" not in per_class


def test_compare_refuses_runs_that_recorded_different_class_names(tmp_path):
    one = _write_run(tmp_path / "one", "folder", {"class_names": NAMES}, 3)
    other = _write_run(tmp_path / "other", "folder", {"class_names": ["sea", "sand", "boat"]}, 3)
    with pytest.raises(CompareError, match=r"different class names for dataset 'folder': \['sky', 'road', 'car'\] "
                                           r"vs \['sea', 'sand', 'boat'\]"):
        compare_runs([one, other], tmp_path / "cmp", resamples=50, min_images=1, min_class_images=1)


def test_the_explorer_names_and_filters_by_the_recorded_class_names(tmp_path):
    run = RunFolder.open(_write_run(tmp_path / "run", "folder", {"class_names": NAMES}, 3))
    assert run.class_names == NAMES
    table = run.table(class_filter="road")
    assert list(table["image"]) == IDS[1::2]
    assert all("road" in classes for classes in table["classes in the label"])
    with pytest.raises(RunError, match="class 'class 1' is not a class of folder"):
        run.table(class_filter="class 1")


def test_without_recorded_names_the_dataset_names_or_class_i():
    coco = {"config": {"dataset": {"name": "coco_stuff27", "num_classes": 27}}}
    assert class_names("coco_stuff27", 27, coco) == list(COCO_STUFF27_CLASSES)
    assert class_names("coco_stuff27", 27) == list(COCO_STUFF27_CLASSES)
    unnamed = {"config": {"dataset": {"name": "folder", "num_classes": 3, "class_names": None}}}
    assert class_names("folder", 3, unnamed) == ["class 0", "class 1", "class 2"]
    assert class_names("folder", 3, {"methods": {}}) == ["class 0", "class 1", "class 2"]  # older: no config
    # names of another class count than the records' are not used
    assert class_names("folder", 4, {"config": {"dataset": {"class_names": NAMES}}}) == [f"class {i}" for i in range(4)]
