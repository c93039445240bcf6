"""DiffSeg and K-Means on MM-DiT image-to-image maps (diffseg.joint_aggregation)."""

from __future__ import annotations

import pytest
import torch

from diffseg import DiffSeg, KMeansSegmenter, aggregate_attention
from diffseg.joint_aggregation import image_self_attention
from diffseg.joint_attention import capture_joint_attention
from diffseg.testing.tiny_mmdit import build_tiny_transformer, tiny_transformer_inputs


def test_rows_renormalised_then_layers_averaged():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 16, 16, generator=g) * 0.05
    b = torch.rand(2, 16, 16, generator=g) * 0.02
    maps = {"transformer_blocks.1.attn": a, "transformer_blocks.4.attn": b, "single_transformer_blocks.0.attn": a * 2}
    out = image_self_attention(maps, [1, "transformer_blocks.4"])
    assert list(out) == [4]
    expected = (a / a.sum(-1, keepdim=True) + b / b.sum(-1, keepdim=True)) / 2
    torch.testing.assert_close(out[4], expected)
    torch.testing.assert_close(out[4].sum(-1), torch.ones(2, 16))
    only_a = image_self_attention(maps, [1])[4]
    assert not torch.allclose(only_a, out[4])  # the layer choice reaches the result
    torch.testing.assert_close(image_self_attention(maps, ["single_transformer_blocks.0"])[4], only_a)
    assert image_self_attention(maps)[4].shape == (2, 16, 16)  # None: every module
    with pytest.raises(KeyError, match="transformer_blocks.7.attn"):
        image_self_attention(maps, [7])
    with pytest.raises(ValueError, match="square grid"):
        image_self_attention({"x.attn": torch.rand(1, 6, 6)})


@pytest.fixture(scope="module")
def captured():
    model = build_tiny_transformer("sd3", seed=21)
    inputs = tiny_transformer_inputs(model, batch=2, seed=22, side=16)  # 8 x 8 image tokens
    with torch.no_grad(), capture_joint_attention(model) as store:
        model(**inputs)
    return store.image_to_image()


def test_diffseg_on_captured_joint_attention(captured):
    maps = image_self_attention(captured)
    attention = aggregate_attention(maps)
    assert attention.shape == (2, 8, 8, 8, 8)
    # one resolution: the aggregated tensor is the renormalised maps themselves
    torch.testing.assert_close(attention, maps[8].reshape(2, 8, 8, 8, 8))
    tight = DiffSeg(kl_threshold=0.001, num_points=4, output_size=32, kl_precision="float32")
    loose = DiffSeg(kl_threshold=0.3, num_points=4, output_size=32, kl_precision="float32")
    assert [len(torch.unique(m)) for m in tight(attention)] == [16, 16]  # every anchor its own segment
    assert [len(torch.unique(m)) for m in loose(attention)] == [1, 1]  # everything merged
    other = aggregate_attention(image_self_attention(captured, [0]))
    assert float((other - attention).abs().max()) > 1e-3  # a different layer set gives different maps


def test_kmeans_on_captured_joint_attention(captured):
    attention = aggregate_attention(image_self_attention(captured))
    constant = KMeansSegmenter(num_clusters=3, output_size=32)(attention)
    assert constant.shape == (2, 32, 32)
    assert [len(torch.unique(m)) for m in constant] == [3, 3]
    per_image = KMeansSegmenter(output_size=32)(attention, num_clusters=[2, 4])
    assert [len(torch.unique(m)) for m in per_image] == [2, 4]
