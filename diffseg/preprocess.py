"""Image and label pre-processing (diffseg/REFERENCE.md section 1, step 1), pure torch.

The benchmark path reproduces the official TensorFlow pipeline:

* centre crop to a square (side = shorter side, offset = (longer - shorter) // 2),
* images: bilinear resize with half-pixel centres and *no* antialiasing
  (``tf.image.resize`` == ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=False)``), then ``x / 127.5 - 1`` -> [-1, 1], no rounding in between;
* labels: nearest resize with half-pixel centres (``mode="nearest-exact"``).

PIL's resize filters antialias and give different images: they are only used here to
*decode* files (:func:`load_image`, :func:`load_label`), never to resize.

Decoding (:func:`load_image`) gives 8-bit RGB whatever the file holds; images deeper than
8 bits are scaled, never clipped (see :func:`to_rgb8` for the exact rule). EXIF orientation
is ignored by default, as the official pipeline's ``tf.io.decode_jpeg`` ignores it: the
benchmark labels are aligned with the stored pixel grid. Photos outside a benchmark can
ask for it (``exif_transpose=True``, what the segment CLI does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

__all__ = [
    "ImageDecodeError",
    "LabelFormatError",
    "center_crop_square",
    "load_image",
    "load_label",
    "preprocess_image",
    "preprocess_label",
    "to_rgb8",
]


class ImageDecodeError(OSError, ValueError):
    """A file exists but cannot be decoded as an image (corrupt, truncated, wrong format)."""


class LabelFormatError(ValueError):
    """A label file that decodes but does not hold one class index per pixel (e.g. an RGB colour label).

    Not an ``OSError``: the whole dataset is in the wrong format, so a run stops instead of skipping.
    """


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


def _high_byte(values: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """16-bit samples (any integer dtype, 0..65535) -> uint8 by their high byte (``v >> 8``)."""
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    if low < 0 or high > 65535:
        raise ImageDecodeError(
            f"image {path} has mode {mode!r} with values {low}..{high}: only 0..65535 (16-bit) integer "
            "images can be scaled to 8 bits; convert it to 8- or 16-bit first"
        )
    return (values.astype(np.int64) >> 8).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, path: Path) -> np.ndarray:
    """Float samples -> uint8: [0, 1] scale when the maximum is <= 1, else [0, 255] (clipped), round half up."""
    if not np.isfinite(values).all():
        raise ImageDecodeError(f"image {path} (mode 'F') holds NaN or infinite values; cannot scale it to 8 bits")
    if values.size and float(values.max()) <= 1.0:
        scaled = np.clip(values.astype(np.float64), 0.0, 1.0) * 255.0
    else:
        scaled = np.clip(values.astype(np.float64), 0.0, 255.0)
    return np.floor(scaled + 0.5).astype(np.uint8)


def to_rgb8(img: Image.Image, path: str | os.PathLike = "<image>") -> np.ndarray:
    """Convert a decoded PIL image to uint8 RGB of shape (H, W, 3), scaling deep images to 8 bits.

    The rule, by PIL mode:

    * 16-bit integer (``I;16``, ``I;16L``, ``I;16B``, ...): each value ``v`` becomes its high
      byte, ``v >> 8`` (= floor(v / 256); 0 -> 0, 65535 -> 255, and ``257 * k`` -> ``k`` for
      every 8-bit ``k``, so an 8-bit image stored at 16 bits comes back exactly). This is
      what PIL itself does for 16-bit RGB / RGBA / gray+alpha PNGs, which it decodes to
      8-bit modes, so every 16-bit input is reduced the same way; it is within one level
      of ``round(v / 257)``.
    * 32-bit integer (``I``): treated as 16-bit when every value lies in 0..65535 (PIL
      opens some 16-bit files as ``I``); any other range raises, as its scale is unknown.
    * float (``F``): if the maximum is <= 1 the image is taken to be in [0, 1]:
      ``floor(clip(v, 0, 1) * 255 + 0.5)``; otherwise it is taken to be in [0, 255]:
      ``floor(clip(v, 0, 255) + 0.5)``. NaN or infinite values raise.
    * every other mode (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``CMYK``, ``YCbCr``,
      ...): PIL ``convert("RGB")`` (alpha is dropped, not composited).

    Gray results are repeated over the three channels.

    Raises:
        ImageDecodeError: the values cannot be scaled (message names ``path``).
    """
    path = Path(path)
    mode = img.mode
    if mode == "F":
        gray = _float_to_uint8(np.asarray(img), path)
    elif mode == "I" or mode.startswith("I;"):
        gray = _high_byte(np.asarray(img), path, mode)
    else:
        try:
            return np.array(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:
            raise ImageDecodeError(f"cannot convert image {path} to RGB: {type(exc).__name__}: {exc}") from exc
    if gray.ndim != 2:
        raise ImageDecodeError(f"image {path} has mode {mode!r} with shape {gray.shape}; expected one channel")
    return np.repeat(gray[..., None], 3, axis=2)


def load_image(path: str | os.PathLike, *, exif_transpose: bool = False) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (3, H, W) in RGB order.

    Any PIL-readable image is accepted; 16-bit and float images are scaled to 8 bits by
    the rule of :func:`to_rgb8` (not clipped), others go through ``convert("RGB")``.

    Args:
        path: the image file.
        exif_transpose: apply the EXIF Orientation tag (rotate / flip to the display
            orientation, PIL ``ImageOps.exif_transpose``). Off by default: the benchmark
            path keeps the stored pixel grid, as the official ``tf.io.decode_jpeg`` does,
            since the labels are aligned with it.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded or scaled (message names the file).
    """
    path = Path(path)
    img = _open_decoded(path)
    if exif_transpose:
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as exc:  # malformed EXIF blocks raise assorted errors inside PIL
            raise ImageDecodeError(f"cannot apply the EXIF orientation of {path}: {type(exc).__name__}: {exc}") from exc
    arr = to_rgb8(img, path)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_label(path: str | os.PathLike, colour_map: dict[tuple[int, int, int], int] | None = None) -> torch.Tensor:
    """Decode a label PNG to an int64 tensor (H, W) holding the stored values.

    Single-channel ("L") images give their values; palette ("P") images give their
    palette *indices* (the class ids), not colours; grey with alpha ("LA") gives its grey
    values (the alpha is dropped). A multi-channel (RGB/RGBA) file is a colour label: it is
    read through ``colour_map`` (``{(r, g, b): value}``) when the dataset defines one; without
    one it is accepted only when its three colour channels are equal (a gray index map stored
    as RGB), and refused otherwise: taking one channel of a
    colour label would give wrong classes without a word.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: the file cannot be decoded (message names the file).
        LabelFormatError: a colour label without a colour map, or a colour the map lacks.
    """
    path = Path(path)
    img = _open_decoded(path)
    if img.mode in ("I", "I;16", "F"):
        raise ImageDecodeError(f"label {path} has unsupported mode {img.mode!r} (expected 8-bit)")
    arr = np.asarray(img)
    if img.mode in ("LA", "La"):  # grey + alpha: the alpha is dropped, as for grey RGBA
        arr = arr[..., 0]
    if arr.ndim == 3:
        arr = _colour_label(arr[..., :3], path, img.mode, colour_map)
    return torch.from_numpy(arr.astype(np.int64))


def _colour_label(rgb: np.ndarray, path: Path, mode: str,
                  colour_map: dict[tuple[int, int, int], int] | None) -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) values, by ``colour_map`` or, for gray-only files, the first channel."""
    if colour_map is None:
        first = rgb[..., 0]
        if all(np.array_equal(first, rgb[..., c]) for c in range(1, rgb.shape[-1])):
            return first
        raise LabelFormatError(
            f"label {path} is a colour ({mode}) image, but this dataset expects one class index per pixel "
            "(a single-channel or palette PNG) and defines no colour map; convert the labels to index PNGs "
            "(the dataset's prepare step writes them)")
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colour_map], dtype=np.int64)
    values = np.array(list(colour_map.values()), dtype=np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    found = keys[pos] == packed
    if not found.all():
        missing = sorted({(int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in np.unique(packed[~found])})
        raise LabelFormatError(f"label {path} holds colours outside the dataset's colour map: {missing[:5]}")
    return values[pos]
