"""The follow-up benchmarks (VOC-21, Context-60, COCO-Object-81, ADE20K-150): class tables,
label building with pycocotools, synthetic roots end to end, and their `make data-*` preparation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from archives import LINK_CASE, assert_refused, escaping_cases, write_tar, write_zip
from hydra_compose import compose_eval
from PIL import Image
from reference_protocols import release_image, release_label_geometry, release_labels, to_project_order
from scipy.optimize import linear_sum_assignment
from test_download import closed_port_url
from test_download import server as server  # noqa: F401 (the local HTTP server fixture)

from eval.data import ade20k, voc
from eval.data import download as dl
from eval.data.ade20k import ADE20K150_CLASSES, Ade20k150
from eval.data.base import contiguous_lut
from eval.data.coco_object import (
    COCO_OBJECT81_CLASSES,
    INSTANCE_LABEL_DIR,
    CocoObject81,
    build_instance_labels,
    coco_stuffthing_to_object_lut,
    instances_label,
    label_agreement,
    load_instances,
)
from eval.data.context import (
    CONTEXT60_CLASSES,
    CONTEXT_DETAIL_IDS,
    Context60,
    build_context_labels,
    context_label,
    load_detail,
)
from eval.data.download import safe_extract_tar
from eval.data.loader import DatasetNotFoundError
from eval.data.synthetic import (
    shape_mask,
    write_synthetic_ade20k,
    write_synthetic_coco_object,
    write_synthetic_context,
    write_synthetic_voc,
)
from eval.data.voc import VOC21_CLASSES, Voc21
from eval.run import evaluate

REPO = Path(__file__).resolve().parents[1]
SIZE = 48


def ref_label(png: np.ndarray, table, out: int) -> np.ndarray:
    """Independent reference: centre crop, half-pixel nearest, then ``table`` (value -> class)."""
    h, w = png.shape
    s = min(h, w)
    crop = png[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    idx = [min(int(math.floor((d + 0.5) * s / out)), s - 1) for d in range(out)]
    return np.vectorize(table, otypes=[np.int64])(crop[np.ix_(idx, idx)].astype(np.int64))


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


# Expected label semantics, written out here independently of eval.data.classes.
def voc_table(v):
    return v if v <= 20 else -1


def ade_table(v):
    return v - 1 if 1 <= v <= 150 else -1


def context_table(v):
    return v if v <= 59 else -1


def object_png_table(v):
    """stuffthingmaps value -> COCO-Object class: things (COCO id - 1, 80 used ids) 1..80, stuff 0."""
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}  # street sign, hat, shoe, ... hair brush
    if v <= 90:
        return -1 if v in unused else 1 + sum(1 for u in range(v) if u not in unused)
    return 0 if v <= 181 else -1


# ----------------------------------------------------------------------------- class tables


def test_class_tables():
    assert len(VOC21_CLASSES) == 21 and VOC21_CLASSES[0] == "background" and VOC21_CLASSES[20] == "tvmonitor"
    lut = contiguous_lut(21)
    assert lut[0] == 0 and lut[20] == 20 and lut[21] == -1 and lut[255] == -1
    assert len(CONTEXT60_CLASSES) == 60 and CONTEXT60_CLASSES[0] == "background"
    # a few Detail ids of the standard 59-class conversion, and where they land
    for detail_id, cls, name in [(2, 1, "aeroplane"), (232, 33, "light"), (284, 37, "person"),
                                 (324, 41, "road"), (397, 50, "table"), (458, 59, "wood")]:  # fmt: skip
        assert CONTEXT_DETAIL_IDS.index(detail_id) + 1 == cls and CONTEXT60_CLASSES[cls] == name
    assert len(COCO_OBJECT81_CLASSES) == 81
    assert COCO_OBJECT81_CLASSES[1] == "person" and COCO_OBJECT81_CLASSES[12] == "stop sign"
    assert COCO_OBJECT81_CLASSES[80] == "toothbrush" and "street sign" not in COCO_OBJECT81_CLASSES
    np.testing.assert_array_equal(coco_stuffthing_to_object_lut(), [object_png_table(v) for v in range(256)])
    assert len(ADE20K150_CLASSES) == 150 and ADE20K150_CLASSES[0] == "wall" and ADE20K150_CLASSES[-1] == "flag"
    np.testing.assert_array_equal(contiguous_lut(150, first=1), [ade_table(v) for v in range(256)])


# ----------------------------------------------------------------------------- VOC-21 and ADE20K-150


def test_voc_items_and_ids(tmp_path):
    ids = write_synthetic_voc(tmp_path, num_images=3, seed=2, size_range=(60, 100))
    ds = Voc21(tmp_path, size=SIZE)
    assert ds.ids == ids and ds.num_classes == 21 and ds.background == 0
    saw = set()
    for k in range(len(ds)):
        image, label, image_id = ds[k]
        assert image.shape == (3, SIZE, SIZE) and image_id == ids[k]
        png_img = Image.open(tmp_path / "SegmentationClass" / f"{image_id}.png")
        assert png_img.mode == "P"  # palette indices are the classes, not the colours
        expected = ref_label(read_png(tmp_path / "SegmentationClass" / f"{image_id}.png"), voc_table, SIZE)
        np.testing.assert_array_equal(label.numpy(), expected)
        saw |= set(np.unique(label.numpy()).tolist())
    assert -1 in saw and 0 in saw and max(saw) > 0  # boundaries ignored, background and objects kept
    train = Voc21(tmp_path, size=SIZE, split="train").ids
    assert len(train) == 1 and train[0] not in ids
    with pytest.raises(DatasetNotFoundError, match="make data-voc") as info:
        Voc21(tmp_path / "none")
    assert str(tmp_path / "none") in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="val.txt"):
        Voc21(tmp_path / "JPEGImages")


def test_ade20k_items_and_ids(tmp_path):
    ids = write_synthetic_ade20k(tmp_path, num_images=3, seed=1, size_range=(60, 100))
    ds = Ade20k150(tmp_path, size=SIZE)
    assert ds.ids == ids == sorted(ids) and all(i.startswith("ADE_val_") for i in ids)
    assert ds.background is None and ds.num_classes == 150
    for k in range(len(ds)):
        _image, label, image_id = ds[k]
        png = read_png(tmp_path / "annotations" / "validation" / f"{image_id}.png")
        assert (png == 0).any()
        np.testing.assert_array_equal(label.numpy(), ref_label(png, ade_table, SIZE))
    assert Ade20k150(tmp_path, size=SIZE, shard="1/2").ids == ids[1::2]
    with pytest.raises(DatasetNotFoundError, match="make data-ade20k"):
        Ade20k150(tmp_path / "none")
    with pytest.raises(DatasetNotFoundError, match="images/validation"):
        Ade20k150(tmp_path / "images")


# ----------------------------------------------------------------------------- Context-60


def paint_context(shapes, h: int, w: int) -> np.ndarray:
    """The test's own painting: file order, later wins; Detail id -> position in the sorted 59 + 1."""
    label = np.zeros((h, w), dtype=np.int64)
    for shape in shapes:
        label[shape_mask(shape, h, w)] = sorted(CONTEXT_DETAIL_IDS).index(shape.category_id) + 1
    return label


