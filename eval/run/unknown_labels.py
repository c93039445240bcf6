"""Label values outside the dataset's classes and ignore values: counted per image, reported, bounded.

A dataset marks such pixels :data:`eval.data.base.UNKNOWN_LABEL` (a class recoded to 190, a
label file of another dataset). They are scored as ignored, but a run says how many there
were: each per-image record carries ``"unknown_labels"`` (pixels at the evaluation size),
``metrics.json`` an ``"unknown_labels"`` summary, ``run.log`` one warning per image, and a run
whose fraction of unknown label pixels exceeds ``max_unknown_label_fraction`` (default 0.001)
is refused (:class:`UnknownLabelsError`, exit status 2) with nothing written to
``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from eval.data.base import UNKNOWN_LABEL

__all__ = ["UnknownLabelsError", "count_unknown", "summarise_unknown"]


class UnknownLabelsError(ValueError):
    """More label pixels than ``max_unknown_label_fraction`` hold values outside the dataset's classes."""


def count_unknown(labels: torch.Tensor) -> list[int]:
    """Pixels of each label ``(B, H, W)`` marked :data:`UNKNOWN_LABEL`."""
    return [int(n) for n in (labels == UNKNOWN_LABEL).reshape(labels.shape[0], -1).sum(dim=1).tolist()]


def summarise_unknown(records: Iterable[dict[str, Any]], pixels_per_image: int) -> dict[str, Any]:
    """``{"pixels", "fraction", "images": {id: pixels}}`` over the evaluated records.

    ``fraction`` is of all their label pixels (``pixels_per_image`` each); ``images`` lists those with any.
    """
    evaluated = [r for r in records if "methods" in r]
    per_image = {str(r["id"]): int(r.get("unknown_labels", 0)) for r in evaluated}
    total = sum(per_image.values())
    denominator = len(evaluated) * int(pixels_per_image)
    return {
        "pixels": total,
        "fraction": total / denominator if denominator else 0.0,
        "images": {i: n for i, n in sorted(per_image.items()) if n},
    }
