"""Evaluation protocols: how images and labels are cut and resized, and how masks are scored.

A run is made under one protocol, the config group ``protocol`` (``conf/protocol/``):

* ``diffseg`` (default): DiffSeg's paper and release (google/diffseg). Centre crop to
  ``min(h, w)`` (offset ``(longer - shorter) // 2``), images bilinear to the backbone's
  input size, labels ``nearest-exact`` at ``dataset.size`` (512); every class matched once
  per image, ignore pixels excluded (:func:`eval.metrics.image_stats`).
* ``diffcut``: DiffCut's release (PaulCouairon/DiffCut, ``dataloader/iterator.py`` and
  ``eval_diffcut.py``). Geometry :class:`DiffCutGeometry`; scoring
  :func:`eval.metrics.diffcut_match`.
* ``seg4diff`` / ``seg4diff_aligned``: Seg4Diff's release (cvlab-kaist/Seg4Diff, ``test_unsupervised``),
  :mod:`eval.metrics.seg4diff_protocol`; scored with DiffSeg's rules.

The protocol is part of a run's fingerprint, of its ``metrics.json`` (``run.protocol``)
and of every table row; :mod:`eval.rescore` re-scores saved masks under another
protocol's scoring rules (the geometry of the source run stays, and is named).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from eval.metrics import PROTOCOLS
from eval.run.build import build

__all__ = [
    "PROTOCOLS",
    "DiffCutGeometry",
    "ProtocolError",
    "apply_protocol",
    "geometry_differences",
    "protocol_settings",
    "torchvision_center_crop",
]

# What each protocol's geometry is, in words (for provenance notes and the README).
GEOMETRY_TEXT = {
    "diffseg": "centre crop to min(h, w) (offset floor), labels nearest-exact at dataset.size",
    "diffcut": ("centre crop to min(h, w) - 1 (torchvision CenterCrop), labels nearest-exact to the "
                "backbone's input size, then nearest (legacy) to 128"),
    "seg4diff": ("no crop, short side 640 (long side at most 2560), labels PIL nearest; on Cityscapes the "
                 "top-left 640 x 1280 of a 1024 x 2048 prediction, as the release"),
    "seg4diff_aligned": ("no crop, short side 640 (long side at most 2560), labels PIL nearest, predictions at "
                         "that size"),
}


class ProtocolError(ValueError):
    """A run's protocol cannot be applied as configured (the message says what to change)."""


def torchvision_center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """Centre crop of the last two dims of ``x`` to ``side`` x ``side``, as torchvision's ``CenterCrop``.

    The offsets are ``round((extent - side) / 2)`` with Python's round (half to even), so
    an odd margin of 1 puts the crop at offset 0 and a margin of 3 at offset 2.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if not 0 < side <= min(h, w):
        raise ValueError(f"crop side {side} does not fit an image of {h} x {w}")
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return x[..., top:top + side, left:left + side]


class DiffCutGeometry:
    """DiffCut's release geometry for one item.

    * crop: square of side ``min(h, w) - 1``, centred as torchvision's ``CenterCrop``;
    * image: bilinear (half-pixel, no antialias) to ``input_size`` (the backbone's: 1024
      for SSD-1B), scaled to [-1, 1];
    * label: ``nearest-exact`` to ``input_size``, then ``F.interpolate``'s default
      ``nearest`` (pixel i takes source ``floor(i * input_size / label_size)``) to
      ``label_size`` (128).
    """

    name = "diffcut"

    def __init__(self, input_size: int, label_size: int = 128):
        self.input_size = int(input_size)
        self.label_size = int(label_size)
        if self.input_size < 1 or self.label_size < 1:
            raise ValueError(f"sizes must be positive, got input_size={input_size}, label_size={label_size}")

    def __repr__(self) -> str:
        return f"DiffCutGeometry(input_size={self.input_size}, label_size={self.label_size})"

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., H, W) cropped to (..., S, S), S = min(H, W) - 1."""
        return torchvision_center_crop(x, min(int(x.shape[-2]), int(x.shape[-1])) - 1)

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 (3, input_size, input_size) in [-1, 1]."""
        x = self.crop(image).to(torch.float32)[None]
        x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=False)
        return (x / 127.5 - 1.0)[0]

    def label(self, label: torch.Tensor) -> torch.Tensor:
        """Integer (H, W) label -> int64 (label_size, label_size)."""
        if label.is_floating_point():
            raise TypeError(f"expected an integer label map, got dtype {label.dtype}")
        x = self.crop(label).to(torch.float32)[None, None]  # small integers are exact in float32
        x = F.interpolate(x, size=(self.input_size,) * 2, mode="nearest-exact")
        x = F.interpolate(x, size=(self.label_size,) * 2, mode="nearest")
        return x[0, 0].to(torch.int64)


def protocol_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``protocol`` node of a run's (resolved) config (``{"name": "diffseg", ...}`` when the config has none)."""
    node = config.get("protocol")
    if node is None:
        return {"name": "diffseg", "geometry": None}
    return dict(node)


def apply_protocol(config: Mapping[str, Any], dataset: Any) -> str:
    """Give ``dataset`` the geometry of the protocol of ``config`` (a run's config: its ``protocol``,
    ``dataset.size`` and ``batch_size``); returns the protocol's name.

    Raises:
        ProtocolError: unknown protocol, a dataset that cannot take another geometry, or a
            ``dataset.size`` that differs from the protocol's label side (set ``protocol.size``).
    """
    settings = protocol_settings(config)
    name = str(settings.get("name"))
    if name not in PROTOCOLS:
        raise ProtocolError(f"protocol.name must be one of {PROTOCOLS}, got {name!r}")
    node = settings.get("geometry")
    if node is None:
        return name
    geometry = build(node)
    if not hasattr(dataset, "geometry"):
        raise ProtocolError(f"protocol={name}: dataset {type(dataset).__name__} cannot be read with another geometry")
    size = config["dataset"]["size"]
    if geometry.label_size is not None and int(size) != geometry.label_size:
        raise ProtocolError(
            f"protocol={name} scores labels and masks at {geometry.label_size} x {geometry.label_size}, but "
            f"dataset.size={size}; change protocol.size (dataset.size follows it), not dataset.size")
    batch = getattr(geometry, "max_batch_size", None)
    if batch is not None and int(config["batch_size"]) > batch:
        raise ProtocolError(f"protocol={name} keeps each image at its own size, so a batch holds {batch} image(s); "
                            f"set batch_size={batch} (got {config['batch_size']})")
    dataset.geometry = geometry
    return name


def geometry_differences(source: str, target: str) -> list[str]:
    """Where a run made under ``source`` differs in geometry from one made under ``target`` (empty if none)."""
    if source == target:
        return []
    return [f"geometry of {source} ({GEOMETRY_TEXT.get(source, source)}), not of {target} "
            f"({GEOMETRY_TEXT.get(target, target)})"]
