"""Cityscapes-27 validation set (diffseg/REFERENCE.md section 3).

Layout of a root (the official one; ``make data-cityscapes`` builds it from the zips)::

    <root>/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Classes: labelIds 7..33 -> 0..26, everything else ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eval.data.base import LabelledImages

__all__ = ["CITYSCAPES27_CLASSES", "CITYSCAPES_FIRST_LABEL_ID", "Cityscapes27", "IMAGE_SUFFIX", "LABEL_SUFFIX"]

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

CITYSCAPES_FIRST_LABEL_ID = 7

# labelId 7..33 in order -> class 0..26.
CITYSCAPES27_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "parking",
    "rail track",
    "building",
    "wall",
    "fence",
    "guard rail",
    "bridge",
    "tunnel",
    "pole",
    "polegroup",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "caravan",
    "trailer",
    "train",
    "motorcycle",
    "bicycle",
)

assert len(CITYSCAPES27_CLASSES) == 27


class Cityscapes27(LabelledImages):
    """Cityscapes val with the 27 classes of labelIds 7..33: items ``(image, label, image_id)``.

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), class 0..26, -1 = ignore (every other labelId);
    * image_id: ``<city>_<seq>_<frame>`` (e.g. ``frankfurt_000000_000294``).

    Items are sorted by (city, name). Arguments as in :class:`~eval.data.base.LabelledImages`, and
    ``split`` (the folder under ``leftImg8bit/`` and ``gtFine/``).
    """

    name = "cityscapes"
    title = "Cityscapes"
    ignore_values = (0, 1, 2, 3, 4, 5, 6, 255)  # the void labelIds (and 255) are labelled "not evaluated"
    classes = CITYSCAPES27_CLASSES
    first_label_value = CITYSCAPES_FIRST_LABEL_ID
    make_target, root_variable = "data-cityscapes", "CITYSCAPES_ROOT"
    prepare_action = "prepare it from the official zips"
    options = {"split": "val"}
    image_suffix, label_suffix = IMAGE_SUFFIX, LABEL_SUFFIX

    def find_ids(self) -> Sequence[str]:
        images = self._glob_ids(self.root / "leftImg8bit" / self.split, f"*/*{IMAGE_SUFFIX}",
                                f"{self.title} image folder")
        found = sorted((p.parent.name, p.name[: -len(IMAGE_SUFFIX)]) for p in images)
        self._city = {name: city for city, name in found}
        return [name for _, name in found]

    def image_path(self, image_id: str) -> Path:
        """``<root>/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png``."""
        return self.root / "leftImg8bit" / self.split / self._city[image_id] / f"{image_id}{IMAGE_SUFFIX}"

    def label_path(self, image_id: str) -> Path:
        """``<root>/gtFine/<split>/<city>/<id>_gtFine_labelIds.png``."""
        return self.root / "gtFine" / self.split / self._city[image_id] / f"{image_id}{LABEL_SUFFIX}"
