"""Stable Diffusion components with random weights, built from configs (no download).

Two sizes:

- **tiny** (:func:`build_tiny_components`): SD 1.x's block structure (16 self-attention ``attn1``
  layers at 64, 32, 16 and 8 for 64x64 latents: 5 + 5 + 5 + 1) with tiny channels, for tests and
  the demo. A 512x512 image gives a (4, 64, 64) latent, exactly as with SD 1.x.
  :func:`build_tiny_family` builds the other families in their real structure, tiny:
  ``sd2-base`` / ``sd2-v`` (linear projections, a list of heads per block, OpenCLIP-style GELU text
  encoder, DDIM schedule with epsilon / v-prediction, upcast attention for the 768 model) and
  ``sdxl`` (three levels, attention only on the lower two with 2 and 10 transformer layers, two text
  encoders - the second a ``CLIPTextModelWithProjection`` - and ``addition_embed_type="text_time"``
  with a consistent ``projection_class_embeddings_input_dim``; VAE scaling 0.13025 with
  ``force_upcast``).
- **SD 1.x** (:func:`build_sd1_components`): the full SD 1.x architecture (UNet 860M, VAE 84M,
  CLIP ViT-L/14 text encoder 123M parameters) with cheap random weights, for speed benchmarks
  (speed does not depend on the weight values).

Both are seeded: the same seed gives the same weights, and the global torch RNG is left untouched.
:func:`save_tiny_pretrained` writes a tiny model with the family's diffusers pipeline
``save_pretrained`` (``model_index.json``, one folder per component, safetensors) and
:func:`save_tiny_single_file` the tiny SD 1.x model as one original-layout ``.safetensors`` file, so
the real loading code of :class:`diffseg.backbone.StableDiffusionBackbone` can be exercised offline.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from diffseg.backbone import SD_SCHEDULER_CONFIG, StableDiffusionBackbone
from diffseg.pipelines import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffseg.testing.ldm_checkpoint import save_sd1_single_file

__all__ = [
    "TINY_FAMILIES",
    "build_sd1_components",
    "build_tiny_components",
    "build_tiny_family",
    "build_tiny_tokenizer",
    "save_tiny_pretrained",
    "save_tiny_single_file",
    "sd1_text_config",
    "sd1_unet_config",
    "sd1_vae_config",
    "sd2_unet_config",
    "sdxl_unet_config",
    "tiny_backbone",
    "tiny_sd2_text_config",
    "tiny_sd2_unet_config",
    "tiny_sdxl_text_configs",
    "tiny_sdxl_unet_config",
    "tiny_sdxl_vae_config",
    "tiny_text_config",
    "tiny_unet_config",
    "tiny_vae_config",
]

TINY_FAMILIES = ("sd1", "sd2-base", "sd2-v", "sdxl")

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_MAX_LENGTH = 77

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
_SDXL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_SDXL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
_SDXL_TIME_EMBED_DIM = 8  # SDXL: 256 per time id


# --------------------------------------------------------------------------------------------- configs
def tiny_unet_config() -> dict:
    """UNet2DConditionModel config: SD 1.x blocks, layers_per_block 2, channels (32, 32, 64, 64).

    Self-attention layout for a (B, 4, 64, 64) latent: 16 ``attn1`` layers, 5 at 64x64 (2 down + 3 up),
    5 at 32x32, 5 at 16x16, 1 at 8x8 (mid block), 2 heads each.
    """
    return {
        **sd1_unet_config(),
        "block_out_channels": (32, 32, 64, 64),
        "attention_head_dim": 2,  # diffusers reads this as the number of heads for SD 1.x UNets
        "cross_attention_dim": tiny_text_config().hidden_size,
        "norm_num_groups": 8,
    }


def tiny_vae_config() -> dict:
    """AutoencoderKL config: 4 blocks (3 downsamplings, 512 px -> 64 latents), 4 latent channels."""
    return {**sd1_vae_config(), "block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8}


def tiny_text_config() -> CLIPTextConfig:
    """CLIPTextConfig: hidden 32, 2 layers, 2 heads, 77 positions, vocabulary of the tiny tokenizer."""
    vocab_size = len(_tiny_vocab())
    return _clip_text_config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                             pad_token_id=vocab_size - 1)


def tiny_sd2_unet_config(v_prediction: bool = False) -> dict:
    """UNet config in SD 2.x's structure: SD 1.x blocks, linear projections, heads listed per block.

    As in the SD 2.x release (``attention_head_dim=[5, 10, 20, 20]``, which diffusers reads as heads
    per block), ``attention_head_dim`` is a list; the 768 px v-prediction model has ``sample_size`` 96
    and ``upcast_attention`` (its attention scores in float32).
    """
    return {
        **tiny_unet_config(),
        "sample_size": 96 if v_prediction else 64,
        "attention_head_dim": (2, 2, 4, 4),
        "use_linear_projection": True,
        "upcast_attention": v_prediction,
        "cross_attention_dim": tiny_sd2_text_config().hidden_size,
    }


def tiny_sd2_text_config() -> CLIPTextConfig:
    """CLIPTextConfig like SD 2.x's OpenCLIP text tower (GELU, not quick-GELU), tiny: hidden 32, 2 layers."""
    config = tiny_text_config()
    config.hidden_act = "gelu"
    return config


