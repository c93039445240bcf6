"""Class tables of the benchmarks, encoded in the project.

* COCO-Stuff-27: the 182 COCO-Stuff classes (file value = COCO id - 1, 255 = unlabelled)
  grouped into 27 coarse classes = the 12 COCO thing supercategories followed by the
  15 COCO-Stuff stuff supercategories.
* Cityscapes-27: labelIds 7..33 -> 0..26, everything else ignored.
* VOC-21: PASCAL VOC 2012 ``SegmentationClass`` palette indices 0 (background) .. 20,
  255 (object boundaries / difficult) ignored.
* Context-60: background + the 59 most frequent PASCAL-Context classes, in the order of
  their PASCAL in Detail category ids (the standard 59-class conversion of
  mmsegmentation / ODISE / FC-CLIP / DiffCut); 0 = background.
* COCO-Object-81: background + the 80 annotated COCO thing classes in COCO id order.
* ADE20K-150: ADEChallengeData2016 values 1..150 -> 0..149, 0 ("other") ignored.

Lookup tables are length-256 int64 arrays indexed by the uint8 value stored in the
label PNG; -1 means "ignore".
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ADE20K150_CLASSES",
    "CITYSCAPES27_CLASSES",
    "CITYSCAPES_FIRST_LABEL_ID",
    "COCO_OBJECT81_CLASSES",
    "COCO_STUFF27_CLASSES",
    "COCO_STUFF_FINE_CLASSES",
    "COCO_STUFF_FINE_NAMES",
    "COCO_STUFF_FINE_TO_COARSE",
    "COCO_STUFF_UNLABELLED",
    "COCO_THING_IDS",
    "CONTEXT60_CLASSES",
    "CONTEXT_DETAIL_IDS",
    "DATASET_CLASSES",
    "DATASET_TITLES",
    "IGNORE_INDEX",
    "VOC21_CLASSES",
    "VOC_IGNORE",
    "ade20k_lut",
    "cityscapes_label_id_lut",
    "coco_object_lut",
    "coco_stuff_fine_to_coarse_lut",
    "coco_stuffthing_to_object_lut",
    "context_lut",
    "voc_lut",
]

IGNORE_INDEX = -1
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


def coco_stuff_fine_to_coarse_lut() -> np.ndarray:
    """Length-256 int64 array: fine file value (0..181) -> coarse index (0..26).

    255 (unlabelled) and every unused value (182..254) map to -1 (ignore).
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(COCO_STUFF_FINE_TO_COARSE)] = COCO_STUFF_FINE_TO_COARSE
    return lut


def cityscapes_label_id_lut() -> np.ndarray:
    """Length-256 int64 array: Cityscapes labelId 7..33 -> 0..26, all other values -> -1."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    first = CITYSCAPES_FIRST_LABEL_ID
    lut[first : first + len(CITYSCAPES27_CLASSES)] = np.arange(len(CITYSCAPES27_CLASSES))
    return lut


# --------------------------------------------------------------------------- VOC-21

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


def voc_lut() -> np.ndarray:
    """Length-256 int64 array: VOC palette index 0..20 -> 0..20, 255 and 21..254 -> -1."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(VOC21_CLASSES)] = np.arange(len(VOC21_CLASSES))
    return lut


# --------------------------------------------------------------------------- Context-60

# The 59 PASCAL in Detail (PASCAL-Context) category ids of the 59-class benchmark, sorted:
# class k (1..59) of Context-60 is the k-th id; every other pixel is background (0).
CONTEXT_DETAIL_IDS: tuple[int, ...] = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98,
    104, 105, 113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)  # fmt: skip

CONTEXT60_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)


def context_lut() -> np.ndarray:
    """Length-256 int64 array for the built Context-60 PNGs: 0..59 -> 0..59, all else -> -1."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(CONTEXT60_CLASSES)] = np.arange(len(CONTEXT60_CLASSES))
    return lut


# --------------------------------------------------------------------------- COCO-Object-81

# COCO category ids (1..90) of the 80 annotated thing classes, in id order.
_COCO_UNANNOTATED_THING_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91})
COCO_THING_IDS: tuple[int, ...] = tuple(i for i in range(1, 92) if i not in _COCO_UNANNOTATED_THING_IDS)

COCO_OBJECT81_CLASSES: tuple[str, ...] = ("background",) + tuple(
    COCO_STUFF_FINE_CLASSES[i - 1][0] for i in COCO_THING_IDS
)


def coco_stuffthing_to_object_lut() -> np.ndarray:
    """Length-256 int64 array mapping a stuffthingmaps value to a COCO-Object-81 class.

    Thing values (COCO id - 1) -> 1..80 in COCO id order; every stuff value (91..181)
    -> 0 (background); 255 (unlabelled), the 11 never-annotated thing values and the
    unused 182..254 -> -1 (ignore).
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[91:182] = 0
    for k, coco_id in enumerate(COCO_THING_IDS, start=1):
        lut[coco_id - 1] = k
    return lut


def coco_object_lut() -> np.ndarray:
    """Length-256 int64 array for the PNGs built from the instances: 0..80 -> 0..80, else -1."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(COCO_OBJECT81_CLASSES)] = np.arange(len(COCO_OBJECT81_CLASSES))
    return lut


# --------------------------------------------------------------------------- ADE20K-150

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


def ade20k_lut() -> np.ndarray:
    """Length-256 int64 array: ADE20K value 1..150 -> 0..149; 0 (other) and 151..255 -> -1."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[1 : 1 + len(ADE20K150_CLASSES)] = np.arange(len(ADE20K150_CLASSES))
    return lut


assert len(COCO_STUFF27_CLASSES) == 27
assert len(COCO_STUFF_FINE_CLASSES) == 182
assert len(CITYSCAPES27_CLASSES) == 27
assert len(VOC21_CLASSES) == 21
assert len(CONTEXT_DETAIL_IDS) == 59 and list(CONTEXT_DETAIL_IDS) == sorted(set(CONTEXT_DETAIL_IDS))
assert len(CONTEXT60_CLASSES) == 60
assert len(COCO_THING_IDS) == 80 and len(COCO_OBJECT81_CLASSES) == 81
assert len(ADE20K150_CLASSES) == 150


# Every benchmark by its config name (``dataset.name``): title for tables, class names in id order.
DATASET_TITLES: dict[str, str] = {
    "coco_stuff27": "COCO-Stuff-27",
    "cityscapes": "Cityscapes",
    "voc21": "PASCAL VOC-21",
    "context60": "PASCAL Context-60",
    "coco_object81": "COCO-Object-81",
    "ade20k150": "ADE20K-150",
}
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "coco_stuff27": COCO_STUFF27_CLASSES,
    "cityscapes": CITYSCAPES27_CLASSES,
    "voc21": VOC21_CLASSES,
    "context60": CONTEXT60_CLASSES,
    "coco_object81": COCO_OBJECT81_CLASSES,
    "ade20k150": ADE20K150_CLASSES,
}
