"""Segmenters that turn an aggregated attention tensor into label masks.

Both take the output of :func:`diffseg.aggregate_attention`, a float tensor
``(B, S, S, S, S)`` (or one image ``(S, S, S, S)``), and return
``LongTensor(B, output_size, output_size)`` masks whose values index the
segments found for that image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffseg.kmeans import cluster_means, kmeans, lloyd
from diffseg.merging import KL_PRECISIONS, anchor_grid, merge_proposals
from diffseg.nms import nms_mask

__all__ = ["DiffSeg", "KMeansSegmenter", "check_attention"]


def check_attention(attention: torch.Tensor) -> torch.Tensor:
    """Validate an aggregated attention tensor and return it as ``(B, S, S, S, S)``.

    Raises ``ValueError`` for another shape, an integer dtype, or NaN, infinite or negative values
    (a degenerate input would otherwise come out as one segment per image without a word).
    """
    if attention.ndim == 4:
        attention = attention[None]
    shape = tuple(attention.shape)
    if attention.ndim != 5 or len(set(shape[1:])) != 1:
        raise ValueError(
            f"attention: expected the aggregated tensor (B, S, S, S, S) or (S, S, S, S), got shape {shape}"
        )
    if not attention.is_floating_point():
        raise ValueError(f"attention: expected a floating-point tensor, got {attention.dtype}")
    if not bool(torch.isfinite(attention).all()):
        raise ValueError("attention: holds NaN or infinite values (non-finite aggregation weights or backbone output?)")
    if bool((attention < 0).any()):
        raise ValueError("attention: holds negative values (attention maps are probabilities; negative weights?)")
    return attention


def _means_without_empty(points: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Cluster means ``(K', D)`` of one problem in label order, empty clusters dropped."""
    means = cluster_means(points[None], labels[None], k)[0]
    return means[torch.isfinite(means).all(dim=1)]


