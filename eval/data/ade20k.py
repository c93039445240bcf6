"""ADE20K SceneParsing (ADEChallengeData2016) validation with 150 classes (ADE20K-150).

Layout of a root (``ADEChallengeData2016/`` as the official zip extracts it;
``make data-ade20k`` builds its validation part)::

    <root>/images/validation/ADE_val_<8 digits>.jpg        2000 images
    <root>/annotations/validation/ADE_val_<8 digits>.png   values 0 = other (ignored), 1..150

Classes: values 1..150 -> 0..149, 0 ("other") ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from eval.data.base import LabelledImages

__all__ = ["ADE20K150_CLASSES", "Ade20k150", "VAL_IMAGES", "image_ids"]

VAL_IMAGES = 2000

# objectInfo150 order of the SceneParsing benchmark (file value k = class k - 1).
ADE20K150_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip

assert len(ADE20K150_CLASSES) == 150


def image_ids(root: str | os.PathLike, split: str = "validation") -> list[str]:
    """Sorted stems of ``<root>/images/<split>/*.jpg`` ([] when the folder is missing)."""
    folder = Path(root) / "images" / split
    return sorted(p.stem for p in folder.glob("*.jpg")) if folder.is_dir() else []


class Ade20k150(LabelledImages):
    """ADE20K-150 validation: items ``(image, label, image_id)``.

    * image: float32 (3, size, size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), class 0..149 (file value - 1), -1 = ignore (value 0, "other");
    * image_id: ``ADE_val_<8 digits>``, sorted.

    Arguments as in :class:`~eval.data.base.LabelledImages`, and ``split`` (the folder under
    ``images/`` and ``annotations/``).
    """

    name = "ade20k150"
    title = "ADE20K-150"
    ignore_values = (0,)  # "other"
    classes = ADE20K150_CLASSES
    first_label_value = 1
    make_target, root_variable = "data-ade20k", "ADE20K_ROOT"
    options = {"split": "validation"}

    def find_ids(self) -> Sequence[str]:
        self.image_dir, self.label_dir = f"images/{self.split}", f"annotations/{self.split}"
        return [p.stem for p in self._glob_ids(self.root / self.image_dir, "*.jpg", "ADE20K image folder")]
