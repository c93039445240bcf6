"""PASCAL-Context on VOC2010 val with background + the 59 most frequent classes (Context-60).

Layout of a root (``VOC2010/`` as the official VOC tar extracts it, plus the PASCAL in
Detail annotation file; ``make data-context`` builds it)::

    <root>/JPEGImages/<id>.jpg
    <root>/trainval_merged.json                       PASCAL in Detail annotations (input)
    <root>/SegmentationClassContext/<id>.png          built: 0 = background, 1..59 (output)
    <root>/ImageSets/SegmentationContext/val.txt      built: the 5105 val ids, sorted (output)

The two built parts are the same files mmsegmentation's PASCAL-Context converter writes,
so a root prepared by it works as it is.

Label construction (:func:`context_label`), the standard 59-class conversion: paint every
segmentation annotation of the image in file order (a later annotation overwrites an
earlier one, as the Detail API's ``getMask``), with its Detail category id; pixels of no
annotation get 0. Then id 0 -> class 0 (background) and the k-th id of
:data:`CONTEXT_DETAIL_IDS` -> class k; any other id is an error (the
reference conversion asserts the same). The masks are RLE in COCO's encoding (or
polygons) and are decoded with pycocotools, not with the Detail API fork.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval.atomic import write_text_atomic
from eval.data.base import LabelledImages, StandardList
from eval.data.coco_format import annotation_masks, coco_from_dataset, write_label_png
from eval.data.download import (
    DownloadError,
    PinnedFile,
    download_pinned,
    pinned_files,
    pinned_files_of,
    safe_extract_tar,
    verify_file,
)
from eval.data.preparation import Preparation, PrepareError, listed_files_ready, option

__all__ = [
    "PREPARATION",
    "ANNOTATION_FILE",
    "CONTEXT60_CLASSES",
    "CONTEXT_DETAIL_IDS",
    "Context60",
    "DETAIL_TO_CLASS",
    "IMAGE_DIR",
    "LABEL_DIR",
    "PINNED",
    "TAR_PREFIX",
    "VAL_IMAGES",
    "build_context_labels",
    "context_label",
    "context_ready",
    "detail_to_coco",
    "image_ids_by_name",
    "load_detail",
    "prepare_context",
    "split_list",
]

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClassContext"
ANNOTATION_FILE = "trainval_merged.json"
VAL_IMAGES = 5105
TAR_PREFIX = "VOCdevkit/VOC2010/"  # the root's folder inside the VOC2010 trainval tar

# The files `make data-context` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("context")

# The 59 PASCAL in Detail (PASCAL-Context) category ids of the 59-class benchmark, sorted:
# class k (1..59) of Context-60 is the k-th id; every other pixel is background (0).
CONTEXT_DETAIL_IDS: tuple[int, ...] = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98,
    104, 105, 113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip

CONTEXT60_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)

assert len(CONTEXT_DETAIL_IDS) == 59 and list(CONTEXT_DETAIL_IDS) == sorted(set(CONTEXT_DETAIL_IDS))
assert len(CONTEXT60_CLASSES) == 60

# Detail category id -> Context-60 class (0 = background, also for unannotated pixels).
DETAIL_TO_CLASS: dict[int, int] = {0: 0, **{cat: k for k, cat in enumerate(CONTEXT_DETAIL_IDS, start=1)}}


def split_list(root: str | os.PathLike, split: str = "val") -> Path:
    """``<root>/ImageSets/SegmentationContext/<split>.txt``."""
    return Path(root) / "ImageSets" / "SegmentationContext" / f"{split}.txt"


# --------------------------------------------------------------------------- building the labels


def detail_to_coco(detail: dict[str, Any], phase: str | None = "val") -> dict[str, Any]:
    """The COCO-format view of a PASCAL in Detail JSON (only what label building needs).

    Detail keeps images under ``images`` (``image_id``, ``file_name``, ``height``,
    ``width``, ``phase``), masks under ``annos_segmentation`` and classes under
    ``categories`` (``category_id``, ``name``). ``phase`` keeps the images of one split
    (None = all) and their annotations, in file order.

    Raises:
        ValueError: a required key is missing (the message names it).
    """
    for key in ("images", "annos_segmentation", "categories"):
        if key not in detail:
            raise ValueError(f"not a PASCAL in Detail annotation file: no {key!r} key")
    images = [
        {"id": img["image_id"], "height": img["height"], "width": img["width"], "file_name": img["file_name"]}
        for img in detail["images"]
        if phase is None or img.get("phase") == phase
    ]
    keep = {img["id"] for img in images}
    annotations = [
        {
            "id": ann["id"],
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "segmentation": ann["segmentation"],
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        for ann in detail["annos_segmentation"]
        if ann["image_id"] in keep
    ]
    categories = [{"id": c["category_id"], "name": c.get("name", "")} for c in detail["categories"]]
    return {"images": images, "annotations": annotations, "categories": categories}


def load_detail(json_path: str | os.PathLike, phase: str | None = "val"):
    """A pycocotools index over the ``phase`` images of a Detail JSON (see :func:`detail_to_coco`)."""
    with open(json_path, encoding="utf-8") as handle:
        detail = json.load(handle)
    try:
        dataset = detail_to_coco(detail, phase)
    except ValueError as exc:
        raise ValueError(f"{json_path}: {exc}") from None
    if not dataset["images"]:
        raise ValueError(f"{json_path} has no images with phase {phase!r}")
    return coco_from_dataset(dataset)


def context_label(coco, image_id: int) -> np.ndarray:
    """The Context-60 label (uint8 (H, W), 0 = background, 1..59) of one image.

    Raises:
        ValueError: an annotation has a category outside the 59 classes (names image and id).
    """
    info = coco.imgs[image_id]
    detail = np.zeros((int(info["height"]), int(info["width"])), dtype=np.int64)
    for ann, mask in annotation_masks(coco, image_id):
        detail[mask] = int(ann["category_id"])
    unknown = sorted(set(np.unique(detail).tolist()) - DETAIL_TO_CLASS.keys())
    if unknown:
        raise ValueError(
            f"image {info.get('file_name', image_id)} has Detail category ids {unknown} outside the "
            "59-class set: is this the trainval_merged.json of PASCAL in Detail?"
        )
    lut = np.zeros(int(detail.max()) + 1, dtype=np.uint8)
    for cat, cls in DETAIL_TO_CLASS.items():
        if cat < lut.size:
            lut[cat] = cls
    return lut[detail]


def build_context_labels(root: str | os.PathLike, coco, split: str = "val", progress: bool = True) -> list[str]:
    """Write ``SegmentationClassContext/<id>.png`` and the sorted ``<split>.txt`` list.

    Args:
        root: the ``VOC2010`` folder.
        coco: the index of the split's images (:func:`load_detail` with ``phase=split``).
        split: name of the list file written under ``ImageSets/SegmentationContext/``.
        progress: show a tqdm bar.

    PNGs already present are kept (a build resumes); the list is written last.

    Returns:
        The ids of the split, sorted.
    """
    root = Path(root)
    by_id = image_ids_by_name(coco)
    ids = sorted(by_id)
    for name in tqdm(ids, desc=f"Context-60 {split} labels", unit="img", disable=not progress):
        out = root / LABEL_DIR / f"{name}.png"
        if not out.is_file():
            write_label_png(out, context_label(coco, by_id[name]))
    write_text_atomic(split_list(root, split), "".join(f"{i}\n" for i in ids))
    return ids


def image_ids_by_name(coco) -> dict[str, int]:
    """``{file stem: Detail image id}`` of the images of an index (e.g. ``2008_000002``)."""
    return {Path(info["file_name"]).stem: image_id for image_id, info in coco.imgs.items()}


# --------------------------------------------------------------------------- dataset


class Context60(LabelledImages):
    """PASCAL-Context val, 59 classes + background: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), 0 = background, 1..59 the classes (-1 only for values
      a built PNG never holds);
    * image_id: the VOC2010 id (e.g. ``2008_000002``), in list-file order.

    Arguments as in :class:`~eval.data.base.LabelledImages`; ``split`` names the list file.
    """

    name = "context60"
    title = "PASCAL Context-60"
    ignore_values = ()  # the built PNGs hold 0..59 only
    classes = CONTEXT60_CLASSES
    background = 0
    make_target = "data-context"
    prepare_action = "prepare it"
    options = {"split": "val"}
    # the val list is built from the pinned annotation file (its ids are not kept here): recognised by its count
    standard_list = StandardList("PASCAL-Context val (ImageSets/SegmentationContext/val.txt)", VAL_IMAGES,
                                 options={"split": "val"})
    image_dir, label_dir = IMAGE_DIR, LABEL_DIR

    def find_ids(self) -> Sequence[str]:
        return self._listed_ids(split_list(self.root, self.split),
                                f"PASCAL-Context list file (the labels are built from {ANNOTATION_FILE})")


# --------------------------------------------------------------------------- preparation (make data-context)


def _context_files(root: Path):
    return lambda i: (root / IMAGE_DIR / f"{i}.jpg", root / LABEL_DIR / f"{i}.png")


def context_ready(root: Path) -> bool:
    """True when ``root`` has the built val list and the image and label of every listed id."""
    return listed_files_ready(split_list(root), _context_files(root))


def _context_annotations(root: Path, downloads: Path, verify: bool, progress: bool) -> Path:
    """``<root>/trainval_merged.json`` when present (checked), else the pinned download."""
    pinned = pinned_files()["context_trainval_merged"]
    local = root / ANNOTATION_FILE
    if local.is_file():
        if verify:
            print(f"verifying {local} (sha1) ...")
            verify_file(local, sha256=pinned.sha256, md5=pinned.md5, sha1=pinned.sha1)
        return local
    try:
        return download_pinned("context_trainval_merged", downloads, progress=progress)
    except DownloadError as exc:
        raise PrepareError(
            "\n".join([
                f"PASCAL-Context needs {pinned.name} (the PASCAL in Detail annotations), and it could not be "
                f"fetched: {exc}",
                f"Its usual address is {pinned.url}; that host is not a stable archive. Get the file from "
                "wherever you can (e.g. an archived copy of that URL); any copy with",
                f"  sha1 {pinned.sha1}",
                f"works. Put it at {local.resolve()} and run `make data-context` again "
                "(the checksum is verified before use).",
            ])
        ) from None


def prepare_context(root: Path, downloads: Path, verify: bool = True, progress: bool = True) -> None:
    """Build a Context-60 root: VOC2010 val images + labels built from ``trainval_merged.json``."""
    if context_ready(root):
        print(f"ready: {root}")
        return
    json_path = _context_annotations(root, downloads, verify, progress)
    print(f"reading {json_path} ...")
    coco = load_detail(json_path, phase="val")
    names = sorted(image_ids_by_name(coco))
    if len(names) != VAL_IMAGES:
        print(f"warning: {json_path} has {len(names)} val images, the benchmark has {VAL_IMAGES}",
              file=sys.stderr)
    missing = [i for i in names if not (root / IMAGE_DIR / f"{i}.jpg").is_file()]
    if missing:
        print(f"{len(missing)} of {len(names)} images missing: fetching {pinned_files()['voc2010_trainval'].name}")
        tar = download_pinned("voc2010_trainval", downloads, progress=progress)
        members = [f"{TAR_PREFIX}{IMAGE_DIR}/{i}.jpg" for i in missing]
        safe_extract_tar(tar, root, members=members, strip_prefix=TAR_PREFIX, progress=progress)
    ids = build_context_labels(root, coco, split="val", progress=progress)
    if not context_ready(root):
        raise PrepareError(f"{root} is still incomplete after building the labels")
    print(f"ready: {root} ({len(ids)} images)")


PREPARATION = Preparation(
    "context", prepare_context, "PASCAL-Context val (VOC2010 trainval tar + trainval_merged.json)",
    options=(option("--no-verify", dest="verify", action="store_false",
                    help="skip the sha1 check of a trainval_merged.json in --root"),))
