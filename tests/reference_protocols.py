"""Independent re-computations of DiffCut's evaluation, written from its rules (not from eval/):

* labels in the release's own space (``release_labels``): VOC-20 (palette 0 and 255 -> -1,
  1..20 -> 0..19), Context-59 (0 -> -1, k -> k - 1), COCO-Object (the 80 thing values of the
  stuffthingmaps, in value order, -> 0..79; stuff values and 255 -> -1);
* scoring (``release_image``): histogram with ``max(n, pred.max() + 1)`` columns over labels
  in ``[0, n)``, scipy's Hungarian solver, and on background datasets the merge of every
  segment not kept by a first matching over the ``N - 1`` non-background classes;
* geometry (``release_label_geometry``): crop side ``min(h, w) - 1`` centred with
  round-half-to-even offsets, ``nearest-exact`` to the input size, legacy ``nearest`` to 128.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# stuffthingmaps values below 91 that no COCO thing category uses
COCO_UNUSED_THING_VALUES = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}


def release_labels(raw: np.ndarray, dataset: str) -> np.ndarray:
    """Raw file values -> the release's label space (-1 = background/boundary/unlabelled)."""
    raw = raw.astype(np.int64)
    out = np.full(raw.shape, -1, dtype=np.int64)
    if dataset == "voc":
        keep = (raw >= 1) & (raw <= 20)
        out[keep] = raw[keep] - 1
    elif dataset == "context":
        keep = (raw >= 1) & (raw <= 59)
        out[keep] = raw[keep] - 1
    elif dataset == "coco_object":
        things = [v for v in range(91) if v not in COCO_UNUSED_THING_VALUES]
        for index, value in enumerate(things):
            out[raw == value] = index
    else:
        raise ValueError(dataset)
    return out


def _hist(label: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    k = max(n, int(pred.max()) + 1)
    hist = np.zeros((n, k), dtype=np.int64)
    for lab, p in zip(label.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if 0 <= lab < n:
            hist[lab, p] += 1
    return hist


def _match(label: np.ndarray, pred: np.ndarray, n: int):
    hist = _hist(label, pred, n)
    rows, cols = linear_sum_assignment(hist, maximize=True)
    tp = hist[rows, cols]
    fn = hist.sum(axis=1) - tp
    aligned = hist[:, cols]
    fp = aligned.sum(axis=0) - np.diag(aligned)
    return tp, fp, fn, int(hist.sum()), aligned, cols


def release_image(pred: np.ndarray, label: np.ndarray, n: int, background: bool):
    """``(tp, fp, fn, all)`` of one image, classes in the release's order (background last)."""
    pred, label = pred.astype(np.int64).copy(), label.astype(np.int64).copy()
    if background:
        _, _, _, _, aligned, cols = _match(label, pred, n - 1)
        label[label == -1] = n - 1
        kept = [cols[r] for r in range(n - 1) if aligned[r].max() > 0]
        new_id = int(pred.max()) + 1
        for segment in set(np.unique(pred).tolist()) - set(kept):
            pred[pred == segment] = new_id
    tp, fp, fn, total, _, _ = _match(label, pred, n)
    return tp, fp, fn, total


def to_project_order(stats: np.ndarray) -> np.ndarray:
    """Release order (classes 0..N-2, background N-1) -> this project's (background 0, classes 1..N-1)."""
    return np.concatenate([stats[-1:], stats[:-1]])


def release_label_geometry(raw: np.ndarray, input_size: int, label_size: int = 128) -> np.ndarray:
    """Crop ``min(h, w) - 1`` (round-half-even offsets), nearest-exact to ``input_size``, nearest to ``label_size``."""
    h, w = raw.shape
    side = min(h, w) - 1
    top, left = int(np.round((h - side) / 2)), int(np.round((w - side) / 2))
    crop = raw[top:top + side, left:left + side]
    first = [min(int(np.floor((i + 0.5) * side / input_size)), side - 1) for i in range(input_size)]
    big = crop[np.ix_(first, first)]
    second = [min(int(np.floor(i * input_size / label_size)), input_size - 1) for i in range(label_size)]
    return big[np.ix_(second, second)]
