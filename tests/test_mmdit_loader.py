"""MMDiTBackbone.from_pretrained end to end on tiny pipelines written to disk (Flux and SD3 folders, single
transformer files), offline, as model=flux_dev / flux_schnell / sd3_medium load the real weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffseg.mmdit_backbone import MMDiTBackbone
from diffseg.testing import tiny_mmdit
from diffseg.testing.tiny import build_tiny_tokenizer


def _save(folder, kind: str, seed: int) -> str:
    if kind.startswith("flux"):
        return tiny_mmdit.save_tiny_flux_pipeline(str(folder), kind, seed=seed)
    return tiny_mmdit.save_tiny_sd3_pipeline(str(folder), kind, seed=seed)


def _load(path: str, monkeypatch, **kwargs) -> MMDiTBackbone:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the loader reads it (local_files_only unset), as for a real run
    return MMDiTBackbone.from_pretrained(path, dtype=kwargs.pop("dtype", "float32"), device="cpu", input_size=64,
                                         **kwargs)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def _flux_sigma(image_tokens: int) -> float:
    """FLUX.1's step: sigmas linspace(1, 1/28, 28), time shift exp(mu) with mu linear in the token count, index 20."""
    mu = 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)
    s = np.linspace(1.0, 1 / 28, 28)[28 - 8]
    return math.exp(mu) / (math.exp(mu) + (1 / s - 1))


@pytest.mark.parametrize(("kind", "family", "text_tokens"), [("flux_dev", "flux-dev", 77),
                                                            ("flux_schnell", "flux-schnell", 77),
                                                            ("sd3", "sd3", 154)])
def test_folder_loads_and_one_capture_leaves_the_output_unchanged(kind, family, text_tokens, tmp_path, monkeypatch):
    folder = _save(tmp_path / kind, kind, seed=3)
    bb = _load(folder, monkeypatch, revision="v1.0", seed=2)
    assert bb.pretrained and bb.name == folder and bb.revision == "v1.0" and bb.dtype == torch.float32
    assert bb.family.name == family
    reference = (tiny_mmdit.build_tiny_flux_pipeline if kind.startswith("flux")
                 else tiny_mmdit.build_tiny_sd3_pipeline)(kind, seed=3)
    assert _same_weights(bb.pipe.transformer, reference.transformer) and _same_weights(bb.pipe.vae, reference.vae)
    if kind.startswith("flux"):
        assert bb.pipe.text_encoder_2 is None and bb.pipe.tokenizer_2 is None  # T5 never loaded
        assert bb.sigma == pytest.approx(_flux_sigma(16), abs=1e-6)  # 64 px -> 8 x 8 latent -> 16 tokens
        # the pooled prompt is CLIP's pooled output of "", the context zeros in T5's place
        context, pooled = bb.empty_prompt()
        ids = build_tiny_tokenizer()([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = reference.text_encoder(ids).pooler_output
        torch.testing.assert_close(pooled, expected)
        assert context.shape == (1, 77, 32) and float(context.abs().max()) == 0.0
        layers = ["transformer_blocks.1", "single_transformer_blocks.0"]
    else:
        assert bb.pipe.text_encoder_3 is None and bb.sigma == pytest.approx(0.515072, abs=1e-6)
        layers = ["transformer_blocks.2"]
    images = torch.randint(0, 256, (1, 3, 50, 70), generator=torch.Generator().manual_seed(0)).float()
    latents = bb.encode(bb.preprocess(images))
    assert latents.shape == (1, bb.pipe.vae.config.latent_channels, 8, 8)
    inputs = bb.transformer_inputs(latents)
    with torch.no_grad():
        plain = bb.pipe.transformer(**inputs)[0]
        store = bb.joint_attention(images, layers=layers)
        again = bb.pipe.transformer(**inputs)[0]  # processors restored after the capture
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    i2t, i2i = store.image_to_text(), store.image_to_image()
    assert sorted(i2t) == sorted(f"{name}.attn" for name in layers)
    for name in i2t:
        assert i2t[name].shape == (1, 16, text_tokens) and i2i[name].shape == (1, 16, 16)
        torch.testing.assert_close(i2t[name].sum(-1) + i2i[name].sum(-1), torch.ones(1, 16))
        assert float(i2i[name].std()) > 1e-4  # not uniform: the weights reached the maps
    # the capture sees the same pass: the transformer's output under capture equals the plain one
    from diffseg import capture_joint_attention

    with torch.no_grad(), capture_joint_attention(bb.pipe.transformer, layers):
        captured = bb.pipe.transformer(**inputs)[0]
    torch.testing.assert_close(captured, plain, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["flux_dev", "sd35_medium"])
def test_single_transformer_file_with_config_folder(kind, tmp_path, monkeypatch):
    folder = _save(tmp_path / "pipe", kind, seed=0)
    path = tiny_mmdit.save_tiny_transformer_file(str(tmp_path / f"{kind}.safetensors"), kind, seed=7)
    single = _load(path, monkeypatch, config=folder)
    whole = _load(folder, monkeypatch)
    assert single.pretrained and single.name == path and single.family.name == kind.replace("_", "-")
    assert _same_weights(single.pipe.transformer, tiny_mmdit.build_tiny_transformer(kind, seed=7))  # the file's
    assert not _same_weights(single.pipe.transformer, whole.pipe.transformer)
    assert _same_weights(single.pipe.vae, whole.pipe.vae)  # the rest from the config folder
    assert _same_weights(single.pipe.text_encoder, whole.pipe.text_encoder)
    images = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(1)).float()
    layer = ["transformer_blocks.1"]
    a = single.joint_attention(images, layers=layer).image_to_text()["transformer_blocks.1.attn"]
    b = whole.joint_attention(images, layers=layer).image_to_text()["transformer_blocks.1.attn"]
    assert a.shape == b.shape and float((a - b).abs().max()) > 1e-4  # other transformer weights, other maps


def test_dtype_is_applied_and_recorded(tmp_path, monkeypatch):
    folder = _save(tmp_path / "flux", "flux_schnell", seed=0)
    bb = _load(folder, monkeypatch, dtype="bfloat16")
    assert bb.dtype == torch.bfloat16
    assert {p.dtype for p in bb.pipe.transformer.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bb.pipe.vae.parameters()} == {torch.bfloat16}
    context, pooled = bb.empty_prompt()
    assert context.dtype == pooled.dtype == torch.bfloat16