@pytest.fixture(scope="module")
def context_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("VOC2010")
    expected = write_synthetic_context(root, num_images=4, seed=6, size_range=(60, 100))
    ids = build_context_labels(root, load_detail(root / "trainval_merged.json"), progress=False)
    return root, expected, ids


def test_context_labels_equal_independent_painting(context_root):
    root, expected, ids = context_root
    assert ids == sorted(expected)
    assert (root / "ImageSets/SegmentationContext/val.txt").read_text().split() == ids
    built = sorted(p.stem for p in (root / "SegmentationClassContext").iterdir())
    assert built == ids  # the train-phase image is not built
    encodings, overlapped, unannotated = set(), False, False
    for name, shapes in expected.items():
        png = read_png(root / "SegmentationClassContext" / f"{name}.png")
        h, w = png.shape
        assert Image.open(root / "JPEGImages" / f"{name}.jpg").size == (w, h)
        np.testing.assert_array_equal(png, paint_context(shapes, h, w))
        encodings |= {s.encoding for s in shapes}
        cover = sum(shape_mask(s, h, w).astype(int) for s in shapes)
        overlapped |= bool((cover > 1).any())
        unannotated |= bool((cover == 0).any())
    assert encodings == {"polygon", "rle", "rle_counts"} and overlapped and unannotated


