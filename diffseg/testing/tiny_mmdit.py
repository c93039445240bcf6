"""MM-DiT transformers (SD3, SD3.5, Flux) with random weights, built from configs (no download).

The ``*_transformer_config`` functions give the released models' transformer configs (the
``transformer/config.json`` key names and values of stabilityai/stable-diffusion-3-medium-diffusers,
stable-diffusion-3.5-medium, stable-diffusion-3.5-large, black-forest-labs/FLUX.1-dev and
FLUX.1-schnell); the ``tiny_*`` ones keep their structure (SD3.5's per-head RMS q/k norms and
dual-attention layers, Flux's joint + single blocks and rotary axes, guidance embedding of dev)
at a few channels, for tests. :func:`build_tiny_transformer` builds one seeded (the global torch
RNG is left untouched) and :func:`tiny_transformer_inputs` makes seeded inputs for one pass.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

__all__ = [
    "TINY_MMDIT_KINDS",
    "build_tiny_flux_pipeline",
    "build_tiny_sd3_pipeline",
    "build_tiny_transformer",
    "flux_transformer_config",
    "save_tiny_flux_pipeline",
    "save_tiny_sd3_pipeline",
    "save_tiny_transformer_file",
    "sd3_medium_transformer_config",
    "sd35_large_transformer_config",
    "sd35_medium_transformer_config",
    "tiny_transformer_config",
    "tiny_transformer_inputs",
]

TINY_MMDIT_KINDS = ("sd3", "sd35_medium", "sd35_large", "flux_dev", "flux_schnell")


# ------------------------------------------------------------------------------------------ real configs
def sd3_medium_transformer_config() -> dict[str, Any]:
    """SD3Transformer2DModel config of Stable Diffusion 3 medium (24 joint blocks, 24 heads of 64)."""
    return {
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "num_layers": 24,
        "attention_head_dim": 64,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "caption_projection_dim": 1536,
        "pooled_projection_dim": 2048,
        "out_channels": 16,
        "pos_embed_max_size": 192,
    }


def sd35_medium_transformer_config() -> dict[str, Any]:
    """SD3.5 medium: SD3 medium's sizes, RMS q/k norms, dual attention in blocks 0-12, larger position table."""
    return {**sd3_medium_transformer_config(), "pos_embed_max_size": 384,
            "dual_attention_layers": tuple(range(13)), "qk_norm": "rms_norm"}


def sd35_large_transformer_config() -> dict[str, Any]:
    """SD3.5 large: 38 joint blocks of 38 heads, RMS q/k norms, no dual attention."""
    return {**sd3_medium_transformer_config(), "num_layers": 38, "num_attention_heads": 38,
            "caption_projection_dim": 2432, "qk_norm": "rms_norm", "dual_attention_layers": ()}


def flux_transformer_config(guidance: bool = True) -> dict[str, Any]:
    """FluxTransformer2DModel config of FLUX.1-dev (``guidance=True``) or FLUX.1-schnell (no guidance embedding)."""
    return {
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": guidance,
        "axes_dims_rope": (16, 56, 56),
    }


