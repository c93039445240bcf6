"""Synthetic datasets written in the exact on-disk formats of the real ones.

Used by the tests and by ``make demo``: no download, a few hundred KB, deterministic
for a seed. Images are a background of stuff regions with a few "object" shapes on
top, each class with its own colour plus mild noise; labels are the matching class
maps with real class values and some ignore pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from eval.data.coco_stuff import DEFAULT_LIST_FILE, IMAGE_DIR, LABEL_DIR
from eval.identity import SYNTHETIC_MARKER

__all__ = ["mark_synthetic", "write_synthetic_cityscapes", "write_synthetic_coco_stuff"]


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


def _random_size(rng: np.random.Generator, size_range: tuple[int, int]) -> tuple[int, int]:
    low, high = size_range
    if high <= low:
        raise ValueError(f"size_range must be (low, high) with low < high, got {size_range}")
    h = int(rng.integers(low, high + 1))
    w = int(rng.integers(low, high + 1))
    if w == h:  # keep it non-square so the centre crop matters
        w = w + 1 if w < high else w - 1
    return h, w


def write_synthetic_coco_stuff(
    root: str | os.PathLike,
    num_images: int = 8,
    seed: int = 0,
    size_range: tuple[int, int] = (200, 400),
    ids: Sequence[str] | None = None,
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
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (root / LABEL_DIR).mkdir(parents=True, exist_ok=True)
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
        label = np.asarray(label_img)
        Image.fromarray(_render(label, rng, seed), mode="RGB").save(
            root / IMAGE_DIR / f"{image_id}.jpg", format="JPEG", quality=95
        )
        label_img.save(root / LABEL_DIR / f"{image_id}.png", format="PNG")
    (root / DEFAULT_LIST_FILE).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    mark_synthetic(root)
    return ids


def write_synthetic_cityscapes(
    root: str | os.PathLike,
    num_images: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (256, 512),
) -> list[str]:
    """Write a Cityscapes root with ``num_images`` val images (RGB PNG) and labelIds PNGs.

    Files: ``leftImg8bit/val/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png`` and
    ``gtFine/val/<city>/..._gtFine_labelIds.png`` (mode "L"): sky 23, building 11,
    vegetation 21, road 7, sidewalk 8, objects (car 26, person 24, ...), and void ids
    0..6 (e.g. an ego-vehicle band of 1 at the bottom).

    Args:
        size: (height, width) of every image (the real ones are 1024 x 2048).

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
            _random_shape(draw, rng, h, w, int(rng.choice(_CITY_OBJECTS)))
        draw.rectangle([0, int(h * 0.92), w, h], fill=1)  # ego vehicle (void)
        draw.rectangle([0, 0, max(2, w // 50), h], fill=int(rng.choice(_CITY_VOID)))  # void strip
        label = np.asarray(label_img)
        image_dir = root / "leftImg8bit" / "val" / city
        label_dir = root / "gtFine" / "val" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_render(label, rng, seed), mode="RGB").save(image_dir / f"{name}_leftImg8bit.png")
        label_img.save(label_dir / f"{name}_gtFine_labelIds.png")
    mark_synthetic(root)
    return sorted(names)
