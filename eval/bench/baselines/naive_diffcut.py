"""DiffCut clustering written the way the public release runs it: the baseline of ``eval/bench/diffcut.py``.

A plain per-image port of the procedure in PaulCouairon/DiffCut (``diffcut/recursive_normalized_cut.py``,
``generate_masks``), kept deliberately close to its cost structure:

* float32 throughout, dense ``torch.linalg.eigh`` of the full normalized Laplacian at every node;
* at every node the full N x N affinity is masked by the outer product of the explored area
  ("painting") and copied, rows holding a zero are searched with ``torch.where`` and removed
  below the first level (Python sets), and dense diagonal degree matrices are built;
* the 100 thresholds are scored in a Python loop, two matrix products and a host sync each;
* clusters are assembled by the release's running sums, embedded by a loop over clusters, and
  matched against the full-channel bilinearly upsampled features.

It shares no code with :mod:`diffseg.diffcut` and must give the same masks on well-separated
features (the benchmark checks this). It has no recursion guard, as the release.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["naive_diffcut", "naive_recursive_ncut"]


def _sign_fixed(u: torch.Tensor) -> torch.Tensor:
    return u * torch.sign(u[torch.argmax(torch.abs(u))])


def _ncut_values(y: torch.Tensor, affinity: torch.Tensor, degree_matrix: torch.Tensor, k: int = 100):
    thresholds = torch.linspace(y.min() * 0.99, y.max() * 0.99, k)
    laplacian = degree_matrix - affinity
    degrees = torch.diag(degree_matrix)
    total = torch.sum(degree_matrix)
    partitions, values = [], []
    for t in thresholds:
        part = 1.0 * (y > t)
        signs = 2 * part - 1
        share = torch.sum(degrees * (signs > 0)) / total
        ratio = share / (1 - share)
        z = (1 + signs) - ratio * (1 - signs)
        values.append(((z @ laplacian @ z) / (z @ degree_matrix @ z)).item())
        partitions.append(part)
    return partitions, values


def naive_recursive_ncut(features_cn: torch.Tensor, tau: float = 0.5, alpha: float = 10) -> list[torch.Tensor]:
    """Accepted cuts (list of (N,) float 0/1 masks, release order) for features (C, N) float32."""
    feats = F.normalize(features_cn, p=2, dim=0)
    n = feats.shape[1]
    device = feats.device
    affinity = feats.T @ feats
    affinity = ((affinity - affinity.min()) / (affinity.max() - affinity.min())) ** alpha
    cuts: list[torch.Tensor] = []

    def visit(affinity: torch.Tensor, painting: torch.Tensor, mask: torch.Tensor, level: int) -> None:
        painting = ((painting + mask) > 0).float()
        explored = painting.reshape(-1, 1) @ painting.reshape(1, -1)
        affinity = affinity * (1 - explored)
        if level == 0:
            keep = list(range(n))
        else:
            with_zero = set(torch.unique(torch.where(affinity == 0)[0]).tolist())
            keep = sorted(set(range(n)) - with_zero)
        sub = affinity[:, keep][keep, :]
        degree_matrix = torch.diag(torch.sum(sub, dim=1))
        if sub.shape[0] <= 1:
            return
        inv_sqrt = torch.diag(1 / torch.diag(degree_matrix) ** 0.5)
        _, vectors = torch.linalg.eigh(inv_sqrt @ (degree_matrix - sub) @ inv_sqrt)
        y = _sign_fixed(inv_sqrt @ vectors[:, 1])
        partitions, values = _ncut_values(y, sub, degree_matrix)
        ncut = min(values)
        part = torch.zeros(n, device=device)
        part[keep] = partitions[int(np.argmin(values))]
        if ncut < tau:
            cuts.append(part)
            visit(affinity, painting, 1 - part, level + 1)
            visit(affinity, painting, part, level + 1)

    visit(affinity, torch.zeros(n, device=device), torch.zeros(n, device=device), 0)
    return cuts


def naive_diffcut(features: torch.Tensor, tau: float = 0.5, alpha: float = 10, mask_size: int = 128) -> torch.Tensor:
    """Release-style DiffCut of one image: features (N, C) or (1, N, C) -> (mask_size, mask_size) int64."""
    features = features.reshape(-1, features.shape[-1]).float()
    n, channels = features.shape
    side = math.isqrt(n)
    unit = F.normalize(features.T.reshape(1, channels, side, side), dim=1)
    cuts = naive_recursive_ncut(unit.reshape(channels, n), tau, alpha)
    if not cuts:
        cuts = [torch.zeros(n, device=features.device)]
    sums = torch.zeros(n, device=features.device)
    weight = 1.0
    for cut in cuts:
        sums += weight * cut
        weight = sums.max() + 1
    values = torch.unique(sums)
    embeddings = torch.zeros(len(values), channels, device=features.device)
    flat = unit.reshape(channels, n)
    for k, value in enumerate(values):
        member = (sums == value).float()
        embeddings[k] = flat @ (member / (member.sum() + 1e-8))
    upsampled = F.interpolate(unit, size=(mask_size, mask_size), mode="bilinear")
    scores = upsampled.reshape(channels, -1).T @ embeddings.T
    return torch.argmax(scores, dim=1).reshape(mask_size, mask_size)
