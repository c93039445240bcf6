"""Cityscapes-27 validation set (diffseg/REFERENCE.md section 3).

Layout of a root (the official one; ``make data-cityscapes`` builds it from the zips)::

    <root>/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
"""

from __future__ import annotations

import os
from pathlib import Path

from eval.data.base import LabelledImages
from eval.data.classes import CITYSCAPES27_CLASSES, cityscapes_label_id_lut
from eval.data.loader import DatasetNotFoundError

__all__ = ["Cityscapes27", "IMAGE_SUFFIX", "LABEL_SUFFIX"]

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def _make_hint(root: Path) -> str:
    return (
        f"run `make data-cityscapes` (or `make data-cityscapes CITYSCAPES_ROOT={root}`) to "
        "prepare it from the official zips"
    )


class Cityscapes27(LabelledImages):
    """Cityscapes val with the 27 classes of labelIds 7..33: items ``(image, label, image_id)``.

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), class 0..26, -1 = ignore (every other labelId);
    * image_id: ``<city>_<seq>_<frame>`` (e.g. ``frankfurt_000000_000294``).

    Items are sorted by (city, name). ``size`` / ``image_size`` (labels / images), ``limit`` and
    ``shard`` as in :class:`eval.data.coco_stuff.CocoStuff27`.
    """

    ignore_values = (0, 1, 2, 3, 4, 5, 6, 255)  # the void labelIds (and 255) are labelled "not evaluated"

    classes = CITYSCAPES27_CLASSES
    num_classes = len(CITYSCAPES27_CLASSES)

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        split: str = "val",
        image_size: int | None = None,
    ):
        self.split = split
        self._open_root(root, size, image_size, "Cityscapes", _make_hint(Path(root)))
        image_dir = self._require(self.root / "leftImg8bit" / split, "Cityscapes image folder")
        found = sorted((p.parent.name, p.name[: -len(IMAGE_SUFFIX)]) for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not found:
            raise DatasetNotFoundError(f"no *{IMAGE_SUFFIX} images under {image_dir}; {self._hint}")
        self._city = {name: city for city, name in found}
        self._select([name for _, name in found], limit, shard, cityscapes_label_id_lut())


    def image_path(self, image_id: str) -> Path:
        """``<root>/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png``."""
        return self.root / "leftImg8bit" / self.split / self._city[image_id] / f"{image_id}{IMAGE_SUFFIX}"

    def label_path(self, image_id: str) -> Path:
        """``<root>/gtFine/<split>/<city>/<id>_gtFine_labelIds.png``."""
        return self.root / "gtFine" / self.split / self._city[image_id] / f"{image_id}{LABEL_SUFFIX}"
