"""Attention aggregation (diffseg/REFERENCE.md section 1, step 5).

The per-resolution self-attention maps of one UNet pass are combined into one
4-D tensor ``T`` of shape ``(B, S, S, S, S)`` where ``S`` is the largest side
present (64 for SD 1.x at 512 px). ``T[b, i, j]`` is the attention map of query
location ``(i, j)`` over an ``S x S`` key grid and sums to one.

For each resolution ``s``:

* key dims: each row of ``A_s`` is reshaped to ``(s, s)``, bilinearly upsampled
  to ``(S, S)`` with half-pixel centres (``align_corners=False``, no
  antialiasing) and renormalised to sum to one;
* query dims: each query is repeated ``S // s`` times along both axes
  (nearest tiling);
* the resolutions are summed with weights ``w_s`` (default proportional to
  ``s``).

Any set of square sides works: SD 1.x at 512 px gives 64, 32, 16, 8, SD 2.x at
768 px 96, 48, 24, 12 (S = 96), SDXL at 1024 px only 64 and 32. When the sides
are nested (each divides the next larger one) the tiling is done coarse to
fine, so the full-size tensor is written once. Otherwise (e.g. 75, 38, 19, 10
from a latent side that is no multiple of 8) query ``i`` of the output takes
query ``floor((i + 0.5) * s / S)`` of side ``s`` (half-pixel nearest, which is
the repeat above whenever ``s`` divides ``S``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["aggregate_attention", "check_weights", "resolution_weights", "side_of"]


def side_of(maps: torch.Tensor, name: str = "maps") -> int:
    """Spatial side ``s`` of a ``(B, s*s, s*s)`` attention tensor.

    Raises ``ValueError`` naming ``name`` when the tensor is not 3-D, not square
    or its map count is not a perfect square.
    """
    if maps.ndim != 3:
        raise ValueError(f"{name}: expected a (B, s*s, s*s) tensor, got shape {tuple(maps.shape)}")
    n_q, n_k = maps.shape[1], maps.shape[2]
    side = math.isqrt(n_k)
    if n_q != n_k or side * side != n_k:
        raise ValueError(
            f"{name}: expected a square (B, s*s, s*s) tensor with a perfect-square map count, "
            f"got shape {tuple(maps.shape)}"
        )
    return side


def resolution_weights(
    sides: list[int], weights: Mapping[int, float] | None = None
) -> dict[int, float]:
    """Aggregation weight of each resolution.

    ``weights=None`` gives weights proportional to resolution,
    ``w_s = s / sum(sides)`` (64, 32, 16, 8 -> 64/120, 32/120, 16/120, 8/120).
    A mapping is used as given (not renormalised); resolutions it does not name
    get weight 0, and naming a resolution that is not present is an error, as are NaN,
    infinite or negative weights and all-zero weights (:func:`check_weights`).
    """
    if weights is None:
        total = float(sum(sides))
        return {s: s / total for s in sides}
    check_weights(weights)
    unknown = sorted(set(int(k) for k in weights) - set(sides))
    if unknown:
        raise ValueError(f"weights: resolutions {unknown} are not among the captured sides {sorted(sides)}")
    return {s: float(weights.get(s, 0.0)) for s in sides}


def check_weights(weights: Mapping[int, float], name: str = "weights") -> None:
    """Raise ``ValueError`` unless every weight is finite and >= 0, one is > 0, and every key is a side >= 1."""
    if not weights:
        raise ValueError(f"{name}: expected at least one resolution with a weight > 0 (or null = proportional)")
    for key, value in weights.items():
        try:
            side, weight = int(key), float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected {{side: weight}} with integer sides, got {key!r}: {value!r}") from None
        if side < 1:
            raise ValueError(f"{name}: resolution {key!r} must be a side >= 1")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{name}.{key}: expected a finite weight >= 0, got {value!r}")
    if not any(float(v) > 0 for v in weights.values()):
        raise ValueError(f"{name}: all weights are 0; at least one must be > 0")


def _keys_upsampled(maps: torch.Tensor, side: int, out_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample the key dims of ``(B, s*s, s*s)`` maps to ``(B, s, s, S*S)``, in float32.

    Returns the upsampled maps and their sums ``(B, s, s, 1)``: the caller
    renormalises (folded into the weighted sum, so the largest tensor is
    written once).
    """
    batch = maps.shape[0]
    keys = maps.reshape(batch * side * side, 1, side, side).float()
    if side != out_side:
        keys = F.interpolate(keys, size=(out_side, out_side), mode="bilinear", align_corners=False)
    keys = keys.reshape(batch, side, side, out_side * out_side)
    return keys, keys.sum(dim=-1, keepdim=True)


