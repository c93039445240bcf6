"""COCO-Object-81: the COCO-Stuff-27 images with background + the 80 COCO thing classes.

The root is the COCO-Stuff-27 root (``make data-coco``), with two label sources:

* ``stuffthingmaps`` (default): ``<root>/annotation_val2017/<id>.png`` mapped by
  :func:`coco_stuffthing_to_object_lut`: thing ids kept (as 1..80),
  every stuff id -> background (0), 255 (unlabelled) -> ignore, as DiffCut's release
  maps them (except that DiffCut also turns the unlabelled pixels into background).
* ``instances``: ``<root>/annotation_object81_instances/<id>.png`` (0 = background,
  1..80), built once by ``make data-coco-object`` from
  ``<root>/annotations/instances_val2017.json`` with pycocotools (:func:`instances_label`).

Overlap rule of the instances source (:data:`OVERLAP_RULES`): ``smallest_on_top``
(default) paints the annotations of an image from the largest mask to the smallest, so a
pixel covered by several instances gets the class of the smallest one (a person in front
of a couch stays a person); ties keep file order. ``file_order`` paints them in file
order (a later annotation wins). Crowd annotations (``iscrowd=1``) are painted like the
others: their pixels do show that class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from diffseg.preprocess import load_label
from eval.atomic import write_json_atomic
from eval.data.base import IGNORE_INDEX, LabelledImages, StandardList, contiguous_lut, make_hint, read_id_list
from eval.data.coco_format import annotation_masks, coco_from_dataset, write_label_png
from eval.data.coco_stuff import (
    COCO_STUFF_FINE_CLASSES,
    DEFAULT_LIST_FILE,
    IMAGE_DIR,
    LABEL_DIR,
    STANDARD_LISTS,
    coco_hint,
    prepare_coco,
    subset_ids,
)
from eval.data.download import PinnedFile, download_pinned, pinned_files_of, safe_extract_zip
from eval.data.loader import DatasetNotFoundError
from eval.data.preparation import Preparation, option

__all__ = [
    "PREPARATION",
    "AGREEMENT_FILE",
    "COCO_OBJECT81_CLASSES",
    "COCO_THING_IDS",
    "CocoObject81",
    "INSTANCES_FILE",
    "INSTANCE_LABEL_DIR",
    "LABEL_SOURCES",
    "OVERLAP_RULES",
    "PINNED",
    "build_instance_labels",
    "coco_stuffthing_to_object_lut",
    "instances_label",
    "label_agreement",
    "load_instances",
    "prepare_coco_object",
]

INSTANCES_FILE = "annotations/instances_val2017.json"
INSTANCE_LABEL_DIR = "annotation_object81_instances"
AGREEMENT_FILE = "object81_agreement.json"
LABEL_SOURCES = ("stuffthingmaps", "instances")
OVERLAP_RULES = ("smallest_on_top", "file_order")

# The files `make data-coco-object` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("coco_object")

# COCO category ids (1..90) of the 80 annotated thing classes, in id order.
_COCO_UNANNOTATED_THING_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91})
COCO_THING_IDS: tuple[int, ...] = tuple(i for i in range(1, 92) if i not in _COCO_UNANNOTATED_THING_IDS)

COCO_OBJECT81_CLASSES: tuple[str, ...] = ("background",) + tuple(
    COCO_STUFF_FINE_CLASSES[i - 1][0] for i in COCO_THING_IDS
)


def coco_stuffthing_to_object_lut() -> np.ndarray:
    """Length-256 int64 array mapping a stuffthingmaps value to a COCO-Object-81 class.

    Thing values (COCO id - 1) -> 1..80 in COCO id order; every stuff value (91..181)
    -> 0 (background); 255 (unlabelled), the 11 never-annotated thing values and the
    unused 182..254 -> -1 (ignore).
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[91:182] = 0
    for k, coco_id in enumerate(COCO_THING_IDS, start=1):
        lut[coco_id - 1] = k
    return lut

assert len(COCO_THING_IDS) == 80 and len(COCO_OBJECT81_CLASSES) == 81

# COCO category id -> COCO-Object-81 class (1..80).
_THING_TO_CLASS = {cat: k for k, cat in enumerate(COCO_THING_IDS, start=1)}


# --------------------------------------------------------------------------- labels from the instances


def load_instances(json_path: str | os.PathLike):
    """A pycocotools index over a COCO instances JSON (e.g. ``instances_val2017.json``)."""
    with open(json_path, encoding="utf-8") as handle:
        dataset = json.load(handle)
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise ValueError(f"{json_path} is not a COCO instances file: no {key!r} key")
    return coco_from_dataset(dataset)


