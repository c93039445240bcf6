"""Class tables of the two benchmarks (DESIGN section 3), encoded in the project.

* COCO-Stuff-27: the 182 COCO-Stuff classes (file value = COCO id - 1, 255 = unlabelled)
  grouped into 27 coarse classes = the 12 COCO thing supercategories followed by the
  15 COCO-Stuff stuff supercategories.
* Cityscapes-27: labelIds 7..33 -> 0..26, everything else ignored.

Lookup tables are length-256 int64 arrays indexed by the uint8 value stored in the
label PNG; -1 means "ignore".
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CITYSCAPES27_CLASSES",
    "CITYSCAPES_FIRST_LABEL_ID",
    "COCO_STUFF27_CLASSES",
    "COCO_STUFF_FINE_CLASSES",
    "COCO_STUFF_FINE_NAMES",
    "COCO_STUFF_FINE_TO_COARSE",
    "COCO_STUFF_UNLABELLED",
    "IGNORE_INDEX",
    "cityscapes_label_id_lut",
    "coco_stuff_fine_to_coarse_lut",
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


assert len(COCO_STUFF27_CLASSES) == 27
assert len(COCO_STUFF_FINE_CLASSES) == 182
assert len(CITYSCAPES27_CLASSES) == 27
