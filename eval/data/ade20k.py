"""ADE20K SceneParsing (ADEChallengeData2016) validation with 150 classes (ADE20K-150).

Layout of a root (``ADEChallengeData2016/`` as the official zip extracts it;
``make data-ade20k`` builds its validation part)::

    <root>/images/validation/ADE_val_<8 digits>.jpg        2000 images
    <root>/annotations/validation/ADE_val_<8 digits>.png   values 0 = other (ignored), 1..150
"""

from __future__ import annotations

import os
from pathlib import Path

from eval.data.base import LabelledImages
from eval.data.classes import ADE20K150_CLASSES, ade20k_lut
from eval.data.loader import DatasetNotFoundError

__all__ = ["Ade20k150", "VAL_IMAGES", "image_ids"]

VAL_IMAGES = 2000


def _make_hint(root: Path) -> str:
    return f"run `make data-ade20k` (or `make data-ade20k ADE20K_ROOT={root}`) to download and prepare it"


def image_ids(root: str | os.PathLike, split: str = "validation") -> list[str]:
    """Sorted stems of ``<root>/images/<split>/*.jpg`` ([] when the folder is missing)."""
    folder = Path(root) / "images" / split
    return sorted(p.stem for p in folder.glob("*.jpg")) if folder.is_dir() else []


class Ade20k150(LabelledImages):
    """ADE20K-150 validation: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), class 0..149 (file value - 1), -1 = ignore (value 0, "other");
    * image_id: ``ADE_val_<8 digits>``, sorted.

    ``limit``/``shard`` as in :class:`eval.data.coco_stuff.CocoStuff27`.
    """

    ignore_values = (0,)  # "other"

    classes = ADE20K150_CLASSES
    num_classes = len(ADE20K150_CLASSES)
    background = None

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        split: str = "validation",
        image_size: int | None = None,
    ):
        self.split = split
        self._open_root(root, size, image_size, "ADE20K", _make_hint(Path(root)))
        image_dir = self._require(self.root / "images" / split, "ADE20K image folder")
        all_ids = image_ids(self.root, split)
        if not all_ids:
            raise DatasetNotFoundError(f"no *.jpg images under {image_dir}; {self._hint}")
        self._select(all_ids, limit, shard, ade20k_lut())

    def image_path(self, image_id: str) -> Path:
        """``<root>/images/<split>/<id>.jpg``."""
        return self.root / "images" / self.split / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        """``<root>/annotations/<split>/<id>.png``."""
        return self.root / "annotations" / self.split / f"{image_id}.png"
