"""COCO-Stuff-27 validation set (diffseg/REFERENCE.md section 3).

Layout of a root (the official DiffSeg release's; ``make data-coco`` builds it)::

    <root>/val2017/<id>.jpg
    <root>/annotation_val2017/<id>.png        fine labels 0..181, 255 = unlabelled
    <root>/Coco164kFull_Stuff_Coarse_7.txt    the ids to evaluate, one per line
"""

from __future__ import annotations

import os
from pathlib import Path

from eval.data.base import LabelledImages
from eval.data.classes import COCO_STUFF27_CLASSES, coco_stuff_fine_to_coarse_lut

__all__ = ["DEFAULT_LIST_FILE", "CocoStuff27", "read_id_list"]

DEFAULT_LIST_FILE = "Coco164kFull_Stuff_Coarse_7.txt"
IMAGE_DIR = "val2017"
LABEL_DIR = "annotation_val2017"


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a list file, in file order: one per line, whitespace stripped, blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _make_hint(root: Path) -> str:
    return f"run `make data-coco` (or `make data-coco COCO_ROOT={root}`) to download and prepare it"


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
        list_file: list file name inside ``root`` (or an absolute path).
    """

    classes = COCO_STUFF27_CLASSES
    num_classes = len(COCO_STUFF27_CLASSES)

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        list_file: str = DEFAULT_LIST_FILE,
        image_size: int | None = None,
    ):
        self._open_root(root, size, image_size, "COCO-Stuff-27", _make_hint(Path(root)))
        self.list_path = self._require(self.root / list_file, "COCO-Stuff-27 list file")
        self._select(read_id_list(self.list_path), limit, shard, coco_stuff_fine_to_coarse_lut())


    def image_path(self, image_id: str) -> Path:
        """``<root>/val2017/<id>.jpg``."""
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        """``<root>/annotation_val2017/<id>.png``."""
        return self.root / LABEL_DIR / f"{image_id}.png"
