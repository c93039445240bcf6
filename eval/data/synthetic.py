"""Synthetic datasets written in the exact on-disk formats of the real ones.

Used by the tests and by ``make demo``: no download, a few hundred KB, deterministic
for a seed. Images are a background of stuff regions with a few "object" shapes on
top, each class with its own colour plus mild noise; labels are the matching class
maps with real class values and some ignore pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from eval.data.ade20k import ADE20K150_CLASSES
from eval.data.coco_object import COCO_THING_IDS
from eval.data.coco_stuff import DEFAULT_LIST_FILE, IMAGE_DIR, LABEL_DIR
from eval.data.context import CONTEXT_DETAIL_IDS
from eval.data.synthetic_marker import SYNTHETIC_MARKER
from eval.data.voc import VOC21_CLASSES

PathLike = str | os.PathLike
Pair = tuple[int, int]  # (low, high) or (height, width)

__all__ = [
    "SyntheticShape",
    "mark_synthetic",
    "shape_mask",
    "write_synthetic_ade20k",
    "write_synthetic_cityscapes",
    "write_synthetic_coco_object",
    "write_synthetic_coco_stuff",
    "write_synthetic_context",
    "write_synthetic_folder",
    "write_synthetic_voc",
]


def mark_synthetic(root: Path) -> None:
    """Leave the marker by which a run knows (and says) that its data is synthetic."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SYNTHETIC_MARKER).write_text(
        "Written by eval.data.synthetic: generated images and labels, not the benchmark.\n", encoding="utf-8")

# The first ids of the real curated list, so a synthetic root looks like a real one.
_REAL_LOOKING_IDS = (
    139, 724, 785, 872, 885, 1268, 1532, 1761, 2153, 2261, 2473, 2532, 2923, 3255, 3553, 5060,
)  # fmt: skip

# COCO-Stuff fine values (index = COCO id - 1).
_COCO_BACKGROUNDS = (
    (156, 123),  # sky-other over grass
    (156, 148),  # sky-other over road
    (170, 114),  # wall-brick over floor-other
    (172, 153),  # wall-other over sand
    (105, 154),  # clouds over sea
)
_COCO_THINGS = (0, 2, 17, 5, 1, 15, 61, 56, 62, 7)  # person car dog bus bicycle bird chair carrot ...
_COCO_UNLABELLED = 255

# Cityscapes labelIds.
_CITY_NAMES = ("frankfurt", "lindau", "munster")
_CITY_VOID = (0, 1, 3, 4, 5, 6)  # unlabeled, ego vehicle, out of roi, static, dynamic, ground
_CITY_OBJECTS = (26, 24, 25, 33, 20, 19, 17, 27)  # car person rider bicycle sign light pole truck


def _palette(value: int, seed: int) -> np.ndarray:
    """A fixed RGB colour for a class value (same colour in every image of a run)."""
    rng = np.random.default_rng(seed * 1000 + value + 12345)
    return rng.integers(30, 226, size=3).astype(np.float64)


