"""The methods a run evaluates, built from the ``methods`` node of the config.

Each entry of ``cfg.methods`` (``null`` entries are skipped) looks like::

    name: DiffSeg                 # as printed in tables and used for masks/<name>/
    num_clusters: null            # "labels": K = distinct ground-truth classes (K-Means-S)
    aggregation: null             # null: the run's aggregation weights; or {64: 1.0, ...}
    ablation: null                # or {param, value, method}: a row of an ablation table
    segmenter: {_target_: diffseg.DiffSeg, ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["Method", "build_methods", "ground_truth_class_counts", "weights_key"]


@dataclass
class Method:
    """One configured method: a callable on aggregated attention plus how to feed it."""

    name: str
    segmenter: Any
    clusters_from_labels: bool = False
    weights: dict[int, float] | None = None
    ablation: dict[str, Any] | None = None

    def __call__(self, attention: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Masks ``LongTensor(B, H, W)`` for ``(B, S, S, S, S)`` attention and ``(B, H, W)`` labels."""
        if self.clusters_from_labels:
            return self.segmenter(attention, num_clusters=ground_truth_class_counts(labels, num_classes))
        return self.segmenter(attention)


def ground_truth_class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Number of distinct valid classes in each ``(H, W)`` label of a batch (at least 1)."""
    counts = []
    for label in labels:
        valid = label[(label >= 0) & (label < num_classes)]
        counts.append(max(1, int(torch.unique(valid).numel())))
    return counts


def _weights(node: Any) -> dict[int, float] | None:
    if node is None:
        return None
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {int(k): float(v) for k, v in data.items()}


def weights_key(weights: Mapping[int, float] | None) -> tuple:
    """Hashable key of an aggregation setting (None = proportional)."""
    return () if weights is None else tuple(sorted(weights.items()))


def build_methods(cfg: DictConfig) -> list[Method]:
    """Instantiate every non-null entry of ``cfg.methods``; names must be unique."""
    methods: list[Method] = []
    run_weights = _weights(cfg.aggregation.weights)
    for key, node in cfg.methods.items():
        if node is None:
            continue
        weights = _weights(node.get("aggregation")) if node.get("aggregation") is not None else run_weights
        ablation = node.get("ablation")
        methods.append(
            Method(
                name=str(node.get("name", key)),
                segmenter=instantiate(node.segmenter),
                clusters_from_labels=node.get("num_clusters") == "labels",
                weights=weights,
                ablation=OmegaConf.to_container(ablation, resolve=True) if ablation is not None else None,
            )
        )
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"methods: names must be unique, got duplicates {duplicates}")
    if not methods:
        raise ValueError("methods: no method configured (every entry is null)")
    return methods
