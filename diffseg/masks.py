"""Segment masks as files and as pictures: the one palette, colouriser, overlay and mask PNG I/O.

* :func:`default_palette` - fixed colours for segment / class ids.
* :func:`colorize`, :func:`overlay` - an id mask as an RGB picture, alone or over an image.
* :func:`write_mask_png`, :func:`read_mask_png` - lossless mask files: one channel holding the
  ids themselves (8-bit PNG when every id is < 256, 16-bit otherwise), written atomically
  (a new file beside the target, then ``os.replace``) with the user's umask.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

from diffseg.atomic import write_bytes_atomic

__all__ = [
    "MaskFileError",
    "colorize",
    "default_palette",
    "encode_mask_png",
    "overlay",
    "read_mask_png",
    "write_mask_png",
]

MAX_MASK_ID = 65535  # the largest id a 16-bit PNG holds


class MaskFileError(OSError, ValueError):
    """A file is not a readable mask PNG (missing decoder, corrupt, or not one channel of ids)."""


def _voc_color(i: int) -> tuple[int, int, int]:
    """Colour ``i`` of the PASCAL VOC bit-interleaving colour map."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((i >> 0) & 1) << shift
        g |= ((i >> 1) & 1) << shift
        b |= ((i >> 2) & 1) << shift
        i >>= 3
    return r, g, b


def default_palette(n: int = 256) -> np.ndarray:
    """Fixed, deterministic uint8 palette of shape (n, 3): the 60 tab20/b/c colours, then VOC colours.

    Strong, distinct hues come first (tab20's dark half, its light half, then tab20b/c).
    No entry is pure black, which stays reserved for ignore / negative ids.
    """
    maps = {name: matplotlib.colormaps[name].colors for name in ("tab20", "tab20b", "tab20c")}
    order = [maps["tab20"][0::2], maps["tab20"][1::2]]
    order += [maps[name][k::4] for k in (0, 2, 1, 3) for name in ("tab20b", "tab20c")]
    colors: list[tuple[int, ...]] = [tuple(int(round(255 * c)) for c in rgba[:3]) for group in order for rgba in group]
    i = 1
    while len(colors) < n:
        colors.append(_voc_color(i))
        i += 1
    return np.asarray(colors[:n], dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def _palette_256() -> np.ndarray:
    palette = default_palette(256)
    palette.flags.writeable = False
    return palette


def _as_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a torch tensor (moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def colorize(mask: Any, palette: np.ndarray | None = None) -> np.ndarray:
    """Colour an integer mask (H, W): id ``k`` gets ``palette[k % len(palette)]``, ids < 0 black.

    Args:
        mask: integer ids, numpy array or torch tensor of shape (H, W).
        palette: (n, 3) uint8 colours; default :func:`default_palette` (256 colours).

    Returns:
        uint8 array (H, W, 3).
    """
    mask = _as_numpy(mask).astype(np.int64)
    pal = _palette_256() if palette is None else np.asarray(palette, dtype=np.uint8)
    out = pal[np.mod(mask, len(pal))]
    out[mask < 0] = 0
    return out


def overlay(image: Any, mask: Any, alpha: float = 0.55, palette: np.ndarray | None = None) -> np.ndarray:
    """Blend ``colorize(mask)`` over an image; pixels with ids < 0 keep the image.

    Args:
        image: uint8 RGB image (H, W, 3).
        mask: integer ids (H, W) (numpy or torch).
        alpha: weight of the colours (0 = image only, 1 = colours only).
        palette: as in :func:`colorize`.

    Returns:
        uint8 array (H, W, 3): ``round((1 - alpha) * image + alpha * colour)``.
    """
    mask = _as_numpy(mask)
    img = np.asarray(image, dtype=np.float32)
    if img.shape != (*mask.shape, 3):
        raise ValueError(f"overlay needs an (H, W, 3) image and an (H, W) mask, got {img.shape} and {mask.shape}")
    colors = colorize(mask, palette).astype(np.float32)
    blend = (1.0 - alpha) * img + alpha * colors
    blend[mask < 0] = img[mask < 0]
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def encode_mask_png(mask: Any) -> bytes:
    """PNG bytes of an id mask (H, W): 8-bit grayscale when every id < 256, 16-bit up to 65535.

    Raises:
        ValueError: the mask is not 2-D, not integer, empty, or holds ids < 0 or > 65535.
    """
    arr = _as_numpy(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a mask must be a non-empty (H, W) array of ids, got shape {arr.shape}")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"a mask must hold integer ids, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high > MAX_MASK_ID:
        raise ValueError(f"mask ids must lie in 0..{MAX_MASK_ID} to be stored as PNG, got {low}..{high}")
    img = Image.fromarray(arr.astype(np.uint8 if high < 256 else np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_mask_png(path: str | os.PathLike, mask: Any) -> Path:
    """Write an id mask (H, W) to ``path`` as PNG (see :func:`encode_mask_png`), atomically; returns the path.

    The folder is created if needed; the file gets the user's umask.

    Raises:
        ValueError: the mask cannot be stored (message names ``path``).
    """
    path = Path(path)
    try:
        data = encode_mask_png(mask)
    except ValueError as exc:
        raise ValueError(f"cannot write mask {path}: {exc}") from exc
    return write_bytes_atomic(path, data)


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG written by :func:`write_mask_png` (or any one-channel 8/16-bit id image).

    Returns:
        int64 array (H, W) of the stored ids (palette images give their indices).

    Raises:
        FileNotFoundError: no such file.
        MaskFileError: not decodable, or not one channel of ids (e.g. an RGB overlay).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise MaskFileError(f"cannot decode mask {path}: {type(exc).__name__}: {exc}") from exc
    if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L") or arr.ndim != 2:
        raise MaskFileError(f"{path} is not a mask of ids: image mode {mode!r} (expected one 8- or 16-bit channel)")
    return arr.astype(np.int64)
