"""One protocol object (issue 27, item 3): each protocol a :class:`~eval.metrics.protocols.Protocol` found by name,
datasets given its geometry when built, the metric given the object, tables and provenance naming it by
``describe()``. A new protocol is one module and one config (a toy one, written here into ``tmp_path``, runs the
demo's tiny pipeline), and the existing ones give exactly the numbers they gave before the redesign.
"""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import MULTI_SEGMENT, compose_eval

from diffseg.masks import read_mask_png
from eval.data.demo import DemoCocoStuff27
from eval.data.geometry import CentreCropGeometry
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff, write_synthetic_voc
from eval.data.voc import Voc21
from eval.instantiate import build_dataset
from eval.metrics import HungarianSegmentationMetric, image_stats
from eval.metrics import protocols as protocols_package
from eval.metrics.functional import hungarian_image_stats
from eval.metrics.protocols import (
    PROTOCOLS,
    DiffCut,
    DiffCutGeometry,
    ProtocolError,
    Seg4DiffAligned,
    get_protocol,
    protocol_from_settings,
)
from eval.metrics.protocols import base as protocols_base
from eval.rescore import main as rescore_main
from eval.run import evaluate
from eval.run.build import build_protocol
from eval.run.provenance import protocol_key

# ------------------------------------------------------------------------------ the existing protocols


def _blocks(height: int, width: int, shift: int) -> torch.Tensor:
    """A fixed prediction ``(H, W)``: 9 ids in blocks (several segments per image, the same on any machine)."""
    i = torch.arange(height)[:, None] * 7 // max(height, 1)
    j = torch.arange(width)[None, :] * 5 // max(width, 1)
    return ((i * 5 + j + shift) % 9).long()


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("protocol_data")
    write_synthetic_voc(tmp / "voc", num_images=3, seed=5, size_range=(41, 67))
    write_synthetic_cityscapes(tmp / "city", num_images=2, seed=1, size=(64, 128))
    return {"voc": tmp / "voc", "city": tmp / "city"}


CASES = {
    "diffseg": ["experiment=voc21", "model=tiny", "dataset.size=48", "dataset.root={voc}"],
    "diffcut": ["experiment=voc21", "model=tiny", "protocol=diffcut", "protocol.size=32", "dataset.root={voc}"],
    # dataset=cityscapes: the 27-class variant these figures were recorded on (the experiment now runs cityscapes19)
    "seg4diff": ["experiment=cityscapes_seg4diff", "dataset=cityscapes", "model=tiny_sd3", "protocol.short_edge=40",
                 "protocol.max_size=160",
                 "protocol.geometry.recorded_sizes={{cityscapes: [64, 128]}}", "dataset.root={city}"],
    "seg4diff_aligned": ["experiment=cityscapes_seg4diff", "dataset=cityscapes", "model=tiny_sd3",
                         "protocol=seg4diff_aligned",
                         "protocol.short_edge=40", "protocol.max_size=160", "dataset.root={city}"],
}
# What main (04bc1eb, before the redesign) gave for CASES: labels through apply_protocol's mutated geometry,
# the fixed prediction through the geometry's prediction_size / fit, the metric built with the protocol's name.
# name: (sha256 of the labels, images, image shape, label shape, sha256 of json [tp, fp, fn, valid],
#        (sum tp, sum fp, valid))
ON_MAIN = {
    "diffseg": ("ff8d2f44441475c4972426aa733311259f0fdc2abcc9bda875f58d8cd8056277", 3, (3, 48, 48), (48, 48),
                "58ddc745b9e5497742d6efabdfcfa995e2294e273b5764b33ac988b2a1567ce6", (1008, 4884, 5892)),
    "diffcut": ("7ec903b924369e7e113330fd3ed8e161a05f31b6c0fff50079068395139a14c7", 3, (3, 32, 32), (32, 32),
                "55f8beb6d14118981990ef4c7918523491a31dcc8f13342d7e344a24eb12c411", (2056, 1016, 3072)),
    "seg4diff": ("97a98fc3dcaf778b8580da70c5a496e6b9c33402eff0bbe0cbfe07ec15a0571b", 2, (3, 40, 80), (40, 80),
                 "1a3e631af1c4420c8fffe634dc9e3c129e72dced946d8c12d850182f141a70de", (2121, 3495, 5616)),
    "seg4diff_aligned": ("97a98fc3dcaf778b8580da70c5a496e6b9c33402eff0bbe0cbfe07ec15a0571b", 2, (3, 40, 80), (40, 80),
                         "550c4e3609a91d6539a4a3c311501885e72fc44a0922aa886841d05c16f33a48", (1237, 4379, 5616)),
}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_protocol_gives_the_numbers_it_gave_before(name, roots, tmp_path):
    cfg = compose_eval([o.format(**roots) for o in CASES[name]] + [f"paths.output_dir={tmp_path}"])
    protocol = build_protocol(cfg)
    dataset = build_dataset(cfg.dataset, protocol.geometry)
    assert protocol.name == name and (protocol.geometry is None or dataset.geometry is protocol.geometry)
    metric = HungarianSegmentationMetric(int(cfg.dataset.num_classes), cfg.dataset.get("background"), protocol)
    labels, shapes = hashlib.sha256(), set()
    for index in range(len(dataset)):
        image, label, _ = dataset[index]
        labels.update(label.numpy().astype(np.int64).tobytes())
        target = tuple(label.shape)
        pred = protocol.fit(_blocks(*protocol.prediction_size(target), index)[None], target)
        metric.update(pred, label[None])
        shapes.add((tuple(image.shape), target))
    m = metric.compute()
    labels_sha, images, image_shape, label_shape, totals_sha, sums = ON_MAIN[name]
    assert labels.hexdigest() == labels_sha and len(dataset) == images and shapes == {(image_shape, label_shape)}
    assert (sum(m["tp"]), sum(m["fp"]), m["valid"]) == sums
    assert _digest([m["tp"], m["fp"], m["fn"], m["valid"]]) == totals_sha


