"""capture_joint_attention on tiny SD3 / SD3.5 / Flux transformers, checked against an eager recomputation."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

from diffseg.joint_attention import (
    JointAttentionCaptureProcessor,
    capture_joint_attention,
    joint_attention_module_names,
    joint_capture_peak_bytes,
    joint_probabilities,
)
from diffseg.testing.tiny_mmdit import TINY_MMDIT_KINDS, build_tiny_transformer, tiny_transformer_inputs

TEXT = 6  # text tokens of the tiny inputs
IMAGE = 16  # image tokens (4 x 4 grid)


def _layers(kind: str):
    return [0, 2] if not kind.startswith("flux") else [1, "single_transformer_blocks.1"]


def _record_module_inputs(transformer, names):
    """Forward hooks that keep each named module's call arguments and output."""
    seen, hooks = {}, []
    modules = dict(transformer.named_modules())
    for name in names:
        def hook(_module, args, kwargs, output, name=name):
            seen[name] = (args, kwargs, output)
        hooks.append(modules[name].register_forward_hook(hook, with_kwargs=True))
    return seen, hooks


def _eager(attn, kind_layout, hidden, context, rotary):
    """Plain eager joint attention from the module's own weights: (probs (B, h, L, L), out image, out text, order).

    Written independently of the capture: per-head loops, explicit concatenation, softmax over all keys.
    """
    heads = attn.heads
    dim = attn.to_q.out_features // heads

    def split(x):  # (B, L, h*D) -> (B, L, h, D)
        return x.reshape(x.shape[0], x.shape[1], heads, dim)

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(hidden)), split(attn.to_v(hidden))
    if attn.norm_q is not None:  # SD3.5 and Flux: RMS over D (the layout of the other dims does not matter)
        q, k = attn.norm_q(q), attn.norm_k(k)
    if context is not None:
        cq, ck, cv = split(attn.add_q_proj(context)), split(attn.add_k_proj(context)), split(attn.add_v_proj(context))
        if attn.norm_added_q is not None:
            cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        parts = [(q, cq), (k, ck), (v, cv)]
        if kind_layout == "sd3":
            q, k, v = (torch.cat([a, b], dim=1) for a, b in parts)
        else:
            q, k, v = (torch.cat([b, a], dim=1) for a, b in parts)
    if rotary is not None:
        q = apply_rotary_emb(q, rotary, sequence_dim=1)
        k = apply_rotary_emb(k, rotary, sequence_dim=1)
    batch, length = q.shape[0], q.shape[1]
    probs = torch.empty(batch, heads, length, length, dtype=torch.float64)
    out = torch.empty(batch, length, heads, dim, dtype=torch.float64)
    for h in range(heads):
        scores = q[:, :, h].double() @ k[:, :, h].double().transpose(1, 2) / dim ** 0.5
        probs[:, h] = torch.softmax(scores, dim=-1)
        out[:, :, h] = probs[:, h] @ v[:, :, h].double()
    return probs, out.reshape(batch, length, heads * dim).float()


@pytest.mark.parametrize("kind", TINY_MMDIT_KINDS)
def test_capture_matches_eager_recomputation(kind):
    model = build_tiny_transformer(kind, seed=1)
    inputs = tiny_transformer_inputs(model, batch=2, text_tokens=TEXT, seed=2)
    names = joint_attention_module_names(model, _layers(kind))
    seen, hooks = _record_module_inputs(model, names)
    try:
        with torch.no_grad(), capture_joint_attention(model, _layers(kind), query_chunk=5) as store:
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    i2i, i2t = store.image_to_image(), store.image_to_text()
    assert list(i2i) == names
    modules = dict(model.named_modules())
    for name in names:
        args, kwargs, output = seen[name]
        attn = modules[name]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        context = kwargs.get("encoder_hidden_states")
        rotary = kwargs.get("image_rotary_emb")
        layout = "sd3" if not kind.startswith("flux") else "flux"
        with torch.no_grad():
            probs, out = _eager(attn, layout, hidden, context, rotary)
            mean = probs.mean(dim=1)
            if layout == "sd3":
                image, text = slice(0, IMAGE), slice(IMAGE, IMAGE + TEXT)
                out_image = attn.to_out[0](out[:, image])
                got_image = output[0]
            else:
                image, text = slice(TEXT, TEXT + IMAGE), slice(0, TEXT)
                if context is not None:  # joint block: (image out, text out)
                    out_image, got_image = attn.to_out[0](out[:, image]), output[0]
                else:  # single block: the attention output of the whole (text, image) sequence, no projection
                    out_image, got_image = out[:, image], output[:, image]
        # the recomputation is the module's real attention: its output matches what the module returned
        torch.testing.assert_close(out_image, got_image, rtol=1e-4, atol=1e-4)
        assert i2i[name].dtype == torch.float32 and i2i[name].shape == (2, IMAGE, IMAGE)
        assert i2t[name].shape == (2, IMAGE, TEXT)
        torch.testing.assert_close(i2i[name].double(), mean[:, image, image], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(i2t[name].double(), mean[:, image, text], rtol=1e-5, atol=1e-6)
        # not renormalised: image and text parts of a row add up to 1 together, not each
        rows = i2i[name].sum(-1) + i2t[name].sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows))
        assert 0.02 < float(i2t[name].sum(-1).mean()) < 0.98


