"""Slow, independent float64 re-implementations of the DiffSeg steps, for tests only.

Written from diffseg/REFERENCE.md's description with plain loops and NumPy, sharing no
code with the ``diffseg`` package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bilinear_half_pixel(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping (no antialiasing)."""
    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w), dtype=np.float64)
    for y in range(out_h):
        sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), in_h - 1)
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for x in range(out_w):
            sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), in_w - 1)
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out


def aggregate(maps: dict[int, np.ndarray], weights: dict[int, float] | None = None) -> np.ndarray:
    """(S, S, S, S) aggregation of one image's {s: (s*s, s*s)} maps."""
    big = max(maps)
    if weights is None:
        weights = {s: s / sum(maps) for s in maps}
    out = np.zeros((big, big, big, big))
    for s, a in maps.items():
        r = big // s
        for qi in range(big):
            for qj in range(big):
                src = a[(qi // r) * s + (qj // r)].reshape(s, s).astype(np.float64)
                up = bilinear_half_pixel(src, big, big)
                out[qi, qj] += weights.get(s, 0.0) * up / up.sum()
    return out


def grid_coords(num_points: int, side: int) -> list[tuple[int, int]]:
    seg = (side - 1) // (num_points - 1)
    total = seg * (num_points - 1)
    start = (side - 1 - total) // 2
    coords = [int(v) for v in np.linspace(start, start + total, num_points)]
    return [(i, j) for i in coords for j in coords]


def sym_kl(p: np.ndarray, q: np.ndarray) -> float:
    """0.5 * (KL(p||q) + KL(q||p)) in float64; NaN/inf propagate as in the official code."""
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = np.log(p) - np.log(q)
        return float(np.sum(p * quotient) / 2 - np.sum(q * quotient) / 2)


def greedy_groups(items: Sequence, distance: Callable[[Any, Any], float], threshold: float) -> list[list[int]]:
    """Greedy grouping of the official merging: anchors in index order, skipping any already in a group;
    an anchor's group is the index of every item closer to it than ``threshold`` by ``distance`` (grouped
    ones included; NaN is never closer), an empty group is dropped. Returns the groups as lists of indices."""
    groups: list[list[int]] = []
    for anchor in range(len(items)):
        if not any(anchor in group for group in groups):
            members = [j for j, item in enumerate(items) if distance(items[anchor], item) < threshold]
            if members:
                groups.append(members)
    return groups


def merge(attn: np.ndarray, thresholds: list[float], num_points: int, fp16: bool) -> np.ndarray:
    """Official iterative merging for one (S, S, S, S) tensor; returns (P, S*S) proposals.

    Empty first-iteration groups are dropped (the official code would make them
    NaN and drop them in the next iteration).
    """
    side = attn.shape[0]
    flat = attn.reshape(side * side, side * side).astype(np.float64)
    cast = flat.astype(np.float16).astype(np.float64) if fp16 else flat
    proposals = []
    for i, j in grid_coords(num_points, side):
        anchor = cast[i * side + j]
        members = [m for m in range(flat.shape[0]) if sym_kl(anchor, cast[m]) < thresholds[0]]
        if members:
            proposals.append(flat[members].mean(axis=0))
    current = np.array(proposals).reshape(-1, side * side)
    for tau in thresholds[1:]:
        groups = greedy_groups(current, sym_kl, tau)
        current = np.array([current[g].mean(axis=0) for g in groups]).reshape(-1, side * side)
    return current


def nms(proposals: np.ndarray, out: int) -> np.ndarray:
    """(P, s*s) proposals -> (out, out) argmax labels of the bilinear-upsampled maps."""
    side = int(round(np.sqrt(proposals.shape[1])))
    ups = np.stack([bilinear_half_pixel(p.reshape(side, side), out, out) for p in proposals])
    return ups.argmax(axis=0)


def lloyd(x: np.ndarray, centers: np.ndarray, max_iter: int = 300, tol: float = 1e-4):
    """Plain Lloyd iterations with scikit-learn's stopping rules; no empty-cluster handling (asserted unneeded).

    ``x`` (N, D), ``centers`` (K, D). Stops when the labels repeat (strict convergence) or when the
    centers move by at most ``tol`` times the mean variance of ``x``; unless strictly converged, the
    labels are then assigned again to the final centers. Returns labels (N,) and centers (K, D).
    """
    tol_abs = x.var(axis=0).mean() * tol
    labels = None
    for _ in range(max_iter):
        new_labels = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1).argmin(1)
        assert all((new_labels == k).any() for k in range(len(centers))), "reference: no empty clusters expected"
        new_centers = np.stack([x[new_labels == k].mean(0) for k in range(len(centers))])
        shift = ((new_centers - centers) ** 2).sum()
        centers = new_centers
        if labels is not None and np.array_equal(labels, new_labels):
            return labels, centers
        labels = new_labels
        if shift <= tol_abs:
            break
    return ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1).argmin(1), centers
