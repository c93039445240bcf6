"""Official (PiCIE-style) unsupervised segmentation metric: per-image Hungarian matching.

Pure functions (histograms, matching, per-image stats, scores) and
:class:`HungarianSegmentationMetric`, a ``torchmetrics.Metric`` holding the dataset-level
sums, so data-parallel runs reduce them with torchmetrics' distributed sync.

Axis convention, used everywhere in this module: a confusion histogram ``H`` has
**rows = ground-truth classes** (``num_classes`` of them, 27 for COCO-Stuff-27 and
Cityscapes) and **columns = predicted segment ids**, with at least ``num_classes``
columns, so every class can be matched to a (possibly empty) segment.

Protocol (written out in ``diffseg/REFERENCE.md``, section 4):

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

DiffCut's protocol (``protocol="diffcut"``, :func:`diffcut_match`, :func:`diffcut_image_stats`) scores the same
histograms differently on datasets with a background class: a first matching without
background, every segment left without a present class merged into one, and
background, boundary and unlabelled pixels all counted as background. Unknown label
values (:data:`eval.data.base.UNKNOWN_LABEL`: neither a class nor an ignore value of the
dataset) stay ignored under both protocols, as the release's histogram ignores every value
outside its classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from eval.data.base import UNKNOWN_LABEL
from eval.metrics.summed_scores import scores as stats_scores

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
    """Per-class ``(tp, fp, fn)`` (int64 arrays of shape (num_classes,)) of one histogram.

    Every class is matched to one column (Hungarian); pixels of unmatched columns count
    only in ``fn``; ``fp`` comes from the matched columns. Both releases (DiffSeg's and
    DiffCut's ``hungarian_matching``) count this way on a histogram.
    """
    hist_np = _to_numpy(hist).astype(np.int64, copy=False)
    match = hungarian_match(hist_np)
    tp = hist_np[np.arange(hist_np.shape[0]), match]
    fn = hist_np.sum(axis=1) - tp
    fp = hist_np.sum(axis=0)[match] - tp
    return tp, fp, fn


@dataclass(frozen=True)
class DiffCutMatch:
    """One image scored under DiffCut's protocol (:func:`diffcut_match`), in this project's class order."""

    tp: np.ndarray  # int64 (C,)
    fp: np.ndarray  # int64 (C,)
    fn: np.ndarray  # int64 (C,)
    valid: int  # pixels counted (every pixel on a dataset with a background class)
    categories: dict[int, int | None]  # segment id of the input mask -> class it was finally matched to


def diffcut_match(pred: Any, label: Any, num_classes: int, background: int | None) -> DiffCutMatch:
    """Score one image as DiffCut's release (``eval_diffcut.py``) does.

    Args:
        pred: (H, W) non-negative segment ids.
        label: (H, W) classes in this project's convention: ``background`` is the background
            class, :data:`~eval.data.base.UNKNOWN_LABEL` (-2) marks unknown values, every other
            value outside ``[0, num_classes)`` (-1, 255) is an ignore/boundary pixel.
        num_classes: N, background included.
        background: the background class, or None for a dataset without one.

    Without a background class: one Hungarian matching over the N classes, ignore pixels
    excluded (as DiffSeg's protocol). With one (VOC, Context, COCO-Object), the release's
    label space puts the N - 1 other classes first, in order, and turns background,
    boundary and unlabelled pixels alike into -1; an unknown value (a file value that is
    neither a class nor an ignore value, e.g. 190 in a VOC label) passes through the release's
    label map unchanged and lies outside its classes, so its pixels are left out of both
    histograms (they count nowhere, whatever ``pred`` holds there). Then:

    1. a Hungarian matching over the N - 1 classes on the pixels that are not -1;
    2. the classes whose row of the histogram, re-ordered by the matching, has a positive
       maximum keep their matched segments; every other segment of ``pred`` is relabelled to
       one new id, ``pred.max() + 1``;
    3. every -1 pixel becomes the background class (index N - 1), so every pixel counts;
    4. a Hungarian matching over all N classes gives ``tp``, ``fp``, ``fn`` as
       :func:`match_stats` does.

    Rows are kept in the release's order (ties of the solver break the same way) and the
    stats are returned in this project's order (background at ``background``).
    """
    pred_np = _to_numpy(pred).astype(np.int64, copy=False).ravel()
    label_np = _to_numpy(label).astype(np.int64, copy=False).ravel()
    if pred_np.shape != label_np.shape:
        raise ValueError(f"pred and label differ in size: {pred_np.size} vs {label_np.size}")
    segments = np.unique(pred_np)
    if background is None:
        hist = confusion_histogram(pred_np, label_np, num_classes)
        tp, fp, fn = match_stats(hist)
        by_column = {int(col): c for c, col in enumerate(hungarian_match(hist))}
        return DiffCutMatch(tp, fp, fn, int(hist.sum()), {int(s): by_column.get(int(s)) for s in segments})
    if not 0 <= background < num_classes:
        raise ValueError(f"background must be a class id in [0, {num_classes}), got {background!r}")
    order = np.array([c for c in range(num_classes) if c != background] + [background])  # release row -> ours
    to_release = np.full(num_classes, -1, dtype=np.int64)
    to_release[order[:-1]] = np.arange(num_classes - 1)
    inside = (label_np >= 0) & (label_np < num_classes)
    released = np.full_like(label_np, -1)
    released[inside] = to_release[label_np[inside]]
    unknown = label_np == UNKNOWN_LABEL
    released[unknown] = num_classes  # outside the classes of both matchings: never counted
    # 1-2: first matching over the non-background classes; unassigned segments become one new id
    first = confusion_histogram(pred_np, released, num_classes - 1)
    match = hungarian_match(first)
    kept_rows = np.flatnonzero(first[:, match].max(axis=1) > 0)
    assigned = {int(match[r]) for r in kept_rows}
    merged_id = int(pred_np.max()) + 1 if pred_np.size else 0
    merged = np.array([int(s) not in assigned for s in segments], dtype=bool)
    relabelled = np.where(np.isin(pred_np, segments[merged]), merged_id, pred_np)
    # 3-4: background, boundary and unlabelled pixels (not unknown ones) -> class N - 1, then the final matching
    released[released == -1] = num_classes - 1
    final = confusion_histogram(relabelled, released, num_classes)
    tp_r, fp_r, fn_r = match_stats(final)
    tp, fp, fn = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
    tp[order], fp[order], fn[order] = tp_r, fp_r, fn_r
    by_column = {int(col): int(order[r]) for r, col in enumerate(hungarian_match(final))}
    categories = {int(s): by_column.get(merged_id if m else int(s)) for s, m in zip(segments, merged, strict=True)}
    return DiffCutMatch(tp, fp, fn, int(final.sum()), categories)


def match_image(pred: Any, label: Any,
                num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Match one image: ``(tp, fp, fn, valid)``, valid = number of pixels with a valid label."""
    hist = confusion_histogram(pred, label, num_classes=num_classes)
    tp, fp, fn = match_stats(hist)
    return tp, fp, fn, int(hist.sum())


def _checked_batch(preds: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor, list[int], int]:
    """``(preds, labels, segments, num_pred)``: the batch as integer tensors (B, H, W), checked, the number of
    distinct ids in each image's prediction (one bincount over a (B, num_pred) presence table) and
    ``num_pred`` = max id + 1 (1 for empty images)."""
    preds = torch.as_tensor(preds)
    labels = torch.as_tensor(labels)
    for name, t in (("preds", preds), ("labels", labels)):
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must be an integer tensor of ids, got dtype {t.dtype}")
    if preds.dim() != 3 or preds.shape != labels.shape:
        raise ValueError(
            f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} must both have shape (B, H, W)"
        )
    batch = preds.shape[0]
    if batch == 0:
        return preds, labels, [], 0
    flat = preds.reshape(batch, -1).long()
    if flat.numel() and int(flat.min().item()) < 0:
        raise ValueError("predicted segment ids must be non-negative")
    num_pred = int(flat.max().item()) + 1 if flat.numel() else 1
    offsets = torch.arange(batch, device=flat.device).unsqueeze(1) * num_pred
    present = torch.bincount((flat + offsets).ravel(), minlength=batch * num_pred).reshape(batch, num_pred) > 0
    return preds, labels, present.sum(dim=1).cpu().tolist(), num_pred


def _record(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, valid: int, segments: int) -> dict[str, Any]:
    return {"tp": tp.tolist(), "fp": fp.tolist(), "fn": fn.tolist(), "valid": int(valid), "segments": int(segments)}


def hungarian_image_stats(preds: Any, labels: Any, num_classes: int = NUM_CLASSES) -> list[dict[str, Any]]:
    """Per-image matching stats of a batch under DiffSeg's rules: the record format of the runner's per-image files.

    Args:
        preds: (B, H, W) integer tensor of predicted segment ids, any non-negative values
            (ids above ``num_classes`` are fine), on any device.
        labels: (B, H, W) integer tensor of ground-truth classes; values outside
            ``[0, num_classes)`` (-1, 255, unknown -2, ...) are ignored.
        num_classes: number of ground-truth classes.

    Returns:
        One dict per image, ``{"tp": [int] * C, "fp": [int] * C, "fn": [int] * C,
        "valid": int, "segments": int}``: the Hungarian matching stats of the image's
        histogram (rows = ground truth; every class matched once), its number of counted pixels
        and the number of distinct ids in its prediction (ignored pixels included).
    """
    preds, labels, segments, num_pred = _checked_batch(preds, labels)
    if not segments:
        return []
    hists = confusion_histograms(preds, labels, num_classes, num_pred=num_pred).cpu().numpy()
    return [_record(*match_stats(hist), int(hist.sum()), n) for hist, n in zip(hists, segments, strict=True)]


def diffcut_image_stats(preds: Any, labels: Any, num_classes: int, background: int | None) -> list[dict[str, Any]]:
    """Per-image stats of a batch under DiffCut's rules (:func:`diffcut_match`), in :func:`hungarian_image_stats`'s
    record format; on a dataset with a background class, background, boundary and unlabelled pixels all count
    as background; unknown values stay ignored."""
    preds, labels, segments, _ = _checked_batch(preds, labels)
    out = []
    for pred, label, num_segments in zip(preds.cpu().numpy(), labels.cpu().numpy(), segments, strict=True):
        m = diffcut_match(pred, label, num_classes, background)
        out.append(_record(m.tp, m.fp, m.fn, m.valid, num_segments))
    return out


def scores(tp: Any, fp: Any, fn: Any, valid: int) -> dict[str, Any]:
    """Dataset scores from accumulated stats, all x100 and unrounded.

    Returns ``{"acc": float, "miou": float, "iou": [float | None, ...]}``; an IoU is None
    for a class with ``tp + fp + fn == 0``; ``acc`` / ``miou`` are None when undefined
    (no valid pixel / no class present). Computed by :func:`eval.metrics.summed_scores.scores`, the
    one (torch-free) implementation that the bootstrap of :mod:`eval.compare` shares.
    """
    return stats_scores(_to_numpy(tp), _to_numpy(fp), _to_numpy(fn), int(valid))