def _render(label: np.ndarray, rng: np.random.Generator, seed: int, noise: float = 6.0) -> np.ndarray:
    """Colour each class region of ``label`` (H, W) and add noise -> uint8 (H, W, 3)."""
    image = np.zeros((*label.shape, 3), dtype=np.float64)
    for value in np.unique(label):
        image[label == value] = _palette(int(value), seed)
    yy, xx = np.mgrid[0 : label.shape[0], 0 : label.shape[1]]
    shade = 12.0 * np.sin(xx / 23.0 + rng.uniform(0, 6)) * np.cos(yy / 17.0)
    image += shade[..., None] + rng.normal(0.0, noise, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _save_pair(label: np.ndarray, image_path: Path, label_img: Image.Image | None, label_path: Path | None,
               rng: np.random.Generator, seed: int) -> None:
    """Write the image of ``label`` (H, W) (:func:`_render`; JPEG quality 95 for ``.jpg``, else PNG)
    and, when given, the label image as a PNG; folders are made."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    options = {"format": "JPEG", "quality": 95} if image_path.suffix == ".jpg" else {"format": "PNG"}
    Image.fromarray(_render(label, rng, seed), mode="RGB").save(image_path, **options)
    if label_img is not None:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        label_img.save(label_path, format="PNG")


def _write_ids(path: Path, ids: Sequence[str]) -> None:
    """A list file: one id a line."""
    path.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def _random_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, h: int, w: int, value: int) -> None:
    """Draw one ellipse or polygon of class ``value`` on a mode-"L" label image."""
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.2, 0.85) * h
    rx, ry = rng.uniform(0.08, 0.25) * w, rng.uniform(0.08, 0.25) * h
    if rng.random() < 0.5:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=value)
    else:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        points = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
        draw.polygon(points, fill=value)


def _random_size(rng: np.random.Generator, size_range: Pair) -> Pair:
    low, high = size_range
    if high <= low:
        raise ValueError(f"size_range must be (low, high) with low < high, got {size_range}")
    h = int(rng.integers(low, high + 1))
    w = int(rng.integers(low, high + 1))
    if w == h:  # keep it non-square so the centre crop matters
        w = w + 1 if w < high else w - 1
    return h, w


def write_synthetic_coco_stuff(
    root: PathLike, num_images: int = 8, seed: int = 0, size_range: Pair = (200, 400), ids: Sequence[str] | None = None,
) -> list[str]:
    """Write a COCO-Stuff-27 root: ``val2017/<id>.jpg``, ``annotation_val2017/<id>.png``
    and the list file.

    Images are RGB JPEGs (quality 95) of random non-square sizes within ``size_range``;
    labels are single-channel ("L") PNGs with fine values (e.g. 156 sky-other,
    123 grass, 148 road, 0 person, 2 car) and a band of 255 (unlabelled) pixels.

    Args:
        root: folder to create/fill.
        num_images: number of images when ``ids`` is None.
        seed: RNG seed (same seed -> same files).
        size_range: inclusive (low, high) for height and width.
        ids: explicit ids, written to the list file in this order.

    Returns:
        The ids in list-file order.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if ids is None:
        extra = _REAL_LOOKING_IDS[-1]
        numbers = list(_REAL_LOOKING_IDS[:num_images])
        while len(numbers) < num_images:
            extra += int(rng.integers(1, 500))
            numbers.append(extra)
        ids = [f"{n:012d}" for n in numbers]
    ids = [str(i) for i in ids]
    for k, image_id in enumerate(ids):
        h, w = _random_size(rng, size_range)
        top, bottom = _COCO_BACKGROUNDS[k % len(_COCO_BACKGROUNDS)]
        label_img = Image.new("L", (w, h), color=top)
        draw = ImageDraw.Draw(label_img)
        horizon = int(h * rng.uniform(0.35, 0.65))
        draw.rectangle([0, horizon, w, h], fill=bottom)
        for _ in range(int(rng.integers(2, 5))):
            _random_shape(draw, rng, h, w, int(rng.choice(_COCO_THINGS)))
        # Unlabelled pixels: a thin band along one border plus a small blob.
        band = max(2, h // 40)
        draw.rectangle([0, h - band, w, h], fill=_COCO_UNLABELLED)
        bx, by = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        draw.ellipse([bx - 6, by - 4, bx + 6, by + 4], fill=_COCO_UNLABELLED)
        _save_pair(np.asarray(label_img), root / IMAGE_DIR / f"{image_id}.jpg", label_img,
                   root / LABEL_DIR / f"{image_id}.png", rng, seed)
    _write_ids(root / DEFAULT_LIST_FILE, ids)
    mark_synthetic(root)
    return ids


def write_synthetic_cityscapes(
    root: PathLike, num_images: int = 4, seed: int = 0, size: Pair = (256, 512),
    objects: Sequence[int] | None = None,
) -> list[str]:
    """Write a Cityscapes root with ``num_images`` val images (RGB PNG) and labelIds PNGs.

    Files: ``leftImg8bit/val/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png`` and
    ``gtFine/val/<city>/..._gtFine_labelIds.png`` (mode "L"): sky 23, building 11,
    vegetation 21, road 7, sidewalk 8, objects (car 26, person 24, ...), and void ids
    0..6 (e.g. an ego-vehicle band of 1 at the bottom).

    Args:
        size: (height, width) of every image (the real ones are 1024 x 2048).
        objects: labelIds the object shapes are drawn from (default: car, person, rider, bicycle,
            traffic sign, traffic light, pole, truck); e.g. parking 9 or caravan 29, classes of the 27-class
            set that the 19 trainId classes ignore.

    Returns:
        The image ids (``<city>_<seq>_<frame>``) in sorted order.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    names = []
    for k in range(num_images):
        city = _CITY_NAMES[k % len(_CITY_NAMES)]
        name = f"{city}_{int(rng.integers(0, 1000)):06d}_{int(rng.integers(0, 100000)):06d}"
        while name in names:
            name = f"{city}_{int(rng.integers(0, 1000)):06d}_{int(rng.integers(0, 100000)):06d}"
        names.append(name)
        label_img = Image.new("L", (w, h), color=23)  # sky
        draw = ImageDraw.Draw(label_img)
        skyline = int(h * rng.uniform(0.2, 0.35))
        horizon = int(h * rng.uniform(0.5, 0.6))
        draw.rectangle([0, skyline, w, horizon], fill=11)  # building
        draw.rectangle([int(w * rng.uniform(0.6, 0.8)), skyline - 10, w, horizon], fill=21)  # vegetation
        draw.rectangle([0, horizon, w, h], fill=7)  # road
        draw.polygon([(0, horizon), (int(w * 0.2), horizon), (0, int(h * 0.8))], fill=8)  # sidewalk
        for _ in range(int(rng.integers(2, 5))):
            _random_shape(draw, rng, h, w, int(rng.choice(_CITY_OBJECTS if objects is None else objects)))
        draw.rectangle([0, int(h * 0.92), w, h], fill=1)  # ego vehicle (void)
        draw.rectangle([0, 0, max(2, w // 50), h], fill=int(rng.choice(_CITY_VOID)))  # void strip
        _save_pair(np.asarray(label_img), root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png",
                   label_img, root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png", rng, seed)
    mark_synthetic(root)
    return sorted(names)


# --------------------------------------------------------------------------- VOC-21


def _voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved class index), flattened RGB."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def write_synthetic_voc(root: PathLike, num_images: int = 4, seed: int = 0, size_range: Pair = (200, 400)) -> list[str]:
    """Write a ``VOC2012`` root: ``JPEGImages/<id>.jpg``, palette ``SegmentationClass/<id>.png``
    and ``ImageSets/Segmentation/{train,val}.txt``.

    Labels are palette ("P") PNGs with the VOC colour map: background 0, objects of classes
    1..20 outlined by a 3-pixel band of 255 (as VOC marks object boundaries). One extra
    image is listed in ``train.txt`` only.

    Returns:
        The val ids in list-file order (``<year>_<6 digits>``).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    while len(names) < num_images + 1:
        name = f"{2007 + len(names) % 5}_{int(rng.integers(0, 10000)):06d}"
        if name not in names:
            names.append(name)
    palette = _voc_palette()
    for name in names:
        h, w = _random_size(rng, size_range)
        label_img = Image.new("P", (w, h), color=0)
        label_img.putpalette(palette)
        draw = ImageDraw.Draw(label_img)
        for _ in range(int(rng.integers(1, 4))):
            value = int(rng.integers(1, len(VOC21_CLASSES)))
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            rx, ry = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=value, outline=255, width=3)
        _save_pair(np.asarray(label_img), root / "JPEGImages" / f"{name}.jpg", label_img,
                   root / "SegmentationClass" / f"{name}.png", rng, seed)
    val, train = names[:num_images], names[num_images:]
    _write_ids(root / "ImageSets/Segmentation/val.txt", val)
    _write_ids(root / "ImageSets/Segmentation/train.txt", train)
    mark_synthetic(root)
    return val


# --------------------------------------------------------------------------- ADE20K-150


def write_synthetic_ade20k(
    root: PathLike, num_images: int = 3, seed: int = 0, size_range: Pair = (200, 400),
) -> list[str]:
    """Write an ``ADEChallengeData2016`` root: ``images/validation/ADE_val_<8 digits>.jpg`` and
    ``annotations/validation/....png`` (mode "L", values 1..150 and 0 = "other"), plus one
    training pair that the validation split must not pick up.

    Returns:
        The validation ids, sorted.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = []
    for k in range(num_images + 1):
        split = "validation" if k < num_images else "training"
        name = f"ADE_{'val' if split == 'validation' else 'train'}_{k + 1:08d}"
        h, w = _random_size(rng, size_range)
        label_img = Image.new("L", (w, h), color=int(rng.choice([1, 3, 4, 6])))  # wall sky floor ceiling
        draw = ImageDraw.Draw(label_img)
        draw.rectangle([0, int(h * rng.uniform(0.5, 0.7)), w, h], fill=int(rng.choice([4, 7, 10, 14])))
        for _ in range(int(rng.integers(2, 5))):
            _random_shape(draw, rng, h, w, int(rng.integers(1, len(ADE20K150_CLASSES) + 1)))
        draw.ellipse([w * 0.05, h * 0.05, w * 0.05 + 12, h * 0.05 + 8], fill=0)  # "other"
        _save_pair(np.asarray(label_img), root / "images" / split / f"{name}.jpg", label_img,
                   root / "annotations" / split / f"{name}.png", rng, seed)
        if split == "validation":
            ids.append(name)
    mark_synthetic(root)
    return sorted(ids)


# --------------------------------------------------------------------------- a folder of one's own


def write_synthetic_folder(
    root: PathLike, num_images: int = 4, seed: int = 0, num_classes: int = 5, ignore_index: int | None = 255,
    size_range: Pair = (200, 400), shape: Pair | None = None, image_dir: str = "images", label_dir: str = "labels",
    image_suffix: str = ".jpg", label_suffix: str = ".png",
) -> list[str]:
    """Write a folder-dataset root (:mod:`eval.data.folder`): ``<image_dir>/<name><image_suffix>`` and
    ``<label_dir>/<name><label_suffix>``, named ``img_<k>``.

    Labels are single-channel ("L") PNGs with values 0..num_classes-1: a background class, a band of
    another class, a few shapes, and a strip of ``ignore_index`` (unless None). Images are ``shape``
    ``(height, width)`` when given, else random non-square sizes within ``size_range``.

    Returns:
        The ids (names), sorted.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = []
    for k in range(num_images):
        name = f"img_{k:03d}"
        h, w = shape if shape is not None else _random_size(rng, size_range)
        label_img = Image.new("L", (w, h), color=int(rng.integers(0, num_classes)))
        draw = ImageDraw.Draw(label_img)
        draw.rectangle([0, int(h * rng.uniform(0.5, 0.7)), w, h], fill=int(rng.integers(0, num_classes)))
        for _ in range(int(rng.integers(1, 4))):
            _random_shape(draw, rng, h, w, int(rng.integers(0, num_classes)))
        if ignore_index is not None:
            draw.rectangle([0, 0, w, max(1, h // 16)], fill=int(ignore_index))
        _save_pair(np.asarray(label_img), root / image_dir / f"{name}{image_suffix}", label_img,
                   root / label_dir / f"{name}{label_suffix}", rng, seed)
        ids.append(name)
    mark_synthetic(root)
    return sorted(ids)


# --------------------------------------------------------------------------- COCO-format shapes


@dataclass(frozen=True)
class SyntheticShape:
    """One annotation of a synthetic COCO-format file, as written.

    ``kind`` is ``rectangle`` (``params`` = integer ``(x0, y0, x1, y1)``, covering
    columns x0..x1-1 and rows y0..y1-1, stored as a polygon) or ``ellipse``
    (``params`` = ``(cx, cy, rx, ry)``, the pixels (x, y) with
    ((x - cx)/rx)^2 + ((y - cy)/ry)^2 <= 1, stored as RLE). ``encoding`` is the stored
    form: ``polygon``, ``rle`` (compressed) or ``rle_counts`` (uncompressed).
    """

    kind: str
    params: tuple[float, ...]
    category_id: int
    encoding: str
    iscrowd: int = 0


def shape_mask(shape: SyntheticShape, height: int, width: int) -> np.ndarray:
    """Bool mask (H, W) of a :class:`SyntheticShape`."""
    if shape.kind == "rectangle":
        x0, y0, x1, y1 = (int(v) for v in shape.params)
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        return mask
    cx, cy, rx, ry = shape.params
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a bool mask: run lengths over the column-major pixels, zeros first."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _segmentation(shape: SyntheticShape, height: int, width: int) -> Any:
    """The stored ``segmentation`` of a shape (polygon list, compressed or uncompressed RLE)."""
    if shape.encoding == "polygon":
        if shape.kind != "rectangle":
            raise ValueError("only rectangles are stored as polygons (exact rasterisation)")
        x0, y0, x1, y1 = (int(v) for v in shape.params)
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    mask = shape_mask(shape, height, width)
    if shape.encoding == "rle_counts":
        return _uncompressed_rle(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _random_rectangle(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    return x0, y0, int(rng.integers(x0 + 4, w + 1)), int(rng.integers(y0 + 4, h + 1))


def _random_ellipse(rng: np.random.Generator, h: int, w: int) -> tuple[float, float, float, float]:
    return (
        float(rng.uniform(0.2, 0.8) * w),
        float(rng.uniform(0.2, 0.8) * h),
        float(rng.uniform(0.08, 0.3) * w),
        float(rng.uniform(0.08, 0.3) * h),
    )


# --------------------------------------------------------------------------- Context-60


def _random_detail_shapes(rng: np.random.Generator, h: int, w: int) -> list[SyntheticShape]:
    """3 to 5 shapes of Detail categories of the 59 classes, encoded in turn as polygon, RLE and
    uncompressed RLE (polygons are rectangles; the others ellipses 70% of the time)."""
    encodings = ("polygon", "rle", "rle_counts")
    shapes = []
    for j in range(int(rng.integers(3, 6))):
        encoding = encodings[j % 3]
        kind = "rectangle" if encoding == "polygon" else ("ellipse" if rng.random() < 0.7 else "rectangle")
        params = _random_rectangle(rng, h, w) if kind == "rectangle" else _random_ellipse(rng, h, w)
        shapes.append(SyntheticShape(kind, params, int(rng.choice(CONTEXT_DETAIL_IDS)), encoding))
    return shapes


def _interleaved(per_image: list[list[dict[str, Any]]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """The annotations of all images in one shuffled list (ids 1, 2, ...), each image's kept in its order."""
    order = [i for i, anns in enumerate(per_image) for _ in anns]
    rng.shuffle(order)
    cursors = [0] * len(per_image)
    annos = []
    for i in order:
        annos.append(dict(per_image[i][cursors[i]], id=len(annos) + 1))
        cursors[i] += 1
    return annos


def write_synthetic_context(
    root: PathLike, num_images: int = 4, seed: int = 0, size_range: Pair = (160, 320),
) -> dict[str, list[SyntheticShape]]:
    """Write a ``VOC2010`` root before label building: ``JPEGImages/<id>.jpg`` and a PASCAL in
    Detail ``trainval_merged.json`` (``images`` with ``phase``, ``annos_segmentation``,
    ``categories``, and empty ``parts``/``annos_occlusion``/``annos_boundary``).

    Each image gets overlapping annotations stored as polygons (rectangles), compressed
    RLE and uncompressed RLE, with Detail category ids of the 59 classes; some pixels keep
    no annotation (background). The annotations of all images are interleaved in the
    file, each image's keeping its own order. One extra image has ``phase`` ``train``.

    Returns:
        ``{id: shapes in file order}`` for the val images (ids sorted), so a test can paint
        the expected labels itself with :func:`shape_mask`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, per_image, expected = [], [], {}
    for k in range(num_images + 1):
        name = f"{2008 + k % 3}_{int(rng.integers(0, 10000)):06d}"
        while name in expected or any(img["file_name"] == f"{name}.jpg" for img in images):
            name = f"{2008 + k % 3}_{int(rng.integers(0, 10000)):06d}"
        h, w = _random_size(rng, size_range)
        shapes = _random_detail_shapes(rng, h, w)
        detail = np.zeros((h, w), dtype=np.int64)
        for shape in shapes:
            detail[shape_mask(shape, h, w)] = shape.category_id
        _save_pair(detail, root / "JPEGImages" / f"{name}.jpg", None, None, rng, seed)
        image_id = int(name[:4] + name[5:])
        phase = "val" if k < num_images else "train"
        images.append({"image_id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w, "phase": phase})
        anns = [
            {
                "image_id": image_id,
                "category_id": shape.category_id,
                "segmentation": _segmentation(shape, h, w),
                "iscrowd": 0,
                "parts": [],
            }
            for shape in shapes
        ]
        per_image.append(anns)
        if phase == "val":
            expected[name] = shapes
    annos = _interleaved(per_image, rng)
    categories = [
        {"category_id": cat, "name": f"class{cat}", "supercategory": "object", "onlysemantic": 0, "parts": []}
        for cat in (*CONTEXT_DETAIL_IDS, 1, 3)  # plus two ids of the full set that no pixel uses
    ]
    detail_json = {
        "info": {"description": "synthetic PASCAL in Detail"},
        "images": images,
        "annos_segmentation": annos,
        "categories": categories,
        "parts": [],
        "annos_occlusion": [],
        "annos_boundary": [],
    }
    (root / "trainval_merged.json").write_text(json.dumps(detail_json), encoding="utf-8")
    mark_synthetic(root)
    return dict(sorted(expected.items()))


# --------------------------------------------------------------------------- COCO-Object-81


def _random_instances(rng: np.random.Generator, h: int, w: int) -> tuple[list[SyntheticShape], list[np.ndarray]]:
    """2 to 4 thing instances (rectangles as polygons, ellipses as RLE) and one crowd ellipse
    (uncompressed RLE), with their (h, w) bool masks; shapes that are empty or share an area with
    another are dropped, so "smallest on top" has no ties to break."""
    shapes = []
    for j in range(int(rng.integers(2, 5))):
        category = int(rng.choice(COCO_THING_IDS))
        if j % 2 == 0:
            shapes.append(SyntheticShape("rectangle", _random_rectangle(rng, h, w), category, "polygon"))
        else:
            shapes.append(SyntheticShape("ellipse", _random_ellipse(rng, h, w), category, "rle"))
    crowd = SyntheticShape("ellipse", _random_ellipse(rng, h, w), int(rng.choice(COCO_THING_IDS)),
                           "rle_counts", iscrowd=1)  # fmt: skip
    shapes.append(crowd)
    masks = [shape_mask(shape, h, w) for shape in shapes]
    areas = [int(m.sum()) for m in masks]
    keep = [i for i in range(len(shapes)) if areas[i] > 0 and areas.count(areas[i]) == 1]
    return [shapes[i] for i in keep], [masks[i] for i in keep]


def _instance_annotation(shape: SyntheticShape, ann_id: int, image_id: int, h: int, w: int) -> dict[str, Any]:
    """One COCO instance record of ``shape`` on an (h, w) image (area and bbox from its mask)."""
    mask = shape_mask(shape, h, w)
    ys, xs = np.nonzero(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": shape.category_id,
        "segmentation": _segmentation(shape, h, w),
        "area": float(mask.sum()),
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
        "iscrowd": shape.iscrowd,
    }


def write_synthetic_coco_object(
    root: PathLike, num_images: int = 4, seed: int = 0, size_range: Pair = (160, 320),
) -> tuple[list[str], dict[str, list[SyntheticShape]]]:
    """Write a COCO-Stuff-27 root whose things also exist as COCO instances.

    Files: ``val2017/<id>.jpg``, ``annotation_val2017/<id>.png`` (stuffthingmaps values:
    a stuff background, the instances painted from the largest to the smallest, a band
    and a central patch of 255), the list file, and ``annotations/instances_val2017.json`` holding every
    instance in full (overlaps included) in a shuffled order, as polygons (rectangles),
    compressed RLE, and one crowd region (``iscrowd=1``) as uncompressed RLE per image.
    One extra, unlisted image is in the JSON only (no files, like a root ``make data-coco`` built).

    So the instances source built with the ``smallest_on_top`` rule equals the PNG
    source on every labelled pixel, while ``file_order`` differs where instances overlap.

    Returns:
        (listed ids, ``{id: instances in file order}``).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / LABEL_DIR).mkdir(parents=True, exist_ok=True)
    images, annotations, expected, listed = [], [], {}, []
    number = 139
    for k in range(num_images + 1):
        number += int(rng.integers(1, 400))
        name = f"{number:012d}"
        h, w = _random_size(rng, size_range)
        top, bottom = _COCO_BACKGROUNDS[k % len(_COCO_BACKGROUNDS)]
        stuff = np.full((h, w), top, dtype=np.uint8)
        stuff[int(h * rng.uniform(0.4, 0.6)) :] = bottom
        shapes, masks = _random_instances(rng, h, w)
        label = stuff.copy()
        for i in sorted(range(len(shapes)), key=lambda i: -int(masks[i].sum())):
            label[masks[i]] = shapes[i].category_id - 1
        band = max(2, h // 40)
        label[h - band :] = _COCO_UNLABELLED
        label[h // 2 - 3 : h // 2 + 3, w // 2 - 4 : w // 2 + 4] = _COCO_UNLABELLED  # survives a centre crop
        if k < num_images:  # the extra image is only in the JSON, as in a root made by `make data-coco`
            _save_pair(label, root / IMAGE_DIR / f"{name}.jpg", Image.fromarray(label),
                       root / LABEL_DIR / f"{name}.png", rng, seed)
        image_id = int(number)
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        order = rng.permutation(len(shapes))
        shapes = [shapes[i] for i in order]
        for shape in shapes:
            annotations.append(_instance_annotation(shape, len(annotations) + 1, image_id, h, w))
        if k < num_images:
            listed.append(name)
            expected[name] = shapes
    categories = [{"id": cat, "name": f"thing{cat}", "supercategory": "thing"} for cat in COCO_THING_IDS]
    instances = {"info": {"description": "synthetic COCO instances"}, "licenses": [], "images": images,
                 "annotations": annotations, "categories": categories}  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances), encoding="utf-8")
    _write_ids(root / DEFAULT_LIST_FILE, listed)
    mark_synthetic(root)
    return listed, expected
