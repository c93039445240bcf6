"""The matching metric as a ``torchmetrics.Metric`` (dataset-level sums, synced across ranks).

The pure functions it calls, and the one axis convention (rows = ground truth), are in
:mod:`eval.metrics.functional`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from eval.metrics.functional import NUM_CLASSES, scores
from eval.metrics.protocols import Protocol, get_protocol, image_stats

_STAT_KEYS = ("tp", "fp", "fn", "valid", "segments")
_EMPTY_COMPUTE_WARNING = r"The ``compute`` method of metric .* was called before the ``update`` method"


class HungarianSegmentationMetric(Metric):
    """The matching metric as a ``torchmetrics.Metric``: dataset-level sums, summed across ranks.

    States (int64, ``dist_reduce_fx="sum"``): ``tp``, ``fp``, ``fn`` of shape (C,), and the
    scalars ``valid`` (pixels with a valid label), ``images`` and ``segments`` (distinct
    predicted ids, summed over images). Predictions may live on any device: matching runs
    on the host and the sums are added on the metric's own device (move the metric with
    ``.to(device)`` where the process group needs it, e.g. NCCL).

    Two ways in, one accumulation: :meth:`update` matches a batch with :func:`image_stats`;
    :meth:`add_stats` adds per-image stats computed earlier (replay of stored records on
    resume). Both go through torchmetrics' ``update`` wrapper, and :meth:`update` returns the
    batch's per-image stats (same order as the batch), which the runner records.
    ``protocol`` (a :class:`~eval.metrics.protocols.Protocol`, or a registered name) and ``background``
    choose the scoring rules (:meth:`~eval.metrics.protocols.Protocol.image_stats`).

    Calling :meth:`compute` on a metric without data is well defined here (NaN scores), so
    torchmetrics' "compute before update" warning is silenced for this metric; this also
    covers a rank that received no image in a data-parallel run.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    valid: torch.Tensor
    images: torch.Tensor
    segments: torch.Tensor

    def __init__(self, num_classes: int = NUM_CLASSES, background: int | None = None,
                 protocol: Protocol | str = "diffseg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if background is not None and not 0 <= background < num_classes:
            raise ValueError(f"background must be a class id in [0, {num_classes}), got {background!r}")
        self.num_classes = num_classes
        self.background = background
        self.protocol = protocol if isinstance(protocol, Protocol) else get_protocol(protocol)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")
        for name in ("valid", "images", "segments"):
            self.add_state(name, default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
               stats: Iterable[Mapping[str, Any]] | None = None) -> list[Mapping[str, Any]]:
        """Add a batch: ``update(preds, labels)`` with (B, H, W) ids / labels, or ``update(stats=...)``.

        ``stats`` (what :meth:`add_stats` passes) are per-image dicts as :func:`image_stats`
        returns them; give either a batch or stats, not both.

        Returns:
            The per-image stats added, in batch order (for a batch: :func:`image_stats` of it).
        """
        if stats is None:
            if preds is None or labels is None:
                raise ValueError("update needs preds and labels (or stats=...)")
            stats = image_stats(preds, labels, self.num_classes, self.background, self.protocol)
        elif preds is not None or labels is not None:
            raise ValueError("give either preds and labels or stats, not both")
        stats = list(stats)
        self._accumulate(stats)
        return stats

    def add_stats(self, stats: Iterable[Mapping[str, Any]]) -> None:
        """Add per-image stats already computed by :func:`image_stats` (e.g. stored records)."""
        self.update(stats=stats)

    def _accumulate(self, stats: list[Mapping[str, Any]]) -> None:
        if not stats:
            return
        sums = {}
        for key in _STAT_KEYS:
            try:
                values = [s[key] for s in stats]
            except KeyError:
                raise ValueError(f"per-image stats need the keys {list(_STAT_KEYS)}; one lacks {key!r}") from None
            arr = np.asarray(values, dtype=np.int64)
            if key in ("tp", "fp", "fn") and arr.shape != (len(stats), self.num_classes):
                raise ValueError(
                    f"per-image {key!r} must be {self.num_classes} counts (num_classes); got shape {arr.shape[1:]}"
                )
            sums[key] = torch.as_tensor(arr.sum(axis=0), dtype=torch.int64)
        for key in ("tp", "fp", "fn", "valid", "segments"):
            state = getattr(self, key)
            setattr(self, key, state + sums[key].to(state.device))
        self.images = self.images + len(stats)

    def compute(self) -> dict[str, Any]:
        """Scores of the accumulated (and, when distributed, synced) sums.

        Returns:
            ``acc`` and ``miou`` (x100 floats, NaN when undefined), ``iou`` (float64 CPU
            tensor (C,), x100, NaN for classes with ``tp + fp + fn == 0``; torchmetrics
            squeezes it to 0-d when C == 1), ``mean_segments`` (float, NaN without images),
            and the raw sums ``tp``, ``fp``, ``fn`` (lists of int), ``valid``, ``images``,
            ``segments`` (int). Values are those of :func:`scores`.
        """
        tp, fp, fn = (getattr(self, k).cpu().numpy() for k in ("tp", "fp", "fn"))
        valid, images, segments = int(self.valid), int(self.images), int(self.segments)
        out = scores(tp, fp, fn, valid)
        return {
            "acc": math.nan if out["acc"] is None else out["acc"],
            "miou": math.nan if out["miou"] is None else out["miou"],
            "iou": torch.tensor([math.nan if v is None else v for v in out["iou"]], dtype=torch.float64),
            "mean_segments": segments / images if images else math.nan,
            "tp": tp.tolist(),
            "fp": fp.tolist(),
            "fn": fn.tolist(),
            "valid": valid,
            "images": images,
            "segments": segments,
        }

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's (or state dict's) sums; also drops a cached ``compute`` result."""
        super().merge_state(incoming_state)
        self._computed = None  # torchmetrics keeps the cached value after a merge otherwise

    def _wrap_update(self, update: Callable) -> Callable:
        """torchmetrics' wrapper of :meth:`update` (update count, device errors), returning what it returns."""
        returned: list[Any] = []

        def keep(*args: Any, **kwargs: Any) -> None:
            returned.append(update(*args, **kwargs))

        wrapped = super()._wrap_update(keep)

        @functools.wraps(update)
        def update_returning_stats(*args: Any, **kwargs: Any) -> Any:
            returned.clear()
            wrapped(*args, **kwargs)
            return returned.pop()

        return update_returning_stats

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(wrapped)
        def compute_without_empty_warning(*args: Any, **kwargs: Any) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_EMPTY_COMPUTE_WARNING, category=UserWarning)
                return wrapped(*args, **kwargs)

        return compute_without_empty_warning


def metric_json(computed: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe form of :meth:`HungarianSegmentationMetric.compute` (NaN -> None).

    Returns the keys and values the runner's ``metrics.json`` holds per method:
    ``acc``, ``miou``, ``iou`` (list, None where undefined), ``tp``, ``fp``, ``fn``,
    ``valid``, ``images``, ``mean_segments``.
    """

    def number(x: Any) -> float | None:
        x = float(x)
        return None if math.isnan(x) else x

    iou = torch.as_tensor(computed["iou"], dtype=torch.float64).reshape(-1).tolist()
    return {
        "acc": number(computed["acc"]),
        "miou": number(computed["miou"]),
        "iou": [number(v) for v in iou],
        "tp": [int(v) for v in computed["tp"]],
        "fp": [int(v) for v in computed["fp"]],
        "fn": [int(v) for v in computed["fn"]],
        "valid": int(computed["valid"]),
        "images": int(computed["images"]),
        "mean_segments": number(computed["mean_segments"]),
    }
