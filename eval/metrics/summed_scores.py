"""Dataset-level scores of summed matching stats, vectorised over any leading axes.

The one implementation of the metric's last step (see :mod:`eval.metrics`):
``ACC = sum(tp) / valid`` and ``IoU[c] = tp[c] / (tp[c] + fp[c] + fn[c])`` of stats summed
over images, x100, never rounded; mIoU is the mean IoU over a class set: by default the
classes with ``tp + fp + fn > 0`` in those sums (``metrics.json``), or a fixed set given
by the caller (the bootstrap scores every resample over the classes of the full sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dataset_scores", "scores", "split_columns"]


def split_columns(sums: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(tp (..., C), fp (..., C), fn (..., C), valid (...))`` of stats laid out ``tp | fp | fn | valid``."""
    c = num_classes
    if sums.shape[-1] != 3 * c + 1:
        raise ValueError(f"expected 3 * {c} + 1 = {3 * c + 1} columns (tp | fp | fn | valid), got {sums.shape[-1]}")
    return sums[..., :c], sums[..., c:2 * c], sums[..., 2 * c:3 * c], sums[..., 3 * c]


def dataset_scores(sums: np.ndarray, num_classes: int,
                   classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ACC, mIoU and per-class IoU of stat sums (x100, NaN where undefined).

    Args:
        sums: (..., 3C + 1) integer sums, columns ``tp | fp | fn | valid``.
        num_classes: C.
        classes: optional bool (C,) fixed class set of the mIoU. A row in which one of
            these classes has ``tp + fp + fn == 0`` has an undefined (NaN) mIoU. Without
            it, each row averages over its own classes with ``tp + fp + fn > 0``.

    Returns:
        ``acc (...)``, ``miou (...)``, ``iou (..., C)``; an IoU is NaN for a class with
        ``tp + fp + fn == 0``.
    """
    tp, fp, fn, valid = split_columns(np.asarray(sums), num_classes)
    union = tp + fp + fn
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, 100.0 * tp / np.where(present, union, 1), np.nan)
        acc = np.where(valid > 0, 100.0 * tp.sum(-1) / np.where(valid > 0, valid, 1), np.nan)
        if classes is not None:
            keep = np.asarray(classes, dtype=bool)
            miou = iou[..., keep].mean(-1) if keep.any() else np.full(acc.shape, np.nan)
        else:
            count = present.sum(-1)
            miou = np.where(count > 0, np.where(present, iou, 0.0).sum(-1) / np.maximum(count, 1), np.nan)
    return acc, miou, iou


def scores(tp: Any, fp: Any, fn: Any, valid: int) -> dict[str, Any]:
    """Scores of one set of accumulated stats: ``{"acc", "miou", "iou": [float | None] * C}``.

    ``tp``, ``fp``, ``fn``: (C,) integer arrays (numpy or anything ``np.asarray`` takes);
    ``valid``: the valid-pixel count. An IoU is None for a class with ``tp + fp + fn == 0``;
    ``acc`` / ``miou`` are None when undefined (no valid pixel / no class present).
    """
    tp, fp, fn = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (tp, fp, fn))
    row = np.concatenate([tp, fp, fn, np.asarray([int(valid)], dtype=np.int64)])
    present = (tp + fp + fn) > 0
    acc, miou, iou = dataset_scores(row, tp.shape[0], classes=present)
    return {
        "acc": float(acc) if np.isfinite(acc) else None,
        "miou": float(miou) if np.isfinite(miou) else None,
        "iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist(), strict=True)],
    }
