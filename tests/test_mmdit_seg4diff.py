"""Seg4Diff's unsupervised method against tests/reference_seg4diff.py (the release's rules, loops, float64)."""

from __future__ import annotations

import pytest
import torch

from diffseg.joint_attention import capture_joint_attention
from diffseg.seg4diff import RELEASE_KL_THRESHOLD, Seg4Diff, greedy_kl_groups
from diffseg.testing.tiny_mmdit import build_tiny_transformer, tiny_transformer_inputs
from tests import reference_seg4diff as ref

NAMES = ("transformer_blocks.3.attn", "transformer_blocks.9.attn")


def _synthetic(seed: int, side: int = 8, tokens: int = 30, batch: int = 2) -> dict[str, torch.Tensor]:
    """Image-to-text maps {name: (B, side*side, tokens)} where tokens follow 4 spatial regions plus noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    regions = torch.stack([(yy < side // 2) & (xx < side // 2), (yy < side // 2) & (xx >= side // 2),
                           (yy >= side // 2) & (xx < side // 3), (yy >= side // 2) & (xx >= side // 3)])
    pattern = regions.reshape(4, -1).double()[torch.arange(tokens) % 4].T  # (N, T)
    out = {}
    for name in NAMES:
        amp = torch.rand(batch, 1, tokens, generator=g, dtype=torch.float64) * 3
        logits = pattern[None] * amp + 0.8 * torch.randn(batch, side * side, tokens, generator=g, dtype=torch.float64)
        out[name] = (torch.softmax(logits, -1) * 0.3).float()
    return out


def _check_against_reference(maps, method, size, layers):
    labels = method(maps, out_size=size)
    assert labels.shape == (maps[layers[0]].shape[0], *size) and labels.dtype == torch.long
    averaged = method.layer_mean(maps)
    counts = []
    for b in range(labels.shape[0]):
        layer_maps = [maps[n][b].tolist() for n in layers]
        want, groups, margins = ref.segment(layer_maps, size[0], size[1], method.kl_threshold,
                                            method.text_tokens, method.output_power)
        _, membership = method.proposals(averaged[b])
        assert [torch.nonzero(row)[:, 0].tolist() for row in membership] == groups
        want = torch.tensor(want)
        clear = torch.tensor(margins) > 1e-9  # pixels whose argmax no rounding can flip
        assert bool(clear.float().mean() > 0.95)
        assert torch.equal(labels[b][clear], want[clear])
        counts.append(len(groups))
    return counts


@pytest.mark.parametrize("threshold", [RELEASE_KL_THRESHOLD, 0.035])
def test_seg4diff_matches_reference(threshold):
    maps = _synthetic(0)
    method = Seg4Diff(kl_threshold=threshold, layers=(3, 9), text_tokens=24)
    counts = _check_against_reference(maps, method, (13, 21), NAMES)
    assert all(1 < c < 24 for c in counts)  # several groups: the grouping is exercised, not degenerate


def test_threshold_changes_the_grouping():
    maps = _synthetic(1)
    fine = Seg4Diff(kl_threshold=0.035, layers=(3, 9), text_tokens=24)
    coarse = Seg4Diff(kl_threshold=0.1, layers=(3, 9), text_tokens=24)
    averaged = fine.layer_mean(maps)
    n_fine = fine.proposals(averaged[0])[1].shape[0]
    n_coarse = coarse.proposals(averaged[0])[1].shape[0]
    assert n_fine > n_coarse > 1
    assert int(fine(maps, (8, 8))[0].max()) < n_fine


def test_tokens_may_join_several_groups():
    # token 2 sits between tokens 0 and 1: D(0, 2) and D(1, 2) are below the threshold, D(0, 1) is not
    base = torch.tensor([0.0, 0.0, 0.0, 0.0])
    dists = torch.softmax(torch.stack([base + torch.tensor([1.0, 0, 0, 0]), base + torch.tensor([0, 1.0, 0, 0]),
                                       base + torch.tensor([0.5, 0.5, 0, 0])]).double(), dim=1)
    d = ref.symmetric_kl
    p = dists.tolist()
    threshold = 0.5 * (d(p[0], p[2]) + d(p[0], p[1]))
    assert d(p[0], p[2]) < threshold < d(p[0], p[1]) and d(p[1], p[2]) < threshold
    membership = greedy_kl_groups(dists, threshold)
    assert membership.tolist() == [[True, False, True], [False, True, True]]
    assert ref.merge(p, threshold)[0] == [[0, 2], [1, 2]]


def test_only_leading_text_tokens_and_configured_layers_count():
    maps = _synthetic(2)
    method = Seg4Diff(kl_threshold=0.1, layers=(3, 9), text_tokens=24)
    base = method(maps, (16, 16))
    tail = {k: v.clone() for k, v in maps.items()}
    for v in tail.values():
        v[..., 24:] = torch.rand(v[..., 24:].shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(method(tail, (16, 16)), base)  # keys past text_tokens are never read
    head = {k: v.clone() for k, v in maps.items()}
    for v in head.values():
        v[..., :12] = v[..., :12].flip(1)  # move the first tokens' maps around
    assert not torch.equal(method(head, (16, 16)), base)
    one = Seg4Diff(kl_threshold=0.1, layers=(9,), text_tokens=24)
    assert not torch.equal(one.layer_mean(maps), method.layer_mean(maps))
    with pytest.raises(KeyError, match="transformer_blocks.5.attn"):
        Seg4Diff(layers=(5,))(maps, (8, 8))
    with pytest.raises(ValueError, match="fewer than text_tokens"):
        Seg4Diff(layers=(9,))(maps, (8, 8))  # 30 keys < 77
    with pytest.raises(ValueError, match="kl_threshold"):
        Seg4Diff(kl_threshold=0)


def test_seg4diff_on_captured_tiny_sd3():
    model = build_tiny_transformer("sd3", seed=11)
    inputs = tiny_transformer_inputs(model, batch=2, text_tokens=6, seed=12)
    with torch.no_grad(), capture_joint_attention(model, [1, 2]) as store:
        model(**inputs)
    i2t = store.image_to_text()
    method = Seg4Diff(kl_threshold=0.02, layers=(1, 2), text_tokens=6)
    counts = _check_against_reference(i2t, method, (10, 10), ["transformer_blocks.1.attn", "transformer_blocks.2.attn"])
    assert max(counts) > 1