def test_context_unknown_category_and_bad_rle_are_errors(tmp_path):
    write_synthetic_context(tmp_path, num_images=1, seed=2, size_range=(40, 60))
    detail = json.loads((tmp_path / "trainval_merged.json").read_text())
    val_id = next(img["image_id"] for img in detail["images"] if img["phase"] == "val")
    ann = next(a for a in detail["annos_segmentation"] if a["image_id"] == val_id)
    ann["category_id"] = 3  # a Detail id outside the 59 classes
    (tmp_path / "bad.json").write_text(json.dumps(detail))
    coco = load_detail(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"\[3\]"):
        context_label(coco, val_id)
    ann["category_id"] = 2
    ann["segmentation"] = {"size": [7, 9], "counts": [63]}
    (tmp_path / "bad.json").write_text(json.dumps(detail))
    with pytest.raises(ValueError, match="decodes to"):
        context_label(load_detail(tmp_path / "bad.json"), val_id)
    (tmp_path / "not_detail.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annos_segmentation"):
        load_detail(tmp_path / "not_detail.json")
    with pytest.raises(ValueError, match="no images with phase 'test'"):
        load_detail(tmp_path / "trainval_merged.json", phase="test")


def test_context_dataset_items(context_root):
    root, _expected, ids = context_root
    ds = Context60(root, size=SIZE)
    assert ds.ids == ids and ds.num_classes == 60 and ds.background == 0
    for k in range(len(ds)):
        _image, label, image_id = ds[k]
        png = read_png(root / "SegmentationClassContext" / f"{image_id}.png")
        np.testing.assert_array_equal(label.numpy(), ref_label(png, context_table, SIZE))
    with pytest.raises(DatasetNotFoundError, match="make data-context") as info:
        Context60(root / "JPEGImages")
    assert "trainval_merged.json" in str(info.value)


# ----------------------------------------------------------------------------- COCO-Object-81


def paint_instances(shapes, h: int, w: int, order: str) -> np.ndarray:
    """The test's own painting of the instances: COCO id -> position among the 80 things."""
    things = [i for i in range(1, 92) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}]
    masks = [shape_mask(s, h, w) for s in shapes]
    indices = list(range(len(shapes)))
    if order == "smallest_on_top":
        indices.sort(key=lambda i: -int(masks[i].sum()))
    label = np.zeros((h, w), dtype=np.int64)
    for i in indices:
        label[masks[i]] = things.index(shapes[i].category_id) + 1
    return label


@pytest.fixture(scope="module")
def object_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_object")
    ids, expected = write_synthetic_coco_object(root, num_images=4, seed=3, size_range=(60, 100))
    return root, ids, expected


def test_instance_labels_follow_the_overlap_rule(object_root):
    root, ids, expected = object_root
    coco = load_instances(root / "annotations" / "instances_val2017.json")
    by_stem = {Path(info["file_name"]).stem: i for i, info in coco.imgs.items()}
    assert len(by_stem) == len(ids) + 1  # the JSON also has an unlisted image
    differs = 0
    for name in ids:
        shapes = expected[name]
        h, w = read_png(root / "annotation_val2017" / f"{name}.png").shape
        assert {s.encoding for s in shapes} >= {"rle_counts"} and any(s.iscrowd for s in shapes)
        small = instances_label(coco, by_stem[name], "smallest_on_top")
        in_order = instances_label(coco, by_stem[name], "file_order")
        np.testing.assert_array_equal(small, paint_instances(shapes, h, w, "smallest_on_top"))
        np.testing.assert_array_equal(in_order, paint_instances(shapes, h, w, "file_order"))
        differs += int((small != in_order).any())
    assert differs > 0  # the synthetic file has overlaps the two rules resolve differently
    with pytest.raises(ValueError, match="overlap"):
        instances_label(coco, by_stem[ids[0]], "largest_on_top")


