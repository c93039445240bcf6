"""Cityscapes validation set: the 27 classes of DiffSeg's protocol (diffseg/REFERENCE.md section 3), and the
19 standard evaluation classes (trainIds) that Seg4Diff's release scores.

Layout of a root (the official one; ``make data-cityscapes`` builds it from the zips)::

    <root>/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Classes: ``dataset=cityscapes`` (:class:`Cityscapes27`): labelIds 7..33 -> 0..26, everything else ignored.
``dataset=cityscapes19`` (:class:`Cityscapes19`): labelIds -> trainIds 0..18 by cityscapesScripts' label table
(:data:`CITYSCAPES_LABEL_TO_TRAIN_ID`), every labelId whose trainId is 255 ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.data.base import IGNORE_INDEX, LabelledImages, StandardList
from eval.data.download import PinnedFile, pinned_files, pinned_files_of, safe_extract_zip, verify_file
from eval.data.preparation import Preparation, PrepareError, option

__all__ = [
    "PREPARATION",
    "CITYSCAPES19_CLASSES",
    "CITYSCAPES27_CLASSES",
    "CITYSCAPES_FIRST_LABEL_ID",
    "CITYSCAPES_LABEL_TO_TRAIN_ID",
    "DOWNLOAD_PAGE",
    "IMAGE_SUFFIX",
    "LABEL_SUFFIX",
    "PINNED",
    "VAL_IMAGES",
    "Cityscapes19",
    "Cityscapes27",
    "cityscapes_ready",
    "prepare_cityscapes",
]

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
VAL_IMAGES = 500
DOWNLOAD_PAGE = "https://www.cityscapes-dataset.com/downloads/"

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

# The files `make data-cityscapes` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("cityscapes")


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
    make_target = "data-cityscapes"
    prepare_action = "prepare it from the official zips"
    options = {"split": "val"}
    # the 500 val ids are only known from the official zips: recognised by their count
    standard_list = StandardList("Cityscapes val (leftImg8bit/val)", VAL_IMAGES, options={"split": "val"})
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


# labelId -> trainId of the 19 evaluation classes, from cityscapesScripts' label table
# (cityscapesscripts/helpers/labels.py, columns `id` and `trainId`). Every other labelId of the files
# (0..6, 9, 10, 14, 15, 16, 18, 29, 30) has trainId 255 and is ignored; license plate (id -1) is never
# drawn into a labelIds file. createTrainIdLabelImgs.py draws the same polygons with trainIds, so mapping
# a labelIds file pixel by pixel gives its labelTrainIds file (what detectron2's `cityscapes_fine_sem_seg_val`,
# the set Seg4Diff's release scores, reads).
CITYSCAPES_LABEL_TO_TRAIN_ID: dict[int, int] = {
    7: 0,    # road
    8: 1,    # sidewalk
    11: 2,   # building
    12: 3,   # wall
    13: 4,   # fence
    17: 5,   # pole
    19: 6,   # traffic light
    20: 7,   # traffic sign
    21: 8,   # vegetation
    22: 9,   # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

# The 19 evaluation classes in trainId order (the release's datasets/cityscapes.json): each is the 27-class
# name of its labelId.
CITYSCAPES19_CLASSES: tuple[str, ...] = tuple(
    CITYSCAPES27_CLASSES[label_id - CITYSCAPES_FIRST_LABEL_ID]
    for label_id, _ in sorted(CITYSCAPES_LABEL_TO_TRAIN_ID.items(), key=lambda item: item[1]))
assert len(CITYSCAPES19_CLASSES) == 19 and sorted(CITYSCAPES_LABEL_TO_TRAIN_ID.values()) == list(range(19))


class Cityscapes19(Cityscapes27):
    """Cityscapes val with the 19 evaluation classes (trainIds): items ``(image, label, image_id)``.

    As :class:`Cityscapes27` (same root, files, ids and geometry), but labels are trainIds: int64, class
    0..18 in the order of :data:`CITYSCAPES19_CLASSES`, -1 = ignore (the labelIds whose trainId is 255,
    and 255), :data:`~eval.data.base.UNKNOWN_LABEL` for values no labelId has (34..254).
    """

    name = "cityscapes19"
    title = "Cityscapes (19 classes)"
    classes = CITYSCAPES19_CLASSES
    # labelIds 0..33 are the files' values; those without a trainId are "not evaluated", as 255
    ignore_values = (*sorted(set(range(34)) - set(CITYSCAPES_LABEL_TO_TRAIN_ID)), 255)

    def label_lut(self) -> np.ndarray:
        """Length-256 int64: labelId -> trainId (:data:`CITYSCAPES_LABEL_TO_TRAIN_ID`), every other value -> -1."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN_ID.items():
            lut[label_id] = train_id
        return lut