def tiny_sdxl_text_configs() -> tuple[CLIPTextConfig, CLIPTextConfig]:
    """(text_encoder, text_encoder_2) configs in SDXL's roles: CLIP-L style (quick-GELU, hidden 32) and
    OpenCLIP-bigG style with a projection (GELU, hidden 48, projection 24; SDXL: 1280 and 1280)."""
    first = tiny_text_config()
    second = tiny_text_config()
    second.hidden_size = 48
    second.intermediate_size = 96
    second.projection_dim = 24
    second.hidden_act = "gelu"
    return first, second


def tiny_sdxl_unet_config() -> dict:
    """UNet config in SDXL's structure, tiny channels.

    Three levels (``DownBlock2D`` then two cross-attention blocks), ``transformer_layers_per_block``
    (1, 2, 10) as SDXL, linear projections, ``addition_embed_type="text_time"`` with
    ``projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + text_encoder_2 projection``,
    cross-attention over both encoders' hidden states concatenated. For a (B, 4, 16, 16) latent
    (128 px) the self-attention sits at 8x8 (10 layers) and 4x4 (60 layers), as SDXL at 1024 px has
    64x64 and 32x32.
    """
    first, second = tiny_sdxl_text_configs()
    return {
        **sdxl_unet_config(),
        "block_out_channels": (32, 64, 64),
        "attention_head_dim": (2, 2, 4),
        "cross_attention_dim": first.hidden_size + second.hidden_size,
        "addition_time_embed_dim": _SDXL_TIME_EMBED_DIM,
        "projection_class_embeddings_input_dim": 6 * _SDXL_TIME_EMBED_DIM + second.projection_dim,
        "norm_num_groups": 8,
    }


def tiny_sdxl_vae_config() -> dict:
    """The tiny VAE with SDXL's latent scaling factor (0.13025) and ``force_upcast`` (float16 overflows)."""
    return {**tiny_vae_config(), "scaling_factor": 0.13025, "force_upcast": True}


def _tiny_scheduler(family: str) -> DDPMScheduler | DDIMScheduler | EulerDiscreteScheduler:
    """The scheduler class and config each family's release ships (SD's noise schedule in all of them)."""
    if family == "sd1":
        return DDPMScheduler(**SD_SCHEDULER_CONFIG)
    if family in ("sd2-base", "sd2-v"):
        prediction = "v_prediction" if family == "sd2-v" else "epsilon"
        return DDIMScheduler(**SD_SCHEDULER_CONFIG, set_alpha_to_one=False, prediction_type=prediction)
    return EulerDiscreteScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if k != "clip_sample"},
                                  timestep_spacing="leading", prediction_type="epsilon")


