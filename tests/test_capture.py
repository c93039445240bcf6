"""Self-attention capture on the tiny SD 1.x-structured UNet (offline, CPU, fp32)."""

from __future__ import annotations

import math

import pytest
import torch

from diffseg.capture import (
    AttentionStore,
    capture_self_attention,
    capture_self_attention_reference,
    self_attention_layer_names,
)
from diffseg.testing.tiny import build_tiny_components, tiny_text_config

SIDES = (64, 32, 16, 8)
LAYERS_PER_SIDE = {64: 5, 32: 5, 16: 5, 8: 1}


@pytest.fixture(scope="module")
def unet():
    return build_tiny_components(seed=0)[1]


@pytest.fixture(scope="module")
def inputs():
    """Latents (2, 4, 64, 64) and a context (2, 77, hidden)."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 64, 64, generator=g)
    context = torch.randn(2, 77, tiny_text_config().hidden_size, generator=g)
    return latents, context


def _forward(unet, latents, context):
    with torch.inference_mode():
        return unet(latents, 300, encoder_hidden_states=context).sample


def _processor_classes(unet):
    return {name: type(proc) for name, proc in unet.attn_processors.items()}


@pytest.fixture(scope="module")
def plain_output(unet, inputs):
    return _forward(unet, *inputs)


@pytest.fixture(scope="module")
def captured(unet, inputs):
    """Fast capture of one batch-2 pass, plus an independent float64 recomputation from hooks."""
    recomputed: dict[int, list[torch.Tensor]] = {}

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        assert module.group_norm is None and module.spatial_norm is None
        q = module.to_q(hidden).double()
        k = module.to_k(hidden).double()
        batch, n, inner = q.shape
        head_dim = inner // module.heads
        per_head = []
        for h in range(module.heads):
            qh = q[:, :, h * head_dim : (h + 1) * head_dim]
            kh = k[:, :, h * head_dim : (h + 1) * head_dim]
            scores = qh @ kh.transpose(1, 2) / math.sqrt(head_dim)
            per_head.append(torch.softmax(scores, dim=-1))
        recomputed.setdefault(math.isqrt(n), []).append(torch.stack(per_head).mean(dim=0))

    modules = [m for name, m in unet.named_modules() if name.endswith("attn1")]
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    try:
        with capture_self_attention(unet) as store:
            output = _forward(unet, *inputs)
    finally:
        for handle in handles:
            handle.remove()
    expected = {side: torch.stack(maps).mean(dim=0) for side, maps in recomputed.items()}
    return store, output, expected


def test_tiny_unet_has_sd1_self_attention_layout(unet, captured):
    assert len(self_attention_layer_names(unet)) == 16
    store, _, _ = captured
    assert store.layer_counts == LAYERS_PER_SIDE


def test_store_shapes_and_rows(captured):
    store, _, _ = captured
    maps = store.maps()
    assert tuple(maps) == SIDES
    for side, attn in maps.items():
        assert attn.shape == (2, side * side, side * side)
        assert attn.dtype == torch.float32
        assert attn.min() >= 0
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, side * side), rtol=0, atol=1e-5)


def test_store_matches_independent_recomputation(captured):
    store, _, expected = captured
    maps = store.maps()
    assert set(expected) == set(maps)
    for side in maps:
        torch.testing.assert_close(maps[side].double(), expected[side], rtol=1e-5, atol=1e-9)


def test_fast_matches_reference(unet, inputs, captured, plain_output):
    before = _processor_classes(unet)
    with capture_self_attention_reference(unet) as ref_store:
        ref_output = _forward(unet, *inputs)
    assert _processor_classes(unet) == before
    assert ref_store.layer_counts == LAYERS_PER_SIDE
    assert all(p.shape[1] == 2 for _, p in ref_store.layers)  # per-head maps kept
    reference = ref_store.maps()
    fast = captured[0].maps()
    assert tuple(reference) == tuple(fast)
    for side in fast:
        torch.testing.assert_close(fast[side], reference[side], rtol=1e-5, atol=1e-9)
    scale = plain_output.abs().max().item()
    torch.testing.assert_close(ref_output, plain_output, rtol=1e-5, atol=1e-5 * scale)


def test_output_unchanged_and_processors_restored(unet, inputs, captured, plain_output):
    before = unet.attn_processors
    _, output, _ = captured
    scale = plain_output.abs().max().item()
    torch.testing.assert_close(output, plain_output, rtol=1e-5, atol=1e-5 * scale)
    # the pass after the capture runs the default processors again, bit for bit
    assert torch.equal(_forward(unet, *inputs), plain_output)
    after = unet.attn_processors
    assert {k: type(v) for k, v in after.items()} == {k: type(v) for k, v in before.items()}
    assert all(after[k] is before[k] for k in before)


def test_only_self_attention_layers_replaced(unet):
    before = unet.attn_processors
    with capture_self_attention(unet):
        during = unet.attn_processors
    for name, proc in during.items():
        if name.endswith("attn1.processor"):
            assert proc is not before[name]
        else:
            assert proc is before[name]


def test_processors_restored_after_exception(unet, inputs):
    before = unet.attn_processors
    with pytest.raises(RuntimeError, match="boom"):
        with capture_self_attention(unet):
            raise RuntimeError("boom")
    assert unet.attn_processors == before
    # an error raised inside the UNet pass (non-square feature map) restores them too
    latents, context = inputs
    with pytest.raises(ValueError, match="not a square"):
        with capture_self_attention(unet):
            _forward(unet, latents[:1, :, :, :32], context[:1])
    assert unet.attn_processors == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture_self_attention_reference(unet):
            raise RuntimeError("boom")
    assert unet.attn_processors == before
    assert all("get_attention_scores" not in vars(m) for m in unet.modules())


def test_batch_of_two_equals_two_batches_of_one(unet, inputs, captured):
    latents, context = inputs
    batched = captured[0].maps()
    for i in range(2):
        with capture_self_attention(unet) as store:
            _forward(unet, latents[i : i + 1], context[i : i + 1])
        single = store.maps()
        for side in SIDES:
            torch.testing.assert_close(single[side][0], batched[side][i], rtol=1e-5, atol=1e-9)


def test_head_chunk_gives_same_maps(unet, inputs, captured, plain_output):
    with capture_self_attention(unet, head_chunk=1) as store:
        output = _forward(unet, *inputs)
    chunked, full = store.maps(), captured[0].maps()
    for side in SIDES:
        torch.testing.assert_close(chunked[side], full[side], rtol=1e-5, atol=1e-9)
    scale = plain_output.abs().max().item()
    torch.testing.assert_close(output, plain_output, rtol=1e-5, atol=1e-5 * scale)
    with pytest.raises(ValueError):
        with capture_self_attention(unet, head_chunk=0):
            pass


def test_store_accumulates_passes_and_resets(unet, inputs):
    latents, context = inputs
    small = latents[:1, :, :16, :16], context[:1]  # 16x16 latents: sides 16, 8, 4, 2
    with capture_self_attention(unet) as store:
        _forward(unet, *small)
        once = store.maps()
        _forward(unet, *small)
        assert store.layer_counts == {16: 10, 8: 10, 4: 10, 2: 2}
        twice = store.maps()
        store.reset()
        assert store.maps() == {}
    assert tuple(once) == (16, 8, 4, 2)
    for side in once:
        torch.testing.assert_close(twice[side], once[side], rtol=1e-6, atol=1e-9)


def test_store_rejects_batch_change():
    store = AttentionStore()
    store.add_heads(2, torch.full((1, 1, 4, 4), 0.25), num_heads=1)
    with pytest.raises(ValueError, match="batch changed"):
        store.add_heads(2, torch.full((2, 1, 4, 4), 0.25), num_heads=1)
