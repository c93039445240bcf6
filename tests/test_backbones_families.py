"""Every Stable Diffusion family through the user's loading code: tiny models in each family's real
structure saved in the diffusers pipeline layout, single-file checkpoints, family detection from
configs, SDXL conditioning, float16 VAE overflow, head-chunk memory rule, any-resolution aggregation,
and the runner end to end on a tiny SDXL folder (offline, CPU)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from hydra_compose import compose_eval
from PIL import Image
from reference_impl import bilinear_half_pixel

from diffseg.aggregation import aggregate_attention
from diffseg.backbone import (
    SINGLE_FILE_DEFAULT_CONFIGS,
    BackboneLoadError,
    NonFiniteOutputError,
    StableDiffusionBackbone,
    single_file_kind,
)
from diffseg.capture import (
    AttentionStore,
    attention_peak_bytes,
    available_memory,
    capture_self_attention,
    choose_head_chunk,
)
from diffseg.families import UnsupportedModelError, detect_family, self_attention_layout
from diffseg.testing.tiny import (
    build_tiny_family,
    save_tiny_pretrained,
    save_tiny_single_file,
    sd1_unet_config,
    sd2_unet_config,
    sdxl_unet_config,
    tiny_sd2_unet_config,
    tiny_sdxl_unet_config,
    tiny_unet_config,
    tiny_vae_config,
)
from eval.data.coco_stuff import CocoStuff27
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate

GiB = 2**30


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD 1.x, SD 2.x (768, v-prediction) and SDXL models saved by their pipelines' save_pretrained."""
    root = tmp_path_factory.mktemp("families")
    return {family: save_tiny_pretrained(root / family, seed=0, family=family) for family in ("sd1", "sd2-v", "sdxl")}


@pytest.fixture(scope="module")
def sdxl(folders) -> StableDiffusionBackbone:
    return StableDiffusionBackbone.from_pretrained(folders["sdxl"])


# ------------------------------------------------------------------------------------- family detection
@pytest.mark.parametrize(
    "unet, scheduler, family, native, layout",
    [
        (tiny_unet_config(), {}, "sd1", 512, {64: 5, 32: 5, 16: 5, 8: 1}),
        (tiny_sd2_unet_config(False), {"prediction_type": "epsilon"}, "sd2-base", 512, {64: 5, 32: 5, 16: 5, 8: 1}),
        (tiny_sd2_unet_config(True), {"prediction_type": "v_prediction"}, "sd2-v", 768, {96: 5, 48: 5, 24: 5, 12: 1}),
        (tiny_sdxl_unet_config(), {}, "sdxl", 1024, {64: 10, 32: 60}),
        ({**tiny_sdxl_unet_config(), "transformer_layers_per_block": (1, 2, 4)}, {}, "ssd-1b", 1024,
         {64: 10, 32: 24}),
        ({**tiny_sdxl_unet_config(), "transformer_layers_per_block": (1, 1, 2)}, {}, "segmind-vega", 1024,
         {64: 5, 32: 12}),
        ({**tiny_sdxl_unet_config(), "transformer_layers_per_block": (1, 3, 3)}, {}, "sdxl-variant", 1024,
         {64: 15, 32: 18}),
        (sd1_unet_config(), {}, "sd1", 512, {64: 5, 32: 5, 16: 5, 8: 1}),
        (sd2_unet_config(False), {"prediction_type": "epsilon"}, "sd2-base", 512, {64: 5, 32: 5, 16: 5, 8: 1}),
        (sd2_unet_config(True), {"prediction_type": "v_prediction"}, "sd2-v", 768, {96: 5, 48: 5, 24: 5, 12: 1}),
        (sdxl_unet_config(), {}, "sdxl", 1024, {64: 10, 32: 60}),
        (sdxl_unet_config((1, 2, 4)), {}, "ssd-1b", 1024, {64: 10, 32: 24}),
        (sdxl_unet_config((1, 1, 2)), {}, "segmind-vega", 1024, {64: 5, 32: 12}),
    ],
)
def test_family_detected_from_configs(unet, scheduler, family, native, layout):
    found = detect_family(unet, scheduler, tiny_vae_config())
    assert found.name == family and found.native_size == native
    assert dict(found.layout) == layout and found.attention_sides == tuple(layout)
    assert found.text_encoders == (2 if unet.get("addition_embed_type") == "text_time" else 1)
    assert found.prediction_type == scheduler.get("prediction_type", "epsilon")
    assert family in found.describe() and f"{native} px" in found.describe()


