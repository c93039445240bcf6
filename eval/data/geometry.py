"""How a dataset cuts and resizes its images and labels: the geometry it is built with.

A dataset (:class:`eval.data.base.LabelledImages`) receives its geometry when it is built
(``geometry=``); a protocol (:mod:`eval.metrics.protocols`) says which one. Without one it reads
with :class:`CentreCropGeometry`, DiffSeg's (the ``diffseg`` protocol's), at its own ``size``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from diffseg.preprocess import preprocess_image, preprocess_label

__all__ = ["CentreCropGeometry", "Geometry"]


@runtime_checkable
class Geometry(Protocol):
    """What a dataset asks of a geometry: one image and one label file, brought to what is scored.

    ``label_size`` is the side of every label when it is fixed (square labels), else None.
    """

    label_size: int | None

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(3, H, W)`` -> float32 ``(3, h, w)`` in [-1, 1], the backbone's input."""

    def label(self, label: torch.Tensor) -> torch.Tensor:
        """Integer ``(H, W)`` file values -> int64 ``(h', w')`` file values (the look-up table comes after)."""


class CentreCropGeometry:
    """DiffSeg's geometry (its paper and google/diffseg): centre crop to ``min(h, w)`` (offset
    ``(longer - shorter) // 2``), images half-pixel bilinear to ``image_size``, labels ``nearest-exact``
    to ``label_size`` (:func:`diffseg.preprocess.preprocess_image` / ``preprocess_label``).

    Args:
        image_size: side of the images given to the backbone (its input size).
        label_size: side of the labels (the evaluation resolution, ``dataset.size``).
    """

    name = "diffseg"

    def __init__(self, image_size: int, label_size: int):
        self.image_size, self.label_size = int(image_size), int(label_size)
        if self.image_size < 1 or self.label_size < 1:
            raise ValueError(f"sizes must be positive, got image_size={image_size}, label_size={label_size}")

    def __repr__(self) -> str:
        return f"CentreCropGeometry(image_size={self.image_size}, label_size={self.label_size})"

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 (3, image_size, image_size) in [-1, 1]."""
        return preprocess_image(image, self.image_size)

    def label(self, label: torch.Tensor) -> torch.Tensor:
        """Integer (H, W) -> int64 (label_size, label_size)."""
        return preprocess_label(label, self.label_size)
