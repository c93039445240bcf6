"""Class tables, the two datasets on synthetic roots, and corrupt-tolerant batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from eval.data.base import contiguous_lut, read_id_list
from eval.data.cityscapes import CITYSCAPES27_CLASSES, Cityscapes27
from eval.data.coco_stuff import (
    COCO_STUFF27_CLASSES,
    COCO_STUFF_FINE_CLASSES,
    COCO_STUFF_FINE_NAMES,
    CocoStuff27,
    coco_stuff_fine_to_coarse_lut,
)
from eval.data.loader import (
    Batch,
    DatasetNotFoundError,
    SkipCorrupt,
    Skipped,
    build_loader,
    collate_skipping,
    parse_shard,
    select_ids,
)
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff

SIZE = 48


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=6, seed=3, size_range=(60, 110))
    return root


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    write_synthetic_cityscapes(root, num_images=4, seed=5, size=(64, 128))
    return root


def ref_label(png: np.ndarray, lut: np.ndarray, out: int) -> np.ndarray:
    """Independent reference: centre crop, half-pixel nearest, then the LUT."""
    h, w = png.shape
    s = min(h, w)
    crop = png[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    idx = [min(int(math.floor((d + 0.5) * s / out)), s - 1) for d in range(out)]
    return lut[crop[np.ix_(idx, idx)].astype(np.int64)]


# ----------------------------------------------------------------------------- classes


def test_coco_class_tables():
    assert len(COCO_STUFF27_CLASSES) == 27 and len(set(COCO_STUFF27_CLASSES)) == 27
    assert COCO_STUFF27_CLASSES[0] == "electronic" and COCO_STUFF27_CLASSES[9] == "person"
    assert COCO_STUFF27_CLASSES[11] == "vehicle" and COCO_STUFF27_CLASSES[12] == "ceiling"
    assert COCO_STUFF27_CLASSES[26] == "water"
    assert len(COCO_STUFF_FINE_CLASSES) == 182 and len(set(COCO_STUFF_FINE_NAMES)) == 182
    names = COCO_STUFF_FINE_NAMES
    assert (names[0], names[1], names[11], names[90], names[91], names[181]) == (
        "person", "bicycle", "street sign", "hair brush", "banner", "wood",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fine", "coarse"),
    [
        (0, "person"),
        (2, "vehicle"),
        (11, "outdoor"),  # street sign (never annotated, still mapped)
        (17, "animal"),
        (76, "electronic"),  # cell phone
        (90, "indoor"),  # hair brush
        (91, "textile"),  # banner
        (123, "plant"),  # grass
        (148, "ground"),  # road
        (156, "sky"),  # sky-other
        (170, "wall"),  # wall-brick
        (179, "window"),  # window-blind
        (181, "solid"),  # wood
    ],
)
def test_coco_fine_to_coarse(fine, coarse):
    lut = coco_stuff_fine_to_coarse_lut()
    assert lut[fine] == COCO_STUFF27_CLASSES.index(coarse)


def test_coco_lut_shape_and_ignore():
    lut = coco_stuff_fine_to_coarse_lut()
    assert lut.dtype == np.int64 and lut.shape == (256,)
    assert lut[0] == 9 and lut[156] == 23 and lut[170] == 18 and lut[11] == 8
    assert lut[255] == -1 and (lut[182:] == -1).all()
    assert set(lut[:182].tolist()) == set(range(27))  # every coarse class is reachable


def test_cityscapes_lut():
    lut = contiguous_lut(27, first=7)
    assert lut.dtype == np.int64 and lut.shape == (256,)
    assert len(CITYSCAPES27_CLASSES) == 27
    assert (lut[:7] == -1).all() and (lut[34:] == -1).all()
    np.testing.assert_array_equal(lut[7:34], np.arange(27))
    assert CITYSCAPES27_CLASSES[int(lut[7])] == "road"
    assert CITYSCAPES27_CLASSES[int(lut[23])] == "sky"
    assert CITYSCAPES27_CLASSES[int(lut[26])] == "car"
    assert CITYSCAPES27_CLASSES[int(lut[33])] == "bicycle"


# ----------------------------------------------------------------------------- shards


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard((0, 2)) == (0, 2)
    for bad in ("4/4", "-1/3", "a/b", "1", "1/0", (2, 2)):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_select_ids_limit_then_shard():
    ids = [f"{i:03d}" for i in range(10)]
    assert select_ids(ids, limit=4) == ids[:4]
    assert select_ids(ids, shard="1/3") == ["001", "004", "007"]
    # limit first, then shard: the shards of a limited run partition it
    shards = [select_ids(ids, limit=7, shard=f"{i}/3") for i in range(3)]
    assert sorted(sum(shards, [])) == ids[:7]


# ----------------------------------------------------------------------------- COCO-Stuff


def test_coco_dataset_items(coco_root):
    ds = CocoStuff27(coco_root, size=SIZE)
    ids = read_id_list(coco_root / "Coco164kFull_Stuff_Coarse_7.txt")
    assert ds.ids == ids and len(ds) == 6
    lut = coco_stuff_fine_to_coarse_lut()
    saw_ignore = False
    for k in range(len(ds)):
        image, label, image_id = ds[k]
        assert image_id == ids[k]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert label.shape == (SIZE, SIZE) and label.dtype == torch.int64
        png = np.asarray(Image.open(coco_root / "annotation_val2017" / f"{image_id}.png"))
        expected = ref_label(png, lut, SIZE)
        np.testing.assert_array_equal(label.numpy(), expected)
        assert ((label.numpy() >= -1) & (label.numpy() < 27)).all()
        # ignore exactly where the (resampled) PNG had 255
        resampled = ref_label(png, np.arange(256), SIZE)
        np.testing.assert_array_equal(label.numpy() == -1, resampled == 255)
        saw_ignore |= bool((resampled == 255).any())
    assert saw_ignore


def test_coco_ids_in_list_order_limit_and_shards(tmp_path):
    ids = ["000000000900", "000000000100", "000000000500", "000000000300", "000000000200"]
    write_synthetic_coco_stuff(tmp_path, seed=1, size_range=(40, 60), ids=ids)
    # blank lines and stray whitespace in the list are ignored
    (tmp_path / "Coco164kFull_Stuff_Coarse_7.txt").write_text("\n".join(f"  {i} " for i in ids) + "\n\n")
    assert CocoStuff27(tmp_path, size=16).ids == ids
    assert CocoStuff27(tmp_path, size=16, limit=3).ids == ids[:3]
    covered = []
    for i in range(3):
        shard = CocoStuff27(tmp_path, size=16, shard=f"{i}/3")
        assert shard.ids == ids[i::3]
        covered += [shard[k][2] for k in range(len(shard))]
    assert sorted(covered) == sorted(ids) and len(covered) == len(set(covered))
    limited = [CocoStuff27(tmp_path, size=16, limit=4, shard=(i, 2)).ids for i in range(2)]
    assert sorted(sum(limited, [])) == sorted(ids[:4])


def test_coco_missing_root_and_list(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        CocoStuff27(missing)
    assert str(missing) in str(info.value) and "make data-coco" in str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        CocoStuff27(tmp_path / "empty")
    assert "Coco164kFull_Stuff_Coarse_7.txt" in str(info.value) and "make data-coco" in str(info.value)


# ----------------------------------------------------------------------------- Cityscapes


def test_cityscapes_dataset_items(city_root):
    ds = Cityscapes27(city_root, size=SIZE)
    assert len(ds) == 4
    assert ds.ids == sorted(ds.ids)
    lut = contiguous_lut(27, first=7)
    for k in range(len(ds)):
        image, label, image_id = ds[k]
        city = image_id.split("_")[0]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert label.shape == (SIZE, SIZE) and label.dtype == torch.int64
        png_path = city_root / "gtFine" / "val" / city / f"{image_id}_gtFine_labelIds.png"
        png = np.asarray(Image.open(png_path))
        assert (png < 7).any() and (png >= 7).any()  # the fixture has void and valid ids
        np.testing.assert_array_equal(label.numpy(), ref_label(png, lut, SIZE))
        raw = ref_label(png, np.arange(256), SIZE)
        np.testing.assert_array_equal(label.numpy() == -1, (raw < 7) | (raw > 33))
    shards = [Cityscapes27(city_root, size=SIZE, shard=f"{i}/2").ids for i in range(2)]
    assert sorted(sum(shards, [])) == ds.ids


def test_cityscapes_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Cityscapes27(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value) and "make data-cityscapes" in str(info.value)
    with pytest.raises(FileNotFoundError, match="make data-cityscapes"):
        Cityscapes27(tmp_path)


# ----------------------------------------------------------------------------- loader


def test_collate_skipping_mixed_and_empty():
    item = (torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.int64), "a")
    batch = collate_skipping([item, Skipped("b", "broken b"), item])
    assert isinstance(batch, Batch)
    assert batch.images.shape == (2, 3, 4, 4) and batch.labels.shape == (2, 4, 4)
    assert batch.ids == ["a", "a"] and batch.skipped == [("b", "broken b")]
    empty = collate_skipping([Skipped("c", "x")], size=4)
    assert len(empty) == 0 and empty.images.shape == (0, 3, 4, 4) and empty.labels.shape == (0, 4, 4)
    assert empty.images.dtype == torch.float32 and empty.labels.dtype == torch.int64


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches_in_order(coco_root, num_workers):
    ds = CocoStuff27(coco_root, size=SIZE)
    loader = build_loader(ds, batch_size=4, num_workers=num_workers, pin_memory=False)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 2]
    assert sum((b.ids for b in batches), []) == ds.ids
    assert batches[0].images.shape == (4, 3, SIZE, SIZE) and batches[0].labels.dtype == torch.int64
    assert all(b.skipped == [] for b in batches)
    torch.testing.assert_close(batches[1].images[1], ds[5][0])


def test_corrupt_files_are_skipped(tmp_path):
    ids = write_synthetic_coco_stuff(tmp_path, num_images=4, seed=2, size_range=(40, 70))
    bad_jpg = tmp_path / "val2017" / f"{ids[1]}.jpg"
    data = bad_jpg.read_bytes()
    bad_jpg.write_bytes(data[: len(data) // 3])  # truncated JPEG
    (tmp_path / "annotation_val2017" / f"{ids[3]}.png").write_bytes(b"\x89PNG garbage")
    ds = CocoStuff27(tmp_path, size=16)
    with pytest.raises(OSError):
        ds[1]
    wrapped = SkipCorrupt(ds)
    assert isinstance(wrapped[1], Skipped) and wrapped[1].image_id == ids[1]
    assert wrapped.ids == ds.ids and wrapped.size == 16
    batches = list(build_loader(ds, batch_size=4, num_workers=0))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.ids == [ids[0], ids[2]]
    assert batch.images.shape == (2, 3, 16, 16)
    skipped = dict(batch.skipped)
    assert set(skipped) == {ids[1], ids[3]}
    assert f"{ids[1]}.jpg" in skipped[ids[1]] and f"{ids[3]}.png" in skipped[ids[3]]
    # every item of a batch skipped -> an empty batch, not an error
    (tmp_path / "val2017" / f"{ids[0]}.jpg").unlink()
    only_bad = list(build_loader(CocoStuff27(tmp_path, size=16, limit=2), batch_size=2, num_workers=0))
    assert len(only_bad[0]) == 0 and only_bad[0].images.shape == (0, 3, 16, 16)
    assert {i for i, _ in only_bad[0].skipped} == {ids[0], ids[1]}
    assert f"{ids[0]}.jpg" in dict(only_bad[0].skipped)[ids[0]]


# ----------------------------------------------------------------------------- label files with alpha


def test_grey_label_with_alpha_reads_as_grey_like_rgba_and_a_coloured_one_is_refused(tmp_path):
    from diffseg.preprocess import LabelFormatError, load_label

    values = np.array([[0, 3, 3, 255], [7, 7, 0, 1]], dtype=np.uint8)
    alpha = np.array([[255, 0, 128, 255], [255, 255, 10, 0]], dtype=np.uint8)  # varies: must not be read as labels
    Image.fromarray(np.stack([values, alpha], axis=-1), mode="LA").save(tmp_path / "la.png")
    Image.fromarray(np.stack([values, values, values, alpha], axis=-1), mode="RGBA").save(tmp_path / "rgba.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    for name in ("la.png", "rgba.png"):
        assert load_label(tmp_path / name).tolist() == values.tolist(), name
    coloured = np.stack([values, values[::-1], values, alpha], axis=-1)
    Image.fromarray(coloured, mode="RGBA").save(tmp_path / "colour.png")
    with pytest.raises(LabelFormatError, match="colour"):
        load_label(tmp_path / "colour.png")
