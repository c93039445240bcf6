"""MM-DiT family recognition, the Seg4Diff input recipe of MMDiTBackbone (tiny SD3 pipeline folder), offline errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from diffseg.backbone import BackboneLoadError
from diffseg.families import UnsupportedModelError, detect_mmdit_family
from diffseg.mmdit_backbone import MMDiTBackbone, flow_matching_sigma
from diffseg.testing import tiny_mmdit


@pytest.mark.parametrize(("config", "name", "blocks", "single"), [
    (tiny_mmdit.sd3_medium_transformer_config(), "sd3", 24, 0),
    (tiny_mmdit.sd35_medium_transformer_config(), "sd35-medium", 24, 0),
    (tiny_mmdit.sd35_large_transformer_config(), "sd35-large", 38, 0),
    (tiny_mmdit.flux_transformer_config(guidance=True), "flux-dev", 19, 38),
    (tiny_mmdit.flux_transformer_config(guidance=False), "flux-schnell", 19, 38),
])
def test_families_from_real_configs(config, name, blocks, single):
    family = detect_mmdit_family(config)
    assert (family.name, family.joint_blocks, family.single_blocks) == (name, blocks, single)
    assert family.token_order == (("text", "image") if name.startswith("flux") else ("image", "text"))


@pytest.mark.parametrize("kind", tiny_mmdit.TINY_MMDIT_KINDS)
def test_tiny_configs_are_recognised_as_their_family(kind):
    assert detect_mmdit_family(tiny_mmdit.tiny_transformer_config(kind)).name == kind.replace("_", "-")


def test_unknown_transformer_config_is_refused():
    with pytest.raises(UnsupportedModelError, match="not an MM-DiT"):
        detect_mmdit_family({"num_layers": 3})


def test_release_timestep_and_sigma():
    # SD3 / SD3.5 scheduler config: shift 3.0; the 8th-from-last of 28 steps
    timestep, sigma = flow_matching_sigma(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0))
    assert timestep == pytest.approx(515.072, abs=1e-3) and sigma == pytest.approx(0.515072, abs=1e-6)
    # sigma = shift * s / (1 + (shift - 1) * s) at s = linspace(1, shift(1/1000), 28)[20]
    s_min = 3 * 0.001 / (1 + 2 * 0.001)
    s = 1 + (s_min - 1) * 20 / 27
    assert sigma == pytest.approx(3 * s / (1 + 2 * s), abs=1e-6)
    assert flow_matching_sigma(FlowMatchEulerDiscreteScheduler(shift=1.0))[1] < sigma


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    folder = tiny_mmdit.save_tiny_sd3_pipeline(str(tmp_path_factory.mktemp("sd35")), "sd35_medium", seed=0)
    return MMDiTBackbone.from_pretrained(folder, dtype="float32", device="cpu", input_size=64,
                                         local_files_only=True, seed=5)


def test_backbone_input_recipe(tiny_backbone):
    bb = tiny_backbone
    assert bb.family.name == "sd35-medium" and bb.sigma == pytest.approx(0.515072, abs=1e-6)
    context, pooled = bb.empty_prompt()
    assert context.shape == (1, 154, 32) and pooled.shape == (1, 24)
    assert float(context[:, 77:].abs().max()) == 0.0  # T5 off: zeros in its place
    assert float(context[:, :77].abs().max()) > 0.0
    # padding to a multiple of 32 (zeros = black, -1 after 2x - 1) before the bilinear resize of the whole image
    images = torch.full((1, 3, 40, 64), 255.0)
    x = bb.preprocess(images)
    assert x.shape == (1, 3, 64, 64)
    assert float(x[0, :, :35].min()) == pytest.approx(1.0) and float(x[0, :, -5:].max()) == pytest.approx(-1.0)
    # latent: (mean - shift) * scale
    latents = bb.encode(x)
    vae = bb.pipe.vae
    expected = (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor
    torch.testing.assert_close(latents, expected)
    # seeded noise, the same for an image whatever its batch
    inputs = bb.transformer_inputs(latents.expand(2, -1, -1, -1))
    torch.testing.assert_close(inputs["hidden_states"][0], inputs["hidden_states"][1])
    noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(inputs["hidden_states"][0], (1 - bb.sigma) * latents[0] + bb.sigma * noise)
    assert float(inputs["timestep"][0]) == pytest.approx(515.072, abs=1e-3)


def test_backbone_joint_attention(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 50, 70), generator=g).float()
    store = tiny_backbone.joint_attention(images, layers=[2])
    i2t = store.image_to_text()["transformer_blocks.2.attn"]
    i2i = store.image_to_image()["transformer_blocks.2.attn"]
    assert i2t.shape == (2, 16, 154) and i2i.shape == (2, 16, 16)
    torch.testing.assert_close(i2t.sum(-1) + i2i.sum(-1), torch.ones(2, 16))
    again = tiny_backbone.joint_attention(images[:1], layers=[2]).image_to_text()["transformer_blocks.2.attn"]
    torch.testing.assert_close(again[0], i2t[0], rtol=1e-5, atol=1e-6)  # seeded: reproducible, batch-independent
    assert float((i2t[0] - i2t[1]).abs().max()) > 1e-4  # different images, different maps


def test_offline_without_weights_fails_once_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BackboneLoadError) as info:
        MMDiTBackbone.from_pretrained("stabilityai/stable-diffusion-3-medium-diffusers", revision="main",
                                      local_files_only=True, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "stabilityai/stable-diffusion-3-medium-diffusers" in message and "offline" in message
    assert "\n" not in message
    with pytest.raises(BackboneLoadError, match="config="):
        MMDiTBackbone.from_pretrained(str(tmp_path / "sd3.safetensors"), local_files_only=True)