def sd1_unet_config() -> dict:
    """UNet2DConditionModel config of Stable Diffusion 1.x (860M parameters, 8 heads, context 768)."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": _SD_DOWN,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": _SD_UP,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 768,
        "norm_num_groups": 32,
    }


def sd2_unet_config(v_prediction: bool = True) -> dict:
    """UNet2DConditionModel config of Stable Diffusion 2.x: 768 px v-prediction (``sample_size`` 96,
    upcast attention) or the 512 px base model (``sample_size`` 64); 5/10/20/20 heads, context 1024."""
    return {
        **sd1_unet_config(),
        "sample_size": 96 if v_prediction else 64,
        "attention_head_dim": (5, 10, 20, 20),
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": v_prediction,
    }


def sdxl_unet_config(depths: tuple[int, int, int] = (1, 2, 10)) -> dict:
    """UNet2DConditionModel config of SDXL base 1.0 (1024 px, ``sample_size`` 128, context 768 + 1280,
    pooled 1280 + 6 time ids x 256). ``depths`` = ``transformer_layers_per_block`` of the down blocks:
    (1, 2, 10) SDXL; the distilled SSD-1B and Segmind-Vega keep this layout with (1, 2, 4) and (1, 1, 2)
    on the down side (their up sides are distilled too and are not reproduced here)."""
    return {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": _SDXL_DOWN,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": _SDXL_UP,
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "transformer_layers_per_block": tuple(depths),
        "attention_head_dim": (5, 10, 20),
        "use_linear_projection": True,
        "cross_attention_dim": 2048,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "norm_num_groups": 32,
    }


def sd1_vae_config() -> dict:
    """AutoencoderKL config of Stable Diffusion 1.x (84M parameters)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def sd1_text_config() -> CLIPTextConfig:
    """CLIPTextConfig of CLIP ViT-L/14's text tower (SD 1.x): hidden 768, 12 layers, 12 heads."""
    return _clip_text_config(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def _clip_text_config(hidden_size: int, **sizes: int) -> CLIPTextConfig:
    """CLIP's text tower as SD 1.x uses it (quick-GELU, 77 positions, projection = hidden size) at the given sizes."""
    return CLIPTextConfig(hidden_size=hidden_size, projection_dim=hidden_size, max_position_embeddings=_MAX_LENGTH,
                          hidden_act="quick_gelu", **sizes)


# ------------------------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table (256 entries)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def _tiny_vocab() -> dict[str, int]:
    """Byte-level vocabulary: 256 bytes, 256 end-of-word bytes, then BOS and EOS (514 tokens)."""
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return vocab


def build_tiny_tokenizer(pad_token: str | None = None) -> CLIPTokenizer:
    """A CLIPTokenizer with a byte-level vocabulary and no merges, built offline (model_max_length 77).

    ``pad_token="!"`` pads as SD 2.x's and SDXL's second tokenizer do (id 0); default: the end token.
    """
    extra = {} if pad_token is None else {"pad_token": pad_token}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(_tiny_vocab()), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=_MAX_LENGTH, **extra)


