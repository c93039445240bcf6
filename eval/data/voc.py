"""PASCAL VOC 2012 val with background + 20 classes (VOC-21).

Layout of a root (``VOC2012/`` as the official tar extracts it; ``make data-voc`` builds
the val part of it)::

    <root>/ImageSets/Segmentation/val.txt      the 1449 ids to evaluate, one per line
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png          palette PNG: index 0 = background,
                                               1..20 = the classes, 255 = boundary/difficult
"""

from __future__ import annotations

import os
from pathlib import Path

from eval.data.base import LabelledImages
from eval.data.classes import VOC21_CLASSES, voc_lut
from eval.data.coco_stuff import read_id_list

__all__ = ["IMAGE_DIR", "LABEL_DIR", "VAL_IMAGES", "Voc21", "split_list"]

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClass"
VAL_IMAGES = 1449


def split_list(root: str | os.PathLike, split: str = "val") -> Path:
    """``<root>/ImageSets/Segmentation/<split>.txt``."""
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def _make_hint(root: Path) -> str:
    return f"run `make data-voc` (or `make data-voc VOC_ROOT={root}`) to download and prepare it"


class Voc21(LabelledImages):
    """VOC 2012 segmentation val: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), 0 = background, 1..20 the classes, -1 = ignore
      (palette index 255: object boundaries and difficult regions);
    * image_id: the VOC id (e.g. ``2007_000033``), in list-file order.

    ``limit``/``shard`` as in :class:`eval.data.coco_stuff.CocoStuff27`; ``split`` names the
    list file under ``ImageSets/Segmentation/``.
    """

    classes = VOC21_CLASSES
    num_classes = len(VOC21_CLASSES)
    background = 0

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        split: str = "val",
        image_size: int | None = None,
    ):
        self._open_root(root, size, image_size, "VOC2012", _make_hint(Path(root)))
        self.list_path = self._require(split_list(self.root, split), "VOC2012 list file")
        self._select(read_id_list(self.list_path), limit, shard, voc_lut())

    def image_path(self, image_id: str) -> Path:
        """``<root>/JPEGImages/<id>.jpg``."""
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        """``<root>/SegmentationClass/<id>.png``."""
        return self.root / LABEL_DIR / f"{image_id}.png"
