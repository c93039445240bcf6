"""Synthetic DiffCut features with known clusters (tests and the DiffCut bench)."""

from __future__ import annotations

import math

import torch

__all__ = ["clustered_features"]


def clustered_features(
    side: int = 32,
    clusters: int = 8,
    channels: int = 1280,
    seed: int = 0,
    shared_dim: int = 3,
    own: float = 0.6,
    noise: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic DiffCut features with known clusters: ``(features (1, side*side, channels), labels (side, side))``.

    The side x side map is split into ``clusters`` Voronoi regions of random seed points. Region k
    has a unit centre c_k = normalise(s_k + own * e_k): s_k a random unit vector in a
    ``shared_dim``-dimensional subspace (so some regions resemble each other more than others, as
    in real features) and e_k an orthonormal own direction. A location's feature is its region's
    centre plus isotropic Gaussian noise of total norm about ``noise``. With the defaults the
    regions are well separated: DiffCut (tau 0.5) finds exactly them. float32, CPU, seeded.
    """
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(clusters, 2, generator=gen) * side
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([rows, cols], dim=-1).reshape(-1, 2).float() + 0.5
    labels = torch.cdist(grid, points).argmin(dim=1)
    basis = torch.linalg.qr(torch.randn(channels, shared_dim + clusters, generator=gen))[0]
    shared = torch.randn(clusters, shared_dim, generator=gen) @ basis[:, :shared_dim].T
    centres = shared / shared.norm(dim=1, keepdim=True) + own * basis[:, shared_dim:].T
    centres = centres / centres.norm(dim=1, keepdim=True)
    features = centres[labels] + noise * torch.randn(side * side, channels, generator=gen) / math.sqrt(channels)
    return features[None], labels.reshape(side, side)
