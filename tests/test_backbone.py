"""StableDiffusionBackbone on the tiny model (offline, CPU): loading, encoding, maps, errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from diffseg.backbone import BackboneLoadError, StableDiffusionBackbone
from diffseg.capture import self_attention_layer_names
from diffseg.testing.tiny import (
    build_tiny_components,
    save_tiny_pretrained,
    sd1_unet_config,
    tiny_backbone,
    tiny_unet_config,
)


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) uniform in [-1, 1]."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def backbone():
    return StableDiffusionBackbone.from_components(*build_tiny_components(seed=0), name="tiny")


def test_from_pretrained_matches_from_components(tiny_dir, backbone):
    loaded = StableDiffusionBackbone.from_pretrained(tiny_dir)
    assert loaded.name == str(tiny_dir)
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu")
    images = _images(2, 512)
    maps = loaded.attention_maps(images)
    expected = backbone.attention_maps(images)
    assert tuple(maps) == (64, 32, 16, 8)
    for side, attn in maps.items():
        assert attn.shape == (2, side * side, side * side) and attn.dtype == torch.float32
        torch.testing.assert_close(attn, expected[side], rtol=1e-5, atol=1e-9)


def test_tiny_backbone_defaults(backbone):
    bb = tiny_backbone(seed=0)
    assert bb.name == "tiny-random" and bb.dtype == torch.float32 and bb.device == torch.device("cpu")
    unet_state = backbone.unet.state_dict()
    assert all(torch.equal(unet_state[k], v) for k, v in bb.unet.state_dict().items())


def test_model_index_and_safetensors_written(tiny_dir):
    assert (tiny_dir / "model_index.json").is_file()
    for folder in ("vae", "unet", "text_encoder"):
        assert list((tiny_dir / folder).glob("*.safetensors"))
        assert not list((tiny_dir / folder).glob("*.bin"))
    assert (tiny_dir / "tokenizer").is_dir()


def test_encode_is_scaled_latent_mean(backbone):
    images = _images(2, 64)
    latents = backbone.encode(images)
    assert latents.shape == (2, 4, 8, 8)
    assert backbone.vae.config.scaling_factor == pytest.approx(0.18215)
    with torch.no_grad():
        expected = backbone.vae.encode(images).latent_dist.mean * 0.18215
    torch.testing.assert_close(latents, expected, rtol=0, atol=0)


def test_empty_prompt_embedded_once():
    bb = StableDiffusionBackbone.from_components(*build_tiny_components(seed=0))
    calls = []
    bb.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    images = _images(3, 128)
    bb.attention_maps(images[:1])
    bb.attention_maps(images)
    assert len(calls) == 1
    assert bb.empty_context.shape == (1, 77, 32)
    assert len(calls) == 1


def test_noise_is_seeded_and_changes_maps(backbone):
    images = _images(1, 128)
    clean = backbone.attention_maps(images)
    noisy = backbone.attention_maps(images, noise=True, seed=0)
    again = backbone.attention_maps(images, noise=True, seed=0)
    other = backbone.attention_maps(images, noise=True, seed=1)
    assert tuple(noisy) == (16, 8, 4, 2)
    for side in noisy:
        assert torch.equal(noisy[side], again[side])
    assert not torch.allclose(noisy[16], clean[16])
    assert not torch.allclose(noisy[16], other[16])


def test_reference_path_and_head_chunk_agree(backbone):
    images = _images(2, 128, seed=3)
    fast = backbone.attention_maps(images)
    chunked = backbone.attention_maps(images, head_chunk=1)
    reference = backbone.attention_maps(images, reference=True)
    for side in fast:
        torch.testing.assert_close(chunked[side], fast[side], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(reference[side], fast[side], rtol=1e-5, atol=1e-9)


def test_missing_local_path_raises(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(BackboneLoadError, match="no such local folder") as info:
        StableDiffusionBackbone.from_pretrained(missing)
    assert str(missing) in str(info.value)


def test_offline_hub_id_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    model_id = "CompVis/stable-diffusion-v1-4"
    with pytest.raises(BackboneLoadError, match="not in cache") as info:
        StableDiffusionBackbone.from_pretrained(model_id, cache_dir=tmp_path / "hf-cache")
    assert model_id in str(info.value)


def test_local_folder_without_safetensors_raises(tmp_path):
    root = save_tiny_pretrained(tmp_path / "model")
    for weights in (root / "unet").glob("*.safetensors"):
        weights.unlink()
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(BackboneLoadError, match="safetensors") as info:
        StableDiffusionBackbone.from_pretrained(root)
    assert str(root) in str(info.value) and "unet/" in str(info.value)


@pytest.mark.parametrize("config", [tiny_unet_config, sd1_unet_config])
def test_unet_configs_have_16_self_attention_layers(config):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config())
    assert len(self_attention_layer_names(unet)) == 16
    if config is sd1_unet_config:
        assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD 1.x UNet


def test_tiny_components_are_seeded():
    first, second, third = (build_tiny_components(seed=s)[1] for s in (0, 0, 1))
    state = first.state_dict()
    assert all(torch.equal(state[k], v) for k, v in second.state_dict().items())
    assert not all(torch.equal(state[k], v) for k, v in third.state_dict().items())


def test_broken_local_folder_raises(tmp_path):
    root = save_tiny_pretrained(tmp_path / "model")
    (root / "text_encoder" / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(BackboneLoadError, match="text_encoder/ from the local folder") as info:
        StableDiffusionBackbone.from_pretrained(root)
    assert str(root) in str(info.value)


def test_noise_does_not_depend_on_the_batch(backbone):
    latents = torch.randn(2, 4, 8, 8)
    both = backbone.add_noise(latents, 300, seed=3)
    torch.testing.assert_close(both[1:], backbone.add_noise(latents[1:], 300, seed=3))
    assert not torch.equal(both, latents)
