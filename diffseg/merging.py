"""Iterative attention merging with a symmetric KL distance (diffseg/REFERENCE.md section 1, step 6).

Distance between two maps ``p`` and ``q`` (each a distribution over ``K`` keys):

    D(p, q) = 0.5 * (KL(p || q) + KL(q || p))
            = 0.5 * (sum p log p + sum q log q - sum p log q - sum q log p)

The first two sums are per-map terms; the last two are matrix products, so all
anchors are compared with all maps at once without building an
``anchors x maps x K`` tensor.

Non-finite distances never merge. A map that holds an exact zero has
``log 0 = -inf`` and every distance involving it is NaN or inf in the official
code, so such a map merges with nothing (and, as an anchor, forms an empty
group that is dropped).

``kl_precision="float16"`` reproduces the official first iteration, which casts
the anchors and maps to float16 before the KL: inputs are rounded to float16
(tiny probabilities become 0) and the sums are computed in float32.
``"float32"`` is the corrected variant that skips the rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "KL_PRECISIONS",
    "FirstMergeDistances",
    "anchor_grid",
    "first_merge",
    "first_merge_distances",
    "first_merge_groups",
    "greedy_merge",
    "kl_distance_matrix",
    "merge_proposals",
]

KL_PRECISIONS = ("float16", "float32")


def anchor_grid(num_points: int, side: int = 64) -> torch.Tensor:
    """The ``M x M`` anchor grid of the official release.

    With ``seg = (side - 1) // (M - 1)`` and ``total = seg * (M - 1)``, the
    coordinates are ``linspace(start, start + total, M)`` cast to int with
    ``start = (side - 1 - total) // 2`` (M=16, side=64 -> 1, 5, ..., 61), in both
    axes, row-major (``ij`` indexing).

    Returns:
        ``LongTensor(M*M, 2)`` of ``(row, col)`` query coordinates.
    """
    if num_points < 2:
        raise ValueError(f"num_points: expected an integer >= 2, got {num_points}")
    if num_points > side:
        raise ValueError(f"num_points: expected at most the attention side {side}, got {num_points}")
    seg = (side - 1) // (num_points - 1)
    total = seg * (num_points - 1)
    start = (side - 1 - total) // 2
    coords = np.linspace(start, start + total, num_points).astype(int)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    return torch.from_numpy(np.stack([rows.reshape(-1), cols.reshape(-1)], axis=1).astype(np.int64))


def _kl_terms(maps: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-map terms of the symmetric KL.

    Args:
        maps: ``(N, K)`` float tensor, rows are distributions.
        precision: ``"float16"`` rounds the inputs to float16 first.

    Returns:
        ``(x, log_x, neg_entropy, valid)``: ``x`` the (rounded) maps in float32
        ``(N, K)``, ``log_x`` its log ``(N, K)`` (``-inf`` at zeros),
        ``neg_entropy = sum x log x`` ``(N,)`` and ``valid`` ``(N,)`` bool, false
        for maps with a zero or non-finite entry.
    """
    if precision == "float16":
        x = maps.to(torch.float16).float()
    elif precision == "float32":
        x = maps.float()
    else:
        raise ValueError(f"kl_precision: expected one of {KL_PRECISIONS}, got {precision!r}")
    log_x = torch.log(x)
    neg_entropy = torch.linalg.vecdot(x, log_x)
    # A zero gives 0 * log 0 = NaN, a NaN or inf entry a non-finite sum: the row
    # entropy is finite exactly when every entry is positive and finite.
    valid = torch.isfinite(neg_entropy)
    return x, log_x, neg_entropy, valid


