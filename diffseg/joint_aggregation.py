"""DiffSeg and K-Means on MM-DiT maps: the image-to-image part of the joint attention as self-attention.

:func:`image_self_attention` turns ``store.image_to_image()`` of :func:`diffseg.capture_joint_attention`
(``{module name: (B, N, N)}``, slices of a softmax over image *and* text keys, so each row sums to
less than 1) into DiffSeg's per-resolution maps ``{s: (B, s*s, s*s)}``: every row is renormalised to
sum to 1 over the image keys (stated: the text share of each row is dropped, then the rest rescaled),
then the configured modules are averaged. An MM-DiT has one token grid (s = 64 for SD3 at 1024 px),
so there is one resolution; :func:`diffseg.aggregate_attention` then gives the ``(B, s, s, s, s)``
tensor that :class:`diffseg.DiffSeg` (KL merging + NMS) and :class:`diffseg.KMeansSegmenter`
(K-Means-C / K-Means-S) take unchanged::

    with capture_joint_attention(transformer, layers) as store:
        transformer(**inputs)
    attention = aggregate_attention(image_self_attention(store.image_to_image()))
    masks = DiffSeg(kl_threshold=1.1, num_points=16)(attention)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

__all__ = ["image_self_attention"]


def image_self_attention(image_to_image: Mapping[str, torch.Tensor],
                         layers: Iterable[int | str] | None = None) -> dict[int, torch.Tensor]:
    """{s: (B, s*s, s*s) float32}: rows renormalised over image keys, mean over the selected modules.

    Args:
        image_to_image: ``{module name: (B, N, N)}`` as the store gives it, N = s*s.
        layers: joint block indices or module names (``transformer_blocks.<i>`` with or without
            ``.attn``, ``single_transformer_blocks.<i>``); None = every module in the mapping.
    """
    if layers is None:
        names = list(image_to_image)
    else:
        names = []
        for layer in ([layers] if isinstance(layers, (int, str)) else layers):
            name = f"transformer_blocks.{layer}" if isinstance(layer, int) else str(layer)
            names.append(name if name.endswith(".attn") else f"{name}.attn")
    if not names:
        raise ValueError("image_to_image: no modules to aggregate")
    missing = [n for n in names if n not in image_to_image]
    if missing:
        raise KeyError(f"image-to-image maps of {missing} were not captured (have {sorted(image_to_image)})")
    total = None
    for name in names:
        maps = image_to_image[name]
        if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
            raise ValueError(f"{name}: expected (B, N, N) image-to-image maps, got shape {tuple(maps.shape)}")
        rows = maps.float()
        rows = rows / rows.sum(dim=-1, keepdim=True)
        if total is not None and total.shape != rows.shape:
            raise ValueError(f"{name}: shape {tuple(rows.shape)} differs from the other modules' {tuple(total.shape)}")
        total = rows if total is None else total + rows
    assert total is not None
    side = math.isqrt(total.shape[1])
    if side * side != total.shape[1]:
        raise ValueError(f"{total.shape[1]} image tokens are not a square grid")
    return {side: total / len(names)}
