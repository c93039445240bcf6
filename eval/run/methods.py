"""The methods a run evaluates, built from the ``methods`` node of the config.

Each entry of the config's ``methods`` (``null`` entries are skipped) looks like::

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

Every method of a run is scored under the run's protocol (``protocol``, :mod:`eval.metrics.protocols`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from eval.spec import FeaturePass, as_spec

__all__ = ["FeaturePass", "Method", "build_methods", "ground_truth_class_counts", "upsample_ids", "weights_key"]


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


def weights_key(weights: Mapping[int, float] | None) -> tuple:
    """Hashable key of an aggregation setting (None = proportional)."""
    return () if weights is None else tuple(sorted(weights.items()))


def build_methods(spec: Any) -> list[Method]:
    """The run's methods, on the segmenters the spec built (a composed config is made a spec first).

    ``spec``: a :class:`~eval.spec.RunSpec` (or a config, :func:`eval.spec.as_spec`); its methods are checked
    (unique names, at least one) when it is built.
    """
    return [Method(name=m.name, segmenter=m.segmenter, clusters_from_labels=m.clusters_from_labels,
                   weights=m.weights, ablation=m.ablation, features=m.features, output_size=m.output_size,
                   text_attention=m.text_attention)
            for m in as_spec(spec).methods]
