"""Seg4Diff's unsupervised protocol: the release's ``test_unsupervised`` with detectron2's default test mapper
(``protocol=seg4diff``, :class:`Seg4Diff`), and its variant with aligned Cityscapes predictions
(``protocol=seg4diff_aligned``, :class:`Seg4DiffAligned`).

Read from the release (github.com/cvlab-kaist/Seg4Diff: ``train_net.py`` ``Trainer.test_unsupervised`` and
``build_test_loader``, ``configs/eval_unsup.yaml``, ``seg4diff/seg4diff_model_unsup.py``) and detectron2's
``DatasetMapper`` / ``ResizeShortestEdge`` / ``ResizeTransform`` / ``sem_seg_postprocess``:

* geometry (:class:`Seg4DiffGeometry`): no crop; image and label resized so that the short side is
  ``INPUT.MIN_SIZE_TEST`` = 640 and the long side at most ``INPUT.MAX_SIZE_TEST`` = 2560, with
  ``ResizeShortestEdge.get_output_shape``'s rounding (:func:`shortest_edge_size`); the image with PIL
  bilinear on uint8 (detectron2's ``ResizeTransform``; the result is uint8), the label with PIL nearest;
* prediction: the model upsamples its maps bilinearly to the dataset record's ``height`` x ``width`` when
  the record has them, else to the resized image's size; ``test_unsupervised`` then applies
  ``sem_seg_postprocess(output, image_size, h, w)``: the **top-left** ``h`` x ``w`` of that prediction
  (``h``, ``w`` the resized size), then a bilinear resize to ``h`` x ``w`` (the identity when the crop is
  already that size). detectron2's Cityscapes loader (``cityscapes_fine_sem_seg_val``,
  ``load_cityscapes_semantic``) records ``height``/``width`` (1024 x 2048); the ``load_sem_seg`` loaders of
  the other datasets do not. So on Cityscapes the release scores the top-left 640 x 1280 of a
  1024 x 2048 prediction against the whole label resized to 640 x 1280 (:meth:`Seg4DiffGeometry.fit`);
  ``protocol=seg4diff_aligned`` brings the prediction to 640 x 1280 itself (``recorded_sizes: {}``);
* scoring: the per-image Hungarian metric on the rectangular histogram (``max(n_class, pred.max() + 1)``
  columns, as DiffSeg's), ``ACC = sum(TP) / valid pixels``, ``mIoU = nanmean(IoU)``: the ``diffseg``
  scoring rules (:func:`eval.metrics.functional.hungarian_image_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from eval.metrics.protocols.base import Protocol, ProtocolError

__all__ = ["SEG4DIFF_PROTOCOLS", "Seg4Diff", "Seg4DiffAligned", "Seg4DiffGeometry", "shortest_edge_size"]

SEG4DIFF_PROTOCOLS = ("seg4diff", "seg4diff_aligned")


def shortest_edge_size(height: int, width: int, short_edge: int = 640, max_size: int = 2560) -> tuple[int, int]:
    """``(new_h, new_w)`` of detectron2's ``ResizeShortestEdge.get_output_shape``.

    The short side becomes ``short_edge`` and the long one ``scale * long``; when the long side then
    exceeds ``max_size`` both are scaled by ``max_size / long``; each is rounded with ``int(x + 0.5)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    size = float(short_edge)
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        rescale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