def test_the_release_crop_and_the_aligned_variant_differ_on_the_same_labels():
    assert ON_MAIN["seg4diff"][0] == ON_MAIN["seg4diff_aligned"][0] and ON_MAIN["seg4diff"][4:] != ON_MAIN[
        "seg4diff_aligned"][4:]
    assert ON_MAIN["diffcut"][5][2] == 3 * 32 * 32  # DiffCut counts every pixel on VOC (background merged)
    assert ON_MAIN["diffseg"][5][2] < 3 * 48 * 48  # DiffSeg ignores VOC's boundary band


# ------------------------------------------------------------------------------ lookup, dataset, metric


def test_lookup_by_name_target_and_old_settings():
    assert set(PROTOCOLS) == {"diffseg", "diffcut", "seg4diff", "seg4diff_aligned"}
    with pytest.raises(ProtocolError, match="protocol must be one of"):
        get_protocol("no_such_protocol")
    with pytest.raises(ProtocolError, match="is 'diffcut'"):
        get_protocol("diffseg", _target_="eval.metrics.protocols.diffcut.DiffCut")
    with pytest.raises(ProtocolError, match="does not take|unexpected keyword"):
        get_protocol("diffseg", size=3)
    # a run.json / config saved before protocols were objects named its geometry class: still read
    old = protocol_from_settings({"name": "diffcut", "size": 128, "geometry": {
        "_target_": "eval.metrics.protocols.DiffCutGeometry", "input_size": 64, "label_size": 128}})
    assert isinstance(old, DiffCut) and isinstance(old.geometry, DiffCutGeometry)
    assert (old.geometry.input_size, old.geometry.label_size) == (64, 128)
    old_s4d = protocol_from_settings({"name": "seg4diff_aligned", "short_edge": 640, "max_size": 2560, "geometry": {
        "_target_": "eval.metrics.seg4diff_protocol.Seg4DiffGeometry", "name": "seg4diff_aligned", "short_edge": 640,
        "max_size": 2560, "dataset": "cityscapes", "recorded_sizes": None}})
    assert isinstance(old_s4d, Seg4DiffAligned) and old_s4d.prediction_size((40, 80)) == (40, 80)
    with pytest.raises(ProtocolError, match="recorded_sizes must be null"):
        get_protocol("seg4diff_aligned", geometry={"dataset": "cityscapes", "recorded_sizes": {"cityscapes": [1, 2]}})
    assert protocol_from_settings(None).name == "diffseg"


