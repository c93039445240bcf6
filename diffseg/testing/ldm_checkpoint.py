"""Write a diffusers Stable Diffusion 1.x model as one original-layout (CompVis LDM) ``.safetensors`` file.

The single-file checkpoints people download (``v1-5-pruned-emaonly.safetensors`` and the like) use
the key names of the original latent-diffusion code: the UNet under ``model.diffusion_model.``
(``input_blocks`` / ``middle_block`` / ``output_blocks``), the VAE under ``first_stage_model.``
(``encoder.down.{i}.block.{j}``, 1x1-conv attention weights) and the CLIP text encoder under
``cond_stage_model.transformer.``. :func:`sd1_ldm_state_dict` maps a diffusers UNet / VAE / text
encoder of the SD 1.x block structure to those names, so the single-file loading path can be
tested offline against the same weights in a diffusers folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["save_sd1_single_file", "sd1_ldm_state_dict"]

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    """Replace the leading module name of ``rest`` (e.g. ``norm1.weight``) by its LDM name."""
    for new, old in table:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_key(key: str, layers_per_block: int, up_has_attention: list[bool]) -> str:
    """LDM name of one diffusers UNet key (SD 1.x structure)."""
    per_down, per_up = layers_per_block + 1, layers_per_block + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, _, leaf = key.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{leaf}"
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        # input_blocks.0 is conv_in; each down level adds its layers and a downsampler, each up level
        # its layers (the last one also holding the upsampler); slot 0 the ResNet, slot 1 the attention.
        i, j, rest = int(m[2]), int(m[4]), m[5]
        block = f"input_blocks.{i * per_down + j + 1}" if m[1] == "down" else f"output_blocks.{i * per_up + j}"
        return f"{block}.0.{_rename(rest, _RESNET)}" if m[3] == "resnets" else f"{block}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_down}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], _RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        i = int(m[1])
        slot = 2 if up_has_attention[i] else 1
        return f"output_blocks.{i * per_up + layers_per_block}.{slot}.conv.{m[2]}"
    raise KeyError(f"no SD 1.x original-layout name for UNet key {key!r}")


def _vae_key(key: str, num_blocks: int) -> tuple[str, bool]:
    """(LDM name, is a mid-block attention projection) of one diffusers VAE key."""
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        level = num_blocks - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTENTION)}", True
    return key, False  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def sd1_ldm_state_dict(
    unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """One original-layout state dict (contiguous CPU tensors) of an SD 1.x-structured diffusers model.

    The UNet must have SD 1.x's block pattern (4 levels, the last down / first up block without
    attention); the VAE's mid-block attention projections become 1x1 convolutions, as in the
    original checkpoints. Raises KeyError for a key with no original-layout name.
    """
    layers_per_block = int(unet.config.layers_per_block)
    up_has_attention = ["CrossAttn" in t for t in unet.config.up_block_types]
    out: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        out["model.diffusion_model." + _unet_key(key, layers_per_block, up_has_attention)] = value
    num_blocks = len(vae.config.block_out_channels)
    for key, value in vae.state_dict().items():
        name, projection = _vae_key(key, num_blocks)
        if projection and value.ndim == 2:
            value = value[:, :, None, None]  # linear (C, C) -> 1x1 conv (C, C, 1, 1)
        out["first_stage_model." + name] = value
    for key, value in text_encoder.state_dict().items():
        # transformers >= 5 names the text tower's weights without the ``text_model.`` prefix the
        # original checkpoints (written with transformers 4) carry
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def save_sd1_single_file(
    path: str | os.PathLike, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module
) -> Path:
    """Write :func:`sd1_ldm_state_dict` to ``path`` (``.safetensors``) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd1_ldm_state_dict(unet, vae, text_encoder), str(path), metadata={"format": "pt"})
    return path