def instances_label(coco, image_id: int, overlap: str = "smallest_on_top") -> np.ndarray:
    """The COCO-Object-81 label (uint8 (H, W), 0 = background, 1..80) of one image.

    Args:
        coco: a pycocotools index (:func:`load_instances`).
        image_id: the COCO image id (an int).
        overlap: one of :data:`OVERLAP_RULES` (module docstring).

    Raises:
        ValueError: unknown ``overlap`` or a category that is not one of the 80 things.
    """
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    info = coco.imgs[image_id]
    label = np.zeros((int(info["height"]), int(info["width"])), dtype=np.uint8)
    pairs = annotation_masks(coco, image_id)
    if overlap == "smallest_on_top":
        # stable sort: equal areas keep file order
        pairs = sorted(pairs, key=lambda pair: -int(pair[1].sum()))
    for ann, mask in pairs:
        category = int(ann["category_id"])
        if category not in _THING_TO_CLASS:
            raise ValueError(f"annotation {ann.get('id')} of image {image_id} has category {category}, not a thing")
        label[mask] = _THING_TO_CLASS[category]
    return label


def build_instance_labels(
    root: str | os.PathLike,
    ids: Sequence[str],
    json_path: str | os.PathLike | None = None,
    overlap: str = "smallest_on_top",
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Write ``<root>/annotation_object81_instances/<id>.png`` for the listed ids.

    ``ids`` are COCO file stems (``000000000139``); an id absent from the JSON raises
    ``KeyError`` naming it. Existing PNGs are kept unless ``overwrite``.

    Returns:
        The number of PNGs written.
    """
    root = Path(root)
    json_path = Path(json_path) if json_path is not None else root / INSTANCES_FILE
    coco = load_instances(json_path)
    by_stem = {Path(info["file_name"]).stem: image_id for image_id, info in coco.imgs.items()}
    missing = [i for i in ids if i not in by_stem]
    if missing:
        raise KeyError(f"{len(missing)} listed ids are not images of {json_path}, e.g. {missing[:3]}")
    written = 0
    for name in tqdm(ids, desc="COCO-Object instance labels", unit="img", disable=not progress):
        out = root / INSTANCE_LABEL_DIR / f"{name}.png"
        if out.is_file() and not overwrite:
            continue
        write_label_png(out, instances_label(coco, by_stem[name], overlap))
        written += 1
    return written


def label_agreement(root: str | os.PathLike, ids: Sequence[str]) -> dict[str, Any]:
    """Pixel agreement of the two label sources on the ids where both PNGs exist.

    Compared at full resolution on the pixels valid in both (the stuffthingmaps'
    unlabelled pixels are excluded). Percentages are x100.

    Returns:
        ``{"images", "pixels", "agreement", "object_pixels", "object_agreement",
        "ignored_pixels", "lowest"}``: ``object_*`` restricts to pixels either source calls
        an object (so background does not dominate); ``lowest`` lists up to 5
        ``[id, object_agreement]`` of the least agreeing images.
    """
    root = Path(root)
    stuff_lut = coco_stuffthing_to_object_lut()
    inst_lut = contiguous_lut(len(COCO_OBJECT81_CLASSES))
    images = pixels = same = obj = obj_same = ignored = 0
    per_image = []
    for name in ids:
        a_path = root / LABEL_DIR / f"{name}.png"
        b_path = root / INSTANCE_LABEL_DIR / f"{name}.png"
        if not (a_path.is_file() and b_path.is_file()):
            continue
        a = stuff_lut[load_label(a_path).numpy()]
        b = inst_lut[load_label(b_path).numpy()]
        if a.shape != b.shape:
            raise ValueError(f"{a_path} is {a.shape} but {b_path} is {b.shape}")
        valid = (a >= 0) & (b >= 0)
        equal = valid & (a == b)
        objects = valid & ((a > 0) | (b > 0))
        images += 1
        pixels += int(valid.sum())
        same += int(equal.sum())
        obj += int(objects.sum())
        obj_same += int((equal & objects).sum())
        ignored += int((~valid).sum())
        if objects.any():
            per_image.append([name, 100.0 * float((equal & objects).sum()) / float(objects.sum())])
    per_image.sort(key=lambda item: item[1])
    return {
        "images": images,
        "pixels": pixels,
        "agreement": 100.0 * same / pixels if pixels else None,
        "object_pixels": obj,
        "object_agreement": 100.0 * obj_same / obj if obj else None,
        "ignored_pixels": ignored,
        "lowest": per_image[:5],
    }


# --------------------------------------------------------------------------- dataset


class CocoObject81(LabelledImages):
    """COCO-Object-81 on the COCO-Stuff-27 images: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), 0 = background, 1..80 the thing classes, -1 = ignore;
    * image_id: the 12-digit id string from the list file.

    Args:
        root: the COCO-Stuff-27 root (``eval.data.coco_stuff`` layout).
        label_source: ``stuffthingmaps`` or ``instances`` (module docstring).
        size, limit, shard, list_file, subset: as in :class:`eval.data.coco_stuff.CocoStuff27`
            (``subset="all"``: the 5000 val2017 images).
    """

    name = "coco_object81"
    title = "COCO-Object-81"
    classes = COCO_OBJECT81_CLASSES
    background = 0
    make_target = "data-coco"
    options = {"list_file": None, "label_source": "stuffthingmaps", "subset": "curated"}
    image_dir = IMAGE_DIR

    def prepare_hint(self) -> str:
        return coco_hint(self.root, self.subset)

    def find_ids(self) -> Sequence[str]:
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")
        ids = subset_ids(self, self.subset, self.list_file, "COCO")
        if self.label_source == "instances":
            self._hint = make_hint("data-coco-object", self.root, "build it")
            folder = self._require(self.root / INSTANCE_LABEL_DIR, "COCO-Object instance labels")
            missing = [i for i in ids if not (folder / f"{i}.png").is_file()]
            if missing:  # else each would be skipped as unreadable, and the run would score fewer images
                raise DatasetNotFoundError(
                    f"{len(missing)} of the {len(ids)} listed images have no COCO-Object instance label in "
                    f"{folder} (e.g. {missing[0]}); `make data-coco-object ROOT={self.root}` builds them for the "
                    f"curated {DEFAULT_LIST_FILE} list only (for subset=all use label_source=stuffthingmaps)")
        return ids

    def standard_image_list(self) -> StandardList | None:
        return STANDARD_LISTS.get(self.subset)  # the COCO-Stuff-27 images

    def label_lut(self) -> np.ndarray:
        return contiguous_lut(self.num_classes) if self.label_source == "instances" else coco_stuffthing_to_object_lut()

    @property
    def label_dir(self) -> str:
        """``annotation_val2017`` (stuffthingmaps) or ``annotation_object81_instances`` (instances)."""
        return INSTANCE_LABEL_DIR if self.label_source == "instances" else LABEL_DIR


# --------------------------------------------------------------------------- preparation (make data-coco-object)


def _agreement_line(report: dict) -> str:
    def pct(value):
        return "n/a" if value is None else f"{value:.2f}%"

    return (
        f"label agreement (stuffthingmaps vs instances, overlap rule {report.get('overlap_rule')}): "
        f"{pct(report['agreement'])} of {report['pixels']} valid pixels, {pct(report['object_agreement'])} of "
        f"{report['object_pixels']} object pixels, on {report['images']} images"
    )


def prepare_coco_object(root: Path, downloads: Path, overlap: str = "smallest_on_top", progress: bool = True) -> None:
    """Build the instance-derived COCO-Object-81 labels on a COCO-Stuff-27 root and compare the sources.

    Writes ``<root>/annotation_object81_instances/<id>.png`` and the agreement report
    ``<root>/object81_agreement.json``.
    """
    prepare_coco(root, downloads, progress=progress)
    ids = read_id_list(root / DEFAULT_LIST_FILE)
    report_path = root / AGREEMENT_FILE
    previous = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    built = all((root / INSTANCE_LABEL_DIR / f"{i}.png").is_file() for i in ids)
    if built and previous is not None and previous.get("overlap_rule") == overlap:
        print(_agreement_line(previous))
        print(f"ready: {root}")
        return
    json_path = root / INSTANCES_FILE
    if not json_path.is_file():
        archive = download_pinned("coco_annotations_trainval2017", downloads, progress=progress)
        safe_extract_zip(archive, root, members=[INSTANCES_FILE], progress=progress)
    rebuild = previous is not None and previous.get("overlap_rule") != overlap
    print(f"building {len(ids)} instance labels from {json_path} (overlap rule {overlap})")
    build_instance_labels(root, ids, json_path, overlap=overlap, overwrite=rebuild, progress=progress)
    report = {"overlap_rule": overlap, **label_agreement(root, ids)}
    write_json_atomic(report_path, report)
    print(_agreement_line(report))
    print(f"ready: {root} ({len(ids)} images, both label sources; report in {report_path})")


PREPARATION = Preparation(
    "coco-object", prepare_coco_object, "COCO-Object-81 labels from instances_val2017.json on the COCO root",
    options=(option("--overlap", choices=OVERLAP_RULES, default="smallest_on_top",
                    help="how overlapping instances are resolved (default: smallest on top)"),))
