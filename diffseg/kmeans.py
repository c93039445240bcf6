"""K-means in torch, batched, on the tensor's device (diffseg/REFERENCE.md section 1 step 8, and section 2).

Two uses:

* the DiffSeg refinement: Lloyd's algorithm started at the merged proposals,
  one init (``lloyd``), following scikit-learn's ``KMeans(init=..., n_init=1)``
  semantics (tolerance relative to the data variance, empty clusters relocated
  to the farthest points, a final assignment step);
* the baselines K-Means-C (constant K) and K-Means-S (K = number of ground-truth
  classes): seeded k-means++ initialisation (greedy, ``2 + log K`` local
  trials), several inits, the lowest inertia kept (``kmeans``).

Shapes: ``x`` is ``(B, N, D)`` (B problems of N points in D dims); centers are
``(B, K, D)``. A single problem can be passed as ``(N, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["KMeansResult", "cluster_means", "kmeans", "kmeans_plusplus", "lloyd"]


@dataclass
class KMeansResult:
    """Result of a batched K-means run.

    Attributes:
        labels: ``LongTensor(B, N)`` cluster of each point.
        centers: ``(B, K, D)`` final centers.
        inertia: ``(B,)`` sum of squared distances to the assigned centers.
        n_iter: ``LongTensor(B,)`` Lloyd iterations run.
    """

    labels: torch.Tensor
    centers: torch.Tensor
    inertia: torch.Tensor
    n_iter: torch.Tensor


def _sq_distances(x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(B, N, K)`` between points and centers."""
    c_sq = (centers * centers).sum(dim=-1)
    dist = torch.baddbmm(x_sq[:, :, None] + c_sq[:, None, :], x, centers.transpose(1, 2), alpha=-2.0)
    return dist.clamp_min_(0.0)


def _sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums ``(B, K, D)`` and counts ``(B, K)``."""
    onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype).transpose(1, 2)  # (B, K, N)
    return torch.bmm(onehot, x), onehot.sum(dim=-1)


def cluster_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the points of each cluster, ``(B, K, D)``; NaN rows for empty clusters."""
    sums, counts = _sums(x, labels, k)
    return sums / counts[..., None]


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.ndim == 2:
        return x[None], True
    if x.ndim != 3:
        raise ValueError(f"x: expected (N, D) or (B, N, D), got shape {tuple(x.shape)}")
    return x, False


