"""Bootstrap and sign-flip weights over images, and exact weighted sums of per-image stats.

Per-image stats are an ``(images, columns)`` integer matrix. A bootstrap resample is a row
of image counts (how often each image was drawn, summing to N); a sign flip is a row of
0 / 1 (which images swap their two methods). One matrix product of a block of such rows
with the matrix gives every resample's sums; float64 products of integers stay exact
while every partial sum is below 2**53, otherwise the product is done in int64.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["bootstrap_weights", "exact_product", "flip_weights", "weighted_sums"]

_EXACT_LIMIT = 2**53  # float64 holds every integer below this exactly
_CHUNK_ELEMENTS = 1 << 23  # weight rows are drawn in blocks of about this many entries (64 MiB of float64)


def _blocks(count: int, images: int) -> Iterator[int]:
    """Row counts of the blocks ``count`` weight rows are drawn in (bounded memory)."""
    step = max(1, _CHUNK_ELEMENTS // max(images, 1))
    for start in range(0, count, step):
        yield min(step, count - start)


def bootstrap_weights(images: int, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap count rows, float64 (rows, N): each row draws N images with replacement."""
    n = images
    for rows in _blocks(resamples, n):
        idx = rng.integers(0, n, size=(rows, n))
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def flip_weights(images: int, flips: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of sign-flip rows, float64 (rows, N) of 0 / 1: each image swapped with probability 1/2."""
    for rows in _blocks(flips, images):
        yield rng.integers(0, 2, size=(rows, images)).astype(np.float64)


def exact_product(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """int64 ``weights @ matrix`` of non-negative integer-valued weights (rows, N) and int matrix (N, K), exactly."""
    bound = int(weights.sum(1).max(initial=0)) * int(np.abs(matrix).max(initial=0))
    if bound < _EXACT_LIMIT:
        return (weights @ matrix.astype(np.float64)).astype(np.int64)
    return weights.astype(np.int64) @ matrix.astype(np.int64)


def weighted_sums(blocks: Iterator[np.ndarray], matrix: np.ndarray,
                  floats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Sums over the weight rows of ``blocks``: exact int64 (R, K) of ``matrix`` (N, K), (R, F) of ``floats``."""
    ints, reals = [], []
    for weights in blocks:
        ints.append(exact_product(weights, matrix))
        if floats is not None:
            reals.append(weights @ floats)
    out = np.concatenate(ints) if ints else np.zeros((0, matrix.shape[1]), np.int64)
    if floats is None:
        return out, None
    return out, (np.concatenate(reals) if reals else np.zeros((0, floats.shape[1])))
