"""dataset=cityscapes19: Cityscapes' 19 evaluation classes (trainIds), the set Seg4Diff's release scores, and the
ledger claims of experiment=cityscapes_seg4diff shown beside its rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval

from eval.data.base import IGNORE_INDEX, UNKNOWN_LABEL
from eval.data.cityscapes import CITYSCAPES19_CLASSES, Cityscapes19, Cityscapes27
from eval.data.classes import dataset_class, preparations
from eval.data.synthetic import write_synthetic_cityscapes
from eval.report.ledger import load_ledger
from eval.report.tables import main_table
from eval.run.runner import evaluate

# cityscapesScripts' label table (cityscapesscripts/helpers/labels.py), written out here: (name, id, trainId).
LABEL_TABLE = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15),
    ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]
# The release's datasets/cityscapes.json (the class texts its test_unsupervised counts: N_CLASS = 19).
RELEASE_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                   "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                   "bicycle"]
# Shapes drawn from classes of the 27-class set that the 19 ignore (parking, guard rail, caravan, trailer), and car.
OBJECTS = (26, 9, 14, 29, 30)
FAST = ["num_workers=0", "progress=false", "device=cpu", "grid_images=0", "methods.diffseg=null",
        "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null"]


@pytest.fixture(scope="module")
def city_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_synthetic_cityscapes(root, num_images=2, seed=4, size=(128, 256), objects=OBJECTS)
    return root


def test_every_label_id_maps_to_its_train_id(city_root):
    ds = Cityscapes19(city_root, size=64)
    assert ds.num_classes == 19 and list(ds.classes) == RELEASE_CLASSES == list(CITYSCAPES19_CLASSES)
    values = torch.arange(256).reshape(16, 16)
    got = ds._classes(values).flatten().tolist()
    for name, label_id, train_id in LABEL_TABLE:
        if train_id == 255:
            assert got[label_id] == IGNORE_INDEX, name
        else:
            assert got[label_id] == train_id and CITYSCAPES19_CLASSES[train_id] == name, name
    assert got[255] == IGNORE_INDEX  # 255 is "not labelled", as in a labelTrainIds file
    assert set(got[34:255]) == {UNKNOWN_LABEL}  # no labelId has these values: counted as unknown, not ignored
    assert sorted(v for v in got if v >= 0) == list(range(19))
    assert dataset_class("cityscapes19") is Cityscapes19
    assert preparations()["cityscapes"][0] == "cityscapes"  # one `make data-cityscapes` builds both roots


def test_synthetic_labels_are_the_27_class_labels_mapped_to_train_ids(city_root):
    nineteen, twenty_seven = Cityscapes19(city_root, size=64), Cityscapes27(city_root, size=64)
    assert nineteen.ids == twenty_seven.ids and len(nineteen) == 2
    # 27-class id c is labelId c + 7; map it through the label table
    to_train = {label_id - 7: train_id for _, label_id, train_id in LABEL_TABLE if label_id >= 7}
    seen, dropped = set(), 0
    for k in range(len(nineteen)):
        image19, label19, id19 = nineteen[k]
        image27, label27, id27 = twenty_seven[k]
        assert id19 == id27 and torch.equal(image19, image27)
        expected = torch.full_like(label27, IGNORE_INDEX)
        for c, t in to_train.items():
            if t != 255:
                expected[label27 == c] = t
        assert torch.equal(label19, expected)
        assert int(label19.max()) <= 18 and int(label19.min()) >= IGNORE_INDEX
        seen |= set(label19.unique().tolist()) - {IGNORE_INDEX}
        dropped += int(((label27 >= 0) & (label19 == IGNORE_INDEX)).sum())
    assert {0, 2, 10, 13} <= seen  # road, building, sky, car
    assert dropped > 0  # parking / guard rail / caravan / trailer pixels: classes of the 27, ignored by the 19


def _run(city_root: Path, out: Path) -> dict:
    cfg = compose_eval(["experiment=cityscapes_seg4diff", "model=tiny_sd3", f"dataset.root={city_root}",
                        f"paths.output_dir={out}", *FAST, "protocol.short_edge=64", "protocol.max_size=256",
                        "protocol.geometry.recorded_sizes={cityscapes19: [128, 256]}"])
    assert cfg.dataset.name == "cityscapes19" and cfg.dataset.num_classes == 19
    evaluate(cfg)
    return json.loads((out / "metrics.json").read_text())


def test_cityscapes_seg4diff_runs_the_19_classes_and_shows_its_claims(city_root, tmp_path):
    metrics = _run(city_root, tmp_path / "run")
    m = metrics["methods"]["Seg4Diff"]
    assert metrics["run"]["dataset"] == "cityscapes19" and metrics["run"]["protocol"] == "seg4diff"
    assert len(m["tp"]) == len(m["fp"]) == len(m["fn"]) == 19 and m["images"] == 2
    labels = Cityscapes19(city_root, size=64)
    assert m["valid"] == sum(int((labels._classes(g).ge(0)).sum()) for g in (
        _release_label(labels, i) for i in labels.ids))
    assert sum(m["tp"]) + sum(m["fn"]) == m["valid"]

    # As a full run of the release's model would record it: SD3 medium, the standard 500-image list.
    real = copy.deepcopy(metrics)
    real["run"]["model"] = real["config"]["model"]["name"] = "stabilityai/stable-diffusion-3-medium-diffusers"
    real["provenance"]["image_list"]["standard"] = True
    ledger = load_ledger()
    table = main_table([real], "cityscapes19", ledger, protocol="seg4diff")
    [row] = [r for label, r in table.iterrows() if label.startswith("Seg4Diff")]
    miou = 100 * np.nanmean([tp / (tp + fp + fn) if tp + fp + fn else np.nan
                             for tp, fp, fn in zip(m["tp"], m["fp"], m["fn"], strict=True)])
    assert row["mIoU"] == pytest.approx(miou, abs=0.01)
    assert row["claims"] == f"[1] - / 24.2 (ours - / {miou - 24.2:+.1f}, secondary)"
    assert table.attrs["sources"][0].startswith("[1] Seg4Diff (SD3), cityscapes19, protocol seg4diff: mIoU 24.2")
    # twins: the 27-class dataset, another backbone and the synthetic list get no claim
    as27 = copy.deepcopy(real)
    as27["run"]["dataset"] = as27["config"]["dataset"]["name"] = "cityscapes"
    assert list(main_table([as27], "cityscapes", ledger, protocol="seg4diff")["claims"]) == [""]
    sd35 = copy.deepcopy(real)
    sd35["run"]["model"] = sd35["config"]["model"]["name"] = "stabilityai/stable-diffusion-3.5-medium"
    assert list(main_table([sd35], "cityscapes19", ledger, protocol="seg4diff")["claims"]) == [
        f"[1] - / 24.2 (ours - / {miou - 24.2:+.1f}, secondary)"]  # the SD3.5 claim, also 24.2
    assert table.attrs["sources"] != main_table([sd35], "cityscapes19", ledger, protocol="seg4diff").attrs["sources"]
    synthetic = main_table([metrics], "cityscapes19", ledger, protocol="seg4diff")
    assert list(synthetic["claims"]) == ["not compared: non-standard image list"]


def _release_label(ds: Cityscapes19, image_id: str) -> torch.Tensor:
    """The run's label geometry: short side 64 with PIL nearest, from the labelIds file as stored."""
    from eval.metrics.protocols.seg4diff import Seg4DiffGeometry

    return Seg4DiffGeometry(short_edge=64, max_size=256).label(ds.read_label(image_id))