def test_object_sources_agree_where_they_should(object_root, tmp_path):
    root, ids, _expected = object_root
    shutil.rmtree(root / INSTANCE_LABEL_DIR, ignore_errors=True)  # another test of this module may have built them
    assert build_instance_labels(root, ids, progress=False) == len(ids)
    assert sorted(p.stem for p in (root / INSTANCE_LABEL_DIR).iterdir()) == sorted(ids)
    assert build_instance_labels(root, ids, progress=False) == 0  # kept
    pngs = CocoObject81(root, size=SIZE)
    inst = CocoObject81(root, size=SIZE, label_source="instances")
    assert pngs.ids == inst.ids == ids and pngs.background == inst.background == 0
    for k in range(len(ids)):
        _i, a, image_id = pngs[k]
        _j, b, _ = inst[k]
        raw = read_png(root / "annotation_val2017" / f"{image_id}.png")
        np.testing.assert_array_equal(a.numpy(), ref_label(raw, object_png_table, SIZE))
        valid = a.numpy() >= 0
        assert (~valid).any() and (b.numpy() >= 0).all()  # the 255 band is ignored in the PNG source only
        np.testing.assert_array_equal(a.numpy()[valid], b.numpy()[valid])
        assert (a.numpy() > 0).any()
    report = label_agreement(root, ids)
    assert report["images"] == len(ids) and report["agreement"] == 100.0 and report["object_agreement"] == 100.0
    assert report["ignored_pixels"] > 0 and report["object_pixels"] > 0
    # with the other rule the sources disagree where instances of different classes overlap
    copy = tmp_path / "copy"
    copy.mkdir()
    for folder in ("annotation_val2017", "annotations"):
        (copy / folder).symlink_to(root / folder)
    build_instance_labels(copy, ids, overlap="file_order", progress=False)
    other = label_agreement(copy, ids)
    assert other["object_agreement"] < 100.0 and other["pixels"] == report["pixels"]
    assert other["lowest"][0][1] < 100.0
    with pytest.raises(KeyError, match="000000000001"):
        build_instance_labels(copy, ["000000000001"], progress=False)


def test_coco_object_missing_instances_names_the_target(tmp_path):
    ids, _ = write_synthetic_coco_object(tmp_path, num_images=1, seed=0, size_range=(40, 60))
    assert CocoObject81(tmp_path).ids == ids
    with pytest.raises(DatasetNotFoundError, match="make data-coco-object") as info:
        CocoObject81(tmp_path, label_source="instances")
    assert INSTANCE_LABEL_DIR in str(info.value)
    with pytest.raises(ValueError, match="label_source"):
        CocoObject81(tmp_path, label_source="polygons")
    with pytest.raises(DatasetNotFoundError, match="make data-coco"):
        CocoObject81(tmp_path / "none")


# ----------------------------------------------------------------------------- end to end with the runner

E2E = 128  # the tiny backbone needs >= 128 px (attention sides 16, 8, 4, 2)
FAST = ["model=tiny", f"dataset.size={E2E}", "batch_size=2", "num_workers=0", "progress=false", "device=cpu",
        "methods.kmeans_c.segmenter.n_init=1", "methods.kmeans_s.segmenter.n_init=1", "save_masks=true",
        "grid_images=0"]  # fmt: skip


