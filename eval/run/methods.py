"""The methods a run evaluates, built from the ``methods`` node of the config.

Each entry of ``cfg.methods`` (``null`` entries are skipped) looks like::

    name: DiffSeg                 # as printed in tables and used for masks/<name>/
    num_clusters: null            # "labels": K = distinct ground-truth classes (K-Means-S)
    aggregation: null             # null: the run's aggregation weights; or {64: 1.0, ...}
    ablation: null                # or {param, value, method}: a row of an ablation table
    segmenter: {_target_: diffseg.DiffSeg, ...}

A method on UNet features instead of attention (DiffCut) adds::

    features: {timestep: 50, noise_seed: 42}   # its own UNet pass (shared with the attention
                                               # pass when the settings are the same)
    output_size: 512                           # cluster maps upsampled to the evaluation size

A method on MM-DiT image-to-text attention (Seg4Diff) adds ``inputs: image_to_text``
(:mod:`eval.run.joint_passes`).

Every method of a run is scored under the run's protocol (``cfg.protocol``, :mod:`eval.metrics.protocols`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["FeaturePass", "Method", "build_methods", "ground_truth_class_counts", "upsample_ids", "weights_key"]


@dataclass(frozen=True)
class FeaturePass:
    """The UNet pass a feature method needs: timestep and DiffCut's shared seeded noise."""

    timestep: int | None  # None: the run's attention pass (one UNet pass feeds both captures)
    noise_seed: int


@dataclass
class Method:
    """One configured method: a callable on aggregated attention (or on UNet features) plus how to feed it."""

    name: str
    segmenter: Any
    clusters_from_labels: bool = False
    weights: dict[int, float] | None = None
    ablation: dict[str, Any] | None = None
    features: FeaturePass | None = None
    output_size: int | None = None
    text_attention: bool = False  # reads MM-DiT image-to-text maps (Seg4Diff; eval.run.joint_passes)

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Masks ``LongTensor(B, H, W)`` at the labels' size.

        ``inputs``: ``(B, S, S, S, S)`` aggregated attention, or ``(B, h*w, C)`` features for a
        feature method; ``labels``: ``(B, H, W)``.
        """
        if self.features is not None:
            return upsample_ids(self.segmenter(inputs), self.output_size or labels.shape[-1])
        if self.clusters_from_labels:
            return self.segmenter(inputs, num_clusters=ground_truth_class_counts(labels, num_classes))
        return self.segmenter(inputs)


def upsample_ids(ids: torch.Tensor, size: int) -> torch.Tensor:
    """Cluster maps ``(B, s, s)`` -> ``(B, size, size)`` as DiffSeg upsamples its proposals.

    Each cluster's indicator is resized bilinearly (half-pixel centres) and every pixel takes
    the cluster of the largest value, so boundaries fall between pixels as in DiffSeg's NMS.
    """
    if ids.shape[-1] == size:
        return ids
    count = int(ids.max()) + 1
    onehot = torch.nn.functional.one_hot(ids, count).permute(0, 3, 1, 2).float()
    up = torch.nn.functional.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False)
    return up.argmax(dim=1)


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


def _feature_pass(node: Any) -> FeaturePass | None:
    if node is None:
        return None
    timestep = node.get("timestep")
    return FeaturePass(int(timestep) if timestep is not None else None, int(node.get("noise_seed", 42)))


def build_methods(cfg: DictConfig) -> list[Method]:
    """Instantiate every non-null entry of ``cfg.methods``; names must be unique."""
    methods: list[Method] = []
    run_weights = _weights(cfg.aggregation.weights)
    for key, node in cfg.methods.items():
        if node is None:
            continue
        weights = _weights(node.get("aggregation")) if node.get("aggregation") is not None else run_weights
        ablation = node.get("ablation")
        features = node.get("features")
        if node.get("protocol") is not None:
            raise ValueError(f"methods.{key}.protocol: a method is scored under the run's protocol; "
                             "choose it with protocol=diffcut (conf/protocol/), not per method")
        methods.append(
            Method(
                name=str(node.get("name", key)),
                segmenter=instantiate(node.segmenter),
                clusters_from_labels=node.get("num_clusters") == "labels",
                weights=weights,
                ablation=OmegaConf.to_container(ablation, resolve=True) if ablation is not None else None,
                features=_feature_pass(features),
                output_size=int(node.output_size) if node.get("output_size") is not None else None,
                text_attention=node.get("inputs") == "image_to_text",
            )
        )
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"methods: names must be unique, got duplicates {duplicates}")
    if not methods:
        raise ValueError("methods: no method configured (every entry is null)")
    return methods
