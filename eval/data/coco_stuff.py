"""COCO-Stuff-27 validation set (diffseg/REFERENCE.md section 3).

Layout of a root (the official DiffSeg release's; ``make data-coco`` builds it)::

    <root>/val2017/<id>.jpg
    <root>/annotation_val2017/<id>.png        fine labels 0..181, 255 = unlabelled
    <root>/Coco164kFull_Stuff_Coarse_7.txt    the curated 2175 ids (DiffSeg's list), one per line
    <root>/val2017_all.txt                    all 5000 val2017 ids (``subset="all"``; written by
                                              ``python datasets/prepare.py coco --subset all``)

``subset`` chooses the image set: ``curated`` (default, the 2175 images DiffSeg, DiffCut and
most papers report) or ``all`` (the 5000 val2017 images, as later papers such as Seg4Diff and
EmerDiff evaluate).

Classes: the 182 COCO-Stuff classes (file value = COCO id - 1, 255 = unlabelled) grouped into
27 coarse classes = the 12 COCO thing supercategories followed by the 15 COCO-Stuff stuff
supercategories.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.data.base import IGNORE_INDEX, LabelledImages, StandardList, make_hint, read_id_list
from eval.data.download import PinnedFile, download_pinned, pinned_files, pinned_files_of, safe_extract_zip
from eval.data.loader import DatasetNotFoundError
from eval.data.preparation import Preparation, PrepareError, option, require_network
from eval.data.synthetic_marker import is_synthetic

__all__ = [
    "PREPARATION",
    "ALL_LIST_FILE",
    "COCO_STUFF27_CLASSES",
    "COCO_STUFF_FINE_CLASSES",
    "COCO_STUFF_FINE_NAMES",
    "COCO_STUFF_FINE_TO_COARSE",
    "COCO_STUFF_UNLABELLED",
    "DEFAULT_LIST_FILE",
    "PINNED",
    "STANDARD_LISTS",
    "SUBSETS",
    "VAL2017_IMAGES",
    "CocoStuff27",
    "coco_hint",
    "coco_ready",
    "coco_stuff_fine_to_coarse_lut",
    "prepare_coco",
    "subset_ids",
]

DEFAULT_LIST_FILE = "Coco164kFull_Stuff_Coarse_7.txt"
ALL_LIST_FILE = "val2017_all.txt"
SUBSETS = {"curated": DEFAULT_LIST_FILE, "all": ALL_LIST_FILE}
VAL2017_IMAGES = 5000
IMAGE_DIR = "val2017"
LABEL_DIR = "annotation_val2017"

# Each subset's benchmark list. The curated hash is eval.data.base.ids_sha256 of the 2175 ids of the pinned
# list file (PINNED["coco_stuff27_list"], the copy in github.com/google/diffseg data/coco/); the 5000
# val2017 ids are only known from the archive, so that list is recognised by its count.
STANDARD_LISTS = {
    "curated": StandardList(f"{DEFAULT_LIST_FILE} (DiffSeg's curated list)", 2175,
                            "90cdc2116a1c2bef94bc1cefeb98a672444fddaa44b8370127016d98b16108a4"),
    "all": StandardList(f"{ALL_LIST_FILE} (every val2017 image)", VAL2017_IMAGES),
}
COCO_STUFF_UNLABELLED = 255

# 12 thing supercategories (0..11), then 15 stuff supercategories (12..26).
COCO_STUFF27_CLASSES: tuple[str, ...] = (
    "electronic",
    "appliance",
    "food",
    "furniture",
    "indoor",
    "kitchen",
    "accessory",
    "animal",
    "outdoor",
    "person",
    "sports",
    "vehicle",
    "ceiling",
    "floor",
    "food-stuff",
    "furniture-stuff",
    "rawmaterial",
    "textile",
    "wall",
    "window",
    "building",
    "ground",
    "plant",
    "sky",
    "solid",
    "structural",
    "water",
)

# (fine name, coarse name) in file-value order: index = COCO(-Stuff) id - 1.
# 0..90 are the 91 COCO thing ids (11 of them never annotated: street sign, hat, shoe,
# eye glasses, plate, mirror, window, desk, door, blender, hair brush), 91..181 stuff.
COCO_STUFF_FINE_CLASSES: tuple[tuple[str, str], ...] = (
    ("person", "person"),
    ("bicycle", "vehicle"),
    ("car", "vehicle"),
    ("motorcycle", "vehicle"),
    ("airplane", "vehicle"),
    ("bus", "vehicle"),
    ("train", "vehicle"),
    ("truck", "vehicle"),
    ("boat", "vehicle"),
    ("traffic light", "outdoor"),
    ("fire hydrant", "outdoor"),
    ("street sign", "outdoor"),
    ("stop sign", "outdoor"),
    ("parking meter", "outdoor"),
    ("bench", "outdoor"),
    ("bird", "animal"),
    ("cat", "animal"),
    ("dog", "animal"),
    ("horse", "animal"),
    ("sheep", "animal"),
    ("cow", "animal"),
    ("elephant", "animal"),
    ("bear", "animal"),
    ("zebra", "animal"),
    ("giraffe", "animal"),
    ("hat", "accessory"),
    ("backpack", "accessory"),
    ("umbrella", "accessory"),
    ("shoe", "accessory"),
    ("eye glasses", "accessory"),
    ("handbag", "accessory"),
    ("tie", "accessory"),
    ("suitcase", "accessory"),
    ("frisbee", "sports"),
    ("skis", "sports"),
    ("snowboard", "sports"),
    ("sports ball", "sports"),
    ("kite", "sports"),
    ("baseball bat", "sports"),
    ("baseball glove", "sports"),
    ("skateboard", "sports"),
    ("surfboard", "sports"),
    ("tennis racket", "sports"),
    ("bottle", "kitchen"),
    ("plate", "kitchen"),
    ("wine glass", "kitchen"),
    ("cup", "kitchen"),
    ("fork", "kitchen"),
    ("knife", "kitchen"),
    ("spoon", "kitchen"),
    ("bowl", "kitchen"),
    ("banana", "food"),
    ("apple", "food"),
    ("sandwich", "food"),
    ("orange", "food"),
    ("broccoli", "food"),
    ("carrot", "food"),
    ("hot dog", "food"),
    ("pizza", "food"),
    ("donut", "food"),
    ("cake", "food"),
    ("chair", "furniture"),
    ("couch", "furniture"),
    ("potted plant", "furniture"),
    ("bed", "furniture"),
    ("mirror", "furniture"),
    ("dining table", "furniture"),
    ("window", "furniture"),
    ("desk", "furniture"),
    ("toilet", "furniture"),
    ("door", "furniture"),
    ("tv", "electronic"),
    ("laptop", "electronic"),
    ("mouse", "electronic"),
    ("remote", "electronic"),
    ("keyboard", "electronic"),
    ("cell phone", "electronic"),
    ("microwave", "appliance"),
    ("oven", "appliance"),
    ("toaster", "appliance"),
    ("sink", "appliance"),
    ("refrigerator", "appliance"),
    ("blender", "appliance"),
    ("book", "indoor"),
    ("clock", "indoor"),
    ("vase", "indoor"),
    ("scissors", "indoor"),
    ("teddy bear", "indoor"),
    ("hair drier", "indoor"),
    ("toothbrush", "indoor"),
    ("hair brush", "indoor"),
    # --- stuff (COCO-Stuff ids 92..182) ---
    ("banner", "textile"),
    ("blanket", "textile"),
    ("branch", "plant"),
    ("bridge", "building"),
    ("building-other", "building"),
    ("bush", "plant"),
    ("cabinet", "furniture-stuff"),
    ("cage", "structural"),
    ("cardboard", "rawmaterial"),
    ("carpet", "floor"),
    ("ceiling-other", "ceiling"),
    ("ceiling-tile", "ceiling"),
    ("cloth", "textile"),
    ("clothes", "textile"),
    ("clouds", "sky"),
    ("counter", "furniture-stuff"),
    ("cupboard", "furniture-stuff"),
    ("curtain", "textile"),
    ("desk-stuff", "furniture-stuff"),
    ("dirt", "ground"),
    ("door-stuff", "furniture-stuff"),
    ("fence", "structural"),
    ("floor-marble", "floor"),
    ("floor-other", "floor"),
    ("floor-stone", "floor"),
    ("floor-tile", "floor"),
    ("floor-wood", "floor"),
    ("flower", "plant"),
    ("fog", "water"),
    ("food-other", "food-stuff"),
    ("fruit", "food-stuff"),
    ("furniture-other", "furniture-stuff"),
    ("grass", "plant"),
    ("gravel", "ground"),
    ("ground-other", "ground"),
    ("hill", "solid"),
    ("house", "building"),
    ("leaves", "plant"),
    ("light", "furniture-stuff"),
    ("mat", "textile"),
    ("metal", "rawmaterial"),
    ("mirror-stuff", "furniture-stuff"),
    ("moss", "plant"),
    ("mountain", "solid"),
    ("mud", "ground"),
    ("napkin", "textile"),
    ("net", "structural"),
    ("paper", "rawmaterial"),
    ("pavement", "ground"),
    ("pillow", "textile"),
    ("plant-other", "plant"),
    ("plastic", "rawmaterial"),
    ("platform", "ground"),
    ("playingfield", "ground"),
    ("railing", "structural"),
    ("railroad", "ground"),
    ("river", "water"),
    ("road", "ground"),
    ("rock", "solid"),
    ("roof", "building"),
    ("rug", "textile"),
    ("salad", "food-stuff"),
    ("sand", "ground"),
    ("sea", "water"),
    ("shelf", "furniture-stuff"),
    ("sky-other", "sky"),
    ("skyscraper", "building"),
    ("snow", "ground"),
    ("solid-other", "solid"),
    ("stairs", "furniture-stuff"),
    ("stone", "solid"),
    ("straw", "plant"),
    ("structural-other", "structural"),
    ("table", "furniture-stuff"),
    ("tent", "building"),
    ("textile-other", "textile"),
    ("towel", "textile"),
    ("tree", "plant"),
    ("vegetable", "food-stuff"),
    ("wall-brick", "wall"),
    ("wall-concrete", "wall"),
    ("wall-other", "wall"),
    ("wall-panel", "wall"),
    ("wall-stone", "wall"),
    ("wall-tile", "wall"),
    ("wall-wood", "wall"),
    ("water-other", "water"),
    ("waterdrops", "water"),
    ("window-blind", "window"),
    ("window-other", "window"),
    ("wood", "solid"),
)

COCO_STUFF_FINE_NAMES: tuple[str, ...] = tuple(name for name, _ in COCO_STUFF_FINE_CLASSES)

_COARSE_INDEX = {name: i for i, name in enumerate(COCO_STUFF27_CLASSES)}

# Fine index (0..181) -> coarse index (0..26).
COCO_STUFF_FINE_TO_COARSE: tuple[int, ...] = tuple(_COARSE_INDEX[c] for _, c in COCO_STUFF_FINE_CLASSES)

assert len(COCO_STUFF27_CLASSES) == 27
assert len(COCO_STUFF_FINE_CLASSES) == 182

# The files `make data-coco` fetches or expects: its entries of eval/data/pinned_files.json, with the published
# checksums (merged into eval.data.download.PINNED_FILES).
PINNED: dict[str, PinnedFile] = pinned_files_of("coco_stuff")


def coco_stuff_fine_to_coarse_lut() -> np.ndarray:
    """Length-256 int64 array: fine file value (0..181) -> coarse index (0..26).

    255 (unlabelled) and every unused value (182..254) map to -1 (ignore).
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(COCO_STUFF_FINE_TO_COARSE)] = COCO_STUFF_FINE_TO_COARSE
    return lut


