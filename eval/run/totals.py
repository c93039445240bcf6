"""A run's totals from its per-image records (:mod:`eval.run.records`): one metric per method, and the
``methods`` section of ``metrics.json``. Imports the metric (torch); the records module does not."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eval.metrics import HungarianSegmentationMetric, metric_json

__all__ = ["accumulate", "method_scores"]


def accumulate(records: Iterable[dict[str, Any]], num_classes: int,
               **metric_kwargs: Any) -> dict[str, HungarianSegmentationMetric]:
    """One metric per method over the (non-skipped) records, in first-seen method order."""
    stats: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        for name, s in (record.get("methods") or {}).items():
            stats.setdefault(name, []).append(s)
    metrics = {}
    for name, items in stats.items():
        metrics[name] = HungarianSegmentationMetric(num_classes, **metric_kwargs)
        metrics[name].add_stats(items)
    return metrics


def method_scores(metrics: dict[str, HungarianSegmentationMetric],
                  tags: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """``metrics.json["methods"]``: each method in ``tags`` order, its scores and its ablation tag."""
    out = {}
    for name, tag in tags.items():
        metric = metrics.get(name)
        scores = metric_json(metric.compute()) if metric is not None else {"images": 0}
        if tag is not None:
            scores["ablation"] = tag
        out[name] = scores
    return out