@pytest.mark.parametrize("config", [
    tiny_sd2_unet_config(True), tiny_sdxl_unet_config(),
    {**tiny_sdxl_unet_config(), "transformer_layers_per_block": (1, 1, 2)},
])
def test_layout_rule_matches_a_real_pass(config):
    """self_attention_layout counts the attn1 layers a UNet built from the config really runs, per side."""
    unet = UNet2DConditionModel(**config).eval()
    latent = 8
    kwargs = {"encoder_hidden_states": torch.zeros(1, 77, config["cross_attention_dim"])}
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(1, pooled), "time_ids": torch.zeros(1, 6)}
    with torch.inference_mode(), capture_self_attention(unet) as store:
        unet(torch.zeros(1, 4, latent, latent), 300, **kwargs)
    assert store.layer_counts == self_attention_layout(config, latent)


@pytest.mark.parametrize("change, match", [
    ({"in_channels": 9}, "in_channels=9"),
    ({"addition_embed_type": "text"}, "addition_embed_type='text'"),
    ({"class_embed_type": "timestep"}, "class-conditioned"),
])
def test_unsupported_unets_are_named(change, match):
    with pytest.raises(UnsupportedModelError, match=match):
        detect_family({**tiny_unet_config(), **change}, {}, tiny_vae_config())


def test_family_comes_from_the_config_not_the_name(folders, tmp_path):
    misleading = tmp_path / "stable-diffusion-v1-4"
    shutil.copytree(folders["sdxl"], misleading)
    backbone = StableDiffusionBackbone.from_pretrained(misleading)
    assert backbone.family.name == "sdxl" and backbone.input_size == 1024
    assert backbone.text_encoder_2 is not None and backbone.vae.config.scaling_factor == pytest.approx(0.13025)
    sd2 = StableDiffusionBackbone.from_pretrained(folders["sd2-v"], input_size=128)
    assert sd2.family.name == "sd2-v" and sd2.family.native_size == 768 and sd2.input_size == 128
    assert sd2.unet.config.upcast_attention and sd2.scheduler.config.prediction_type == "v_prediction"


