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

from eval.data.base import LabelledImages, StandardList, ids_sha256
from eval.data.download import PinnedFile, download_pinned, pinned_files_of, safe_extract_zip
from eval.data.preparation import Preparation, PrepareError

__all__ = ["ADE20K150_CLASSES", "PINNED", "PREPARATION", "VAL_IMAGES", "ZIP_PREFIX", "Ade20k150", "ade20k_ready",
           "image_ids", "prepare_ade20k"]

VAL_IMAGES = 2000
ZIP_PREFIX = "ADEChallengeData2016/"  # the root's folder inside the official zip

# The files `make data-ade20k` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("ade20k")

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
    make_target = "data-ade20k"
    options = {"split": "validation"}
    # the official validation images are ADE_val_00000001 .. ADE_val_00002000
    standard_list = StandardList("ADEChallengeData2016 validation", VAL_IMAGES,
                                 ids_sha256(f"ADE_val_{i:08d}" for i in range(1, VAL_IMAGES + 1)),
                                 {"split": "validation"})

    def find_ids(self) -> Sequence[str]:
        self.image_dir, self.label_dir = f"images/{self.split}", f"annotations/{self.split}"
        return [p.stem for p in self._glob_ids(self.root / self.image_dir, "*.jpg", "ADE20K image folder")]


# --------------------------------------------------------------------------- preparation (make data-ade20k)


def ade20k_ready(root: Path) -> bool:
    """True when ``root`` has all validation images, each with its annotation PNG."""
    ids = image_ids(root)
    labelled = [i for i in ids if (root / "annotations" / "validation" / f"{i}.png").is_file()]
    return len(ids) == VAL_IMAGES and len(labelled) == len(ids)


def prepare_ade20k(root: Path, downloads: Path, progress: bool = True) -> None:
    """Extract the validation split of the official ADEChallengeData2016 zip."""
    if ade20k_ready(root):
        print(f"ready: {root}")
        return
    archive = download_pinned("ade20k_challenge", downloads, progress=progress)
    wanted = (f"{ZIP_PREFIX}images/validation/", f"{ZIP_PREFIX}annotations/validation/")
    safe_extract_zip(
        archive,
        root,
        member_filter=lambda name: name.startswith(wanted),
        strip_prefix=ZIP_PREFIX,
        progress=progress,
    )
    if not ade20k_ready(root):
        ids = image_ids(root)
        raise PrepareError(
            f"{root} has {len(ids)} validation images after extraction, expected {VAL_IMAGES} "
            "with an annotation each: is the zip the official one?"
        )
    print(f"ready: {root} ({VAL_IMAGES} images)")


PREPARATION = Preparation("ade20k", prepare_ade20k,
                          "ADE20K SceneParsing validation (official zip, keeps 2000 images)")
