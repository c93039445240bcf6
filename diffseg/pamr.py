"""Mask refinement used by DiffCut: PAMR followed by a 3x3 median filter.

PAMR (pixel-adaptive mask refinement, Araslanov & Roth, CVPR 2020) repeatedly replaces every mask
value by an image-dependent weighted mean of the values at its 8 neighbours, at several
dilations. With ``dilations`` d_1..d_m there are P = 8m neighbour offsets o = d * (dy, dx),
(dy, dx) in {-1, 0, 1}^2 minus (0, 0); image borders are handled by edge replication. For an image
x (B, 3, H, W) the weight of offset o at pixel p is

    w_o(p) = softmax_o( mean_c( -|x_c(p) - x_c(p + o)| / (1e-8 + 0.1 * s_c(p)) ) )

where s_c(p) is the unbiased standard deviation, per colour channel, of the 9m values x_c(p + o')
over o' in the 3 x 3 window (centre included) at every dilation. One iteration is
m(p) <- sum_o w_o(p) m(p + o). This is the configuration of the DiffCut release
(``tools/pamr.py`` of PaulCouairon/DiffCut): 10 iterations, dilations (1, 2, 4, 8), applied to
one-hot cluster masks at mask resolution, then argmax and a 3 x 3 median filter with edge
replication (scipy's ``median_filter`` with its default ``reflect`` border, which for a 3 x 3
window repeats the edge pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["PAMR_DILATIONS", "PAMR_ITERATIONS", "median_filter_3x3", "neighbour_offsets", "pamr", "refine_masks"]

PAMR_ITERATIONS = 10
PAMR_DILATIONS = (1, 2, 4, 8)

_RING = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: Sequence[int], centre: bool = False) -> list[tuple[int, int]]:
    """Offsets (dy, dx) of the 3 x 3 window at each dilation, dilation-major, row-major inside a window.

    Without ``centre``: 8 per dilation (the centre is left out); with it, 9 per dilation.
    """
    ring = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)) if centre else _RING
    return [(d * dy, d * dx) for d in dilations for dy, dx in ring]


def _shifted(x: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """x (B, K, H, W) -> (B, K, P, H, W) with out[..., p, i, j] = x[..., i + dy_p, j + dx_p], edges replicated."""
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    views = [padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width] for dy, dx in offsets]
    return torch.stack(views, dim=2)


def pamr(
    image: torch.Tensor,
    masks: torch.Tensor,
    num_iter: int = PAMR_ITERATIONS,
    dilations: Sequence[int] = PAMR_DILATIONS,
) -> torch.Tensor:
    """Refine soft masks with PAMR.

    Args:
        image: (B, 3, H, W) float (any colour scale: the weights are invariant to an affine change of
            intensities up to the 1e-8 in the denominator).
        masks: (B, K, H, W) float, e.g. one-hot cluster masks.
        num_iter: number of propagation steps.
        dilations: neighbourhood dilations.

    Returns:
        (B, K, H, W) float32 refined masks (each step is a convex combination of neighbour values).
    """
    if image.ndim != 4 or masks.ndim != 4 or image.shape[0] != masks.shape[0] or image.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"pamr: image (B, C, H, W) and masks (B, K, H, W) must share B, H, W; got {tuple(image.shape)} "
            f"and {tuple(masks.shape)}"
        )
    image = image.float()
    masks = masks.float()
    neighbours = neighbour_offsets(dilations)
    window = neighbour_offsets(dilations, centre=True)
    spread = _shifted(image, window).std(dim=2, keepdim=True)  # (B, 3, 1, H, W)
    differences = (_shifted(image, neighbours) - image.unsqueeze(2)).abs()  # (B, 3, P, H, W)
    logits = (-differences / (1e-8 + 0.1 * spread)).mean(dim=1, keepdim=True)  # (B, 1, P, H, W)
    weights = torch.softmax(logits, dim=2)
    for _ in range(num_iter):
        masks = (_shifted(masks, neighbours) * weights).sum(dim=2)
    return masks


def median_filter_3x3(labels: torch.Tensor) -> torch.Tensor:
    """3 x 3 median of an integer label map (B, H, W), edge pixels replicated; returns (B, H, W) of the same dtype."""
    if labels.ndim != 3:
        raise ValueError(f"median_filter_3x3 expects (B, H, W), got {tuple(labels.shape)}")
    windows = _shifted(labels.unsqueeze(1), neighbour_offsets((1,), centre=True))[:, 0]  # (B, 9, H, W)
    return windows.median(dim=1).values  # 9 values: the exact middle one


def refine_masks(labels: torch.Tensor, images: torch.Tensor, **pamr_options: Any) -> torch.Tensor:
    """DiffCut's refinement of cluster maps: PAMR on one-hot masks, argmax, 3 x 3 median filter.

    Args:
        labels: (B, S, S) integer cluster ids >= 0.
        images: (B, 3, H, W) in [-1, 1]; mapped to [0, 1] and resized bilinearly (half-pixel
            centres, no antialiasing) to S x S, as the release resizes its [0, 1] images. The
            release feeds images at the backbone resolution (1024 for SSD-1B).
        pamr_options: ``num_iter`` / ``dilations`` of :func:`pamr` (default: the release's).

    Returns:
        (B, S, S) int64 refined ids. Ids keep their values: each pixel takes the id whose refined
        mask is largest (the lowest id on ties), which is the release's output up to its
        renumbering of the ids present in an image as 0..n-1 (a monotone relabelling, so the median
        filter commutes with it).
    """
    if labels.ndim != 3 or images.ndim != 4 or images.shape[:2] != (labels.shape[0], 3):
        raise ValueError(
            f"refine_masks: labels must be (B, S, S) and images (B, 3, H, W); got {tuple(labels.shape)} "
            f"and {tuple(images.shape)}"
        )
    if labels.min() < 0:
        raise ValueError("refine_masks: labels must be non-negative cluster ids")
    size = tuple(labels.shape[-2:])
    small = F.interpolate((images.float() + 1) / 2, size=size, mode="bilinear", align_corners=False)
    num_ids = int(labels.max()) + 1
    # Ids absent from an image give all-zero channels, which stay zero and never win the argmax
    # (present channels sum to 1 at every pixel), so one batched call equals per-image calls.
    onehot = F.one_hot(labels.long(), num_ids).permute(0, 3, 1, 2).float()
    refined = pamr(small, onehot, **pamr_options).argmax(dim=1)
    return median_filter_3x3(refined)
