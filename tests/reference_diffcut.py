"""Slow, plain reference of DiffCut (recursive normalized cut) and of PAMR, for the tests only.

Written from the description of the method and its public release (PaulCouairon/DiffCut), step by
step with Python loops and full-size matrices, sharing no code with ``diffseg.diffcut``:

* the affinity is computed in float32 as in the release (its exact zeros matter, see below) and
  everything after it in float64;
* each recursion level masks the full N x N affinity with the outer product of the explored area
  ("painting") and, below the first level, removes every row that holds a zero;
* the Fiedler vector comes from a dense ``torch.linalg.eigh`` of the normalized Laplacian;
* each of the 100 thresholds is scored separately by y^T (D - A) y / y^T D y with the release's
  y = (1 + x) - b (1 - x); the smallest value is taken as Python's ``min`` and ``numpy.argmin`` do;
* clusters are numbered by the release's running sums (exact Python integers), embedded by a loop
  over clusters and matched against the full-channel bilinearly upsampled features.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def reference_affinity(features: torch.Tensor, alpha: float = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, C) -> (unit (N, C) float32, affinity (N, N) float32), as the release computes them."""
    unit = F.normalize(features.float(), dim=1)
    twice = F.normalize(unit, dim=1)
    cosine = twice @ twice.T
    affinity = ((cosine - cosine.min()) / (cosine.max() - cosine.min())) ** alpha
    return unit, affinity


def _eigh_one_thread(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` on one CPU thread: on a busy 2-core machine threaded LAPACK is many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


def reference_cuts(affinity32: torch.Tensor, tau: float = 0.5, num_thresholds: int = 100) -> list[torch.Tensor]:
    """Accepted cuts (list of (N,) float64 0/1) of the recursive normalized cut, release order."""
    n = affinity32.shape[0]
    cuts: list[torch.Tensor] = []

    def visit(affinity: torch.Tensor, painting: torch.Tensor, mask: torch.Tensor, level: int) -> None:
        painting = ((painting + mask) > 0).double()
        affinity = affinity * (1 - torch.outer(painting, painting))
        if level == 0:
            keep = list(range(n))
        else:
            keep = [i for i in range(n) if not bool((affinity[i] == 0).any())]
        if len(keep) <= 1:
            return
        sub = affinity[keep][:, keep]
        degrees = sub.sum(dim=1)
        degree_matrix = torch.diag(degrees)
        laplacian = degree_matrix - sub
        inv_sqrt = torch.diag(degrees**-0.5)
        _, vectors = _eigh_one_thread(inv_sqrt @ laplacian @ inv_sqrt)
        y = inv_sqrt @ vectors[:, 1]
        y = y * torch.sign(y[torch.argmax(y.abs())])
        low, high = float(y.min()) * 0.99, float(y.max()) * 0.99
        values, partitions = [], []
        for k in range(num_thresholds):
            threshold = low + (high - low) * k / (num_thresholds - 1)
            x = (y > threshold).double()
            signs = 2 * x - 1
            share = float((degrees * (signs > 0)).sum() / degrees.sum())
            ratio = share / (1 - share) if share < 1 else math.inf
            z = (1 + signs) - ratio * (1 - signs) if share < 1 else torch.full_like(x, math.nan)
            values.append(float((z @ laplacian @ z) / (z @ degree_matrix @ z)))
            partitions.append(x)
        ncut = min(values)
        part = torch.zeros(n, dtype=torch.float64)
        part[keep] = partitions[int(np.argmin(values))]
        if ncut < tau:
            cuts.append(part)
            visit(affinity, painting, 1 - part, level + 1)
            visit(affinity, painting, part, level + 1)

    zeros = torch.zeros(n, dtype=torch.float64)
    visit(affinity32.double(), zeros, zeros, 0)
    return cuts


def reference_ids(cuts: list[torch.Tensor], n: int) -> torch.Tensor:
    """(N,) int64 cluster ids by the release's running sums (exact integers)."""
    sums = [0] * n
    weight = 1
    for cut in cuts:
        for i in range(n):
            if cut[i] > 0:
                sums[i] += weight
        weight = max(sums) + 1
    order = {value: k for k, value in enumerate(sorted(set(sums)))}
    return torch.tensor([order[value] for value in sums], dtype=torch.long)


def reference_diffcut(
    features: torch.Tensor, tau: float = 0.5, alpha: float = 10, mask_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: features (N, C) -> (masks (mask_size, mask_size) int64, low-resolution ids (N,))."""
    n, channels = features.shape
    side = math.isqrt(n)
    unit, affinity = reference_affinity(features, alpha)
    flat = bool(affinity.isnan().any())  # identical features: the release's 0/0 gives no cut
    cuts = [] if flat else reference_cuts(affinity, tau)
    ids = reference_ids(cuts, n)
    unit = unit.double()
    embeddings = torch.stack([unit[ids == k].mean(dim=0) for k in range(int(ids.max()) + 1)])
    grid = unit.T.reshape(1, channels, side, side)
    upsampled = F.interpolate(grid, size=(mask_size, mask_size), mode="bilinear", align_corners=False)
    scores = upsampled.reshape(channels, -1).T @ embeddings.T
    return scores.argmax(dim=1).reshape(mask_size, mask_size), ids


# ------------------------------------------------------------------------------------------------ PAMR
def _shift_kernels(with_centre: bool) -> torch.Tensor:
    """(P, 1, 3, 3) one-hot kernels picking each 3 x 3 neighbour (row-major, centre optional)."""
    kernels = []
    for r in range(3):
        for c in range(3):
            if (r, c) == (1, 1) and not with_centre:
                continue
            kernel = torch.zeros(1, 3, 3, dtype=torch.float64)
            kernel[0, r, c] = 1
            kernels.append(kernel)
    return torch.stack(kernels)


def _neighbours(x: torch.Tensor, dilations, with_centre: bool) -> torch.Tensor:
    """x (B, K, H, W) float64 -> (B, K, P, H, W): dilated 3 x 3 neighbours by convolution, replicate padding."""
    b, k, h, w = x.shape
    flat = x.reshape(b * k, 1, h, w)
    parts = []
    for d in dilations:
        padded = F.pad(flat, [d] * 4, mode="replicate")
        parts.append(F.conv2d(padded, _shift_kernels(with_centre), dilation=d))
    return torch.cat(parts, dim=1).reshape(b, k, -1, h, w)


def reference_pamr(image: torch.Tensor, masks: torch.Tensor, num_iter: int = 10, dilations=(1, 2, 4, 8)):
    """PAMR in float64 with dilated convolutions: image (B, 3, H, W), masks (B, K, H, W) -> (B, K, H, W)."""
    image = image.double()
    masks = masks.double()
    spread = _neighbours(image, dilations, True).std(dim=2, keepdim=True)
    difference = (image.unsqueeze(2) - _neighbours(image, dilations, False)).abs()
    weights = torch.softmax((-difference / (1e-8 + 0.1 * spread)).mean(dim=1, keepdim=True), dim=2)
    for _ in range(num_iter):
        masks = (_neighbours(masks, dilations, False) * weights).sum(dim=2)
    return masks
