"""K-means (diffseg.kmeans): a plain reference implementation, batching, and the skipped Lloyd cycles."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from reference_impl import lloyd as reference_lloyd

import diffseg.kmeans as km
from diffseg import KMeansSegmenter
from eval.bench.pipeline import Stage, bench_kmeans


# ------------------------------------------------------------------------------------------ reference
def _reference_kmeans(x: np.ndarray, k: int, n_init: int, seed: int, max_iter: int = 300, tol: float = 1e-4
                      ) -> np.ndarray:
    """Straightforward float64 K-means of one problem ``x`` ``(N, D)``: greedy k-means++ from the same
    seeded CPU generator draws (float64, as the points: one uniform for the first center, ``2 + int(log k)``
    per next one), Lloyd with scikit-learn's stopping rules (``reference_impl.lloyd``), the first lowest
    inertia kept.
    Returns labels ``(N,)``."""
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    trials = 2 + int(math.log(k))

    def sq(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        return ((a[:, None, :] - c[None, :, :]) ** 2).sum(-1)

    best_labels, best_inertia = None, np.inf
    for _ in range(n_init):
        first = min(int(float(torch.rand(1, generator=gen, dtype=torch.float64)[0]) * n), n - 1)
        centers = [x[first]]
        closest = sq(x, x[first][None])[:, 0]
        for _ in range(1, k):
            draws = torch.rand(trials, generator=gen, dtype=torch.float64).numpy() * closest.sum()
            cand = np.minimum(np.searchsorted(np.cumsum(closest), draws, side="left"), n - 1)
            pots = [np.minimum(closest, sq(x, x[c][None])[:, 0]) for c in cand]
            best = int(np.argmin([p.sum() for p in pots]))
            centers.append(x[cand[best]])
            closest = pots[best]
        labels, c = reference_lloyd(x, np.stack(centers), max_iter, tol)
        inertia = sq(x, c)[np.arange(n), labels].sum()
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    assert best_labels is not None
    return best_labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _blobs(seed: int, n: int = 90, centers: int = 4, dim: int = 6, spread: float = 3.0) -> np.ndarray:
    gen = np.random.default_rng(seed)
    c = gen.normal(scale=4.0, size=(centers, dim))
    return c[np.arange(n) % centers] + gen.normal(scale=spread, size=(n, dim))


@pytest.mark.parametrize("seed, k", [(0, 3), (1, 4), (2, 5), (3, 6)])
def test_kmeans_matches_plain_reference(seed, k):
    x = _blobs(seed)
    want = _reference_kmeans(x, k, n_init=3, seed=seed)
    got = km.kmeans(torch.from_numpy(x), k, n_init=3, seed=seed).labels.numpy()
    assert len(set(want.tolist())) == k  # several clusters: the comparison can fail
    assert _same_partition(got, want)
    # A twin with another seed picks other inits: on overlapping blobs some partition differs.
    assert any(not _same_partition(km.kmeans(torch.from_numpy(x), k, n_init=1, seed=s).labels.numpy(), want)
               for s in range(seed + 1, seed + 8))


def test_batched_equals_per_image_on_attention_like_points():
    """Near-uniform rows (like random-weight attention, where float32 rounding decides many points):
    a batch gives each image exactly what a call on that image alone gives."""
    gen = torch.Generator().manual_seed(5)
    x = torch.softmax(0.05 * torch.randn(3, 200, 200, generator=gen), dim=-1)
    both = km.kmeans(x, 6, n_init=2, seed=0)
    for b in range(3):
        alone = km.kmeans(x[b : b + 1], 6, n_init=2, seed=0)
        assert len(both.labels[b].unique()) == 6
        assert torch.equal(both.labels[b], alone.labels[0])
        assert torch.equal(both.centers[b], alone.centers[0])
        assert torch.equal(both.n_iter[b], alone.n_iter[0])


# ----------------------------------------------------------------------------------- cycle skipping
def _cycling_distances(perm: list[int]):
    """A ``_sq_distances`` stand-in that measures to the centers permuted by ``perm``: the labels (and
    centers) then go round a cycle whose period is the order of ``perm``."""
    original = km._sq_distances

    def dist(x, x_sq, centers):
        return original(x, x_sq, centers[:, perm] if centers.shape[1] == len(perm) else centers)

    return dist


@pytest.mark.parametrize("perm", [[1, 0, 2], [1, 2, 0]])
@pytest.mark.parametrize("max_iter", [40, 41, 42])
def test_lloyd_cycles_are_skipped_to_the_same_end_state(monkeypatch, perm, max_iter):
    x = torch.from_numpy(_blobs(7, n=60, centers=3, dim=4, spread=0.3))
    init = x[[0, 1, 2]].clone()
    monkeypatch.setattr(km, "_sq_distances", _cycling_distances(perm))
    calls = []
    digest = km._state_digest
    monkeypatch.setattr(km, "_state_digest", lambda labels, centers: calls.append(1) or digest(labels, centers))
    skipped = km.lloyd(x, init, max_iter=max_iter)
    steps = len(calls)
    assert skipped.n_iter == max_iter and steps < 12  # cut short after the first repeat

    count = iter(range(10**6))  # every state looks new: the full max_iter iterations run
    monkeypatch.setattr(km, "_state_digest", lambda labels, centers: next(count).to_bytes(8, "little"))
    full = km.lloyd(x, init, max_iter=max_iter)
    assert full.n_iter == max_iter
    assert torch.equal(skipped.labels, full.labels)
    assert torch.equal(skipped.centers, full.centers)
    assert torch.equal(skipped.inertia, full.inertia)
    # The end state depends on where max_iter falls in the cycle (the check can fail).
    shorter = km.lloyd(x, init, max_iter=max_iter - 1)
    assert not torch.equal(shorter.labels, full.labels)


def test_bench_kmeans_stage_reports_batched_equal_to_per_image():
    gen = torch.Generator().manual_seed(2)
    attention = torch.softmax(0.05 * torch.randn(2, 8, 8, 64, generator=gen), dim=-1).reshape(2, 8, 8, 8, 8)
    seg = KMeansSegmenter(num_clusters=4, n_init=2, output_size=16)
    stage = Stage("K-Means-C", "batched", "per image", "note")
    setup = SimpleNamespace(images=2, base_images=1)
    masks, base = bench_kmeans(setup, stage, lambda a, lab: seg(a), [attention], [torch.zeros(2, 16, 16)])
    assert masks[0].shape == (2, 16, 16) and len(base) == 1 and len(masks[0][0].unique()) > 1
    assert stage.note == "note; batched vs per-image masks: 100.000% identical pixels"
    assert stage.fast_images == stage.baseline_images == 2
