"""Seg4Diff's unsupervised segmentation from MM-DiT image-to-text attention (NeurIPS 2025 release semantics).

Input: the image-to-text maps of :func:`diffseg.capture_joint_attention` (``store.image_to_text()``,
``{module name: (B, N, T)}``, N = s*s image tokens). For each image, following the release's
``Seg4DiffUnsup`` (``seg4diff/seg4diff_model_unsup.py``):

1. the maps of the configured layers (default block 9, ``transformer_blocks.9.attn``) are averaged
   over layers, keeping the first ``text_tokens`` = 77 text keys (the release slices
   ``4096:4096+77``: the CLIP part of SD3's 154-token context, not the T5 padding);
2. per pixel, min-max over the prompt tokens: ``a = (a - min_t a) / (max_t a + 1e-6)`` where the
   max is taken *after* subtracting the min, then ``a ** output_power`` (1.0 in the release's
   ``eval_unsup.yaml``);
3. each token map (s x s) becomes a spatial distribution by a softmax over its s*s pixels;
4. greedy grouping by symmetric KL, ``D(p, q) = 0.5 * sum (p - q)(log p - log q)``: tokens are
   visited in order; a token not yet in any group becomes an anchor and its group is *every* token
   with ``D(anchor, token) < kl_threshold``, including tokens already in earlier groups (so a token
   may join several groups; only the choice of anchors skips grouped tokens);
5. each group's mean distribution is a proposal; proposals are upsampled bilinearly
   (``align_corners=False``) to ``out_size`` and the label of a pixel is the argmax over proposals
   (the first maximum on ties).

The release hard-codes ``kl_threshold = 0.1`` in the model (its ``eval_unsup.yaml`` says
``KL_THRESHOLD: 0.035``, which the unsupervised model never reads): 0.1 is the default here and
``Seg4Diff(kl_threshold=0.035)`` runs the config's value. Computed in float64 (the release: float32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["RELEASE_KL_THRESHOLD", "RELEASE_LAYERS", "Seg4Diff", "greedy_kl_groups", "symmetric_kl"]

RELEASE_KL_THRESHOLD = 0.1  # hard-coded in Seg4DiffUnsup.__init__ (configs/eval_unsup.yaml: 0.035, unused)
RELEASE_LAYERS = (9,)  # configs/eval_unsup.yaml MODEL.BACKBONE.ATTENTION_LAYERS


def symmetric_kl(dists: torch.Tensor) -> torch.Tensor:
    """(T, K) distributions (positive) -> (T, T) ``0.5 * (KL(p_i||p_j) + KL(p_j||p_i))`` in float64."""
    x = dists.double()
    log_x = torch.log(x)
    neg_entropy = (x * log_x).sum(dim=1)
    cross = x @ log_x.T  # cross[i, j] = sum_k x_i log x_j
    return 0.5 * (neg_entropy[:, None] + neg_entropy[None, :] - cross - cross.T)


def greedy_kl_groups(dists: torch.Tensor, threshold: float) -> torch.Tensor:
    """The release's greedy grouping of (T, K) distributions: a (G, T) bool membership matrix, anchors in order.

    Token i (in order) not in any earlier group becomes an anchor; its group is every token j with
    ``D(i, j) < threshold`` (j may already be in earlier groups). A group never is empty: D(i, i) = 0.
    """
    distance = symmetric_kl(dists)
    close = (distance < threshold).cpu()
    grouped = torch.zeros(dists.shape[0], dtype=torch.bool)
    groups = []
    for i in range(dists.shape[0]):
        if grouped[i]:
            continue
        grouped[i] = True
        if close[i].any():
            grouped |= close[i]
            groups.append(close[i])
    if not groups:
        return torch.zeros(0, dists.shape[0], dtype=torch.bool)
    return torch.stack(groups)


class Seg4Diff:
    """Seg4Diff's unsupervised path (module docstring) on captured image-to-text attention.

    Args:
        kl_threshold: grouping threshold (release: 0.1; its config: 0.035).
        layers: joint block indices whose maps are averaged (release: block 9); module names work too.
        text_tokens: leading text keys kept (release: 77, the CLIP tokens); None keeps all T.
        output_power: exponent after the min-max (release's eval config: 1.0).
    """

    def __init__(self, kl_threshold: float = RELEASE_KL_THRESHOLD, layers: Sequence[int | str] = RELEASE_LAYERS,
                 text_tokens: int | None = 77, output_power: float = 1.0) -> None:
        if not (isinstance(kl_threshold, (int, float)) and math.isfinite(kl_threshold) and kl_threshold > 0):
            raise ValueError(f"kl_threshold: expected a finite number > 0, got {kl_threshold!r}")
        if text_tokens is not None and int(text_tokens) < 1:
            raise ValueError(f"text_tokens: expected a positive int or None, got {text_tokens!r}")
        if isinstance(layers, (int, str)):
            layers = [layers]
        if not layers:
            raise ValueError("layers: expected at least one block index")
        self.kl_threshold = float(kl_threshold)
        self.layers = tuple(layers)
        self.text_tokens = None if text_tokens is None else int(text_tokens)
        self.output_power = float(output_power)

    def __repr__(self) -> str:
        return (f"Seg4Diff(kl_threshold={self.kl_threshold}, layers={self.layers}, text_tokens={self.text_tokens}, "
                f"output_power={self.output_power})")

    def layer_mean(self, image_to_text: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """(B, N, T') float64: the configured layers' maps averaged, the first ``text_tokens`` keys kept.

        ``image_to_text``: the store's ``{name: (B, N, T)}`` or one (B, N, T) tensor (used as it is).
        """
        if isinstance(image_to_text, torch.Tensor):
            maps = image_to_text
        else:
            names = [layer if isinstance(layer, str) else f"transformer_blocks.{layer}.attn" for layer in self.layers]
            names = [n if n.endswith(".attn") else f"{n}.attn" for n in names]
            missing = [n for n in names if n not in image_to_text]
            if missing:
                raise KeyError(f"Seg4Diff: image-to-text maps of {missing} were not captured (have "
                               f"{sorted(image_to_text)}); capture those layers")
            maps = torch.stack([image_to_text[n].double() for n in names]).mean(dim=0)
        if maps.ndim != 3:
            raise ValueError(f"image_to_text: expected (B, N, T) maps, got shape {tuple(maps.shape)}")
        if self.text_tokens is not None:
            if maps.shape[-1] < self.text_tokens:
                raise ValueError(f"image_to_text has {maps.shape[-1]} text keys, fewer than text_tokens="
                                 f"{self.text_tokens}")
            maps = maps[..., : self.text_tokens]
        return maps.double()

    def token_distributions(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, T) maps of one image -> (T, N) distributions: per-pixel min-max over tokens, power, spatial softmax."""
        a = maps - maps.min(dim=1, keepdim=True).values
        a = a / (a.max(dim=1, keepdim=True).values + 1e-6)
        a = a ** self.output_power
        return torch.softmax(a.T, dim=1)

    def proposals(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's (N, T) maps -> ``(proposals (G, N) float64, membership (G, T) bool)``."""
        dists = self.token_distributions(maps)
        membership = greedy_kl_groups(dists, self.kl_threshold)
        weights = membership.to(dists)
        return (weights @ dists) / weights.sum(dim=1, keepdim=True), membership

    def __call__(self, image_to_text: Mapping[str, torch.Tensor] | torch.Tensor,
                 out_size: tuple[int, int] | int) -> torch.Tensor:
        """Segment a batch: ``LongTensor(B, H, W)`` labels in [0, G) for each image's G groups."""
        height, width = (out_size, out_size) if isinstance(out_size, int) else (int(out_size[0]), int(out_size[1]))
        maps = self.layer_mean(image_to_text)
        if not bool(torch.isfinite(maps).all()):
            raise ValueError("image_to_text: holds NaN or infinite values")
        side = math.isqrt(maps.shape[1])
        if side * side != maps.shape[1]:
            raise ValueError(f"image_to_text: {maps.shape[1]} image tokens are not a square grid")
        labels = []
        for image_maps in maps:
            proposals, _ = self.proposals(image_maps)
            grid = proposals.reshape(1, -1, side, side)
            up = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
            labels.append(up[0].argmax(dim=0))
        return torch.stack(labels)
