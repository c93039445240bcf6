"""The straightforward per-image DiffSeg post-processing: the baseline and the reference path.

This is what a direct port of the official TensorFlow segmentor (google/diffseg,
``diffseg/segmentor.py``) to PyTorch looks like, written plainly on purpose:

* :func:`naive_aggregate` loops over the resolutions, upsamples the key dims
  with ``F.interpolate`` (bilinear, half-pixel centres), renormalises, tiles
  the query dims with ``repeat_interleave`` and accumulates into a float64
  tensor (the official ``aggre_weights`` is a NumPy float64 array);
* :func:`naive_merge` runs the first merging iteration by broadcasting the KL
  of a chunk of anchors against all maps (``chunk x N x K`` elements at once,
  as the official code) and the later iterations with the official greedy
  Python loop;
* :func:`naive_segment` chains both with NMS (all proposals upsampled at once,
  then argmax).

It must give the same masks as :class:`diffseg.DiffSeg` (the equivalence test
uses it as the reference path) and is the baseline of ``eval/bench/pipeline.py``. It
shares no code with the ``diffseg`` package. Two deliberate departures from
the official code, both as in ``diffseg`` (diffseg/REFERENCE.md section 1, step 6): the first-iteration KL
of the ``float16`` setting is computed in float32 on float16-rounded inputs
(the official code computes it in float16), and anchors whose group is empty
are dropped instead of being averaged into a NaN proposal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["naive_aggregate", "naive_merge", "naive_nms", "naive_segment"]

PRECISIONS = {"float16": torch.float16, "float32": torch.float32}


def naive_aggregate(
    maps_one_image: Mapping[int, torch.Tensor], weights: Mapping[int, float] | None = None
) -> torch.Tensor:
    """Aggregate one image's per-resolution attention, resolution by resolution.

    Args:
        maps_one_image: ``{s: Tensor(s*s, s*s)}`` (a leading batch axis of 1 is
            accepted), rows are distributions over the ``s*s`` keys. Every ``s``
            must divide the largest side ``S``.
        weights: ``None`` for weights proportional to resolution
            (``s / sum(sides)``), or ``{s: w}`` used as given (missing sides get 0).

    Returns:
        ``Tensor(S, S, S, S)`` float64 on the maps' device (64, 64, 64, 64 for SD 1.x).
    """
    if not maps_one_image:
        raise ValueError("maps_one_image: expected at least one resolution")
    sides = sorted((int(s) for s in maps_one_image), reverse=True)
    out_side = sides[0]
    if weights is None:
        ratio = {s: s / sum(sides) for s in sides}
    else:
        ratio = {s: float(weights.get(s, 0.0)) for s in sides}
    device = maps_one_image[sides[0]].device
    aggregated = torch.zeros(out_side, out_side, out_side, out_side, dtype=torch.float64, device=device)
    for side in sides:
        maps = maps_one_image[side]
        if maps.ndim == 3 and maps.shape[0] == 1:
            maps = maps[0]
        if maps.shape != (side * side, side * side):
            raise ValueError(f"maps_one_image[{side}]: expected shape {(side * side,) * 2}, got {tuple(maps.shape)}")
        if out_side % side:
            raise ValueError(f"maps_one_image[{side}]: side must divide the largest side {out_side}")
        repeat = out_side // side
        keys = maps.float().reshape(side * side, 1, side, side)
        keys = F.interpolate(keys, size=(out_side, out_side), mode="bilinear", align_corners=False)
        keys = keys.reshape(side, side, out_side, out_side)
        keys = keys / keys.sum(dim=(2, 3), keepdim=True)
        keys = keys.repeat_interleave(repeat, dim=0).repeat_interleave(repeat, dim=1)
        aggregated += keys * ratio[side]  # float32 product, float64 sum (as the official numpy +=)
    return aggregated


def _grid(num_points: int, side: int) -> np.ndarray:
    """``(M*M, 2)`` int anchor coordinates, the official ``generate_sampling_grid`` (63 = side - 1)."""
    segment_len = (side - 1) // (num_points - 1)
    total_len = segment_len * (num_points - 1)
    start = (side - 1 - total_len) // 2
    x_new = np.linspace(start, total_len + start, num_points)
    y_new = np.linspace(start, total_len + start, num_points)
    x_new, y_new = np.meshgrid(x_new, y_new, indexing="ij")
    return np.concatenate([x_new.reshape(-1, 1), y_new.reshape(-1, 1)], axis=-1).astype(int)


def _kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The official symmetric KL, summed over the last axis, by broadcasting ``x`` against ``y``.

    ``0.5 * sum(x * (log x - log y)) - 0.5 * sum(y * (log x - log y))``; a zero
    in either map gives NaN or inf (never merges).
    """
    quotient = torch.log(x) - torch.log(y)
    kl_1 = torch.sum(x * quotient, dim=-1) / 2
    kl_2 = -torch.sum(y * quotient, dim=-1) / 2
    return kl_1 + kl_2


