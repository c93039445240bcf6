"""COCO-Stuff-27 validation set (diffseg/REFERENCE.md section 3).

Layout of a root (the official DiffSeg release's; ``make data-coco`` builds it)::

    <root>/val2017/<id>.jpg
    <root>/annotation_val2017/<id>.png        fine labels 0..181, 255 = unlabelled
    <root>/Coco164kFull_Stuff_Coarse_7.txt    the curated 2175 ids (DiffSeg's list), one per line
    <root>/val2017_all.txt                    all 5000 val2017 ids (``subset="all"``; written by
                                              ``python datasets/prepare.py coco --subset all``)

``subset`` chooses the image set: ``curated`` (default, the 2175 images DiffSeg, DiffCut and
most papers report) or ``all`` (the 5000 val2017 images, as later papers such as Seg4Diff and
EmerDiff evaluate).
"""

from __future__ import annotations

import os
from pathlib import Path

from eval.data.base import LabelledImages
from eval.data.classes import COCO_STUFF27_CLASSES, coco_stuff_fine_to_coarse_lut
from eval.data.loader import DatasetNotFoundError
from eval.identity import SYNTHETIC_MARKER

__all__ = ["ALL_LIST_FILE", "DEFAULT_LIST_FILE", "SUBSETS", "VAL2017_IMAGES", "CocoStuff27", "read_id_list",
           "subset_ids"]

DEFAULT_LIST_FILE = "Coco164kFull_Stuff_Coarse_7.txt"
ALL_LIST_FILE = "val2017_all.txt"
SUBSETS = {"curated": DEFAULT_LIST_FILE, "all": ALL_LIST_FILE}
VAL2017_IMAGES = 5000
IMAGE_DIR = "val2017"
LABEL_DIR = "annotation_val2017"


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a list file, in file order: one per line, whitespace stripped, blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _make_hint(root: Path, subset: str = "curated") -> str:
    extra = " COCO_SUBSET=all" if subset == "all" else ""
    return f"run `make data-coco{extra}` (or `make data-coco{extra} COCO_ROOT={root}`) to download and prepare it"


def subset_ids(dataset: LabelledImages, subset: str, list_file: str | None, title: str) -> list[str]:
    """The ids of a COCO ``subset`` (its list file unless ``list_file`` names another), checked.

    Raises:
        ValueError: unknown subset.
        DatasetNotFoundError: a missing list file, or an ``all`` list without the 5000 val2017
            ids (a synthetic root, marked by eval.data.synthetic, may hold fewer).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    dataset._hint = _make_hint(dataset.root, subset)
    path = dataset._require(dataset.root / (list_file or SUBSETS[subset]), f"{title} list file ({subset} subset)")
    ids = read_id_list(path)
    if subset == "all" and len(ids) != VAL2017_IMAGES and not (dataset.root / SYNTHETIC_MARKER).is_file():
        raise DatasetNotFoundError(f"{path} lists {len(ids)} ids, not the {VAL2017_IMAGES} val2017 images of "
                                   f"subset=all; {dataset._hint}")
    dataset.list_path = path
    return ids


class CocoStuff27(LabelledImages):
    """COCO-Stuff-27 val: items ``(image, label, image_id)``.

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), coarse class 0..26, -1 = ignore (fine 255/unused);
    * image_id: the 12-digit id string from the list file.

    Args:
        root: dataset root (layout in the module docstring).
        size: side of the labels (the evaluation resolution), and of the images unless ``image_size``.
        image_size: side of the images given to the backbone (its input size); None = ``size``.
        limit: keep only the first ``limit`` ids of the list (applied before sharding).
        shard: ``"i/n"`` or ``(i, n)``: keep list positions k with ``k % n == i``.
        list_file: list file name inside ``root`` (or an absolute path); default: the subset's.
        subset: ``curated`` (2175 images) or ``all`` (5000 val2017 images), module docstring.
    """

    classes = COCO_STUFF27_CLASSES
    num_classes = len(COCO_STUFF27_CLASSES)

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        list_file: str | None = None,
        image_size: int | None = None,
        subset: str = "curated",
    ):
        self._open_root(root, size, image_size, "COCO-Stuff-27", _make_hint(Path(root), subset))
        self.subset = subset
        ids = subset_ids(self, subset, list_file, "COCO-Stuff-27")
        self._select(ids, limit, shard, coco_stuff_fine_to_coarse_lut())


    def image_path(self, image_id: str) -> Path:
        """``<root>/val2017/<id>.jpg``."""
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        """``<root>/annotation_val2017/<id>.png``."""
        return self.root / LABEL_DIR / f"{image_id}.png"