class DiffSeg:
    """DiffSeg: iterative KL merging from an anchor grid, then NMS.

    Args:
        kl_threshold: merge threshold, one float for every iteration or one per
            iteration (paper: 1.1 on COCO-Stuff-27, 0.9 on Cityscapes).
        num_points: anchor grid side ``M`` (``M*M`` anchors).
        iterations: number of merging iterations (the first from the anchors).
        refine: run the optional K-means refinement started at the proposals.
        kl_precision: ``"float16"`` reproduces the official float16 rounding
            in the first iteration; ``"float32"`` is the corrected variant.
        output_size: side of the output masks.
        refine_max_iter, refine_tol: Lloyd settings of the refinement
            (scikit-learn's defaults).
    """

    def __init__(
        self,
        kl_threshold: float | Sequence[float] = 1.1,
        num_points: int = 16,
        iterations: int = 3,
        refine: bool = False,
        kl_precision: str = "float16",
        output_size: int = 512,
        refine_max_iter: int = 300,
        refine_tol: float = 1e-4,
    ):
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations: expected an integer >= 1, got {iterations!r}")
        if isinstance(kl_threshold, (int, float)):
            thresholds = [float(kl_threshold)] * iterations
        else:
            thresholds = [float(t) for t in kl_threshold]
            if len(thresholds) != iterations:
                raise ValueError(
                    f"kl_threshold: expected one float or {iterations} values (one per iteration), "
                    f"got {len(thresholds)}"
                )
        for t in thresholds:
            if not (t > 0 and math.isfinite(t)):
                raise ValueError(f"kl_threshold: expected values > 0, got {t}")
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
            raise ValueError(f"num_points: expected an integer >= 2, got {num_points!r}")
        if kl_precision not in KL_PRECISIONS:
            raise ValueError(f"kl_precision: expected one of {KL_PRECISIONS}, got {kl_precision!r}")
        if output_size < 1:
            raise ValueError(f"output_size: expected a positive integer, got {output_size}")
        self.thresholds = thresholds
        self.num_points = num_points
        self.iterations = iterations
        self.refine = refine
        self.kl_precision = kl_precision
        self.output_size = output_size
        self.refine_max_iter = refine_max_iter
        self.refine_tol = refine_tol

    def __repr__(self) -> str:
        return (
            f"DiffSeg(kl_threshold={self.thresholds}, num_points={self.num_points}, "
            f"refine={self.refine}, kl_precision={self.kl_precision!r}, output_size={self.output_size})"
        )

    def proposals(self, attention: torch.Tensor) -> torch.Tensor:
        """Final proposal maps of one image.

        Args:
            attention: ``(S, S, S, S)`` aggregated attention.

        Returns:
            ``(P, S*S)`` float64 maps, in the order NMS numbers them.
        """
        side = attention.shape[-1]
        anchor_grid(self.num_points, side)  # validates num_points against the side
        proposals = merge_proposals(attention, self.thresholds, self.num_points, self.kl_precision)
        return self.refined(attention, proposals)

    def refined(self, attention: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """``proposals`` ``(P, S*S)`` after the K-means refinement when ``refine`` is on, else unchanged.

        Lloyd's algorithm over the ``S*S`` maps of ``attention`` ``(S, S, S, S)``, started at the
        proposals; empty clusters are dropped. Returns ``(P', S*S)`` float64, ``P' <= P``.
        """
        if not self.refine or proposals.shape[0] == 0:
            return proposals
        side = attention.shape[-1]
        points = attention.reshape(side * side, side * side).double()
        result = lloyd(points, proposals, max_iter=self.refine_max_iter, tol=self.refine_tol)
        return _means_without_empty(points, result.labels, proposals.shape[0])

    def __call__(self, attention: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            attention: ``(B, S, S, S, S)`` or ``(S, S, S, S)`` aggregated attention.

        Returns:
            ``LongTensor(B, output_size, output_size)`` masks.
        """
        attention = check_attention(attention)
        masks = [nms_mask(self.proposals(a), self.output_size) for a in attention]
        return torch.stack(masks)


@dataclass(eq=False, repr=False)
class KMeansSegmenter:
    """K-means baseline over the ``S*S`` attention maps of each image.

    K-Means-C uses a constant ``num_clusters`` (6 in the paper); K-Means-S
    passes ``num_clusters`` per call (the number of ground-truth classes of each
    image). Pixels are assigned by NMS of the cluster-mean maps.

    Args:
        num_clusters: default K.
        seed: seed of the k-means++ initialisation (per call, so results do not
            depend on what ran before).
        n_init: number of inits; the lowest inertia is kept.
        max_iter, tol: Lloyd settings of each init.
        output_size: side of the output masks.
    """

    num_clusters: int = 6
    seed: int = 0
    n_init: int = 5
    max_iter: int = 300
    tol: float = 1e-4
    output_size: int = 512

    def __post_init__(self) -> None:
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters: expected an integer >= 1, got {self.num_clusters}")

    def __repr__(self) -> str:
        return f"KMeansSegmenter(num_clusters={self.num_clusters}, seed={self.seed}, n_init={self.n_init})"

    def __call__(
        self, attention: torch.Tensor, num_clusters: int | Sequence[int] | None = None
    ) -> torch.Tensor:
        """Segment a batch.

        Args:
            attention: ``(B, S, S, S, S)`` or ``(S, S, S, S)``.
            num_clusters: ``None`` for the default K, one int for the batch, or
                one int per image. Images that share K are clustered together
                in one batched run.

        Returns:
            ``LongTensor(B, output_size, output_size)`` masks.
        """
        attention = check_attention(attention)
        batch, side = attention.shape[0], attention.shape[-1]
        if num_clusters is None:
            ks = [self.num_clusters] * batch
        elif isinstance(num_clusters, int):
            ks = [num_clusters] * batch
        else:
            ks = [int(k) for k in num_clusters]
            if len(ks) != batch:
                raise ValueError(f"num_clusters: expected {batch} values (one per image), got {len(ks)}")
        points = attention.reshape(batch, side * side, side * side).float()
        masks: list[torch.Tensor | None] = [None] * batch
        for k in sorted(set(ks)):
            idx = [i for i, ki in enumerate(ks) if ki == k]
            group = points[idx]
            result = kmeans(group, k, n_init=self.n_init, seed=self.seed, max_iter=self.max_iter, tol=self.tol)
            for j, i in enumerate(idx):
                means = _means_without_empty(group[j], result.labels[j], k)
                masks[i] = nms_mask(means, self.output_size)
        return torch.stack(masks)  # type: ignore[arg-type]