def coco_hint(root: str | os.PathLike, subset: str = "curated") -> str:
    """How to prepare a COCO root of ``subset`` (``make data-coco``, with ``COCO_SUBSET=all`` for all)."""
    return make_hint("data-coco" + (" COCO_SUBSET=all" if subset == "all" else ""), root)


def subset_ids(dataset: LabelledImages, subset: str, list_file: str | None, title: str) -> list[str]:
    """The ids of a COCO ``subset`` (its list file unless ``list_file`` names another), checked.

    Raises:
        ValueError: unknown subset.
        DatasetNotFoundError: a missing list file, or an ``all`` list without the 5000 val2017
            ids (a synthetic root, marked by eval.data.synthetic, may hold fewer).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    path = dataset._require(dataset.root / (list_file or SUBSETS[subset]), f"{title} list file ({subset} subset)")
    ids = read_id_list(path)
    if subset == "all" and len(ids) != VAL2017_IMAGES:
        if not is_synthetic(dataset.root):
            raise DatasetNotFoundError(f"{path} lists {len(ids)} ids, not the {VAL2017_IMAGES} val2017 images "
                                       f"of subset=all; {dataset._hint}")
    dataset.list_path = path
    return ids


class CocoStuff27(LabelledImages):
    """COCO-Stuff-27 val: items ``(image, label, image_id)``.

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), coarse class 0..26, -1 = ignore (fine 255/unused);
    * image_id: the 12-digit id string from the list file.

    ``root``, ``size``, ``limit``, ``shard``, ``image_size`` as in :class:`~eval.data.base.LabelledImages`;
    ``list_file``: list file name inside ``root`` (or an absolute path), default: the subset's;
    ``subset``: ``curated`` (2175 images) or ``all`` (5000 val2017 images), module docstring.
    """

    name = "coco_stuff27"
    title = "COCO-Stuff-27"
    classes = COCO_STUFF27_CLASSES
    make_target = "data-coco"
    options = {"list_file": None, "subset": "curated"}
    image_dir, label_dir = IMAGE_DIR, LABEL_DIR

    def prepare_hint(self) -> str:
        return coco_hint(self.root, self.subset)

    def find_ids(self) -> Sequence[str]:
        return subset_ids(self, self.subset, self.list_file, self.title)

    def standard_image_list(self) -> StandardList | None:
        return STANDARD_LISTS.get(self.subset)

    def label_lut(self) -> np.ndarray:
        return coco_stuff_fine_to_coarse_lut()


# --------------------------------------------------------------------------- preparation (make data-coco)


def _missing_coco(root: Path, ids: list[str]) -> tuple[list[str], list[str]]:
    images = [i for i in ids if not (root / IMAGE_DIR / f"{i}.jpg").is_file()]
    labels = [i for i in ids if not (root / LABEL_DIR / f"{i}.png").is_file()]
    return images, labels


def coco_ready(root: Path, subset: str = "curated") -> bool:
    """True when ``root`` has the subset's list file and the image and label of every listed id."""
    list_path = root / SUBSETS[subset]
    if not list_path.is_file():
        return False
    ids = read_id_list(list_path)
    images, labels = _missing_coco(root, ids)
    return bool(ids) and not images and not labels