def test_a_dataset_keeps_the_geometry_it_was_built_with(roots):
    geometry = DiffCutGeometry(input_size=40, label_size=24)
    data = Voc21(roots["voc"], size=24, geometry=geometry)
    image, label, _ = data[0]
    assert data.geometry is geometry and image.shape == (3, 40, 40) and label.shape == (24, 24)
    plain = Voc21(roots["voc"], size=24, image_size=40)
    assert isinstance(plain.geometry, CentreCropGeometry)
    assert (plain.geometry.image_size, plain.geometry.label_size) == (40, 24)
    assert not torch.equal(plain.label(data.ids[0]), label)  # the crops differ (min(h, w) vs min(h, w) - 1)


def test_the_metric_scores_with_the_protocol_object():
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(-1, 21, size=(2, 12, 12)))
    preds = torch.as_tensor(rng.integers(0, 6, size=(2, 12, 12)))
    diffcut = get_protocol("diffcut")
    metric = HungarianSegmentationMetric(21, 0, diffcut)
    metric.update(preds, labels)
    assert metric.protocol is diffcut
    by_hand = image_stats(preds, labels, 21, 0, "diffcut")
    assert metric.compute()["valid"] == sum(s["valid"] for s in by_hand) == 2 * 12 * 12  # background merged
    assert sum(s["valid"] for s in image_stats(preds, labels, 21, 0, "diffseg")) < 2 * 12 * 12


def test_describe_is_what_tables_show():
    assert get_protocol("diffcut").describe() == "diffcut"
    assert get_protocol("diffcut").describe("diffseg") == "diffcut scoring, diffseg geometry"
    assert protocol_key({"run": {"protocol": "diffcut", "protocol_label": "diffcut scoring, diffseg geometry"}}) == (
        "diffcut scoring, diffseg geometry")
    assert protocol_key({"run": {"protocol": "diffcut", "geometry": "diffseg"}}) == "diffcut scoring, diffseg geometry"


# ------------------------------------------------------------------------------ a new protocol

TOY_MODULE = """
    from eval.data.geometry import CentreCropGeometry
    from eval.metrics.functional import hungarian_image_stats
    from eval.metrics.protocols import Protocol


    class LeftHalf(Protocol):
        name = "left_half"
        geometry_text = "DiffSeg's crop, labels at size; only their left halves scored"

        def __init__(self, size, image_size):
            self._geometry = CentreCropGeometry(image_size, size)

        @property
        def label_size(self):
            return self._geometry.label_size

        def image_stats(self, preds, labels, num_classes=27, background=None):
            labels = labels.clone()
            labels[..., labels.shape[-1] // 2:] = -1
            return hungarian_image_stats(preds, labels, num_classes)

        def describe(self, geometry_of=None):
            return super().describe(geometry_of) if geometry_of else "left halves (toy)"
"""
TOY_CONFIG = """
    # @package _global_
    protocol:
      _target_: toy_left_half.LeftHalf
      name: left_half
      size: 128
      image_size: ${model.size}
    dataset:
      size: ${protocol.size}
"""


@pytest.fixture
def toy_protocol(tmp_path, monkeypatch) -> Path:
    """A protocol module on sys.path and its config in a config folder; returns that folder."""
    code, conf = tmp_path / "code", tmp_path / "conf" / "protocol"
    code.mkdir()
    conf.mkdir(parents=True)
    (code / "toy_left_half.py").write_text(textwrap.dedent(TOY_MODULE))
    (conf / "left_half.yaml").write_text(textwrap.dedent(TOY_CONFIG))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setattr(protocols_base, "_REGISTRY", dict(protocols_base._REGISTRY))  # forgotten afterwards
    monkeypatch.delitem(sys.modules, "toy_left_half", raising=False)
    yield conf.parent
    sys.modules.pop("toy_left_half", None)