class Seg4DiffGeometry:
    """The release's test-time geometry for one item (module docstring).

    Args:
        short_edge: ``INPUT.MIN_SIZE_TEST`` (640).
        max_size: ``INPUT.MAX_SIZE_TEST`` (2560).
        dataset: the run's dataset name (``dataset.name``).
        recorded_sizes: dataset name -> ``(height, width)`` its release loader records for every image (the
            size the model's prediction is made at before ``test_unsupervised`` crops it); ``{}`` for the
            aligned variant.
        name: the protocol's name (``seg4diff`` or ``seg4diff_aligned``).

    Items of different sizes do not stack: runs under this geometry take ``batch_size=1`` (as the
    release's test loader) and an MM-DiT backbone (its pass takes any image size).
    """

    max_batch_size = 1
    label_size = None  # labels vary in size; dataset.size is not their side
    integer_pixels = True  # images are uint8 before the backbone (detectron2 resizes uint8 with PIL)

    def __init__(self, short_edge: int = 640, max_size: int = 2560, dataset: str | None = None,
                 recorded_sizes: Mapping[str, Sequence[int]] | None = None, name: str = "seg4diff"):
        if name not in SEG4DIFF_PROTOCOLS:
            raise ValueError(f"name: expected one of {SEG4DIFF_PROTOCOLS}, got {name!r}")
        if int(short_edge) < 1 or int(max_size) < int(short_edge):
            raise ValueError(f"expected 1 <= short_edge <= max_size, got {short_edge}, {max_size}")
        self.name = name
        self.short_edge, self.max_size = int(short_edge), int(max_size)
        self.dataset = dataset
        recorded = dict(recorded_sizes or {})
        size = recorded.get(dataset) if dataset is not None else None
        self.output_size = (int(size[0]), int(size[1])) if size is not None else None

    def __repr__(self) -> str:
        return (f"Seg4DiffGeometry(name={self.name!r}, short_edge={self.short_edge}, max_size={self.max_size}, "
                f"dataset={self.dataset!r}, output_size={self.output_size})")

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """Size of an image of ``height`` x ``width`` after the test mapper's resize."""
        return shortest_edge_size(height, width, self.short_edge, self.max_size)

    def _check_recorded(self, height: int, width: int) -> None:
        if self.output_size is not None and (height, width) != self.output_size:
            raise ValueError(f"protocol={self.name}: the release's {self.dataset} loader records every image as "
                             f"{self.output_size[0]} x {self.output_size[1]} (detectron2 refuses others), got "
                             f"{height} x {width}")

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 (3, h, w) in [-1, 1]: PIL bilinear on uint8 (values ``u / 127.5 - 1``)."""
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise TypeError(f"expected a uint8 (3, H, W) image, got {image.dtype} {tuple(image.shape)}")
        height, width = int(image.shape[1]), int(image.shape[2])
        self._check_recorded(height, width)
        new_h, new_w = self.resized(height, width)
        pil = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        out = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
        return torch.from_numpy(out.copy()).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0

    def label(self, label: torch.Tensor) -> torch.Tensor:
        """Integer (H, W) file values 0..255 -> int64 (h, w): PIL nearest (detectron2's ``apply_segmentation``)."""
        if label.is_floating_point() or label.ndim != 2:
            raise TypeError(f"expected an integer (H, W) label map, got {label.dtype} {tuple(label.shape)}")
        height, width = int(label.shape[0]), int(label.shape[1])
        self._check_recorded(height, width)
        if label.numel() and (int(label.min()) < 0 or int(label.max()) > 255):
            raise ValueError("label file values must lie in 0..255 (detectron2 reads labels as 8-bit 'L' images)")
        new_h, new_w = self.resized(height, width)
        pil = Image.fromarray(label.to(torch.uint8).numpy())
        out = np.asarray(pil.resize((new_w, new_h), Image.NEAREST))
        return torch.from_numpy(out.astype(np.int64))

    def prediction_size(self, label_size: Sequence[int]) -> tuple[int, int]:
        """Size the model's prediction is made at: the recorded size, else the (resized) label's."""
        return self.output_size if self.output_size is not None else (int(label_size[0]), int(label_size[1]))

    def fit(self, masks: torch.Tensor, label_size: Sequence[int]) -> torch.Tensor:
        """Masks ``(B, H', W')`` at :meth:`prediction_size` -> ``(B, h, w)``: ``sem_seg_postprocess``'s top-left crop.

        Cropping commutes with the argmax, and the release's second bilinear resize is the identity when
        the crop is ``h`` x ``w``; a prediction smaller than the label (a recorded size below the resized
        one, which no release loader gives) would need that resize on the scores and is refused.
        """
        height, width = int(label_size[0]), int(label_size[1])
        if masks.shape[-2] < height or masks.shape[-1] < width:
            raise ValueError(f"protocol={self.name}: a {tuple(masks.shape[-2:])} prediction is smaller than its "
                             f"{height} x {width} label; the release would resize its scores, not reproduced")
        return masks[..., :height, :width]


_GEOMETRY_TEXT = "no crop, short side 640 (long side at most 2560), labels PIL nearest"


class Seg4Diff(Protocol):
    """``protocol=seg4diff``: the geometry of :class:`Seg4DiffGeometry`, predictions at its
    :meth:`~Seg4DiffGeometry.prediction_size` brought to the label by its :meth:`~Seg4DiffGeometry.fit`,
    DiffSeg's scoring. One image per batch, uint8 images before the backbone.

    Args:
        short_edge, max_size: ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST`` (640, 2560).
        geometry: the rest of :class:`Seg4DiffGeometry`'s settings (``dataset``: the run's dataset name,
            ``recorded_sizes``); its ``short_edge``/``max_size``/``name``, where given, must be the protocol's.
    """

    name = "seg4diff"
    geometry_text = (f"{_GEOMETRY_TEXT}; on Cityscapes the top-left 640 x 1280 of a 1024 x 2048 prediction, "
                     "as the release")
    max_batch_size = 1
    integer_pixels = True

    def __init__(self, short_edge: int = 640, max_size: int = 2560, geometry: Mapping[str, Any] | None = None):
        settings = dict(geometry or {})
        for key, value in (("short_edge", short_edge), ("max_size", max_size), ("name", self.name)):
            if settings.setdefault(key, value) != value:
                raise ProtocolError(f"protocol={self.name}: geometry.{key}={settings[key]!r} differs from "
                                    f"{value!r}; set protocol.{key} only")
        self._geometry = Seg4DiffGeometry(**settings)

    @property
    def geometry(self) -> Seg4DiffGeometry:
        return self._geometry

    def prediction_size(self, label_size: Sequence[int]) -> tuple[int, int]:
        """:meth:`Seg4DiffGeometry.prediction_size`: the size the release's loader records, else the label's."""
        return self._geometry.prediction_size(label_size)

    def fit(self, masks: torch.Tensor, label_size: Sequence[int]) -> torch.Tensor:
        """:meth:`Seg4DiffGeometry.fit`: ``sem_seg_postprocess``'s top-left crop."""
        return self._geometry.fit(masks, label_size)


class Seg4DiffAligned(Seg4Diff):
    """``protocol=seg4diff_aligned``: as :class:`Seg4Diff`, with every prediction made at its (resized) label's
    size: no dataset records another (``geometry.recorded_sizes`` must be null), so the release's top-left crop
    of a 1024 x 2048 Cityscapes prediction does not happen. Identical to ``seg4diff`` on the other datasets."""

    name = "seg4diff_aligned"
    geometry_text = f"{_GEOMETRY_TEXT}, predictions at that size"

    def __init__(self, short_edge: int = 640, max_size: int = 2560, geometry: Mapping[str, Any] | None = None):
        if (geometry or {}).get("recorded_sizes"):
            raise ProtocolError(f"protocol={self.name} makes every prediction at its label's size: "
                                "protocol.geometry.recorded_sizes must be null")
        super().__init__(short_edge, max_size, geometry)
