"""Image and label pre-processing (DESIGN section 1, step 1), pure torch.

The benchmark path reproduces the official TensorFlow pipeline:

* centre crop to a square (side = shorter side, offset = (longer - shorter) // 2),
* images: bilinear resize with half-pixel centres and *no* antialiasing
  (``tf.image.resize`` == ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=False)``), then ``x / 127.5 - 1`` -> [-1, 1], no rounding in between;
* labels: nearest resize with half-pixel centres (``mode="nearest-exact"``).

PIL's resize filters antialias and give different images: they are only used here to
*decode* files (:func:`load_image`, :func:`load_label`), never to resize.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "ImageDecodeError",
    "center_crop_square",
    "load_image",
    "load_label",
    "preprocess_image",
    "preprocess_label",
]


class ImageDecodeError(OSError, ValueError):
    """A file exists but cannot be decoded as an image (corrupt, truncated, wrong format)."""


def center_crop_square(x: torch.Tensor) -> torch.Tensor:
    """Centre-crop the last two dims of ``x`` (..., H, W) to (..., S, S), S = min(H, W).

    The offset along the longer axis is ``(longer - shorter) // 2`` (so for an odd
    difference the extra row/column is dropped at the end). Returns a view.
    """
    if x.dim() < 2:
        raise ValueError(f"expected a tensor of shape (..., H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    side = min(h, w)
    top = (h - side) // 2
    left = (w - side) // 2
    return x[..., top : top + side, left : left + side]


def preprocess_image(image: torch.Tensor, size: int = 512) -> torch.Tensor:
    """Crop, resize and scale an RGB image for the UNet.

    Args:
        image: uint8 (or any real dtype holding 0..255 values) tensor of shape
            (3, H, W) or (B, 3, H, W).
        size: output side length.

    Returns:
        float32 tensor (3, size, size) or (B, 3, size, size) with values in [-1, 1]:
        ``bilinear_half_pixel(center_crop(image)) / 127.5 - 1``.
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    batched = image.dim() == 4
    x = center_crop_square(image).to(torch.float32)
    if not batched:
        x = x.unsqueeze(0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    x = x / 127.5 - 1.0
    return x if batched else x.squeeze(0)


def preprocess_label(label: torch.Tensor, size: int = 512) -> torch.Tensor:
    """Crop and resize an integer label map with half-pixel nearest sampling.

    Args:
        label: integer tensor (H, W) or (B, H, W) of class ids (-1 = ignore, or raw
            file values 0..255 before a lookup table is applied).
        size: output side length.

    Returns:
        int64 tensor (size, size) or (B, size, size). Pixel (i, j) takes the value
        of source pixel ``floor((i + 0.5) * S / size)`` (``mode="nearest-exact"``),
        S = the cropped side.
    """
    if label.dim() not in (2, 3):
        raise ValueError(f"expected a label map of shape (H, W) or (B, H, W), got {tuple(label.shape)}")
    if label.is_floating_point():
        raise TypeError(f"expected an integer label map, got dtype {label.dtype}")
    batched = label.dim() == 3
    x = center_crop_square(label)
    x = x.unsqueeze(1) if batched else x[None, None]
    if x.shape[-2:] != (size, size):
        # Small integers are exact in float32, so the round trip is lossless.
        x = F.interpolate(x.to(torch.float32), size=(size, size), mode="nearest-exact")
    x = x.to(torch.int64)
    return x[:, 0] if batched else x[0, 0]


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with PIL, raising :class:`ImageDecodeError` on failure."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: truncated files fail here, not later
            return img.copy()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise ImageDecodeError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (3, H, W) in RGB order.

    Grayscale, palette, RGBA, CMYK ... inputs are converted with PIL ``convert("RGB")``.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (message names the file).
    """
    path = Path(path)
    img = _open_decoded(path)
    try:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise ImageDecodeError(f"cannot convert image {path} to RGB: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_label(path: str | os.PathLike) -> torch.Tensor:
    """Decode a label PNG to an int64 tensor (H, W) holding the stored values.

    Single-channel ("L") images give their values; palette ("P") images give their
    palette *indices* (the class ids), not colours; for multi-channel files the first
    channel is used (as the official pipeline does).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (message names the file).
    """
    path = Path(path)
    img = _open_decoded(path)
    if img.mode in ("I", "I;16", "F"):
        raise ImageDecodeError(f"label {path} has unsupported mode {img.mode!r} (expected 8-bit)")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(arr.astype(np.int64))
