"""Label values outside the dataset's classes and ignore values: counted per image, reported, bounded.

A dataset marks such pixels :data:`eval.data.base.UNKNOWN_LABEL` (a class recoded to 190, a
label file of another dataset). They are scored as ignored, but a run says how many there
were: each per-image record carries ``"unknown_labels"`` (pixels at the evaluation size),
``metrics.json`` an ``"unknown_labels"`` summary, ``run.log`` one warning per image, and a run
whose fraction of unknown label pixels exceeds ``max_unknown_label_fraction`` (default 0.001)
is refused (:class:`UnknownLabelsError`, exit status 2) with nothing written to
``metrics.json``.

The fraction is of the label pixels actually scored. A label scored at another size than
``dataset.size`` x ``dataset.size`` (``protocol=seg4diff`` keeps each image's aspect ratio) has
its pixel count in its record, ``"label_pixels"``; a record without it was scored at the
square size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from eval.data.base import UNKNOWN_LABEL

__all__ = ["UnknownLabelsError", "count_unknown", "label_fields", "log_unknown", "summarise_unknown", "unknown_summary"]

log = logging.getLogger(__name__)


class UnknownLabelsError(ValueError):
    """More label pixels than ``max_unknown_label_fraction`` hold values outside the dataset's classes."""


def count_unknown(labels: torch.Tensor) -> list[int]:
    """Pixels of each label ``(B, H, W)`` marked :data:`UNKNOWN_LABEL`."""
    return [int(n) for n in (labels == UNKNOWN_LABEL).reshape(labels.shape[0], -1).sum(dim=1).tolist()]


def label_fields(labels: torch.Tensor, pixels_per_image: int) -> list[dict[str, int]]:
    """The label part of each image's record: ``{"unknown_labels": n}``, with ``"label_pixels"`` when a
    label ``(B, H, W)`` does not have ``pixels_per_image`` pixels."""
    pixels = int(labels[0].numel()) if labels.shape[0] else 0
    extra = {"label_pixels": pixels} if pixels != int(pixels_per_image) else {}
    return [{"unknown_labels": n, **extra} for n in count_unknown(labels)]


def log_unknown(ids: Sequence[str], counts: Sequence[int], pixels: int) -> None:
    """One warning per image with unknown label pixels (``counts``, of ``pixels`` each)."""
    for image_id, n in zip(ids, counts, strict=True):
        if n:
            log.warning("label of %s: %d of %d pixels hold values outside the dataset's classes and "
                        "ignore values (scored as ignored)", image_id, n, pixels)


def summarise_unknown(records: Iterable[dict[str, Any]], pixels_per_image: int) -> dict[str, Any]:
    """``{"pixels", "fraction", "images": {id: pixels}}`` over the evaluated records.

    ``fraction`` is of all their label pixels (each record's ``"label_pixels"``, else
    ``pixels_per_image``); ``images`` lists those with any.
    """
    evaluated = [r for r in records if "methods" in r]
    per_image = {str(r["id"]): int(r.get("unknown_labels", 0)) for r in evaluated}
    total = sum(per_image.values())
    denominator = sum(int(r.get("label_pixels", pixels_per_image)) for r in evaluated)
    return {
        "pixels": total,
        "fraction": total / denominator if denominator else 0.0,
        "images": {i: n for i, n in sorted(per_image.items()) if n},
    }


def unknown_summary(records: Iterable[dict[str, Any]], pixels_per_image: int, max_fraction: float,
                    metrics_path: Path) -> dict[str, Any]:
    """:func:`summarise_unknown` with ``"max_fraction"``, for ``metrics.json`` (which goes to ``metrics_path``).

    Raises:
        UnknownLabelsError: the fraction exceeds ``max_fraction`` (the message names the worst images).
    """
    unknown = summarise_unknown(records, pixels_per_image)
    if unknown["fraction"] > max_fraction:
        worst = sorted(unknown["images"].items(), key=lambda kv: -kv[1])[:5]
        raise UnknownLabelsError(
            f"{unknown['fraction']:.4%} of the label pixels ({unknown['pixels']}, in {len(unknown['images'])} "
            f"image(s), most in {worst}) hold values outside the dataset's classes and ignore values, more than "
            f"max_unknown_label_fraction={max_fraction}: are these the dataset's own label files? nothing written "
            f"to {metrics_path}")
    return {**unknown, "max_fraction": max_fraction}
