"""Pictures of the explorer pages as uint8 RGB arrays: overlays, anchor grids and attention heat maps."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch

from diffseg.masks import colorize, overlay
from eval.run.qualitative import resize_nearest

__all__ = ["anchors_picture", "heatmap", "label_picture", "mark", "mask_overlay", "resize_nearest"]


def mask_overlay(shown: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Segments of ``mask`` ``(H, W)`` coloured over ``shown`` ``(H, W, 3)`` (resized nearest when sizes differ)."""
    mask = np.asarray(mask)
    if mask.shape != shown.shape[:2]:
        mask = resize_nearest(mask, shown.shape[:2])
    return overlay(shown, mask, alpha=alpha)


def label_picture(label: np.ndarray) -> np.ndarray:
    """Class ids ``(H, W)`` as colours; ignored pixels (< 0) black."""
    return colorize(label)


def mark(picture: np.ndarray, x: float, y: float, radius: int = 6) -> np.ndarray:
    """A copy of ``picture`` with a white-and-black cross at pixel ``(x, y)``."""
    out = picture.copy()
    h, w = out.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    for colour, width in (((0, 0, 0), 2), ((255, 255, 255), 1)):
        r0, r1 = max(0, yi - width // 2), min(h, yi + width // 2 + 1)
        c0, c1 = max(0, xi - radius), min(w, xi + radius + 1)
        out[r0:r1, c0:c1] = colour
        r0, r1 = max(0, yi - radius), min(h, yi + radius + 1)
        c0, c1 = max(0, xi - width // 2), min(w, xi + width // 2 + 1)
        out[r0:r1, c0:c1] = colour
    return out


def anchors_picture(shown: np.ndarray, anchors: torch.Tensor, side: int) -> np.ndarray:
    """The anchor grid ``(M*M, 2)`` (``(row, col)`` on the ``side x side`` attention grid) drawn on ``shown``."""
    out = (shown.astype(np.float32) * 0.6).astype(np.uint8)
    h, w = out.shape[:2]
    half = max(2, min(h, w) // 170)
    for row, col in np.asarray(anchors).tolist():
        y = int((row + 0.5) * h / side)
        x = int((col + 0.5) * w / side)
        out[max(0, y - half):y + half + 1, max(0, x - half):x + half + 1] = (255, 214, 0)
    return out


def heatmap(values: np.ndarray, size: int = 192, where: tuple[float, float] | None = None) -> np.ndarray:
    """A ``(s, s)`` attention map as a ``(size, size, 3)`` viridis picture (scaled to its maximum).

    ``where``: ``(x, y)`` in ``[0, 1)`` image coordinates of the query, marked with a cross.
    """
    values = np.asarray(values, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    scaled = values / top if top > 0 else np.zeros_like(values)
    colours = matplotlib.colormaps["viridis"](scaled)[:, :, :3]
    picture = (resize_nearest(colours, (size, size)) * 255).round().astype(np.uint8)
    if where is not None:
        picture = mark(picture, where[0] * size, where[1] * size, radius=max(4, size // 24))
    return picture
