"""Seg4Diff's unsupervised path written from the release's rules, with loops in float64 (tests only).

Rules (cvlab-kaist/Seg4Diff, ``seg4diff/seg4diff_model_unsup.py``: ``forward``, the second
``att2mask`` definition - the one Python keeps -, ``KL``, ``mask_merge``; detectron2's
``sem_seg_postprocess`` + the argmax of ``train_net.py`` ``test_unsupervised``):

* maps: mean over the captured layers of the (N, T) image-to-text maps, first 77 text keys;
* per pixel: subtract the min over tokens, divide by (the max over tokens of the result + 1e-6), ** p;
* per token: softmax over the N pixels;
* greedy: anchors in token order, skipping tokens already matched; a group is every token whose
  symmetric KL to the anchor is < threshold (matched ones included); the group mean is kept;
* bilinear upsampling (half-pixel centres) of each group mean to the output size, argmax.

The greedy grouping and the bilinear resize are the DiffSeg reference's (``tests/reference_impl.py``):
the release's rules for both are the same.
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference_impl import bilinear_half_pixel, greedy_groups


def layer_mean(layer_maps, text_tokens=77):
    """layer_maps: list of (N, T) nested lists / tensors -> (N, text_tokens) list of lists (float)."""
    n = len(layer_maps[0])
    out = []
    for i in range(n):
        row = []
        for t in range(text_tokens):
            row.append(sum(float(m[i][t]) for m in layer_maps) / len(layer_maps))
        out.append(row)
    return out


def token_distributions(maps, power=1.0):
    """(N, T) -> list of T distributions over the N pixels."""
    n, t_count = len(maps), len(maps[0])
    normed = []
    for i in range(n):
        low = min(maps[i])
        shifted = [v - low for v in maps[i]]
        high = max(shifted)
        normed.append([(v / (high + 1e-6)) ** power for v in shifted])
    dists = []
    for t in range(t_count):
        column = [normed[i][t] for i in range(n)]
        top = max(column)
        exps = [math.exp(v - top) for v in column]
        total = sum(exps)
        dists.append([e / total for e in exps])
    return dists


def symmetric_kl(p, q):
    """0.5 * sum (p - q)(log p - log q): the release's KL (kl_1 + kl_2 with the 1/2 factors)."""
    return sum(0.5 * (a - b) * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True))


def merge(dists, threshold):
    """The release's mask_merge: (groups as lists of token indices, group means)."""
    groups = greedy_groups(dists, symmetric_kl, threshold)
    means = [[sum(dists[j][k] for j in members) / len(members) for k in range(len(dists[0]))] for members in groups]
    return groups, means


def segment(layer_maps, height, width, threshold=0.1, text_tokens=77, power=1.0):
    """One image: (labels H x W list of lists, groups, upsampled group means, margins of the argmax)."""
    maps = layer_mean(layer_maps, text_tokens)
    side = math.isqrt(len(maps))
    groups, means = merge(token_distributions(maps, power), threshold)
    ups = [bilinear_half_pixel(np.reshape(m, (side, side)), height, width) for m in means]
    labels, margins = [], []
    for y in range(height):
        row, mrow = [], []
        for x in range(width):
            values = [u[y][x] for u in ups]
            best = max(range(len(values)), key=lambda g: (values[g], -g))
            others = [v for g, v in enumerate(values) if g != best]
            row.append(best)
            mrow.append(values[best] - max(others) if others else math.inf)
        labels.append(row)
        margins.append(mrow)
    return labels, groups, margins