def aggregate_attention(
    maps: Mapping[int, torch.Tensor], weights: Mapping[int, float] | None = None
) -> torch.Tensor:
    """Aggregate per-resolution self-attention into one 4-D tensor.

    Args:
        maps: ``{s: Tensor(B, s*s, s*s)}``, rows are distributions over keys
            (as returned by the capture store), any square sides; ``S`` is
            the largest.
        weights: ``None`` for weights proportional to resolution, or
            ``{s: w}`` (e.g. one-hot ``{64: 1.0}`` for the ablations).

    Returns:
        ``Tensor(B, S, S, S, S)`` float32 on the maps' device;
        ``T[b, i, j]`` sums to one over its last two dims.
    """
    if not maps:
        raise ValueError("maps: expected at least one resolution, got an empty mapping")
    sides = {}
    for key, value in maps.items():
        side = side_of(value, name=f"maps[{key}]")
        if int(key) != side:
            raise ValueError(f"maps[{key}]: key must equal the map side {side}")
        sides[side] = value
    ordered = sorted(sides)  # coarse to fine
    out_side = ordered[-1]
    batch = sides[out_side].shape[0]
    for side in ordered:
        if sides[side].shape[0] != batch:
            raise ValueError(f"maps[{side}]: batch {sides[side].shape[0]} differs from {batch}")
    w = resolution_weights(ordered, weights)
    nested = all(larger % smaller == 0 for smaller, larger in zip(ordered[:-1], ordered[1:], strict=True))
    if not nested:
        return _aggregate_any_sides(sides, w, out_side, batch)

    # acc holds the weighted sum of the resolutions seen so far at query side `acc_side`.
    acc: torch.Tensor | None = None
    acc_side = 0
    for side in ordered:
        if w[side] == 0.0 and side != out_side:
            continue
        term, total = _keys_upsampled(sides[side], side, out_side)  # (B, s, s, S*S), (B, s, s, 1)
        scale = w[side] / total
        if acc is None:
            acc = term * scale
        else:
            r = side // acc_side
            coarse = acc[:, :, None, :, None, :]  # (B, a, 1, a, 1, K)
            fine = term.view(batch, acc_side, r, acc_side, r, -1)
            fine_scale = scale.view(batch, acc_side, r, acc_side, r, 1)
            acc = torch.addcmul(coarse, fine, fine_scale).view(batch, side, side, -1)
        acc_side = side
    assert acc is not None
    if acc_side != out_side:  # only coarser resolutions carried weight
        r = out_side // acc_side
        acc = acc[:, :, None, :, None, :].expand(batch, acc_side, r, acc_side, r, acc.shape[-1])
    return acc.reshape(batch, out_side, out_side, out_side, out_side)


def _query_index(side: int, out_side: int, device: torch.device) -> torch.Tensor:
    """``LongTensor(S)``: the query row of side ``s`` each output row takes, ``floor((i + 0.5) * s / S)``."""
    return ((torch.arange(out_side, device=device, dtype=torch.float64) + 0.5) * side / out_side).floor().long()


def _aggregate_any_sides(
    sides: Mapping[int, torch.Tensor], w: Mapping[int, float], out_side: int, batch: int
) -> torch.Tensor:
    """Aggregation for sides that are not nested: each resolution expanded to ``S`` by index, then summed.

    Holds the output and one expanded term at a time, ``2 * B * S**4`` floats.
    """
    out: torch.Tensor | None = None
    for side in sorted(sides):
        if w[side] == 0.0 and side != out_side:
            continue
        term, total = _keys_upsampled(sides[side], side, out_side)  # (B, s, s, S*S), (B, s, s, 1)
        term = term * (w[side] / total)
        if side != out_side:
            index = _query_index(side, out_side, term.device)
            term = term.index_select(1, index).index_select(2, index)
        out = term if out is None else out.add_(term)
        del term
    assert out is not None
    return out.reshape(batch, out_side, out_side, out_side, out_side)
