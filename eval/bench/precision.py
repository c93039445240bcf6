"""How much a change of backbone precision changes DiffSeg's masks, segment ids aside.

Two masks of the same image (e.g. from the backbone in float32 and in float16) may number the
same segments differently, so they are compared after pairing each segment of one with at most
one segment of the other (Hungarian matching on their overlap counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["matched_pixel_changes", "summarise_changes"]


def matched_pixel_changes(reference: torch.Tensor, other: torch.Tensor) -> dict[str, int]:
    """How many pixels of ``other`` are in another segment than in ``reference``, ids aside.

    Segment ids are arbitrary (two runs may number the same segments differently), so each id of
    ``reference`` is paired with at most one id of ``other`` so that the summed overlap is largest
    (Hungarian matching on the overlap counts). ``changed`` = pixels outside the paired overlaps
    (pixels of a segment left without a partner count as changed). ``raw_changed`` compares the
    ids as they are.

    Args:
        reference, other: ``(H, W)`` integer masks of one image.

    Returns:
        ``{"pixels", "changed", "raw_changed", "segments_reference", "segments_other"}`` (ints).
    """
    if reference.shape != other.shape:
        raise ValueError(f"masks differ in shape: {tuple(reference.shape)} vs {tuple(other.shape)}")
    ref_ids, ref_inv = torch.unique(reference.flatten().cpu(), return_inverse=True)
    oth_ids, oth_inv = torch.unique(other.flatten().cpu(), return_inverse=True)
    n_ref, n_oth = len(ref_ids), len(oth_ids)
    overlap = torch.bincount(ref_inv * n_oth + oth_inv, minlength=n_ref * n_oth).reshape(n_ref, n_oth).numpy()
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    pixels = reference.numel()
    return {
        "pixels": pixels,
        "changed": pixels - int(overlap[rows, cols].sum()),
        "raw_changed": int((reference.cpu() != other.cpu()).sum()),
        "segments_reference": n_ref,
        "segments_other": n_oth,
    }


def summarise_changes(per_image: Sequence[dict[str, int]]) -> dict[str, Any]:
    """Pixel-weighted shares over the images (``changed_fraction``, ``raw_changed_fraction``), the largest
    per-image share and the mean segment counts of both masks."""
    if not per_image:
        raise ValueError("summarise_changes: no images to summarise")
    pixels = sum(r["pixels"] for r in per_image)
    n = len(per_image)
    return {
        "images": n,
        "changed_fraction": sum(r["changed"] for r in per_image) / pixels,
        "max_image_changed_fraction": max(r["changed"] / r["pixels"] for r in per_image),
        "raw_changed_fraction": sum(r["raw_changed"] for r in per_image) / pixels,
        "segments_float32": sum(r["segments_reference"] for r in per_image) / n,
        "segments_fast": sum(r["segments_other"] for r in per_image) / n,
    }


