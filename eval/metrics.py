"""Official (PiCIE-style) unsupervised segmentation metric: per-image Hungarian matching.

Axis convention, used everywhere in this module: a confusion histogram ``H`` has
**rows = ground-truth classes** (``num_classes`` of them, 27 for COCO-Stuff-27 and
Cityscapes) and **columns = predicted segment ids**, with at least ``num_classes``
columns, so every class can be matched to a (possibly empty) segment.

Protocol (DESIGN section 4):

* per image, build ``H`` from the pixels whose label is in ``[0, num_classes)``;
  every other label value (-1, 255, ...) is ignored;
* Hungarian matching on ``H`` maximising matched pixels, one column per row;
* ``tp[c] = H[c, m(c)]``, ``fn[c] = row_sum[c] - tp[c]``,
  ``fp[c] = col_sum[m(c)] - tp[c]``; pixels of unmatched segments count only in ``fn``;
* accumulate ``tp``, ``fp``, ``fn`` and the valid-pixel count over the dataset, then
  ``ACC = sum(tp) / valid`` and ``IoU[c] = tp / (tp + fp + fn)``; mIoU is the mean over
  the classes with ``tp + fp + fn > 0``. Scores are x100 floats, never rounded here.

Matching is per image, IoU is dataset level (per-image IoUs are never averaged).

This is what the official release computes (``diffseg/utils.py``: ``_fast_hist`` with
``max(n_class, pred.max() + 1)`` columns, scipy ``linear_sum_assignment(maximize=True)``,
fp from the matched columns), on the same histogram and with the same solver, so ties
break the same way. One consequence, kept for faithfulness: a class absent from an
image may be matched to a leftover non-empty segment and then receives its pixels as
fp (which absent class gets them is a tie, decided by the solver).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

NUM_CLASSES = 27


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (a torch tensor, numpy array or sequence) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_histogram(pred: Any, label: Any, num_classes: int = NUM_CLASSES,
                        num_pred: int | None = None) -> np.ndarray:
    """Confusion histogram of one image.

    Args:
        pred: predicted segment ids, shape (H, W), any non-negative integers.
        label: ground-truth classes, shape (H, W); values outside ``[0, num_classes)``
            are ignored.
        num_classes: number of ground-truth classes (rows).
        num_pred: number of predicted ids; default ``pred.max() + 1``.

    Returns:
        int64 array of shape ``(num_classes, max(num_classes, num_pred))``.
    """
    pred_np = _to_numpy(pred).astype(np.int64, copy=False).ravel()
    label_np = _to_numpy(label).astype(np.int64, copy=False).ravel()
    if pred_np.shape != label_np.shape:
        raise ValueError(f"pred and label differ in size: {pred_np.size} vs {label_np.size}")
    if pred_np.size and pred_np.min() < 0:
        raise ValueError("predicted segment ids must be non-negative")
    if num_pred is None:
        num_pred = int(pred_np.max()) + 1 if pred_np.size else 0
    elif pred_np.size and pred_np.max() >= max(num_pred, num_classes):
        raise ValueError(f"predicted id {int(pred_np.max())} does not fit num_pred={num_pred}")
    ncols = max(num_classes, num_pred)
    valid = (label_np >= 0) & (label_np < num_classes)
    flat = label_np[valid] * ncols + pred_np[valid]
    return np.bincount(flat, minlength=num_classes * ncols).reshape(num_classes, ncols)


def confusion_histograms(preds: torch.Tensor, labels: torch.Tensor, num_classes: int = NUM_CLASSES,
                         num_pred: int | None = None) -> torch.Tensor:
    """Batched confusion histograms, computed on the tensors' device with one bincount.

    Args:
        preds: (B, H, W) non-negative integer segment ids.
        labels: (B, H, W) classes; values outside ``[0, num_classes)`` are ignored.
        num_classes: number of ground-truth classes.
        num_pred: number of predicted ids; default ``preds.max() + 1`` (a device sync).

    Returns:
        int64 tensor (B, num_classes, max(num_classes, num_pred)), on ``preds.device``.
    """
    preds = torch.as_tensor(preds)
    labels = torch.as_tensor(labels, device=preds.device)
    if preds.shape != labels.shape or preds.dim() < 1:
        raise ValueError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} must match")
    batch = preds.shape[0]
    p = preds.reshape(batch, -1).long()
    lab = labels.reshape(batch, -1).long()
    if num_pred is None:
        num_pred = int(p.max().item()) + 1 if p.numel() else 0
    ncols = max(num_classes, num_pred)
    if p.numel() and bool(((p < 0) | (p >= ncols)).any()):
        raise ValueError(f"predicted ids must lie in [0, {ncols})")
    valid = (lab >= 0) & (lab < num_classes)
    offsets = torch.arange(batch, device=p.device).unsqueeze(1) * (num_classes * ncols)
    flat = (offsets + lab * ncols + p)[valid]
    hist = torch.bincount(flat, minlength=batch * num_classes * ncols)
    return hist.reshape(batch, num_classes, ncols)


def hungarian_match(hist: Any) -> np.ndarray:
    """Column matched to each row of ``hist``, maximising the matched pixel count.

    ``hist`` must have at least as many columns as rows, so every row gets a column.
    Returns an int64 array of shape (num_classes,).
    """
    hist_np = _to_numpy(hist)
    num_classes, ncols = hist_np.shape
    if ncols < num_classes:
        raise ValueError(f"histogram needs >= {num_classes} columns, has {ncols}")
    rows, cols = linear_sum_assignment(hist_np, maximize=True)
    match = np.empty(num_classes, dtype=np.int64)
    match[rows] = cols
    return match


def match_stats(hist: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class ``(tp, fp, fn)`` (int64 arrays of shape (num_classes,)) of one histogram."""
    hist_np = _to_numpy(hist).astype(np.int64, copy=False)
    match = hungarian_match(hist_np)
    tp = hist_np[np.arange(hist_np.shape[0]), match]
    fn = hist_np.sum(axis=1) - tp
    fp = hist_np.sum(axis=0)[match] - tp
    return tp, fp, fn