def lloyd(
    x: torch.Tensor, centers: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
) -> KMeansResult:
    """Lloyd's algorithm from given initial centers (scikit-learn semantics).

    Stops when the labels no longer change, or when the total squared center
    shift is at most ``tol * mean(var(x, axis=0))``; empty clusters are moved
    to the points farthest from their centers. Problems of the batch stop
    independently.

    Args:
        x: ``(B, N, D)`` or ``(N, D)`` points.
        centers: ``(B, K, D)`` or ``(K, D)`` initial centers.
    """
    x, single = _as_batch(x)
    centers = (centers[None] if single else centers).to(x.dtype).clone()
    batch, n, _ = x.shape
    k = centers.shape[1]
    x_sq = (x * x).sum(dim=-1)
    tol_abs = x.var(dim=1, unbiased=False).mean(dim=-1) * tol  # (B,)
    labels = torch.full((batch, n), -1, dtype=torch.long, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    strict = torch.zeros(batch, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(batch, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        dist = _sq_distances(x, x_sq, centers)
        new_labels = dist.argmin(dim=-1)
        sums, counts = _sums(x, new_labels, k)
        empty = counts == 0
        if bool(empty.any()):
            # Relocate each empty cluster to one of the points farthest from its center.
            far = dist.gather(2, new_labels[..., None])[..., 0]  # (B, N)
            for b, c in zip(*torch.nonzero(empty, as_tuple=True), strict=True):
                i = int(far[b].argmax())
                far[b, i] = -1.0
                old = new_labels[b, i]
                sums[b, old] -= x[b, i]
                counts[b, old] -= 1
                sums[b, c] = x[b, i]
                counts[b, c] = 1
        new_centers = sums / counts.clamp_min(1)[..., None]
        shift = ((new_centers - centers) ** 2).sum(dim=(1, 2))
        same = (new_labels == labels).all(dim=1)
        upd = active[:, None, None]
        centers = torch.where(upd, new_centers, centers)
        labels = torch.where(active[:, None], new_labels, labels)
        n_iter += active.long()
        strict |= active & same
        active = active & ~same & (shift > tol_abs)
        if not bool(active.any()):
            break
    # Final assignment so that labels match the final centers.
    dist = _sq_distances(x, x_sq, centers)
    final = dist.argmin(dim=-1)
    labels = torch.where(strict[:, None], labels, final)
    inertia = dist.gather(2, labels[..., None])[..., 0].sum(dim=1)
    result = KMeansResult(labels, centers, inertia, n_iter)
    if single:
        result = KMeansResult(labels[0], centers[0], inertia[0], n_iter[0])
    return result


def _uniform(generators: list[torch.Generator], count: int, like: torch.Tensor) -> torch.Tensor:
    """``(B, count)`` uniform draws on ``like``'s device, row ``b`` from ``generators[b]``.

    The generators live on the CPU and the draws are moved afterwards, so the seeds
    (and the clusterings) do not depend on the device the points are on.
    """
    return torch.stack([torch.rand(count, generator=g, dtype=like.dtype) for g in generators]).to(like.device)


def kmeans_plusplus(x: torch.Tensor, k: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Greedy k-means++ seeding, batched.

    The first center is a uniformly drawn point; each next one is the best (by
    resulting potential) of ``2 + int(log k)`` candidates drawn with probability
    proportional to the squared distance to the nearest chosen center.

    Args:
        x: ``(B, N, D)`` points.
        generators: one seeded CPU ``torch.Generator`` per problem, so a problem's
            draws depend neither on the rest of the batch nor on the device.

    Returns:
        ``(B, K, D)`` initial centers.
    """
    batch, n, dim = x.shape
    device = x.device
    trials = 2 + int(math.log(k))
    rows = torch.arange(batch, device=device)
    x_sq = (x * x).sum(dim=-1)
    centers = torch.empty(batch, k, dim, dtype=x.dtype, device=device)
    first = (_uniform(generators, 1, x)[:, 0] * n).long().clamp_(max=n - 1)
    centers[:, 0] = x[rows, first]
    closest = _sq_distances(x, x_sq, centers[:, :1])[..., 0]  # (B, N)
    for c in range(1, k):
        potential = closest.sum(dim=1, keepdim=True)
        draws = _uniform(generators, trials, x) * potential
        candidates = torch.searchsorted(closest.cumsum(dim=1), draws).clamp_(max=n - 1)  # (B, T)
        cand_points = x[rows[:, None], candidates]  # (B, T, D)
        to_cand = _sq_distances(x, x_sq, cand_points).transpose(1, 2)  # (B, T, N)
        to_cand = torch.minimum(to_cand, closest[:, None, :])
        best = to_cand.sum(dim=-1).argmin(dim=1)  # (B,)
        centers[:, c] = cand_points[rows, best]
        closest = to_cand[rows, best]
    return centers


def kmeans(
    x: torch.Tensor,
    k: int,
    n_init: int = 5,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> KMeansResult:
    """Seeded k-means++ K-means with several inits, the lowest inertia kept.

    Args:
        x: ``(B, N, D)`` or ``(N, D)`` points; the B problems share ``k``.
        k: number of clusters (``1 <= k <= N``).

    Returns:
        The best of ``n_init`` runs for each problem.
    """
    x, single = _as_batch(x)
    batch, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"num_clusters: expected 1 <= K <= {n} (number of points), got {k}")
    if n_init < 1:
        raise ValueError(f"n_init: expected >= 1, got {n_init}")
    # One CPU generator per problem, all seeded alike: an image gets the same inits
    # whatever batch it is clustered in and whatever device it is on.
    generators = [torch.Generator().manual_seed(seed) for _ in range(batch)]
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = lloyd(x, kmeans_plusplus(x, k, generators), max_iter=max_iter, tol=tol)
        if best is None:
            best = result
            continue
        better = result.inertia < best.inertia
        best = KMeansResult(
            torch.where(better[:, None], result.labels, best.labels),
            torch.where(better[:, None, None], result.centers, best.centers),
            torch.where(better, result.inertia, best.inertia),
            torch.where(better, result.n_iter, best.n_iter),
        )
    assert best is not None
    if single:
        return KMeansResult(best.labels[0], best.centers[0], best.inertia[0], best.n_iter[0])
    return best
