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
from collections.abc import Sequence
from pathlib import Path

from eval.data.base import LabelledImages

__all__ = ["IMAGE_DIR", "LABEL_DIR", "VAL_IMAGES", "VOC21_CLASSES", "VOC_IGNORE", "Voc21", "split_list"]

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClass"
VAL_IMAGES = 1449
VOC_IGNORE = 255

# SegmentationClass palette index -> class (index 0 = background).
VOC21_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

assert len(VOC21_CLASSES) == 21


def split_list(root: str | os.PathLike, split: str = "val") -> Path:
    """``<root>/ImageSets/Segmentation/<split>.txt``."""
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


class Voc21(LabelledImages):
    """VOC 2012 segmentation val: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), 0 = background, 1..20 the classes, -1 = ignore
      (palette index 255: object boundaries and difficult regions);
    * image_id: the VOC id (e.g. ``2007_000033``), in list-file order.

    Arguments as in :class:`~eval.data.base.LabelledImages`; ``split`` names the list file under
    ``ImageSets/Segmentation/``.
    """

    name = "voc21"
    title = "PASCAL VOC-21"
    classes = VOC21_CLASSES
    background = 0
    make_target, root_variable = "data-voc", "VOC_ROOT"
    options = {"split": "val"}
    image_dir, label_dir = IMAGE_DIR, LABEL_DIR

    def find_ids(self) -> Sequence[str]:
        return self._listed_ids(split_list(self.root, self.split), "VOC2012 list file")