def naive_merge(
    attn: torch.Tensor,
    thresholds: Sequence[float],
    num_points: int = 16,
    precision: str = "float16",
) -> torch.Tensor:
    """Iterative merging of one image, the official way.

    Iteration 1: the ``M*M`` anchor maps and all ``N = S*S`` maps are cast to
    ``precision`` (``"float16"`` as the official code, or ``"float32"``), the
    KL is computed in float32 by broadcasting ``M`` anchors at a time
    (``M x N x K`` elements, 16 x 4096 x 4096 for SD 1.x) and thresholded
    (NaN never merges); group means are taken over the float64 maps with a
    matmul; empty groups are dropped. Iterations 2..: the official greedy loop
    (``matched`` set, one anchor against all proposals per step, float64).

    Args:
        attn: ``(S, S, S, S)`` aggregated attention (float64 from :func:`naive_aggregate`).
        thresholds: one KL threshold per iteration.
        num_points: anchor grid side ``M``.
        precision: ``"float16"`` or ``"float32"``.

    Returns:
        ``(P, S*S)`` float64 proposals (``P`` may be 0).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    side = attn.shape[-1]
    flat = attn.reshape(side * side, side * side).double()
    grid = torch.from_numpy(_grid(num_points, side)).to(attn.device)
    anchors = attn.reshape(side, side, side * side)[grid[:, 0], grid[:, 1]]  # (A, K)
    anchors = anchors.to(PRECISIONS[precision]).float()[:, None, :]  # (A, 1, K)
    maps = flat.to(PRECISIONS[precision]).float()[None]  # (1, N, K)
    split = num_points
    kl_bin = []
    for i in range(split):
        kl_bin.append(_kl(anchors[i * split : (i + 1) * split], maps) < thresholds[0])  # (split, N)
    kl_bin = torch.cat(kl_bin, dim=0).double()  # (A, N)
    counts = kl_bin.sum(dim=1, keepdim=True)
    proposals = (kl_bin @ flat) / counts
    proposals = proposals[counts[:, 0] > 0]  # an empty group would be 0/0 = NaN
    for threshold in thresholds[1:]:
        matched: set[int] = set()
        merged = []
        for i in range(len(proposals)):
            if i in matched:
                continue
            matched.add(i)
            members = _kl(proposals[i], proposals) < threshold  # (P,)
            if members.sum() > 0:
                matched.update(torch.nonzero(members)[:, 0].tolist())
                merged.append(proposals[members].mean(dim=0))
        proposals = torch.stack(merged) if merged else flat[:0]
    return proposals


def naive_nms(proposals: torch.Tensor, output_size: int = 512) -> torch.Tensor:
    """NMS: upsample every proposal at once (bilinear, float32) and take the argmax.

    Args:
        proposals: ``(P, S*S)`` maps of one image.
        output_size: side of the mask.

    Returns:
        ``LongTensor(output_size, output_size)``; all zeros when ``P == 0``.
    """
    if proposals.shape[0] == 0:
        return torch.zeros(output_size, output_size, dtype=torch.long, device=proposals.device)
    side = int(round(proposals.shape[1] ** 0.5))
    upsampled = F.interpolate(
        proposals.float().reshape(-1, 1, side, side),
        size=(output_size, output_size),
        mode="bilinear",
        align_corners=False,
    )
    return torch.argmax(upsampled[:, 0], dim=0)


def naive_segment(
    maps_one_image: Mapping[int, torch.Tensor],
    thresholds: float | Sequence[float] = 1.1,
    num_points: int = 16,
    precision: str = "float16",
    output_size: int = 512,
    weights: Mapping[int, float] | None = None,
) -> torch.Tensor:
    """Segment one image: :func:`naive_aggregate` + :func:`naive_merge` + :func:`naive_nms`.

    Args:
        maps_one_image: ``{s: Tensor(s*s, s*s)}``.
        thresholds: one KL threshold per iteration, or one float for 3 iterations.
        num_points: anchor grid side ``M``.
        precision: first-iteration KL precision, ``"float16"`` or ``"float32"``.
        output_size: side of the mask.
        weights: aggregation weights (``None``: proportional to resolution).

    Returns:
        ``LongTensor(output_size, output_size)`` segment ids.
    """
    if isinstance(thresholds, (int, float)):
        thresholds = [float(thresholds)] * 3
    attn = naive_aggregate(maps_one_image, weights)
    proposals = naive_merge(attn, list(thresholds), num_points, precision)
    return naive_nms(proposals, output_size)