# ------------------------------------------------------------------------------------------ tiny configs
def tiny_transformer_config(kind: str) -> dict[str, Any]:
    """The real config of ``kind`` (:data:`TINY_MMDIT_KINDS`) at tiny sizes, same keys and structure.

    SD3 family: 16 latent channels, patch 2, 2 heads of 8, joint (text) dim 32, pooled dim 24, latent
    side 8 (4 x 4 = 16 image tokens); 3 joint blocks (sd35_medium: dual attention in blocks 0 and 1).
    Flux: 2 heads of 16 (rotary axes 4 + 6 + 6 = 16), 2 joint + 2 single blocks, 16 packed channels.
    """
    if kind in ("sd3", "sd35_medium", "sd35_large"):
        config = {"sample_size": 8, "patch_size": 2, "in_channels": 16, "num_layers": 3, "attention_head_dim": 8,
                  "num_attention_heads": 2, "joint_attention_dim": 32, "caption_projection_dim": 16,
                  "pooled_projection_dim": 24, "out_channels": 16, "pos_embed_max_size": 16}
        if kind == "sd35_medium":
            config.update(dual_attention_layers=(0, 1), qk_norm="rms_norm")
        elif kind == "sd35_large":
            config.update(dual_attention_layers=(), qk_norm="rms_norm")
        return config
    if kind in ("flux_dev", "flux_schnell"):
        return {"patch_size": 1, "in_channels": 16, "num_layers": 2, "num_single_layers": 2,
                "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                "pooled_projection_dim": 24, "guidance_embeds": kind == "flux_dev", "axes_dims_rope": (4, 6, 6)}
    raise ValueError(f"kind: expected one of {TINY_MMDIT_KINDS}, got {kind!r}")


def build_tiny_transformer(kind: str = "sd3", seed: int = 0,
                           **overrides: Any) -> SD3Transformer2DModel | FluxTransformer2DModel:
    """A tiny seeded transformer of ``kind``, float32, CPU, eval mode; ``overrides`` replace config values
    (e.g. ``pos_embed_max_size=64`` for SD3 latents up to 128 x 128).

    diffusers zero-initialises the output projections and the adaLN modulations of these models, which
    would make every block an identity; all parameters are therefore redrawn: matrices N(0, 1/fan_in),
    vectors N(0, 0.1^2) (norm weights 1 + N(0, 0.1^2)), so that each block and the output depend on the
    attention and the attention is neither uniform nor one-hot.
    """
    config = {**tiny_transformer_config(kind), **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (FluxTransformer2DModel if kind.startswith("flux") else SD3Transformer2DModel)(**config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim >= 2:
                    fan_in = param[0].numel()
                    param.copy_(torch.randn_like(param) / fan_in ** 0.5)
                elif "norm" in name and name.endswith("weight"):
                    param.copy_(1.0 + 0.1 * torch.randn_like(param))
                else:
                    param.copy_(0.1 * torch.randn_like(param))
    return model.eval()


def tiny_transformer_inputs(transformer: torch.nn.Module, batch: int = 1, text_tokens: int = 6,
                            seed: int = 0, side: int | None = None) -> dict[str, Any]:
    """Seeded keyword arguments for one forward pass of a (tiny) SD3 or Flux transformer.

    SD3: ``hidden_states`` (B, C, s, s), s = ``side`` or the config's ``sample_size`` (s/2 x s/2 image
    tokens), ``encoder_hidden_states`` (B, T, joint_attention_dim), ``pooled_projections``, ``timestep``.
    Flux: packed latents (B, g*g, C) for a g x g token grid (g = ``side`` or 4) with their ``img_ids``,
    ``txt_ids`` zeros (T, 3), ``guidance`` when the model embeds it. ``return_dict=False``.
    """
    config = transformer.config
    generator = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, text_tokens, config.joint_attention_dim, generator=generator)
    pooled = torch.randn(batch, config.pooled_projection_dim, generator=generator)
    if "num_single_layers" in config:
        side = side or 4
        ids = torch.zeros(side, side, 3)
        ids[..., 1] = torch.arange(side)[:, None]
        ids[..., 2] = torch.arange(side)[None, :]
        kwargs = {
            "hidden_states": torch.randn(batch, side * side, config.in_channels, generator=generator),
            "encoder_hidden_states": text,
            "pooled_projections": pooled,
            "timestep": torch.full((batch,), 0.6),
            "img_ids": ids.reshape(side * side, 3),
            "txt_ids": torch.zeros(text_tokens, 3),
            "return_dict": False,
        }
        if config.guidance_embeds:
            kwargs["guidance"] = torch.full((batch,), 3.5)
        return kwargs
    side = side or config.sample_size
    return {
        "hidden_states": torch.randn(batch, config.in_channels, side, side, generator=generator),
        "encoder_hidden_states": text,
        "pooled_projections": pooled,
        "timestep": torch.full((batch,), 600.0),
        "return_dict": False,
    }


# ------------------------------------------------------------------------------------------- pipelines
def build_tiny_sd3_pipeline(kind: str = "sd3", seed: int = 0) -> Any:
    """A tiny ``StableDiffusion3Pipeline`` without T5, seeded, offline.

    Transformer :func:`build_tiny_transformer` (``kind`` sd3 / sd35_medium / sd35_large); two
    ``CLIPTextModelWithProjection`` of hidden 16 (joint dim 16 + 16 = 32) and projection 12 (pooled
    12 + 12 = 24) with the byte-level tokenizer of :func:`diffseg.testing.tiny.build_tiny_tokenizer`
    (77 tokens); a 16-channel VAE with 3 downsamplings and SD3's latent shift/scale; SD3's
    flow-matching scheduler config (shift 3.0); ``text_encoder_3`` / ``tokenizer_3`` None.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from diffseg.testing.tiny import build_tiny_tokenizer

    if kind not in ("sd3", "sd35_medium", "sd35_large"):
        raise ValueError(f"kind: expected an SD3-family kind, got {kind!r}")
    tokenizer = build_tiny_tokenizer()
    vocab = len(tokenizer)
    text_config = CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, projection_dim=12, max_position_embeddings=77,
                                 hidden_act="quick_gelu", bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                                 pad_token_id=vocab - 1)
    transformer = build_tiny_transformer(kind, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        text_encoder = CLIPTextModelWithProjection(text_config).eval()
        text_encoder_2 = CLIPTextModelWithProjection(text_config).eval()
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                            layers_per_block=1, latent_channels=16, norm_num_groups=8, sample_size=64,
                            scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                            use_post_quant_conv=False).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae,
                                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                    tokenizer_2=build_tiny_tokenizer(), text_encoder_3=None, tokenizer_3=None)


def save_tiny_sd3_pipeline(folder: str, kind: str = "sd3", seed: int = 0) -> str:
    """Write :func:`build_tiny_sd3_pipeline` with ``save_pretrained`` (safetensors) to ``folder``; returns it."""
    build_tiny_sd3_pipeline(kind, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_flux_pipeline(kind: str = "flux_dev", seed: int = 0) -> Any:
    """A tiny ``FluxPipeline`` without T5 (``text_encoder_2`` / ``tokenizer_2`` None), seeded, offline.

    Transformer :func:`build_tiny_transformer` (``kind`` flux_dev / flux_schnell: 16 packed channels =
    4 latent channels x 2 x 2); one ``CLIPTextModel`` of hidden 24 (its pooled output is the transformer's
    pooled projection, 24) with the byte-level tokenizer of :func:`diffseg.testing.tiny.build_tiny_tokenizer`
    (77 tokens); a 4-channel VAE with 3 downsamplings and FLUX.1's latent shift/scale (0.1159 / 0.3611);
    FLUX.1's flow-matching scheduler config (dynamic shift, base 0.5 at 256 tokens, max 1.15 at 4096).
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffseg.testing.tiny import build_tiny_tokenizer

    if kind not in ("flux_dev", "flux_schnell"):
        raise ValueError(f"kind: expected flux_dev or flux_schnell, got {kind!r}")
    tokenizer = build_tiny_tokenizer()
    vocab = len(tokenizer)
    text_config = CLIPTextConfig(vocab_size=vocab, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                                 bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    transformer = build_tiny_transformer(kind, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        text_encoder = CLIPTextModel(text_config).eval()
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                            layers_per_block=1, latent_channels=transformer.config.in_channels // 4,
                            norm_num_groups=8, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
                            use_quant_conv=False, use_post_quant_conv=False).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=None, tokenizer_2=None)


def save_tiny_flux_pipeline(folder: str, kind: str = "flux_dev", seed: int = 0) -> str:
    """Write :func:`build_tiny_flux_pipeline` with ``save_pretrained`` (safetensors) to ``folder``; returns it."""
    build_tiny_flux_pipeline(kind, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_transformer_file(path: str, kind: str = "sd3", seed: int = 0) -> str:
    """Write the state dict of :func:`build_tiny_transformer` (diffusers key names) to one ``.safetensors`` file."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in build_tiny_transformer(kind, seed).state_dict().items()}
    save_file(state, path)
    return path


def tiny_mmdit_backbone(kind: str = "sd3", seed: int = 0, dtype: str = "float32", device: Any = None,
                        input_size: int = 128, noise_seed: int = 0) -> Any:
    """:class:`~diffseg.mmdit_backbone.MMDiTBackbone` on :func:`build_tiny_sd3_pipeline` (random weights, offline).

    At ``input_size`` 128 the latent side is 16: 8 x 8 = 64 image tokens, 3 joint blocks.
    """
    from diffseg.mmdit_backbone import MMDiTBackbone

    return MMDiTBackbone(build_tiny_sd3_pipeline(kind, seed), name=f"tiny-random-{kind}", dtype=dtype, device=device,
                         input_size=input_size, seed=noise_seed)