def test_a_new_protocol_is_one_module_and_one_config(toy_protocol, tmp_path):
    root = tmp_path / "demo"
    write_synthetic_coco_stuff(root, num_images=2, seed=3)
    out = tmp_path / "run"
    cfg = compose_eval(["experiment=demo", "protocol=left_half", f"hydra.searchpath=[file://{toy_protocol}]",
                        f"dataset.root={root}", f"paths.output_dir={out}", "save_masks=png", "progress=false",
                        "grid_images=0", "methods.diffseg_fp32=null", "methods.kmeans_c=null",
                        "methods.kmeans_s=null", MULTI_SEGMENT])
    result = evaluate(cfg)
    assert result["run"]["protocol"] == "left_half" and result["run"]["protocol_label"] == "left halves (toy)"
    assert protocol_key(result) == "left halves (toy)"
    stored = json.loads((out / "run.json").read_text())["settings"]["protocol"]
    assert stored["_target_"] == "toy_left_half.LeftHalf" and stored["size"] == 128
    data = DemoCocoStuff27(root, size=128)
    tp, fp, fn, valid, whole = np.zeros(27, np.int64), np.zeros(27, np.int64), np.zeros(27, np.int64), 0, 0
    for image_id in data.ids:
        mask = torch.as_tensor(read_mask_png(out / "masks" / "DiffSeg" / f"{image_id}.png"))[None]
        label = data.label(image_id)[None]
        assert mask.shape == label.shape == (1, 128, 128)
        left = label.clone()
        left[..., 64:] = -1
        s = hungarian_image_stats(mask, left, 27)[0]
        tp, fp, fn, valid = tp + s["tp"], fp + s["fp"], fn + s["fn"], valid + s["valid"]
        whole += hungarian_image_stats(mask, label, 27)[0]["valid"]
    got = result["methods"]["DiffSeg"]
    assert got["mean_segments"] > 1  # several segments: the totals depend on the masks
    assert [got["tp"], got["fp"], got["fn"], got["valid"]] == [tp.tolist(), fp.tolist(), fn.tolist(), valid]
    assert 0 < valid < whole  # the toy scoring left the right halves out


def test_rescore_reads_a_folder_whose_config_names_the_old_geometry_class(roots, tmp_path):
    run = tmp_path / "diffcut"
    evaluate(compose_eval(["experiment=voc21", "model=tiny", "protocol=diffcut", "protocol.size=128", "batch_size=3",
                           "num_workers=0", "progress=false", "device=cpu", "grid_images=0", "methods=diffseg_only",
                           MULTI_SEGMENT, f"dataset.root={roots['voc']}", "save_masks=png", f"paths.output_dir={run}"]))
    assert rescore_main([str(run), "--protocol", "diffseg", "--out", str(tmp_path / "new"), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    node = metrics["config"]["protocol"]  # as a run made before protocols were objects saved it
    node["geometry"] = {"_target_": "eval.metrics.protocols.DiffCutGeometry", **node["geometry"]}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert rescore_main([str(run), "--protocol", "diffseg", "--out", str(tmp_path / "old"), "--no-progress"]) == 0
    new, old = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("new", "old"))
    assert old["methods"] == new["methods"] and old["methods"]["DiffSeg"]["valid"] > 0
    assert protocol_key(old) == "diffseg scoring, diffcut geometry"


def test_a_module_added_to_the_package_is_found_by_name_alone(tmp_path, monkeypatch):
    (tmp_path / "toy_by_name.py").write_text(textwrap.dedent("""
        from eval.metrics.protocols.diffseg import DiffSeg


        class ToyByName(DiffSeg):
            name = "toy_by_name"
    """))
    package = protocols_package
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(protocols_base, "_REGISTRY", dict(protocols_base._REGISTRY))
    monkeypatch.delitem(sys.modules, "eval.metrics.protocols.toy_by_name", raising=False)
    protocol = protocol_from_settings({"name": "toy_by_name", "geometry": None})  # a config's `name:` only
    assert type(protocol).__name__ == "ToyByName" and protocol.describe() == "toy_by_name"
    sys.modules.pop("eval.metrics.protocols.toy_by_name", None)
