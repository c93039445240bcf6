"""DiffCut's protocol (its release, PaulCouairon/DiffCut: ``dataloader/iterator.py``, ``eval_diffcut.py``):
``protocol=diffcut``.

Geometry (:class:`DiffCutGeometry`): image and label centre-cropped to ``min(h, w) - 1`` (torchvision's
``CenterCrop``), resized to the backbone's input size (images bilinear, labels ``nearest-exact``), the label
then resized to ``size`` (128) with ``F.interpolate``'s default ``nearest``; masks scored at that size.
Scoring (:func:`eval.metrics.functional.diffcut_image_stats`): on a dataset with a background class (VOC,
Context, COCO-Object) a first matching over the other classes decides which segments survive, every other
segment is merged into one, and background, boundary and unlabelled pixels all count as background; unknown
label values stay ignored. Elsewhere it scores as DiffSeg's protocol does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from eval.metrics.functional import NUM_CLASSES, diffcut_image_stats
from eval.metrics.protocols.base import Protocol, ProtocolError

__all__ = ["DiffCut", "DiffCutGeometry", "torchvision_center_crop"]


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


class DiffCut(Protocol):
    """``protocol=diffcut``.

    Args:
        size: side of labels and masks (``protocol.size``; ``dataset.size`` follows it).
        geometry: :class:`DiffCutGeometry`'s settings (``input_size``: the backbone's; ``label_size``: ``size``);
            None builds a protocol that scores but has no geometry (re-scoring saved masks).
    """

    name = "diffcut"
    geometry_text = ("centre crop to min(h, w) - 1 (torchvision CenterCrop), labels nearest-exact to the "
                     "backbone's input size, then nearest (legacy) to 128")

    def __init__(self, size: int = 128, geometry: Mapping[str, Any] | None = None):
        self.size = int(size)
        if geometry is not None:
            self._geometry = DiffCutGeometry(**{"label_size": self.size, **geometry})
            if self._geometry.label_size != self.size:
                raise ProtocolError(f"protocol=diffcut: geometry.label_size={self._geometry.label_size} is not "
                                    f"protocol.size={self.size}; set protocol.size only")

    @property
    def geometry(self) -> DiffCutGeometry:
        """The run's :class:`DiffCutGeometry`; a protocol built without one (scoring only) refuses to give one."""
        if self._geometry is None:
            raise ProtocolError("protocol=diffcut needs protocol.geometry.input_size (the backbone's input size) "
                                "to read a dataset")
        return self._geometry

    @property
    def label_size(self) -> int:
        return self.size

    def image_stats(self, preds: Any, labels: Any, num_classes: int = NUM_CLASSES,
                    background: int | None = None) -> list[dict[str, Any]]:
        """:func:`~eval.metrics.functional.diffcut_image_stats` (preds and labels ``(B, H, W)``)."""
        return diffcut_image_stats(preds, labels, num_classes, background)