# ---------------------------------------------------------------------------------------------- builders
def build_tiny_components(
    seed: int = 0,
) -> tuple[AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer]:
    """Tiny ``(vae, unet, text_encoder, tokenizer)`` with the libraries' default init, seeded.

    fp32, CPU, eval mode. The global torch RNG state is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**tiny_vae_config())
        unet = UNet2DConditionModel(**tiny_unet_config())
        text_encoder = CLIPTextModel(tiny_text_config())
    return vae.eval(), unet.eval(), text_encoder.eval(), build_tiny_tokenizer()


def build_tiny_family(family: str = "sd1", seed: int = 0) -> dict[str, Any]:
    """Tiny seeded components of one family (:data:`TINY_FAMILIES`), keyed as the pipeline's components.

    Keys: ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` and for ``sdxl`` also
    ``text_encoder_2`` (``CLIPTextModelWithProjection``) and ``tokenizer_2``. fp32, CPU, eval mode;
    the global torch RNG state is restored afterwards.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"family: expected one of {TINY_FAMILIES}, got {family!r}")
    if family == "sd1":
        vae, unet, text_encoder, tokenizer = build_tiny_components(seed)
        return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
                "scheduler": _tiny_scheduler(family)}
    parts: dict[str, Any] = {"scheduler": _tiny_scheduler(family)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "sdxl":
            first, second = tiny_sdxl_text_configs()
            parts["vae"] = AutoencoderKL(**tiny_sdxl_vae_config())
            parts["unet"] = UNet2DConditionModel(**tiny_sdxl_unet_config())
            parts["text_encoder"] = CLIPTextModel(first)
            parts["text_encoder_2"] = CLIPTextModelWithProjection(second)
            parts["tokenizer"] = build_tiny_tokenizer()
            parts["tokenizer_2"] = build_tiny_tokenizer(pad_token="!")
        else:
            parts["vae"] = AutoencoderKL(**tiny_vae_config())
            parts["unet"] = UNet2DConditionModel(**tiny_sd2_unet_config(v_prediction=family == "sd2-v"))
            parts["text_encoder"] = CLIPTextModel(tiny_sd2_text_config())
            parts["tokenizer"] = build_tiny_tokenizer(pad_token="!")
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.eval()
    return parts


def sharpen_self_attention(unet: UNet2DConditionModel, factor: float) -> None:
    """Scale the query and key weights of every self-attention (``attn1``) layer in place.

    The attention logits grow by ``factor**2``: random weights give nearly uniform
    attention, which DiffSeg merges into one segment; sharpened, the tiny model gives
    several segments and float16 rounding empties some anchors, as real SD attention does.
    """
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn1"):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)


def tiny_backbone(
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    attention_scale: float = 1.0,
    family: str = "sd1",
    input_size: int | None = None,
) -> StableDiffusionBackbone:
    """A :class:`StableDiffusionBackbone` over :func:`build_tiny_family` (name "tiny-random" for SD 1.x,
    "tiny-random-<family>" otherwise).

    512 px images give maps at sides 64, 32, 16, 8 like SD 1.x; dtype/device default as in
    ``StableDiffusionBackbone`` (float32, CUDA when available). ``attention_scale`` != 1 applies
    :func:`sharpen_self_attention`; ``input_size`` is recorded as the backbone's input size.
    """
    parts = build_tiny_family(family, seed)
    if attention_scale != 1.0:
        sharpen_self_attention(parts["unet"], attention_scale)
    name = "tiny-random" if family == "sd1" else f"tiny-random-{family}"
    return StableDiffusionBackbone(**parts, dtype=dtype, device=device, name=name, input_size=input_size)


def build_sd1_components(
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    with_text_encoder: bool = True,
) -> tuple[AutoencoderKL, UNet2DConditionModel, CLIPTextModel | None, CLIPTokenizer]:
    """Full-size SD 1.x ``(vae, unet, text_encoder, tokenizer)`` with random weights, built fast.

    Modules are created on the meta device, materialised with ``to_empty`` directly on ``device`` in
    ``dtype`` and filled by a cheap seeded init (weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases 0,
    1-D scales 1), so no default init runs. ``text_encoder`` is None when ``with_text_encoder`` is
    False. The tokenizer is the tiny byte-level one (only the empty prompt is ever tokenised; its ids
    are valid for the 49408-token embedding). Eval mode.
    """
    device = torch.device(device if device is not None else "cpu")
    with torch.device("meta"):
        vae = AutoencoderKL(**sd1_vae_config())
        unet = UNet2DConditionModel(**sd1_unet_config())
        text_encoder = CLIPTextModel(sd1_text_config()) if with_text_encoder else None
    # The global RNG (forked, so the caller's state is untouched) fills tensors several times faster
    # than an explicit torch.Generator on CPU.
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for module in (vae, unet, text_encoder):
            if module is not None:
                _materialize(module, device, dtype)
    if text_encoder is not None:
        text_encoder.eval()
    return vae.eval(), unet.eval(), text_encoder, build_tiny_tokenizer()


@torch.no_grad()
def _materialize(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Allocate a meta-device module on ``device``/``dtype`` and fill it from the global RNG, in place."""
    torch.nn.Module.to(module, dtype=dtype)  # plain cast on meta (skips diffusers' to() warnings)
    module.to_empty(device=device)
    for name, param in module.named_parameters():
        if name.endswith("bias"):
            param.zero_()
        elif param.ndim <= 1:
            param.fill_(1.0)
        else:
            bound = 1.0 / math.sqrt(param[0].numel())
            param.uniform_(-bound, bound)
    for name, buffer in module.named_buffers():
        if name.endswith("position_ids"):
            buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
        else:
            raise RuntimeError(f"cannot initialise buffer {name!r} of {type(module).__name__} cheaply")


# ------------------------------------------------------------------------------------------------ saving
def save_tiny_pretrained(path: str | Path, seed: int = 0, family: str = "sd1") -> Path:
    """Write a tiny model of ``family`` with its diffusers pipeline's ``save_pretrained``; returns the path.

    SD 1.x / 2.x: ``StableDiffusionPipeline`` layout (``vae/``, ``unet/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``, ``model_index.json``, no safety checker); SDXL:
    ``StableDiffusionXLPipeline`` layout with ``text_encoder_2/`` and ``tokenizer_2/``. Safetensors weights.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    parts = build_tiny_family(family, seed)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**parts)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(root, safe_serialization=True)
    return root


def save_tiny_single_file(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny SD 1.x model (the weights of ``save_tiny_pretrained(seed=seed)``) as one
    original-layout ``.safetensors`` file (:mod:`diffseg.testing.ldm_checkpoint`); returns the path."""
    vae, unet, text_encoder, _ = build_tiny_components(seed)
    return save_sd1_single_file(path, unet, vae, text_encoder)