def test_sdxl_folder_is_the_pipeline_layout(folders):
    index = json.loads((folders["sdxl"] / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((folders["sdxl"] / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time" and max(unet["transformer_layers_per_block"]) > 1
    encoder_2 = json.loads((folders["sdxl"] / "text_encoder_2" / "config.json").read_text())
    assert unet["projection_class_embeddings_input_dim"] == 6 * unet["addition_time_embed_dim"] + \
        encoder_2["projection_dim"]
    for folder in ("vae", "unet", "text_encoder", "text_encoder_2"):
        assert list((folders["sdxl"] / folder).glob("*.safetensors"))
    assert (folders["sdxl"] / "tokenizer_2").is_dir()


# --------------------------------------------------------------------------------------- capture, exact
def _recompute_with_hooks(backbone: StableDiffusionBackbone, images: torch.Tensor):
    """Maps from backbone.attention_maps plus an independent float64 recomputation from hooks on attn1:
    softmax(Q K^T * scale) per head, mean over heads, mean over the layers of each side."""
    recomputed: dict[int, list[torch.Tensor]] = {}

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        assert module.group_norm is None and module.spatial_norm is None and module.norm_q is None
        q = module.to_q(hidden).double()
        k = module.to_k(hidden).double()
        batch, n, inner = q.shape
        d = inner // module.heads
        q = q.view(batch, n, module.heads, d).transpose(1, 2)
        k = k.view(batch, n, module.heads, d).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1)
        recomputed.setdefault(math.isqrt(n), []).append(probs.mean(dim=1))

    modules = [m for name, m in backbone.unet.named_modules() if name.endswith("attn1")]
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    try:
        maps = backbone.attention_maps(images)
    finally:
        for handle in handles:
            handle.remove()
    expected = {side: torch.stack(layers).mean(dim=0) for side, layers in recomputed.items()}
    counts = {side: len(layers) for side, layers in recomputed.items()}
    return maps, expected, counts


@pytest.mark.parametrize("family, size, counts", [
    ("sd2-v", 64, {8: 5, 4: 5, 2: 5, 1: 1}),
    ("sdxl", 64, {4: 10, 2: 60}),
])
def test_captured_maps_equal_an_independent_recomputation(folders, family, size, counts):
    backbone = StableDiffusionBackbone.from_pretrained(folders[family])
    maps, expected, found = _recompute_with_hooks(backbone, _images(2, size, seed=4))
    assert found == counts
    assert tuple(maps) == tuple(sorted(counts, reverse=True))
    for side, attention in maps.items():
        assert attention.shape == (2, side * side, side * side) and attention.dtype == torch.float32
        torch.testing.assert_close(attention.double(), expected[side], rtol=1e-5, atol=1e-8)
    assert not torch.allclose(maps[max(maps)][0], maps[max(maps)][1])  # two different images


def test_sdxl_unet_output_unchanged_by_capturing(sdxl):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    kwargs = sdxl.unet_inputs(2, (64, 64))
    timesteps = torch.full((2,), 300)
    before = dict(sdxl.unet.attn_processors)
    with torch.inference_mode():
        plain = sdxl.unet(latents, timesteps, **kwargs).sample
        with capture_self_attention(sdxl.unet) as store:
            captured = sdxl.unet(latents, timesteps, **kwargs).sample
        again = sdxl.unet(latents, timesteps, **kwargs).sample
    assert store.layer_counts == {4: 10, 2: 60}
    scale = plain.abs().max().item()
    torch.testing.assert_close(captured, plain, rtol=1e-5, atol=1e-5 * scale)
    assert torch.equal(again, plain)
    assert all(sdxl.unet.attn_processors[k] is v for k, v in before.items())


def test_sdxl_conditioning_is_the_pipelines_empty_prompt(sdxl):
    """Context = both encoders' penultimate hidden states concatenated, pooled = text_encoder_2's
    projection, time ids = (H, W, 0, 0, H, W); all reach the UNet."""
    seen = {}
    handle = sdxl.unet.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        sdxl.attention_maps(_images(3, 64))
    finally:
        handle.remove()
    with torch.no_grad():
        ids_1 = sdxl.tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
        ids_2 = sdxl.tokenizer_2("", padding="max_length", max_length=77, return_tensors="pt").input_ids
        out_1 = sdxl.text_encoder(ids_1, output_hidden_states=True)
        out_2 = sdxl.text_encoder_2(ids_2, output_hidden_states=True)
    assert ids_2[0, -1] == 0 and ids_1[0, -1] != 0  # the second tokenizer pads with "!", as SDXL's
    context = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
    assert seen["encoder_hidden_states"].shape == (3, 77, 80)
    torch.testing.assert_close(seen["encoder_hidden_states"], context.expand(3, -1, -1))
    cond = seen["added_cond_kwargs"]
    torch.testing.assert_close(cond["text_embeds"], out_2.text_embeds.expand(3, -1))
    assert cond["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 3


# ------------------------------------------------------------------------------------------ single file
@pytest.fixture(scope="module")
def single_file(folders, tmp_path_factory) -> tuple[Path, Path]:
    """(tiny SD 1.x as one original-layout .safetensors file, a configs-only copy of its diffusers folder)."""
    root = tmp_path_factory.mktemp("single")
    configs = root / "configs"
    shutil.copytree(folders["sd1"], configs, ignore=shutil.ignore_patterns("*.safetensors"))
    return save_tiny_single_file(root / "tiny-sd1.safetensors", seed=0), configs


def test_single_file_loads_and_gives_the_folders_maps(folders, single_file):
    path, configs = single_file
    assert single_file_kind(path) == "sd1"
    loaded = StableDiffusionBackbone.from_pretrained(path, config=configs)
    folder = StableDiffusionBackbone.from_pretrained(folders["sd1"])
    assert loaded.family.name == "sd1" and loaded.name == str(path)
    for module in ("unet", "vae", "text_encoder"):
        mine, theirs = getattr(loaded, module).state_dict(), getattr(folder, module).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    images = _images(1, 64, seed=7)
    maps, expected = loaded.attention_maps(images), folder.attention_maps(images)
    assert tuple(maps) == (8, 4, 2, 1)
    for side in maps:
        torch.testing.assert_close(maps[side], expected[side], rtol=1e-5, atol=1e-7)


def test_single_file_needs_its_configs_offline(single_file, tmp_path, monkeypatch):
    path, _ = single_file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneLoadError, match="config=") as info:
        StableDiffusionBackbone.from_pretrained(path, cache_dir=tmp_path / "hf-cache")
    message = str(info.value)
    assert str(path) in message and SINGLE_FILE_DEFAULT_CONFIGS["sd1"] in message and "offline" in message
    (tmp_path / "no-index").mkdir()
    with pytest.raises(BackboneLoadError, match="model_index.json"):
        StableDiffusionBackbone.from_pretrained(path, config=tmp_path / "no-index")


def test_pickled_single_files_are_refused(tmp_path):
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not loaded")
    with pytest.raises(BackboneLoadError, match="only .safetensors") as info:
        StableDiffusionBackbone.from_pretrained(pickled)
    assert str(pickled) in str(info.value)


# ------------------------------------------------------------------------------------ float16 overflow
def test_sdxl_vae_overflow_in_float16_is_upcast_or_raises(folders, tmp_path):
    """A VAE whose float16 activations overflow: SDXL's force_upcast encodes it in float32 (finite
    latents); a VAE named as float16-safe that is not gives NaN latents, which raise naming the model."""
    parts = build_tiny_family("sdxl", seed=0)
    vae = parts["vae"]
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(1e5)  # activations far beyond float16's 65504
    images = _images(1, 64)
    upcast = StableDiffusionBackbone(**parts, dtype=torch.float16, name="tiny-sdxl")
    assert upcast.vae_dtype == torch.float32 and upcast.dtype == torch.float16
    latents = upcast.encode(images)
    assert latents.dtype == torch.float16 and bool(torch.isfinite(latents).all())
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(tmp_path / "unsafe-vae", safe_serialization=True)
    model = str(folders["sdxl"])
    unsafe = StableDiffusionBackbone.from_pretrained(model, dtype="float16", vae=tmp_path / "unsafe-vae")
    assert unsafe.vae_dtype == torch.float16
    with pytest.raises(NonFiniteOutputError, match="non-finite latents") as info:
        unsafe.attention_maps(images)
    assert model in str(info.value) and "float32" in str(info.value)
    fine = StableDiffusionBackbone.from_pretrained(model, vae=tmp_path / "unsafe-vae")  # float32: no overflow
    assert bool(torch.isfinite(fine.encode(images)).all())


# -------------------------------------------------------------------------------------- head chunk rule
def test_head_chunk_rule_fits_96x96_attention_on_a_24gb_card():
    """SD 2.x at 768 px: 5 heads over 9216 tokens. After float32 weights (~5.2 GB) and the CUDA
    context a 24 GB card has ~17.8 GB free: all heads fit at batch 1; batch 8 gets chunked to fit."""
    free = 24 * 10**9 - int(5.2e9) - int(1.0e9)
    assert attention_peak_bytes(1, 9216, 1) == 9216**2 * 16  # 8 bytes per element per head + 8 fixed
    chunk = choose_head_chunk(1, 9216, 5, free)
    assert chunk == 5 and attention_peak_bytes(1, 9216, 5) <= 0.9 * free
    chunk = choose_head_chunk(8, 9216, 5, free)
    assert 1 <= chunk < 5
    assert attention_peak_bytes(8, 9216, chunk) <= 0.9 * free < attention_peak_bytes(8, 9216, chunk + 1)
    half = choose_head_chunk(1, 9216, 5, 2 * 10**9, score_bytes=2, value_bytes=2)
    assert half == 1 and attention_peak_bytes(1, 9216, 1, 2, 2) == 9216**2 * 18  # float16: 10 per head
    assert choose_head_chunk(8, 9216, 5, 10**9) == 1  # nothing fits: one head at a time


def test_available_memory_from_mocked_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GiB, 24 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * GiB)
    assert available_memory(torch.device("cuda", 0)) == 11 * GiB
    assert available_memory("cpu") is None


def test_backbone_chooses_head_chunks_from_free_memory(folders, monkeypatch):
    """head_chunk=None asks available_memory(device); a small budget computes one head at a time."""
    chunks: list[int] = []
    original = AttentionStore.add_heads

    def spy(self, side, probs, num_heads):
        chunks.append(probs.shape[1])
        return original(self, side, probs, num_heads)

    monkeypatch.setattr(AttentionStore, "add_heads", spy)
    backbone = StableDiffusionBackbone.from_pretrained(folders["sd2-v"])
    images = _images(1, 64, seed=1)
    full = backbone.attention_maps(images)  # CPU: no budget, all heads at once
    assert max(chunks) == 4
    chunks.clear()
    monkeypatch.setattr("diffseg.backbone.available_memory", lambda device: 100)  # bytes: not even one head fits
    small = backbone.attention_maps(images)
    assert set(chunks) == {1}
    for side in full:
        torch.testing.assert_close(small[side], full[side], rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------- aggregation, sides
def _reference_any_sides(maps: dict[int, np.ndarray]) -> np.ndarray:
    """float64 loops: key maps upsampled (half-pixel bilinear) and renormalised, queries by half-pixel
    nearest index, weights proportional to side."""
    big = max(maps)
    total = sum(maps)
    out = np.zeros((big, big, big, big))
    for s, a in maps.items():
        index = [int(math.floor((i + 0.5) * s / big)) for i in range(big)]
        for qi in range(big):
            for qj in range(big):
                up = bilinear_half_pixel(a[index[qi] * s + index[qj]].reshape(s, s).astype(np.float64), big, big)
                out[qi, qj] += (s / total) * up / up.sum()
    return out


@pytest.mark.parametrize("sides", [(8, 4), (12, 6, 3), (6, 4), (5, 3, 2)])
def test_aggregation_goes_to_the_largest_side_for_any_sides(sides):
    g = torch.Generator().manual_seed(sum(sides))
    maps = {s: torch.softmax(torch.randn(2, s * s, s * s, generator=g) * 3, dim=-1) for s in sides}
    out = aggregate_attention(maps)
    big = max(sides)
    assert out.shape == (2, big, big, big, big)
    torch.testing.assert_close(out.sum(dim=(-1, -2)), torch.ones(2, big, big), rtol=0, atol=1e-5)
    for b in range(2):
        expected = _reference_any_sides({s: m[b].numpy() for s, m in maps.items()})
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------ data, config
def test_images_at_the_model_size_labels_at_the_dataset_size(tmp_path):
    write_synthetic_coco_stuff(tmp_path, num_images=2, seed=1)
    plain = CocoStuff27(tmp_path, size=64)
    bigger = CocoStuff27(tmp_path, size=64, image_size=96)
    image, label, image_id = bigger[0]
    assert image.shape == (3, 96, 96) and label.shape == (64, 64)
    assert torch.equal(label, plain[0][1]) and image_id == plain[0][2]
    assert plain[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize("model, name, size", [
    ("sd14", "CompVis/stable-diffusion-v1-4", 512),
    ("sd21_base", "stabilityai/stable-diffusion-2-1-base", 512),
    ("sd21", "stabilityai/stable-diffusion-2-1", 768),
    ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 1024),
    ("ssd1b", "segmind/SSD-1B", 1024),
    ("vega", "segmind/Segmind-Vega", 1024),
])
@pytest.mark.parametrize("dataset", ["coco_stuff27", "cityscapes"])
def test_model_configs_set_the_input_size_not_the_label_size(model, name, size, dataset, tmp_path):
    cfg = compose_eval([f"experiment={dataset}", f"model={model}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.name == name and cfg.model.size == size
    assert cfg.model.backbone.model_id == name and cfg.model.backbone.input_size == size
    assert cfg.dataset.image_size == size
    assert cfg.dataset.size == 512
    assert cfg.methods.diffseg.segmenter.output_size == cfg.methods.kmeans_c.segmenter.output_size == 512


def test_ablation_backbone_sweeps_every_backbone(tmp_path):
    cfg = compose_eval(["experiment=ablation_backbone", f"paths.output_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params["model"] == "sd14,sd15,sd21_base,sd21,sdxl,ssd1b,vega"
    assert cfg.run_name == "ablation_backbone" and cfg.dataset.name == "coco_stuff27"
    assert [k for k, v in cfg.methods.items() if v is not None] == ["diffseg", "kmeans_c", "kmeans_s"]
    job = compose_eval(["experiment=ablation_backbone", "model=vega", f"paths.output_dir={tmp_path}"])
    assert job.ablation.param == "backbone" and job.ablation.value == "segmind/Segmind-Vega"
    assert job.dataset.image_size == 1024 and job.dataset.size == 512


def test_runner_end_to_end_on_a_tiny_sdxl_folder(folders, tmp_path):
    """`eval.run` with model.name=<tiny SDXL folder>: images at model.size, masks/labels at dataset.size."""
    root = tmp_path / "coco"
    write_synthetic_coco_stuff(root, num_images=2, seed=2)
    cfg = compose_eval([
        "experiment=ablation_backbone", "model=sdxl", f"model.name={folders['sdxl']}", "model.size=256",
        "dataset.size=64", f"dataset.root={root}", "batch_size=2", "num_workers=0", "progress=false",
        "device=cpu", "methods.kmeans_c.segmenter.n_init=1", "methods.kmeans_s.segmenter.n_init=1",
        "save_masks=true", f"paths.output_dir={tmp_path / 'out'}",
    ])
    result = evaluate(cfg)
    assert result["run"]["model"] == str(folders["sdxl"])
    assert result["run"]["ablation"] == {"param": "backbone", "value": str(folders["sdxl"])}
    assert list(result["methods"]) == ["DiffSeg", "K-Means-C", "K-Means-S"]
    data = CocoStuff27(root, size=64)
    valid = sum(int((data[i][1] >= 0).sum()) for i in range(len(data)))
    for name, metrics in result["methods"].items():
        assert metrics["images"] == 2 and metrics["valid"] == valid and 0.0 <= metrics["acc"] <= 100.0
        masks = sorted((tmp_path / "out" / "masks" / name).glob("*.png"))
        assert len(masks) == 2
        assert all(np.array(Image.open(m)).shape == (64, 64) for m in masks)
    assert result["config"]["dataset"]["image_size"] == 256
    assert result["config"]["model"]["backbone"]["input_size"] == 256


def test_anchor_grid_and_nms_follow_the_largest_side():
    """SD 2.x at 768 px aggregates to 96x96: the 16x16 anchors spread over 96 (2, 8, ..., 92) and
    DiffSeg's masks come out at the evaluation size from 96x96 proposals."""
    from diffseg import DiffSeg, anchor_grid

    coords = sorted(set(anchor_grid(16, 96)[:, 0].tolist()))
    assert coords == list(range(2, 93, 6))
    side = 24
    g = torch.Generator().manual_seed(5)
    maps = {s: torch.softmax(torch.randn(1, s * s, s * s, generator=g) * 4, dim=-1) for s in (24, 12, 6, 3)}
    attention = aggregate_attention(maps)
    assert attention.shape == (1, side, side, side, side)
    mask = DiffSeg(kl_threshold=1.1, num_points=16, output_size=40)(attention)
    assert mask.shape == (1, 40, 40) and mask.min() >= 0 and mask.max() < 16 * 16
