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

from eval.data.base import LabelledImages, StandardList
from eval.data.download import PinnedFile, download_pinned, pinned_files_of, read_tar_member, safe_extract_tar
from eval.data.preparation import Preparation, PrepareError, listed_files_ready

__all__ = [
    "PREPARATION",
    "IMAGE_DIR",
    "LABEL_DIR",
    "PINNED",
    "TAR_PREFIX",
    "VAL_IMAGES",
    "VOC21_CLASSES",
    "VOC_IGNORE",
    "Voc21",
    "prepare_voc",
    "split_list",
    "voc_ready",
]

IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClass"
VAL_IMAGES = 1449
VOC_IGNORE = 255
TAR_PREFIX = "VOCdevkit/VOC2012/"  # the root's folder inside the trainval tar

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

# The files `make data-voc` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("voc")


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
    make_target = "data-voc"
    options = {"split": "val"}
    # val.txt comes from the pinned trainval tar (its ids are not kept here): recognised by its count
    standard_list = StandardList("VOC2012 ImageSets/Segmentation/val.txt", VAL_IMAGES, options={"split": "val"})
    image_dir, label_dir = IMAGE_DIR, LABEL_DIR

    def find_ids(self) -> Sequence[str]:
        return self._listed_ids(split_list(self.root, self.split), "VOC2012 list file")


# --------------------------------------------------------------------------- preparation (make data-voc)


def _voc_files(root: Path):
    return lambda i: (root / IMAGE_DIR / f"{i}.jpg", root / LABEL_DIR / f"{i}.png")


def voc_ready(root: Path) -> bool:
    """True when ``root`` has the val list and the image and label of every listed id."""
    return listed_files_ready(split_list(root), _voc_files(root))


def prepare_voc(root: Path, downloads: Path, progress: bool = True) -> None:
    """Extract the 1449 val images and labels (and ``val.txt``) from the official VOC2012 tar."""
    if voc_ready(root):
        print(f"ready: {root}")
        return
    tar = download_pinned("voc2012_trainval", downloads, progress=progress)
    list_member = f"{TAR_PREFIX}ImageSets/Segmentation/val.txt"
    ids = [line.strip() for line in read_tar_member(tar, list_member).decode("utf-8").splitlines() if line.strip()]
    if len(ids) != VAL_IMAGES:
        raise PrepareError(f"{list_member} in {tar} lists {len(ids)} ids, expected {VAL_IMAGES}")
    members = [list_member]
    members += [f"{TAR_PREFIX}{IMAGE_DIR}/{i}.jpg" for i in ids]
    members += [f"{TAR_PREFIX}{LABEL_DIR}/{i}.png" for i in ids]
    print(f"extracting {len(ids)} val images and labels from {tar.name}")
    safe_extract_tar(tar, root, members=members, strip_prefix=TAR_PREFIX, progress=progress)
    if not voc_ready(root):
        raise PrepareError(f"{root} is still incomplete after extraction")
    print(f"ready: {root} ({len(ids)} images)")


PREPARATION = Preparation("voc", prepare_voc,
                          "PASCAL VOC 2012 val (downloads the 2 GB trainval tar, keeps 1449 images)")
