"""Stable Diffusion components with random weights, built from configs (no download).

Two sizes:

- **tiny** (:func:`build_tiny_components`): SD 1.x's block structure (16 self-attention ``attn1``
  layers at 64, 32, 16 and 8 for 64x64 latents: 5 + 5 + 5 + 1) with tiny channels, for tests and
  the demo. A 512x512 image gives a (4, 64, 64) latent, exactly as with SD 1.x.
- **SD 1.x** (:func:`build_sd1_components`): the full SD 1.x architecture (UNet 860M, VAE 84M,
  CLIP ViT-L/14 text encoder 123M parameters) with cheap random weights, for speed benchmarks
  (speed does not depend on the weight values).

Both are seeded: the same seed gives the same weights, and the global torch RNG is left untouched.
:func:`save_tiny_pretrained` writes the tiny model as a diffusers-style folder (safetensors) so the
real loading code of :class:`diffseg.backbone.StableDiffusionBackbone` can be exercised offline.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffseg.backbone import SD_SCHEDULER_CONFIG, StableDiffusionBackbone

__all__ = [
    "build_sd1_components",
    "build_tiny_components",
    "build_tiny_tokenizer",
    "save_tiny_pretrained",
    "tiny_backbone",
    "sd1_text_config",
    "sd1_unet_config",
    "sd1_vae_config",
    "tiny_text_config",
    "tiny_unet_config",
    "tiny_vae_config",
]

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_MAX_LENGTH = 77

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


# --------------------------------------------------------------------------------------------- configs
def tiny_unet_config() -> dict:
    """UNet2DConditionModel config: SD 1.x blocks, layers_per_block 2, channels (32, 32, 64, 64).

    Self-attention layout for a (B, 4, 64, 64) latent: 16 ``attn1`` layers, 5 at 64x64 (2 down + 3 up),
    5 at 32x32, 5 at 16x16, 1 at 8x8 (mid block), 2 heads each.
    """
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": _SD_DOWN,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": _SD_UP,
        "block_out_channels": (32, 32, 64, 64),
        "layers_per_block": 2,
        "attention_head_dim": 2,  # diffusers reads this as the number of heads for SD 1.x UNets
        "cross_attention_dim": tiny_text_config().hidden_size,
        "norm_num_groups": 8,
    }


def tiny_vae_config() -> dict:
    """AutoencoderKL config: 4 blocks (3 downsamplings, 512 px -> 64 latents), 4 latent channels."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (16, 16, 32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def tiny_text_config() -> CLIPTextConfig:
    """CLIPTextConfig: hidden 32, 2 layers, 2 heads, 77 positions, vocabulary of the tiny tokenizer."""
    vocab_size = len(_tiny_vocab())
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=_MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


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
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=_MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


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


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer with a byte-level vocabulary and no merges, built offline (model_max_length 77)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(_tiny_vocab()), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=_MAX_LENGTH)


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
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    attention_scale: float = 1.0,
) -> StableDiffusionBackbone:
    """A :class:`StableDiffusionBackbone` over :func:`build_tiny_components` (name "tiny-random").

    512 px images give maps at sides 64, 32, 16, 8 like SD 1.x; dtype/device default as in
    ``StableDiffusionBackbone`` (float16 on CUDA, float32 on CPU). ``attention_scale`` != 1
    applies :func:`sharpen_self_attention`.
    """
    vae, unet, text_encoder, tokenizer = build_tiny_components(seed)
    if attention_scale != 1.0:
        sharpen_self_attention(unet, attention_scale)
    return StableDiffusionBackbone.from_components(
        vae, unet, text_encoder, tokenizer, dtype=dtype, device=device, name="tiny-random"
    )


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
def save_tiny_pretrained(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers Stable Diffusion folder and return its path.

    Layout: ``vae/``, ``unet/``, ``text_encoder/`` (safetensors weights + config), ``tokenizer/``,
    ``scheduler/`` (SD's DDPM schedule) and a minimal ``model_index.json``.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    vae, unet, text_encoder, tokenizer = build_tiny_components(seed)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(root / "tokenizer")
    DDPMScheduler(**SD_SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return root