def match_image(pred: Any, label: Any,
                num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Match one image: ``(tp, fp, fn, valid)``, valid = number of pixels with a valid label."""
    hist = confusion_histogram(pred, label, num_classes=num_classes)
    tp, fp, fn = match_stats(hist)
    return tp, fp, fn, int(hist.sum())


def scores(tp: Any, fp: Any, fn: Any, valid: int) -> dict[str, Any]:
    """Dataset scores from accumulated stats, all x100 and unrounded.

    Returns ``{"acc": float, "miou": float, "iou": [float | None, ...]}``; an IoU is None
    for a class with ``tp + fp + fn == 0``; ``acc`` / ``miou`` are None when undefined
    (no valid pixel / no class present).
    """
    tp_np = _to_numpy(tp).astype(np.int64)
    fp_np = _to_numpy(fp).astype(np.int64)
    fn_np = _to_numpy(fn).astype(np.int64)
    union = tp_np + fp_np + fn_np
    iou = [100.0 * int(t) / int(u) if u > 0 else None for t, u in zip(tp_np, union, strict=True)]
    present = [v for v in iou if v is not None]
    return {
        "acc": 100.0 * int(tp_np.sum()) / int(valid) if valid > 0 else None,
        "miou": float(np.mean(present)) if present else None,
        "iou": iou,
    }


class MatchAccumulator:
    """Accumulates per-image matching stats of one method over a dataset.

    The state is plain ints and lists (JSON-serialisable), so shards of a run can be
    saved with :meth:`state_dict` and combined with :meth:`merge`.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Clear the accumulated state."""
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)
        self.valid = 0
        self.images = 0
        self.segments = 0
        self.segment_images = 0

    def add(self, tp: Any, fp: Any, fn: Any, valid: int, num_segments: int | None = None) -> None:
        """Add the stats of one image (``num_segments``: segments the method produced)."""
        self.tp += _to_numpy(tp).astype(np.int64)
        self.fp += _to_numpy(fp).astype(np.int64)
        self.fn += _to_numpy(fn).astype(np.int64)
        self.valid += int(valid)
        self.images += 1
        if num_segments is not None:
            self.segments += int(num_segments)
            self.segment_images += 1

    def add_histogram(self, hist: Any, num_segments: int | None = None) -> None:
        """Add one image given its confusion histogram (e.g. a slice of confusion_histograms)."""
        hist_np = _to_numpy(hist)
        tp, fp, fn = match_stats(hist_np)
        self.add(tp, fp, fn, int(hist_np.sum()), num_segments)

    def update(self, pred: Any, label: Any,
               num_segments: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Match and add one image; returns its ``(tp, fp, fn, valid)``.

        ``num_segments`` defaults to the number of distinct ids in ``pred``.
        """
        if num_segments is None:
            num_segments = int(np.unique(_to_numpy(pred)).size)
        stats = match_image(pred, label, self.num_classes)
        self.add(*stats, num_segments=num_segments)
        return stats

    def compute(self) -> dict[str, Any]:
        """Scores plus the raw stats: acc, miou, iou, tp, fp, fn, valid, images, mean_segments."""
        out = scores(self.tp, self.fp, self.fn, self.valid)
        out.update(
            tp=self.tp.tolist(),
            fp=self.fp.tolist(),
            fn=self.fn.tolist(),
            valid=self.valid,
            images=self.images,
            mean_segments=self.segments / self.segment_images if self.segment_images else None,
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state."""
        return {
            "num_classes": self.num_classes,
            "tp": self.tp.tolist(),
            "fp": self.fp.tolist(),
            "fn": self.fn.tolist(),
            "valid": self.valid,
            "images": self.images,
            "segments": self.segments,
            "segment_images": self.segment_images,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        self.num_classes = int(state["num_classes"])
        self.tp = np.asarray(state["tp"], dtype=np.int64)
        self.fp = np.asarray(state["fp"], dtype=np.int64)
        self.fn = np.asarray(state["fn"], dtype=np.int64)
        self.valid = int(state["valid"])
        self.images = int(state["images"])
        self.segments = int(state.get("segments", 0))
        self.segment_images = int(state.get("segment_images", 0))

    def merge(self, other: MatchAccumulator) -> MatchAccumulator:
        """Add ``other``'s state into this one (in place); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.valid += other.valid
        self.images += other.images
        self.segments += other.segments
        self.segment_images += other.segment_images
        return self