def _write_all_list(downloads: Path, progress: bool) -> Path:
    """``downloads/val2017_all.txt``: every image id of the pinned val2017.zip, sorted."""
    archive = download_pinned("coco_val2017", downloads, progress=progress)
    with zipfile.ZipFile(archive) as zf:
        ids = sorted(Path(n).stem for n in zf.namelist() if n.startswith("val2017/") and n.endswith(".jpg"))
    path = downloads / SUBSETS["all"]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    os.replace(tmp, path)
    return path


def prepare_coco(root: Path, downloads: Path, progress: bool = True, subset: str = "curated") -> None:
    """Build a COCO-Stuff-27 root (layout in ``datasets/README.md``), fetching only what is missing.

    ``subset="all"`` keeps every val2017 image (5000) and lists them in ``val2017_all.txt``.
    """
    if coco_ready(root, subset):
        print(f"ready: {root}")
        return
    list_path = root / SUBSETS[subset]
    require_network(_coco_needs(root, downloads, subset), downloads)
    downloads.mkdir(parents=True, exist_ok=True)
    if list_path.is_file():
        source_list = list_path
        print(f"using the existing id list {list_path}")
    elif subset == "all":
        source_list = _write_all_list(downloads, progress)
    else:
        source_list = download_pinned("coco_stuff27_list", downloads, progress=progress)
    ids = read_id_list(source_list)
    if not ids:
        raise PrepareError(f"the id list {source_list} is empty")
    missing_images, missing_labels = _missing_coco(root, ids)

    # (what, missing ids, pinned archive, target folder, file extension); both zips hold val2017/<id>.<ext>
    parts = [
        ("images", missing_images, "coco_val2017", IMAGE_DIR, "jpg"),
        ("labels", missing_labels, "cocostuff_stuffthingmaps", LABEL_DIR, "png"),
    ]
    for what, missing, key, folder, ext in parts:
        if not missing:
            continue
        print(f"{len(missing)} of {len(ids)} {what} missing: fetching {pinned_files()[key].name}")
        archive = download_pinned(key, downloads, progress=progress)
        safe_extract_zip(
            archive,
            root / folder,
            members=[f"val2017/{i}.{ext}" for i in missing],
            strip_prefix="val2017/",
            progress=progress,
        )
    if not list_path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = list_path.with_name(list_path.name + ".tmp")
        shutil.copyfile(source_list, tmp)
        os.replace(tmp, list_path)
    if not coco_ready(root, subset):
        images, labels = _missing_coco(root, ids)
        raise PrepareError(f"{root} is still incomplete: {len(images)} images and {len(labels)} labels missing")
    print(f"ready: {root} ({len(ids)} images)")


def _coco_needs(root: Path, downloads: Path, subset: str = "curated") -> list[str]:
    """Pinned files a COCO-Stuff-27 preparation would fetch (all of them when the id list is not there yet)."""
    list_path = root / SUBSETS[subset]
    missing = _missing_coco(root, read_id_list(list_path)) if list_path.is_file() else (["?"], ["?"])
    needs = [] if list_path.is_file() or subset == "all" else ["coco_stuff27_list"]
    needs += [key for key, gap in (("coco_val2017", missing[0]), ("cocostuff_stuffthingmaps", missing[1])) if gap]
    return [key for key in needs if not (downloads / pinned_files()[key].name).is_file()]


PREPARATION = Preparation(
    "coco", prepare_coco, "COCO-Stuff-27 val (downloads ~1.5 GB, keeps 2175 images)",
    options=(option("--subset", choices=sorted(SUBSETS), default="curated",
                    help="curated: the 2175 listed images (default); all: the 5000 val2017 images"),))