# --------------------------------------------------------------------------- preparation (make data-cityscapes)


def _cityscapes_counts(root: Path) -> tuple[int, int]:
    """(number of val images, number of those that have a labelIds file)."""
    images = list((root / "leftImg8bit" / "val").glob(f"*/*{IMAGE_SUFFIX}"))
    labelled = 0
    for path in images:
        name = path.name[: -len(IMAGE_SUFFIX)]
        if (root / "gtFine" / "val" / path.parent.name / f"{name}{LABEL_SUFFIX}").is_file():
            labelled += 1
    return len(images), labelled


def cityscapes_ready(root: Path) -> bool:
    """True when ``root`` has all val images, each with its labelIds PNG."""
    images, labelled = _cityscapes_counts(root)
    return images == VAL_IMAGES and labelled == images


def prepare_cityscapes(root: Path, zips: Path, verify: bool = True, progress: bool = True) -> None:
    """Extract the Cityscapes val split from the two official zips (which need a login)."""
    if cityscapes_ready(root):
        print(f"ready: {root}")
        return
    pinned = pinned_files()
    needed = [pinned["cityscapes_gtfine"], pinned["cityscapes_leftimg8bit"]]
    missing = [entry for entry in needed if not (zips / entry.name).is_file()]
    if missing:
        lines = [
            f"Cityscapes is not prepared in {root} and {len(missing)} of the official zips are missing.",
            f"Cityscapes needs a (free) login: download these files from {DOWNLOAD_PAGE}",
        ]
        lines += [f"  {entry.name}   ({entry.url}, md5 {entry.md5})" for entry in missing]
        lines.append(f"and put them in {zips.resolve()}/ , then run `make data-cityscapes` again.")
        raise PrepareError("\n".join(lines))
    for entry in needed:
        path = zips / entry.name
        if verify:
            print(f"verifying {path} (md5) ...")
            verify_file(path, sha256=entry.sha256, md5=entry.md5)
    root.mkdir(parents=True, exist_ok=True)
    # (pinned zip, the val folder inside it, the files kept from it)
    for key, prefix, suffix in (("cityscapes_gtfine", "gtFine/val/", LABEL_SUFFIX),
                                ("cityscapes_leftimg8bit", "leftImg8bit/val/", IMAGE_SUFFIX)):
        safe_extract_zip(zips / pinned[key].name, root, members_prefix=prefix,
                         member_filter=lambda name, suffix=suffix: name.endswith(suffix), progress=progress)
    images, labelled = _cityscapes_counts(root)
    if images != VAL_IMAGES or labelled != images:
        raise PrepareError(
            f"{root} has {images} val images ({labelled} with labels) after extraction, "
            f"expected {VAL_IMAGES}: are the zips the official ones?"
        )
    print(f"ready: {root} ({images} images)")


PREPARATION = Preparation(
    "cityscapes", prepare_cityscapes, "Cityscapes val from the official zips (log in and download them first)",
    options=(option("--no-verify", dest="verify", action="store_false", help="skip the md5 check of the zips"),),
    downloads=(("--zips", "--downloads"), {"help": "folder holding the zips"}))