def recount(masks_dir: Path, labels: dict[str, np.ndarray], num_classes: int) -> dict[str, list[int]]:
    """Per-image Hungarian matching from the saved masks, written out here (rows = ground truth)."""
    tp, fp, fn = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    valid_total = 0
    for image_id, label in labels.items():
        pred = read_png(masks_dir / f"{image_id}.png")
        ncols = max(num_classes, int(pred.max()) + 1)
        hist = np.zeros((num_classes, ncols), np.int64)
        valid = (label >= 0) & (label < num_classes)
        np.add.at(hist, (label[valid], pred[valid]), 1)
        rows, cols = linear_sum_assignment(hist, maximize=True)
        matched = hist[rows, cols]
        tp[rows] += matched
        fn[rows] += hist.sum(axis=1)[rows] - matched
        fp[rows] += hist.sum(axis=0)[cols] - matched
        valid_total += int(valid.sum())
    return {"tp": tp.tolist(), "fp": fp.tolist(), "fn": fn.tolist(), "valid": valid_total}


def run_and_recount(experiment: str, root: Path, out: Path, labels: dict[str, np.ndarray], num_classes: int,
                    *extra: str) -> dict:  # fmt: skip
    cfg = compose_eval([f"experiment={experiment}", *FAST, f"dataset.root={root}", f"paths.output_dir={out}", *extra])
    assert cfg.dataset.num_classes == num_classes and cfg.dataset.kl_threshold == 1.1
    result = evaluate(cfg)
    assert list(result["methods"]) == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert result["run"]["dataset"] == experiment
    for name, summary in result["methods"].items():
        assert summary["images"] == len(labels) and len(summary["iou"]) == num_classes
        again = recount(out / "masks" / name, labels, num_classes)
        assert {k: summary[k] for k in again} == again, name
        assert summary["acc"] == pytest.approx(100.0 * sum(again["tp"]) / again["valid"])
    # K-Means-S: as many clusters as the image has valid classes (at most)
    for image_id, label in labels.items():
        k = len(set(label[(label >= 0) & (label < num_classes)].tolist()))
        assert len(np.unique(read_png(out / "masks" / "K-Means-S" / f"{image_id}.png"))) <= k
    return result


def test_voc_end_to_end(tmp_path):
    root = tmp_path / "VOC2012"
    ids = write_synthetic_voc(root, num_images=2, seed=4, size_range=(60, 90))
    labels = {i: ref_label(read_png(root / "SegmentationClass" / f"{i}.png"), voc_table, E2E) for i in ids}
    run_and_recount("voc21", root, tmp_path / "out", labels, 21)