@pytest.mark.parametrize("kind", TINY_MMDIT_KINDS)
def test_output_unchanged_and_processors_restored(kind):
    model = build_tiny_transformer(kind, seed=3)
    inputs = tiny_transformer_inputs(model, batch=1, text_tokens=TEXT, seed=4)
    before = dict(model.attn_processors)
    with torch.no_grad():
        reference = model(**inputs)[0]
        with capture_joint_attention(model, _layers(kind) if kind.startswith("flux") else None) as store:
            assert any(isinstance(p, JointAttentionCaptureProcessor) for p in model.attn_processors.values())
            captured = model(**inputs)[0]
    torch.testing.assert_close(captured, reference, rtol=0, atol=1e-6)
    assert store.names  # something was recorded
    after = model.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_sd35_dual_attention_keeps_its_processor():
    model = build_tiny_transformer("sd35_medium")
    attn2 = model.transformer_blocks[0].attn2
    assert attn2 is not None
    original = attn2.processor
    with capture_joint_attention(model) as store:
        assert attn2.processor is original
        assert isinstance(model.transformer_blocks[0].attn.processor, JointAttentionCaptureProcessor)
        with torch.no_grad():
            model(**tiny_transformer_inputs(model))
    assert store.names == [f"transformer_blocks.{i}.attn" for i in range(3)]


def test_processors_restored_after_exception():
    model = build_tiny_transformer("flux_dev")
    before = dict(model.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_joint_attention(model, [0, "single_transformer_blocks.0"]):
            raise RuntimeError("boom")
    after = model.attn_processors
    assert all(after[k] is before[k] for k in before)
    # the text-length hooks are gone too
    assert not model.single_transformer_blocks[0]._forward_pre_hooks


@pytest.mark.parametrize("kind", ["sd35_medium", "flux_dev"])
def test_chunked_equals_unchunked(kind):
    model = build_tiny_transformer(kind, seed=5)
    inputs = tiny_transformer_inputs(model, batch=2, text_tokens=TEXT, seed=6)
    maps = {}
    for chunk in (None, 3, 16, 100):
        with torch.no_grad(), capture_joint_attention(model, _layers(kind), query_chunk=chunk) as store:
            model(**inputs)
        maps[chunk] = (store.image_to_image(), store.image_to_text())
    for chunk in (3, 16, 100):
        for name in maps[None][0]:
            torch.testing.assert_close(maps[chunk][0][name], maps[None][0][name], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(maps[chunk][1][name], maps[None][1][name], rtol=1e-6, atol=1e-7)


def test_joint_probabilities_chunks_and_slices():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 11, 4, generator=gen)
    k = torch.randn(2, 3, 11, 4, generator=gen)
    full = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 2.0, dim=-1).mean(dim=1)
    for chunk in (None, 1, 4):
        i2i, i2t = joint_probabilities(q, k, slice(3, 11), slice(0, 3), chunk)  # (text, image) order
        torch.testing.assert_close(i2i.double(), full[:, 3:, 3:], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(i2t.double(), full[:, 3:, :3], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="query_chunk"):
        joint_probabilities(q, k, slice(3, 11), slice(0, 3), 0)


def test_several_passes_are_averaged_and_text_matters():
    model = build_tiny_transformer("sd3", seed=7)
    a = tiny_transformer_inputs(model, seed=8)
    b = tiny_transformer_inputs(model, seed=9)
    with torch.no_grad():
        with capture_joint_attention(model, [1]) as one:
            model(**a)
        with capture_joint_attention(model, [1]) as two:
            model(**b)
        with capture_joint_attention(model, [1]) as both:
            model(**a)
            model(**b)
    name = "transformer_blocks.1.attn"
    assert both.counts == {name: 2}
    expected = (one.image_to_text()[name] + two.image_to_text()[name]) / 2
    torch.testing.assert_close(both.image_to_text()[name], expected)
    # different inputs give different maps (the store does not hold stale values)
    assert float((one.image_to_text()[name] - two.image_to_text()[name]).abs().max()) > 1e-3


def test_layer_selection_errors():
    sd3 = build_tiny_transformer("sd3")
    flux = build_tiny_transformer("flux_schnell")
    assert joint_attention_module_names(sd3, None) == [f"transformer_blocks.{i}.attn" for i in range(3)]
    assert joint_attention_module_names(flux, ["single_transformer_blocks.1.attn", 0]) == [
        "single_transformer_blocks.1.attn", "transformer_blocks.0.attn"]
    with pytest.raises(ValueError, match="out of range"):
        joint_attention_module_names(sd3, [3])
    with pytest.raises(ValueError, match="only Flux"):
        joint_attention_module_names(sd3, ["single_transformer_blocks.0"])
    with pytest.raises(ValueError, match="no block index"):
        joint_attention_module_names(sd3, ["blocks.0"])
    with pytest.raises(TypeError, match="SD3Transformer2DModel"):
        with capture_joint_attention(torch.nn.Linear(2, 2)):
            pass


def test_peak_bound_grows_with_chunk():
    small = joint_capture_peak_bytes(1, 4096, 154, 24, 256)
    full = joint_capture_peak_bytes(1, 4096, 154, 24, None)
    assert full > 2 * 24 * 4096 * 4250 * 4 > small
