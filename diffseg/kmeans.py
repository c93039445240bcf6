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

The problems of a batch run one after the other, each with exactly the operations
(and so the float rounding) of a call on that problem alone: a batch's results equal
per-problem calls bit for bit and cost their sum. This matters: on near-uniform
points (attention maps of a random-weight model) the float32 distance expansion
decides many assignments by rounding, so a batched matrix product (which rounds
differently) gave other clusterings than per-image calls. Lloyd runs that enter a
cycle of states (labels and centers, bit for bit) skip to the cycle's state at
``max_iter`` instead of iterating there.
"""

from __future__ import annotations

import hashlib
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


def _relocate_empty(
    x: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor
) -> None:
    """Move each empty cluster of one problem to one of the points farthest from its center, in place.

    ``x`` ``(1, N, D)``, ``dist`` ``(1, N, K)``, ``labels`` ``(1, N)``, ``sums`` ``(1, K, D)``,
    ``counts`` ``(1, K)``. Empty clusters are filled in index order, each with the farthest point
    not yet taken; ``labels`` is left as assigned (as scikit-learn's relocation does).
    """
    far = dist.gather(2, labels[..., None])[0, :, 0]  # (N,)
    for c in torch.nonzero(counts[0] == 0)[:, 0].tolist():
        i = int(far.argmax())
        far[i] = -1.0
        old = labels[0, i]
        sums[0, old] -= x[0, i]
        counts[0, old] -= 1
        sums[0, c] = x[0, i]
        counts[0, c] = 1


def _state_digest(labels: torch.Tensor, centers: torch.Tensor) -> bytes:
    """Digest of the exact bytes of a Lloyd state (labels and centers)."""
    digest = hashlib.blake2b(labels.cpu().contiguous().view(torch.uint8).numpy().tobytes(), digest_size=32)
    digest.update(centers.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _lloyd_one(
    x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, max_iter: int, tol_abs: torch.Tensor
) -> KMeansResult:
    """Lloyd's algorithm on one problem kept as a batch of one.

    ``x`` ``(1, N, D)``, ``x_sq`` ``(1, N)`` its squared norms, ``centers`` ``(1, K, D)``, ``tol_abs``
    ``(1,)``. Every problem runs alone (never padded into a batch), so its result does not depend on
    the rest of a batch.

    An iteration maps the state (labels, centers) to the next one deterministically, so a state seen
    before, bit for bit, starts a cycle that repeats (without stopping: each of its steps was checked)
    until ``max_iter``. Such a run is cut short: after the first repeat it only runs the few steps
    that bring it to the cycle's state at ``max_iter``, and reports ``max_iter`` iterations.
    """
    n, k = x.shape[1], centers.shape[1]
    labels = torch.full((1, n), -1, dtype=torch.long, device=x.device)
    seen: dict[bytes, int] | None = {}  # state digest -> iteration it was reached at
    strict = False
    n_iter, end = 0, max_iter
    while n_iter < end:
        dist = _sq_distances(x, x_sq, centers)
        new_labels = dist.argmin(dim=-1)
        sums, counts = _sums(x, new_labels, k)
        if bool((counts == 0).any()):
            _relocate_empty(x, dist, new_labels, sums, counts)
        new_centers = sums / counts.clamp_min(1)[..., None]
        shift = ((new_centers - centers) ** 2).sum(dim=(1, 2))
        same = bool((new_labels == labels).all())
        centers, labels = new_centers, new_labels
        n_iter += 1
        if same:
            strict = True
            break
        if not bool((shift > tol_abs).all()):
            break
        if seen is not None:
            key = _state_digest(labels, centers)
            if key in seen:
                # Periodic from here: the state at max_iter is the one ``rest`` steps on.
                period = n_iter - seen[key]
                end = n_iter + (max_iter - n_iter) % period
                seen = None
            else:
                seen[key] = n_iter
    if seen is None:
        n_iter = max_iter
    # Final assignment so that labels match the final centers.
    dist = _sq_distances(x, x_sq, centers)
    if not strict:
        labels = dist.argmin(dim=-1)
    inertia = dist.gather(2, labels[..., None])[..., 0].sum(dim=1)
    return KMeansResult(labels, centers, inertia, torch.tensor([n_iter], device=x.device))


def _stack(results: list[KMeansResult]) -> KMeansResult:
    """Concatenate batch-of-one results along the batch dimension."""
    return KMeansResult(*(torch.cat([getattr(r, f) for r in results]) for f in ("labels", "centers", "inertia",
                                                                                  "n_iter")))


def lloyd(
    x: torch.Tensor, centers: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
) -> KMeansResult:
    """Lloyd's algorithm from given initial centers (scikit-learn semantics).

    Stops when the labels no longer change, or when the total squared center
    shift is at most ``tol * mean(var(x, axis=0))``; empty clusters are moved
    to the points farthest from their centers. Problems of the batch run one
    after the other, each exactly as if it were passed alone.

    Args:
        x: ``(B, N, D)`` or ``(N, D)`` points.
        centers: ``(B, K, D)`` or ``(K, D)`` initial centers.
    """
    x, single = _as_batch(x)
    centers = (centers[None] if single else centers).to(x.dtype)
    results = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        tol_abs = xb.var(dim=1, unbiased=False).mean(dim=-1) * tol  # (1,)
        results.append(_lloyd_one(xb, (xb * xb).sum(dim=-1), centers[b : b + 1].clone(), max_iter, tol_abs))
    result = _stack(results)
    if single:
        return KMeansResult(result.labels[0], result.centers[0], result.inertia[0], result.n_iter[0])
    return result


def _uniform(generators: list[torch.Generator], count: int, like: torch.Tensor) -> torch.Tensor:
    """``(B, count)`` uniform draws on ``like``'s device, row ``b`` from ``generators[b]``.

    The generators live on the CPU and the draws are moved afterwards, so the seeds
    (and the clusterings) do not depend on the device the points are on.
    """
    return torch.stack([torch.rand(count, generator=g, dtype=like.dtype) for g in generators]).to(like.device)


def kmeans_plusplus(
    x: torch.Tensor, k: int, generators: list[torch.Generator], x_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy k-means++ seeding, batched.

    The first center is a uniformly drawn point; each next one is the best (by
    resulting potential) of ``2 + int(log k)`` candidates drawn with probability
    proportional to the squared distance to the nearest chosen center.

    Args:
        x: ``(B, N, D)`` points.
        generators: one seeded CPU ``torch.Generator`` per problem, so a problem's
            draws depend neither on the rest of the batch nor on the device.
        x_sq: ``(B, N)`` squared norms of the points, if already at hand.

    Returns:
        ``(B, K, D)`` initial centers.
    """
    batch, n, dim = x.shape
    device = x.device
    trials = 2 + int(math.log(k))
    rows = torch.arange(batch, device=device)
    if x_sq is None:
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
        The best of ``n_init`` runs for each problem (``n_iter``: the Lloyd iterations of the
        kept run, ``max_iter`` for a run cut short at a cycle).
    """
    x, single = _as_batch(x)
    batch, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"num_clusters: expected 1 <= K <= {n} (number of points), got {k}")
    if n_init < 1:
        raise ValueError(f"n_init: expected >= 1, got {n_init}")
    # One CPU generator per problem, all seeded alike: an image gets the same inits
    # whatever batch it is clustered in and whatever device it is on. Problems run one
    # after the other, each exactly as if it were passed alone.
    results = []
    for b in range(batch):
        xb = x[b : b + 1]
        x_sq = (xb * xb).sum(dim=-1)
        tol_abs = xb.var(dim=1, unbiased=False).mean(dim=-1) * tol
        generators = [torch.Generator().manual_seed(seed)]
        best: KMeansResult | None = None
        for _ in range(n_init):
            centers = kmeans_plusplus(xb, k, generators, x_sq=x_sq)
            result = _lloyd_one(xb, x_sq, centers, max_iter, tol_abs)
            if best is None or bool(result.inertia < best.inertia):
                best = result
        assert best is not None
        results.append(best)
    best = _stack(results)
    if single:
        return KMeansResult(best.labels[0], best.centers[0], best.inertia[0], best.n_iter[0])
    return best