def test_ade20k_end_to_end(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    ids = write_synthetic_ade20k(root, num_images=2, seed=2, size_range=(60, 90))
    labels = {i: ref_label(read_png(root / "annotations/validation" / f"{i}.png"), ade_table, E2E) for i in ids}
    run_and_recount("ade20k150", root, tmp_path / "out", labels, 150)


def test_context_end_to_end(context_root, tmp_path):
    root, expected, ids = context_root
    labels = {}
    for name in ids[:2]:
        h, w = read_png(root / "SegmentationClassContext" / f"{name}.png").shape
        labels[name] = ref_label(paint_context(expected[name], h, w), context_table, E2E)
    run_and_recount("context60", root, tmp_path / "out", labels, 60, "dataset.limit=2")


def test_coco_object_end_to_end_both_sources(object_root, tmp_path):
    root, ids, expected = object_root
    build_instance_labels(root, ids, progress=False)
    png_labels = {i: ref_label(read_png(root / "annotation_val2017" / f"{i}.png"), object_png_table, E2E)
                  for i in ids[:2]}  # fmt: skip
    inst_labels = {}
    for i in ids[:2]:
        h, w = read_png(root / "annotation_val2017" / f"{i}.png").shape
        inst_labels[i] = ref_label(paint_instances(expected[i], h, w, "smallest_on_top"), lambda v: v, E2E)
    # the second run takes the attention of the first from the in-process cache (same images)
    a = run_and_recount("coco_object81", root, tmp_path / "a", png_labels, 81, "dataset.limit=2", "cache=memory")
    b = run_and_recount("coco_object81", root, tmp_path / "b", inst_labels, 81, "dataset.limit=2", "cache=memory",
                        "dataset.label_source=instances")  # fmt: skip
    assert b["cache"]["hits"] == 2
    # same images and masks; the instance source also labels the PNG's unlabelled band
    for name in a["methods"]:
        assert a["methods"][name]["valid"] < b["methods"][name]["valid"]
        for image_id in ids[:2]:
            np.testing.assert_array_equal(read_png(tmp_path / "a" / "masks" / name / f"{image_id}.png"),
                                          read_png(tmp_path / "b" / "masks" / name / f"{image_id}.png"))


# ----------------------------------------------------------------------------- archives and prepare.py


@pytest.mark.parametrize(
    ("entries", "links", "bad"),
    [*escaping_cases(), LINK_CASE],
)
def test_unsafe_tar_entries_are_refused(tmp_path, entries, links, bad):
    assert_refused(safe_extract_tar, write_tar(tmp_path / "bad.tar", entries, links), bad)


def test_tar_extract_members_strip_and_resume(tmp_path):
    archive = write_tar(tmp_path / "a.tar", {"top/x/1.txt": b"one", "top/x/2.txt": b"two!", "top/y.txt": b"y"})
    dest = tmp_path / "d"
    out = safe_extract_tar(archive, dest, members=["top/x/2.txt", "top/y.txt"], strip_prefix="top/")
    assert out == [dest / "x" / "2.txt", dest / "y.txt"] and (dest / "x" / "2.txt").read_bytes() == b"two!"
    assert not (dest / "x" / "1.txt").exists()
    (dest / "y.txt").write_bytes(b"Y")  # right size: kept
    (dest / "x" / "2.txt").write_bytes(b"2")  # wrong size: rewritten
    safe_extract_tar(archive, dest, members_prefix="top/", strip_prefix="top/")
    assert (dest / "y.txt").read_bytes() == b"Y" and (dest / "x" / "2.txt").read_bytes() == b"two!"
    with pytest.raises(KeyError, match="top/zzz"):
        safe_extract_tar(archive, dest, members=["top/zzz"])


def test_pinned_follow_up_archives():
    pinned = dl.PINNED_FILES
    assert pinned["voc2012_trainval"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert pinned["voc2010_trainval"].md5 == "da459979d0c395079b5c75ee67908abb"
    assert pinned["ade20k_challenge"].sha1 == "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"
    assert pinned["context_trainval_merged"].sha1 == "169325d9f7e9047537fedca7b04de4dddf10b881"
    assert pinned["coco_annotations_trainval2017"].sha256.startswith("113a836d")
    for entry in pinned.values():
        assert entry.sha1 is None or len(entry.sha1) == 40
        assert entry.digests or "zip CRCs" in entry.source


def _pin(monkeypatch, key: str, path: Path, url: str):
    data = path.read_bytes()
    monkeypatch.setitem(dl.PINNED_FILES, key, dataclasses.replace(
        dl.PINNED_FILES[key], url=url, md5=hashlib.md5(data).hexdigest(), sha1=hashlib.sha1(data).hexdigest(),
        sha256=None, size=len(data)))  # fmt: skip


def _tree(root: Path, prefix: str) -> dict[str, bytes]:
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_voc_from_the_tar(prepare, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    src = tmp_path / "src"
    ids = write_synthetic_voc(src, num_images=3, seed=1, size_range=(40, 60))
    extra = {"VOCdevkit/VOC2012/Annotations/x.xml": b"x"}
    archive = write_tar(tmp_path / "voc.tar", {**_tree(src, "VOCdevkit/VOC2012/"), **extra})
    server.files["/voc.tar"] = archive.read_bytes()
    _pin(monkeypatch, "voc2012_trainval", archive, f"{server.base}/voc.tar")
    monkeypatch.setattr(voc, "VAL_IMAGES", 3)
    root, downloads = tmp_path / "VOC2012", tmp_path / "downloads"
    argv = ["--quiet", "voc", "--root", str(root), "--downloads", str(downloads)]
    assert prepare.main(argv) == 0
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(["ImageSets/Segmentation/val.txt", *(f"JPEGImages/{i}.jpg" for i in ids),
                            *(f"SegmentationClass/{i}.png" for i in ids)])  # fmt: skip
    assert Voc21(root, size=16).ids == ids
    count = len(server.requests)
    assert prepare.main(argv) == 0 and "ready" in capsys.readouterr().out and len(server.requests) == count
    monkeypatch.setattr(voc, "VAL_IMAGES", 1449)
    code = prepare.main(["--quiet", "voc", "--root", str(tmp_path / "r2"), "--downloads", str(downloads)])
    assert code == 2 and "expected 1449" in capsys.readouterr().err


def test_prepare_context_says_what_to_download(prepare, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.PINNED_FILES, "context_trainval_merged",
                        dataclasses.replace(dl.PINNED_FILES["context_trainval_merged"], url=closed_port_url()))
    monkeypatch.setattr(dl.time, "sleep", lambda _s: None)
    root = tmp_path / "VOC2010"
    code = prepare.main(["--quiet", "context", "--root", str(root), "--downloads", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert str((root / "trainval_merged.json").resolve()) in err and "make data-context" in err
    assert "169325d9f7e9047537fedca7b04de4dddf10b881" in err


def test_prepare_context_builds_labels(prepare, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    src = tmp_path / "src"
    expected = write_synthetic_context(src, num_images=3, seed=4, size_range=(40, 60))
    archive = write_tar(tmp_path / "voc2010.tar", _tree(src / "JPEGImages", "VOCdevkit/VOC2010/JPEGImages/"))
    server.files["/voc2010.tar"] = archive.read_bytes()
    _pin(monkeypatch, "voc2010_trainval", archive, f"{server.base}/voc2010.tar")
    root = tmp_path / "VOC2010"
    root.mkdir()
    (root / "trainval_merged.json").write_bytes((src / "trainval_merged.json").read_bytes())
    argv = ["--quiet", "context", "--root", str(root), "--downloads", str(tmp_path / "d")]
    assert prepare.main(argv) == 2 and "checksum mismatch" in capsys.readouterr().err  # not the pinned file
    _pin(monkeypatch, "context_trainval_merged", root / "trainval_merged.json", "http://unused.invalid/")
    assert prepare.main(argv) == 0
    out = capsys.readouterr()
    assert "has 3 val images, the benchmark has 5105" in out.err
    ids = sorted(expected)
    assert Context60(root, size=16).ids == ids
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == ids  # only the val images
    assert prepare.main(argv) == 0 and "ready" in capsys.readouterr().out


def test_prepare_coco_object_reports_agreement(prepare, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    root = tmp_path / "coco"
    ids, _ = write_synthetic_coco_object(root, num_images=3, seed=5, size_range=(40, 70))
    instances = (root / "annotations" / "instances_val2017.json").read_bytes()
    (root / "annotations" / "instances_val2017.json").unlink()
    archive = write_zip(tmp_path / "ann.zip", {"annotations/instances_val2017.json": instances,
                                          "annotations/captions_val2017.json": b"{}"})  # fmt: skip
    server.files["/ann.zip"] = archive.read_bytes()
    _pin(monkeypatch, "coco_annotations_trainval2017", archive, f"{server.base}/ann.zip")
    argv = ["--quiet", "coco-object", "--root", str(root), "--downloads", str(tmp_path / "d")]
    assert prepare.main(argv) == 0
    out = capsys.readouterr().out
    assert "100.00% of" in out and "overlap rule smallest_on_top" in out
    assert not (root / "annotations" / "captions_val2017.json").exists()
    report = json.loads((root / "object81_agreement.json").read_text())
    assert report["overlap_rule"] == "smallest_on_top" and report["images"] == 3 and report["agreement"] == 100.0
    assert sorted(p.stem for p in (root / INSTANCE_LABEL_DIR).iterdir()) == sorted(ids)
    count = len(server.requests)
    assert prepare.main(argv) == 0 and "ready" in capsys.readouterr().out and len(server.requests) == count
    assert prepare.main([*argv, "--overlap", "file_order"]) == 0  # rebuilt with the other rule
    report = json.loads((root / "object81_agreement.json").read_text())
    assert report["overlap_rule"] == "file_order"


def test_prepare_ade20k_from_the_zip(prepare, server, tmp_path, monkeypatch, capsys):  # noqa: F811
    src = tmp_path / "src"
    ids = write_synthetic_ade20k(src, num_images=3, seed=3, size_range=(40, 60))
    archive = write_zip(tmp_path / "ade.zip", {**_tree(src, "ADEChallengeData2016/"),
                                          "ADEChallengeData2016/objectInfo150.txt": b"x"})  # fmt: skip
    server.files["/ade.zip"] = archive.read_bytes()
    _pin(monkeypatch, "ade20k_challenge", archive, f"{server.base}/ade.zip")
    monkeypatch.setattr(ade20k, "VAL_IMAGES", 3)
    root = tmp_path / "ADEChallengeData2016"
    argv = ["--quiet", "ade20k", "--root", str(root), "--downloads", str(tmp_path / "d")]
    assert prepare.main(argv) == 0
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert all(f.startswith(("images/validation/", "annotations/validation/")) for f in files) and len(files) == 6
    assert Ade20k150(root, size=16).ids == ids
    assert prepare.main(argv) == 0 and "ready" in capsys.readouterr().out


# DiffCut's protocol for every method (protocol=diffcut): the release's geometry and scoring,
# recomputed here with tests/reference_protocols.py from the raw label files.
def recount_protocol(masks_dir: Path, raws: dict[str, np.ndarray], num_classes: int, dataset: str) -> list:
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    for image_id, raw in raws.items():
        pred = read_png(masks_dir / f"{image_id}.png")
        small = release_label_geometry(raw, E2E, E2E)  # the tiny backbone's input side is the label side
        if dataset == "voc":
            t, f, n, _ = release_image(pred, release_labels(small, "voc"), num_classes, background=True)
            t, f, n = to_project_order(t), to_project_order(f), to_project_order(n)
        else:  # ADE20K: no background class, one matching, this project's labels (value 0 ignored)
            t, f, n, _ = release_image(pred, np.vectorize(ade_table)(small), num_classes, background=False)
        tp, fp, fn = tp + t, fp + f, fn + n
    return [tp.tolist(), fp.tolist(), fn.tolist()]


@pytest.mark.parametrize("experiment", ["voc21", "ade20k150"])
def test_every_method_under_diffcuts_protocol(experiment, tmp_path):
    if experiment == "voc21":
        root = tmp_path / "VOC2012"
        ids = write_synthetic_voc(root, num_images=2, seed=4, size_range=(60, 90))
        raws = {i: read_png(root / "SegmentationClass" / f"{i}.png") for i in ids}
        dataset, num_classes = "voc", 21
    else:
        root = tmp_path / "ADEChallengeData2016"
        ids = write_synthetic_ade20k(root, num_images=2, seed=2, size_range=(60, 90))
        raws = {i: read_png(root / "annotations/validation" / f"{i}.png") for i in ids}
        dataset, num_classes = "ade", 150
    out = tmp_path / "out"
    result = evaluate(compose_eval([f"experiment={experiment}", *FAST, "protocol=diffcut", f"protocol.size={E2E}",
                                    f"dataset.root={root}", f"paths.output_dir={out}"]))
    assert result["run"]["protocol"] == "diffcut"
    for name, summary in result["methods"].items():
        assert [summary["tp"], summary["fp"], summary["fn"]] == recount_protocol(
            out / "masks" / name, raws, num_classes, dataset), name


def test_coco_object_instances_missing_for_some_listed_images_is_refused(tmp_path):
    """A listed image without an instance label (e.g. subset=all: labels are built for the curated list) is
    refused when the dataset is built, instead of being skipped as unreadable during the run."""
    ids, _ = write_synthetic_coco_object(tmp_path, num_images=2, seed=0, size_range=(40, 60))
    assert build_instance_labels(tmp_path, ids, progress=False) == 2
    assert CocoObject81(tmp_path, label_source="instances").ids == ids
    (tmp_path / INSTANCE_LABEL_DIR / f"{ids[1]}.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=f"1 of the 2 listed images .*e.g. {ids[1]}"):
        CocoObject81(tmp_path, label_source="instances")
