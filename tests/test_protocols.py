"""Protocols: DiffCut's scoring and geometry against independent re-computations, protocol per run,
re-scoring saved masks, and masks saved as COCO results."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval
from PIL import Image
from reference_protocols import release_image, release_label_geometry, release_labels, to_project_order

from diffseg.masks import read_mask_png
from eval.data.base import UNKNOWN_LABEL, contiguous_lut
from eval.data.coco_object import coco_stuffthing_to_object_lut
from eval.data.synthetic import write_synthetic_voc
from eval.data.voc import Voc21
from eval.metrics import image_stats
from eval.metrics.protocols import DiffCutGeometry, ProtocolError, torchvision_center_crop
from eval.rescore import main as rescore_main
from eval.run import evaluate
from eval.run.build import build_protocol
from eval.run.coco_results import CocoResults
from eval.run.identity import RunMismatchError

# --------------------------------------------------------------------------- scoring


def _raw_labels(dataset: str, rng: np.random.Generator, side: int = 24) -> np.ndarray:
    """A raw label file's values in blocks of 4 x 4, with background, boundary and unlabelled pixels."""
    if dataset == "voc":
        values = [0, 0, 255, *rng.choice(np.arange(1, 21), 4, replace=False).tolist()]
    elif dataset == "context":
        values = [0, 0, 0, *rng.choice(np.arange(1, 60), 3, replace=False).tolist()]
    else:  # COCO-Object from the stuffthingmaps: thing values, stuff values, 255 unlabelled
        values = [255, 95, 120, 140, 0, 2, 17, 56, 61, 89]
    blocks = rng.choice(values, size=(side // 4, side // 4))
    return np.kron(blocks, np.ones((4, 4), dtype=np.int64))


def _prediction(rng: np.random.Generator, side: int = 24) -> np.ndarray:
    ids = rng.choice([0, 3, 4, 9, 13, 21, 40, 41], size=int(rng.integers(2, 9)), replace=False)
    blocks = rng.choice(ids, size=(side // 3, side // 3))
    return np.kron(blocks, np.ones((3, 3), dtype=np.int64))


LUTS = {"voc": (partial(contiguous_lut, 21), 21), "context": (partial(contiguous_lut, 60), 60),
        "coco_object": (coco_stuffthing_to_object_lut, 81)}


@pytest.mark.parametrize("dataset", sorted(LUTS))
def test_diffcut_scoring_equals_the_release_rules(dataset):
    lut, num_classes = LUTS[dataset]
    rng = np.random.default_rng(len(dataset))
    raws = [_raw_labels(dataset, rng) for _ in range(6)]
    preds = np.stack([_prediction(rng) for _ in raws])
    ours = image_stats(torch.as_tensor(preds), torch.as_tensor(lut()[np.stack(raws)]), num_classes,
                       protocol="diffcut", background=0)
    merged_somewhere = False
    for stats, pred, raw in zip(ours, preds, raws, strict=True):
        tp, fp, fn, total = release_image(pred, release_labels(raw, dataset), num_classes, background=True)
        assert stats["tp"] == to_project_order(tp).tolist()
        assert stats["fp"] == to_project_order(fp).tolist()
        assert stats["fn"] == to_project_order(fn).tolist()
        assert stats["valid"] == total == raw.size  # background, boundary and unlabelled pixels all count
        plain = image_stats(torch.as_tensor(pred[None]), torch.as_tensor(lut()[raw][None]), num_classes)[0]
        merged_somewhere |= [plain[k] for k in ("tp", "fp", "fn")] != [stats[k] for k in ("tp", "fp", "fn")]
    assert merged_somewhere  # the two protocols differ on these images


def test_diffcut_scoring_ignores_unknown_label_values():
    """Unknown label values (UNKNOWN_LABEL) count nowhere under protocol=diffcut, as in the release, whose
    VOC label map passes a value such as 190 through and whose histograms leave it out."""
    rng = np.random.default_rng(11)
    raw = _raw_labels("voc", rng)
    raw[4:12, 8:16] = 190  # a value VOC does not define: unknown, not boundary
    label = contiguous_lut(21)[raw]
    label[raw == 190] = UNKNOWN_LABEL
    unknown = raw == 190
    base = _prediction(rng)
    variants = [base.copy() for _ in range(4)]
    variants[1][unknown] = 0
    variants[2][unknown] = 41  # the id of the largest segment elsewhere, or a new one
    variants[3][unknown] = int(base.max()) + 7  # a segment found only on unknown pixels
    release = release_labels(raw, "voc")
    release[unknown] = 190  # the release's `-1 if x == 255 else x` keeps it
    results = []
    for pred in variants:
        stats = image_stats(torch.as_tensor(pred[None]), torch.as_tensor(label[None]), 21,
                            protocol="diffcut", background=0)[0]
        tp, fp, fn, total = release_image(pred, release, 21, background=True)
        assert [stats["tp"], stats["fp"], stats["fn"]] == [to_project_order(x).tolist() for x in (tp, fp, fn)]
        assert stats["valid"] == total == raw.size - int(unknown.sum())
        results.append([stats["tp"], stats["fp"], stats["fn"]])
    assert all(r == results[0] for r in results)  # what the prediction holds on unknown pixels changes nothing
    totals = [int(np.sum(x)) for x in results[0]]
    assert totals[0] > 0 and totals[1] + totals[2] > 0
    # the same pixels marked ignore (-1) are background under this protocol: they count
    ignored = np.where(unknown, -1, label)
    counted = image_stats(torch.as_tensor(variants[1][None]), torch.as_tensor(ignored[None]), 21,
                          protocol="diffcut", background=0)[0]
    assert counted["valid"] == raw.size


def test_diffcut_scoring_without_background_is_one_matching():
    rng = np.random.default_rng(3)
    labels = torch.as_tensor(rng.integers(-1, 27, size=(3, 12, 12)))
    preds = torch.as_tensor(rng.integers(0, 9, size=(3, 12, 12)))
    assert image_stats(preds, labels, 27, protocol="diffcut") == image_stats(preds, labels, 27)
    assert image_stats(preds, labels, 27, background=0) == image_stats(preds, labels, 27)  # diffseg ignores it
    with pytest.raises(ValueError, match="protocol must be one of"):
        image_stats(preds, labels, 27, protocol="other")


# --------------------------------------------------------------------------- geometry

# (h, w): margins 1 (offset 0), 3 (round(1.5) = 2), 4 (2), 5 (round(2.5) = 2), and both odd
ODD_SIZES = [(20, 22), (37, 52), (30, 34), (51, 48), (25, 21), (33, 33)]


@pytest.mark.parametrize(("h", "w"), ODD_SIZES)
def test_diffcut_label_geometry_equals_numpy(h, w):
    rng = np.random.default_rng(h * w)
    raw = rng.integers(0, 256, size=(h, w))
    got = DiffCutGeometry(input_size=1024, label_size=128).label(torch.as_tensor(raw))
    assert got.dtype == torch.int64 and got.shape == (128, 128)
    assert np.array_equal(got.numpy(), release_label_geometry(raw, 1024, 128))


def test_diffcut_image_crop_is_torchvision_centre_crop():
    image = torch.arange(3 * 30 * 34, dtype=torch.uint8).reshape(3, 30, 34)
    side = 29
    top, left = 0, 2  # margins 1 and 5: round(0.5) = 0, round(2.5) = 2
    expected = image[:, top:top + side, left:left + side].float() / 127.5 - 1
    assert torch.equal(DiffCutGeometry(input_size=side).image(image), expected)
    assert torch.equal(torchvision_center_crop(image, side), image[:, :side, 2:2 + side])


def test_dataset_items_under_diffcuts_geometry(tmp_path):
    ids = write_synthetic_voc(tmp_path, num_images=3, seed=5, size_range=(41, 67))
    cfg = compose_eval(["experiment=voc21", "protocol=diffcut", "protocol.size=32", "model=tiny",
                        f"dataset.root={tmp_path}"])
    protocol = build_protocol(cfg)
    data = Voc21(tmp_path, size=32, image_size=64, geometry=protocol.geometry)
    assert protocol.name == "diffcut" and data.geometry.label_size == 32
    for index, image_id in enumerate(ids):
        raw = np.asarray(Image.open(tmp_path / "SegmentationClass" / f"{image_id}.png"))
        image, label, _ = data[index]
        expected = contiguous_lut(21)[release_label_geometry(raw.astype(np.int64), 32, 32)]  # tiny: input = label side
        assert np.array_equal(label.numpy(), expected) and image.shape == (3, 32, 32)
        assert torch.equal(data.label(image_id), label)
    bad = compose_eval(["experiment=voc21", "protocol=diffcut", "dataset.size=64", f"dataset.root={tmp_path}"])
    with pytest.raises(ProtocolError, match="change protocol.size"):
        build_protocol(bad)


# --------------------------------------------------------------------------- runs

RUN = ["experiment=voc21", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0", "progress=false",
       "device=cpu", "grid_images=0", "methods.diffseg_fp32=null", "methods.kmeans_s=null"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(root, num_images=3, seed=4, size_range=(60, 90))
    return root


@pytest.fixture(scope="module")
def png_run(voc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("png_run")
    evaluate(compose_eval([*RUN, f"dataset.root={voc}", "save_masks=png", f"paths.output_dir={out}"]))
    return out


def test_run_folder_refuses_the_other_protocol(voc, png_run):
    stored = json.loads((png_run / "run.json").read_text())
    assert stored["settings"]["protocol"] == {"name": "diffseg", "geometry": None}
    assert json.loads((png_run / "metrics.json").read_text())["run"]["protocol"] == "diffseg"
    cfg = compose_eval([*RUN, f"dataset.root={voc}", "save_masks=png", "protocol=diffcut",
                        "protocol.size=128", f"paths.output_dir={png_run}"])
    with pytest.raises(RunMismatchError, match="protocol.name"):
        evaluate(cfg)


def test_rescore_equals_scoring_the_saved_masks(voc, png_run, tmp_path, capsys):
    out = tmp_path / "rescored"
    assert rescore_main([str(png_run), "--protocol", "diffcut", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    data = Voc21(voc, size=128)
    for name, summary in result["methods"].items():
        tp = np.zeros(21, dtype=np.int64)
        fp, fn, valid = tp.copy(), tp.copy(), 0
        for image_id in data.ids:
            mask = torch.as_tensor(read_mask_png(png_run / "masks" / name / f"{image_id}.png"))
            stats = image_stats(mask[None], data.label(image_id)[None], 21, protocol="diffcut", background=0)[0]
            tp, fp, fn, valid = tp + stats["tp"], fp + stats["fp"], fn + stats["fn"], valid + stats["valid"]
        assert [summary["tp"], summary["fp"], summary["fn"], summary["valid"]] == [
            tp.tolist(), fp.tolist(), fn.tolist(), valid]
    assert result["run"]["protocol"] == "diffcut" and result["run"]["geometry"] == "diffseg"
    rescored = result["provenance"]["rescored"]
    assert rescored["source"] == str(png_run) and rescored["geometry_differs"]
    assert any("min(h, w) - 1" in n for n in result["provenance"]["notes"])
    source = json.loads((png_run / "metrics.json").read_text())
    assert result["methods"]["DiffSeg"]["tp"] != source["methods"]["DiffSeg"]["tp"]
    # again in the same folder: same result; a missing run is refused with exit status 2
    assert rescore_main([str(png_run), "--protocol", "diffcut", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["methods"] == result["methods"]
    assert rescore_main([str(tmp_path / "nothing"), "--protocol", "diffcut", "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_rescore_refuses_an_edited_run_json_or_changed_label_files(voc, png_run, tmp_path, capsys):
    """The re-scored numbers must rest on the run's own identity and on the label files the run scored."""
    edited = tmp_path / "edited"
    shutil.copytree(png_run, edited)
    stored = json.loads((edited / "run.json").read_text())
    stored["settings"]["model"]["timestep"] = 1  # an edit after the run: the fingerprint no longer matches
    (edited / "run.json").write_text(json.dumps(stored))
    assert rescore_main([str(edited), "--protocol", "diffcut", "--out", str(tmp_path / "a")]) == 2
    assert "run.json does not match" in capsys.readouterr().err
    other = tmp_path / "voc_other"
    shutil.copytree(voc, other)
    label = other / "SegmentationClass" / f"{Voc21(voc, size=128).ids[0]}.png"
    Image.open(label).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(label)  # same size, other content
    assert rescore_main([str(png_run), "--protocol", "diffcut", "--out", str(tmp_path / "b"), "--root",
                         str(other)]) == 2
    assert label.stem in capsys.readouterr().err
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_save_masks_coco_round_trips_to_the_png_masks(voc, png_run, tmp_path):
    out = tmp_path / "coco_run"
    result = evaluate(compose_eval([*RUN, f"dataset.root={voc}", "save_masks=coco", f"paths.output_dir={out}"]))
    assert not any(p.suffix == ".png" for p in (out / "masks").rglob("*"))
    for name in result["methods"]:
        results = CocoResults.load(out / "masks" / f"{name}.json")
        assert results.image_ids == result["image_ids"]
        for image_id in result["image_ids"]:
            png = read_mask_png(png_run / "masks" / name / f"{image_id}.png")
            assert np.array_equal(results.mask(image_id), png)
    # the COCO masks re-score exactly as the PNG masks do
    a, b = tmp_path / "from_png", tmp_path / "from_coco"
    assert rescore_main([str(png_run), "--protocol", "diffcut", "--out", str(a)]) == 0
    assert rescore_main([str(out), "--protocol", "diffcut", "--out", str(b)]) == 0
    assert (json.loads((a / "metrics.json").read_text())["methods"]
            == json.loads((b / "metrics.json").read_text())["methods"])


def test_every_method_of_a_diffcut_run_is_scored_under_it(voc, tmp_path):
    out = tmp_path / "diffcut_run"
    result = evaluate(compose_eval([*RUN, f"dataset.root={voc}", "protocol=diffcut", "protocol.size=128",
                                    "save_masks=png", f"paths.output_dir={out}"]))
    assert result["run"]["protocol"] == "diffcut"
    data = Voc21(voc, size=128)
    raws = {i: np.asarray(Image.open(voc / "SegmentationClass" / f"{i}.png")).astype(np.int64) for i in data.ids}
    for name, summary in result["methods"].items():
        tp = np.zeros(21, dtype=np.int64)
        for image_id, raw in raws.items():
            mask = read_mask_png(out / "masks" / name / f"{image_id}.png")
            assert mask.shape == (128, 128)
            label = release_labels(release_label_geometry(raw, 128, 128), "voc")
            tp += to_project_order(release_image(mask, label, 21, background=True)[0])
        assert summary["tp"] == tp.tolist(), name
