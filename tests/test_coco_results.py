"""Predicted masks in COCO results format: RLE per segment, round trip through pycocotools to PNG masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval
from PIL import Image
from pycocotools import mask as mask_utils

from eval.data.synthetic import write_synthetic_voc
from eval.data.voc import Voc21
from eval.report.coco_results import main
from eval.run import evaluate
from eval.run.coco_results import (
    CocoResults,
    mask_to_records,
    matched_categories,
    records_to_mask,
    segment_categories,
    write_pngs,
)


def random_mask(rng: np.random.Generator, h: int, w: int, ids) -> np.ndarray:
    """Blocky segments with the given (arbitrary, non-contiguous) ids."""
    coarse = rng.choice(np.asarray(ids), size=(h // 4 + 1, w // 4 + 1))
    return np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:h, :w]


def test_records_decode_with_pycocotools_to_the_mask(tmp_path):
    rng = np.random.default_rng(0)
    mask = random_mask(rng, 37, 53, [0, 2, 7, 300])
    records = mask_to_records(mask, "2008_000002", {2: 5, 7: None})
    assert [r["segment_id"] for r in records] == sorted(np.unique(mask).tolist())
    assert [r["category_id"] for r in records] == [None, 5, None, None]
    json.dumps(records)  # plain JSON types only
    # independent decode: pycocotools on each record, painted here
    rebuilt = np.full(mask.shape, -1)
    for r in records:
        assert r["image_id"] == "2008_000002" and r["segmentation"]["size"] == [37, 53]
        assert isinstance(r["segmentation"]["counts"], str)
        binary = mask_utils.decode(r["segmentation"]).astype(bool)
        assert (rebuilt[binary] == -1).all()
        rebuilt[binary] = r["segment_id"]
    np.testing.assert_array_equal(rebuilt, mask)
    np.testing.assert_array_equal(records_to_mask(records), mask)
    torch_records = mask_to_records(torch.from_numpy(mask), "x")
    assert [r["segmentation"] for r in torch_records] == [r["segmentation"] for r in records]


def test_results_file_round_trip_and_pngs(tmp_path):
    rng = np.random.default_rng(1)
    masks = {
        "000000000139": random_mask(rng, 40, 64, [0, 1, 2, 3, 4, 5]),
        "ADE_val_00000001": random_mask(rng, 33, 21, [3, 9]),
        "big/ids": random_mask(rng, 16, 16, [0, 256, 1000]),  # 16-bit PNG, "/" in the id
    }
    results = CocoResults()
    for image_id, mask in masks.items():
        results.add(image_id, mask, {0: 1})
    results.add("000000000139", masks["000000000139"])  # replaced, not duplicated
    path = results.save(tmp_path / "DiffSeg.json")
    loaded = CocoResults.load(path)
    assert loaded.image_ids == list(masks) and len(loaded) == 3
    assert len(loaded.records()) == sum(len(np.unique(m)) for m in masks.values())
    for image_id, mask in masks.items():
        np.testing.assert_array_equal(loaded.mask(image_id), mask)
    written = write_pngs(path, tmp_path / "png")
    assert sorted(p.name for p in written) == ["000000000139.png", "ADE_val_00000001.png", "big_ids.png"]
    for image_id, mask in masks.items():
        png = Image.open(tmp_path / "png" / f"{image_id.replace('/', '_')}.png")
        assert png.mode in (("L",) if mask.max() < 256 else ("I;16", "I"))
        np.testing.assert_array_equal(np.asarray(png).astype(np.int64), mask)


def test_bad_records_are_refused(tmp_path):
    mask = np.zeros((8, 8), dtype=np.int64)
    mask[:, 4:] = 1
    records = mask_to_records(mask, "a")
    with pytest.raises(ValueError, match="belong to no segment"):
        records_to_mask(records[:1])
    overlap = dict(records[1], segmentation=records[0]["segmentation"].copy())
    full = mask_to_records(np.zeros((8, 8), dtype=np.int64), "a")[0]
    with pytest.raises(ValueError, match="overlap"):
        records_to_mask([full, overlap])
    with pytest.raises(ValueError, match="several images"):
        records_to_mask([records[0], dict(records[1], image_id="b")])
    with pytest.raises(ValueError, match="negative"):
        mask_to_records(mask - 1, "a")
    (tmp_path / "x.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="not a COCO results file"):
        CocoResults.load(tmp_path / "x.json")


def test_categories_follow_the_matching():
    assert segment_categories([4, 0, 7], [0, 3, 4, 7]) == {0: 1, 3: None, 4: 0, 7: 2}
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, -1, -1]])
    pred = np.array([[5, 5, 3, 3], [5, 5, 3, 3], [3, 3, 8, 8]])
    # class 0 <- segment 5, class 1 <- segment 3 (4 px vs 2 px for class 2), class 2 <- another column
    cats = matched_categories(pred, label, num_classes=3)
    assert cats[5] == 0 and cats[3] == 1 and cats[8] in (None, 2)
    assert set(cats) == {3, 5, 8}


def test_cli_decodes_a_results_file(tmp_path, capsys):
    results = CocoResults()
    results.add("im", np.arange(12).reshape(3, 4) % 3)
    results.save(tmp_path / "r.json")
    assert main([str(tmp_path / "r.json"), "--png-dir", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "im.png")), np.arange(12).reshape(3, 4) % 3)
    (tmp_path / "bad.json").write_text("[{")
    assert main([str(tmp_path / "bad.json"), "--png-dir", str(tmp_path / "o2")]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_runs_masks_round_trip_through_a_results_json(tmp_path):
    """Masks a run saved as PNGs -> COCO results JSON (with matched classes) -> the same PNG bytes' values."""
    root = tmp_path / "VOC2012"
    ids = write_synthetic_voc(root, num_images=2, seed=7, size_range=(60, 90))
    cfg = compose_eval(["experiment=voc21", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0",
                        "progress=false", "device=cpu", "save_masks=true", "grid_images=0",
                        "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null",
                        f"dataset.root={root}", f"paths.output_dir={tmp_path / 'run'}"])  # fmt: skip
    evaluate(cfg)
    data = Voc21(root, size=128)
    results = CocoResults()
    for k, image_id in enumerate(ids):
        mask = np.asarray(Image.open(tmp_path / "run" / "masks" / "DiffSeg" / f"{image_id}.png")).astype(np.int64)
        results.add(image_id, mask, matched_categories(mask, data[k][1].numpy(), 21))
    path = results.save(tmp_path / "DiffSeg.json")
    records = json.loads(path.read_text())
    assert {r["image_id"] for r in records} == set(ids)
    assert any(r["category_id"] is not None for r in records)
    write_pngs(path, tmp_path / "decoded")
    for image_id in ids:
        original = np.asarray(Image.open(tmp_path / "run" / "masks" / "DiffSeg" / f"{image_id}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "decoded" / f"{image_id}.png")), original)