@contextmanager
def _no_tf32():
    """Keep float32 matmuls in full precision on CUDA (TF32 would move KL decisions)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


BORDERLINE = 1e-3  # distances this close to the threshold are recomputed exactly
_BORDER_CHUNK = 1024


def _refine_borderline(
    merge: torch.Tensor, distance: torch.Tensor, x: torch.Tensor, anchors: torch.Tensor, threshold: float
) -> None:
    """Decide the pairs near the threshold from an exact float64 distance.

    The matrix-product form subtracts terms of size ~10-30 to get distances of size ~1, so
    float32 leaves errors of ~1e-5; a pair that close to the threshold could merge or not
    depending on rounding. Those few pairs get ``0.5 * sum (p - q)(log p - log q)`` in
    float64 (every term non-negative), compared with the threshold in float64.

    Args:
        merge: ``(A, N)`` bool decisions, updated in place.
        distance: ``(A, N)`` float32 distances.
        x: ``(N, K)`` maps (as rounded for the KL); ``anchors``: ``(A,)`` rows of ``x``.
    """
    rows, cols = torch.nonzero((distance - threshold).abs() < BORDERLINE, as_tuple=True)
    for start in range(0, rows.numel(), _BORDER_CHUNK):
        r, c = rows[start : start + _BORDER_CHUNK], cols[start : start + _BORDER_CHUNK]
        # each distinct map converted and logged once (a map is in many pairs), then gathered per pair
        p_rows, p_of = torch.unique(anchors[r], return_inverse=True)
        q_rows, q_of = torch.unique(c, return_inverse=True)
        p, q = x[p_rows].double(), x[q_rows].double()
        log_p, log_q = torch.log(p), torch.log(q)
        exact = 0.5 * ((p[p_of] - q[q_of]) * (log_p[p_of] - log_q[q_of])).sum(dim=1)
        merge[r, c] = exact < threshold


@dataclass
class FirstMergeDistances:
    """The threshold-independent part of the first merging iteration (:func:`first_merge_distances`).

    Attributes:
        maps: ``(N', K)`` float32 maps that can merge (rows with a zero or non-finite entry dropped).
        x: ``(N', K)`` the same maps as rounded for the KL (float16 precision), float32; None once
            :func:`first_merge_groups` consumed it.
        anchors: ``LongTensor(A')`` rows of ``maps`` that are anchors (anchors whose own map cannot
            merge are dropped: their group is empty).
        distance: ``(A', N')`` float32 symmetric KL between each anchor and each map.
    """

    maps: torch.Tensor
    x: torch.Tensor | None
    anchors: torch.Tensor
    distance: torch.Tensor


def first_merge_distances(maps: torch.Tensor, anchors: torch.Tensor, precision: str = "float16") -> FirstMergeDistances:
    """Distances of every anchor to every map, the part of :func:`first_merge` that no threshold changes.

    An interactive threshold change (``eval.explore``) keeps this and calls only
    :func:`first_merge_groups`. Args as :func:`first_merge`.
    """
    x, log_x, neg_entropy, valid = _kl_terms(maps, precision)
    anchors = anchors.to(maps.device)
    # Maps with a zero or non-finite entry merge with nothing: their anchors form empty
    # groups (dropped) and no group contains them, so the products only need valid rows.
    anchors = anchors[valid[anchors]]
    if not bool(valid.all()):
        rows = torch.nonzero(valid)[:, 0]
        x, log_x, neg_entropy, maps = x[rows], log_x[rows], neg_entropy[rows], maps[rows]
        anchors = torch.searchsorted(rows, anchors)  # positions of the anchors among the valid rows
    if anchors.numel() == 0:
        return FirstMergeDistances(maps, x, anchors, torch.zeros(0, maps.shape[0], device=maps.device))
    with _no_tf32():
        # cross[a, q] = sum_k x_a log x_q + log x_a x_q
        cross = torch.addmm(torch.mm(x[anchors], log_x.T), log_x[anchors], x.T)
    del log_x
    distance = 0.5 * (neg_entropy[anchors, None] + neg_entropy[None, :] - cross)
    return FirstMergeDistances(maps, x, anchors, distance)


def first_merge_groups(prepared: FirstMergeDistances, threshold: float, consume: bool = False) -> torch.Tensor:
    """The proposals of the first merging iteration at ``threshold``, from :func:`first_merge_distances`.

    ``consume=True`` releases ``prepared.x`` before the group sums (the peak memory of
    :func:`first_merge`); ``prepared`` then serves no other threshold. Returns as :func:`first_merge`.
    """
    maps, anchors, distance = prepared.maps, prepared.anchors, prepared.distance
    if anchors.numel() == 0:
        return torch.zeros(0, maps.shape[1], dtype=torch.float64, device=maps.device)
    if prepared.x is None:
        raise ValueError("first_merge_groups: these distances were consumed by an earlier call")
    merge = distance < threshold  # NaN (never here: rows are valid) would not merge either
    _refine_borderline(merge, distance, prepared.x, anchors, threshold)
    if consume:
        prepared.x = None
    counts = merge.sum(dim=1)
    keep = counts > 0
    merge = merge[keep]
    with _no_tf32():
        sums = torch.mm(merge.to(maps.dtype), maps)
    return sums.double() / counts[keep, None].double()


def first_merge(
    maps: torch.Tensor, anchors: torch.Tensor, threshold: float, precision: str = "float16"
) -> torch.Tensor:
    """First merging iteration: every anchor averages the maps close to it.

    Args:
        maps: ``(N, K)`` float32 maps (``N = S*S`` queries, ``K = S*S`` keys).
        anchors: ``LongTensor(A,)`` row indices of the anchor maps.
        threshold: merge when ``D(anchor, map) < threshold``.
        precision: ``"float16"`` (official rounding) or ``"float32"``.

    Returns:
        ``(P, K)`` float64 proposals in anchor order, ``P <= A``: anchors whose
        group is empty are dropped (the official code would average them into
        NaN). No de-duplication.
    """
    return first_merge_groups(first_merge_distances(maps, anchors, precision), threshold, consume=True)


def kl_distance_matrix(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric KL between all pairs of a small set of maps, in float64.

    Args:
        maps: ``(P, K)`` float tensor.

    Returns:
        ``(distance, valid)``: ``(P, P)`` float64 distances (non-finite where a
        map holds a zero) and ``(P,)`` bool validity of each map.
    """
    x = maps.double()
    log_x = torch.log(x)
    neg_entropy = torch.linalg.vecdot(x, log_x)
    valid = torch.isfinite(neg_entropy)
    cross = x @ log_x.T  # cross[i, j] = sum x_i log x_j
    distance = 0.5 * (neg_entropy[:, None] + neg_entropy[None, :] - cross - cross.T)
    return distance, valid


def greedy_merge(proposals: torch.Tensor, threshold: float) -> torch.Tensor:
    """One later merging iteration (greedy, in proposal order).

    A proposal not yet used as an anchor or merged into a group becomes an
    anchor; every proposal with ``D < threshold`` to it joins its group, also
    one already merged into an earlier group (as the official code does); the
    group mean is a new proposal and all members are marked used.

    Args:
        proposals: ``(P, K)`` float64.

    Returns:
        ``(P', K)`` float64 group means, ``P' <= P``.
    """
    if proposals.shape[0] == 0:
        return proposals
    distance, valid = kl_distance_matrix(proposals)
    merge = ((distance < threshold) & valid[:, None] & valid[None, :]).cpu().numpy()
    used = np.zeros(merge.shape[0], dtype=bool)
    groups = []
    for i in range(merge.shape[0]):  # at most A iterations over a small bool matrix
        if used[i]:
            continue
        used[i] = True
        row = merge[i]
        if row.any():
            used |= row
            groups.append(row)
    if not groups:
        return proposals[:0]
    membership = torch.from_numpy(np.stack(groups)).to(device=proposals.device, dtype=proposals.dtype)
    return (membership @ proposals) / membership.sum(dim=1, keepdim=True)


def merge_proposals(
    maps: torch.Tensor,
    thresholds: Sequence[float],
    num_points: int = 16,
    precision: str = "float16",
) -> torch.Tensor:
    """All merging iterations for one image.

    Args:
        maps: ``(S, S, S, S)`` or ``(S*S, S*S)`` aggregated attention of one image.
        thresholds: one KL threshold per iteration (the first uses the anchor
            grid, the others the greedy pass).
        num_points: anchor grid size ``M``.
        precision: KL precision of the first iteration.

    Returns:
        ``(P, S*S)`` float64 proposals (``P`` may be 0 when every anchor is empty).
    """
    side = int(round(maps.numel() ** 0.25))
    flat = maps.reshape(side * side, side * side)
    grid = anchor_grid(num_points, side)
    anchors = grid[:, 0] * side + grid[:, 1]
    proposals = first_merge(flat, anchors, thresholds[0], precision)
    for threshold in thresholds[1:]:
        proposals = greedy_merge(proposals, threshold)
    return proposals
