"""Stable Diffusion families, recognised from a model's own configs (never from its name).

:func:`detect_family` reads the UNet config (plus the scheduler and VAE configs when given) and
returns a :class:`BackboneFamily`: the family name, its native input size and where its
self-attention layers sit. The rules:

* ``addition_embed_type == "text_time"`` (pooled text embedding + size/crop time ids, two text
  encoders): the SDXL family. The transformer depth of the cross-attention down blocks tells the
  distilled variants apart: (2, 10) SDXL, (2, 4) SSD-1B, (1, 2) Segmind-Vega; other depths are an
  ``sdxl-variant``.
* otherwise ``use_linear_projection`` (linear instead of 1x1-conv projections around each
  transformer, as the SD 2.x release has): SD 2.x, ``sd2-v`` when the scheduler config predicts
  ``v_prediction`` (the 768 px models), else ``sd2-base``.
* otherwise SD 1.x.

The native input size is the UNet's ``sample_size`` (latent side) times the VAE's downsampling
factor ``2 ** (len(vae.block_out_channels) - 1)`` (8 for every family here): 512, 768 or 1024 px.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BackboneFamily",
    "MMDiTFamily",
    "UnsupportedModelError",
    "cross_attention_depths",
    "detect_family",
    "detect_mmdit_family",
    "self_attention_layout",
]

# Transformer depth of the cross-attention down blocks -> family (SDXL and its distillations).
_TEXT_TIME_FAMILIES = {(2, 10): "sdxl", (2, 4): "ssd-1b", (1, 2): "segmind-vega"}

_TITLES = {
    "sd1": "Stable Diffusion 1.x",
    "sd2-base": "Stable Diffusion 2.x base (epsilon prediction)",
    "sd2-v": "Stable Diffusion 2.x (v-prediction)",
    "sdxl": "Stable Diffusion XL",
    "ssd-1b": "SSD-1B (distilled SDXL)",
    "segmind-vega": "Segmind-Vega (distilled SDXL)",
    "sdxl-variant": "SDXL-structured UNet (unrecognised transformer depths)",
}


class UnsupportedModelError(ValueError):
    """The UNet config describes a model DiffSeg's backbone cannot condition or capture."""


@dataclass(frozen=True)
class BackboneFamily:
    """What the configs say about a Stable Diffusion checkpoint.

    Attributes:
        name: ``sd1``, ``sd2-base``, ``sd2-v``, ``sdxl``, ``ssd-1b``, ``segmind-vega`` or ``sdxl-variant``.
        native_size: input side in pixels the model was trained at (512, 768, 1024).
        prediction_type: the scheduler's ``epsilon`` / ``v_prediction``.
        text_encoders: 1, or 2 for the SDXL family (pooled embedding + time ids as extra conditioning).
        layout: self-attention (``attn1``) layers per spatial side at the native size, e.g.
            {64: 5, 32: 5, 16: 5, 8: 1} for SD 1.x, {64: 10, 32: 60} for SDXL.
    """

    name: str
    native_size: int
    prediction_type: str = "epsilon"
    text_encoders: int = 1
    layout: Mapping[int, int] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """Human-readable family name."""
        return _TITLES.get(self.name, self.name)

    @property
    def attention_sides(self) -> tuple[int, ...]:
        """Sides s of the s x s self-attention maps at the native size, largest first."""
        return tuple(sorted(self.layout, reverse=True))

    @property
    def uses_time_ids(self) -> bool:
        """True for the SDXL family (``added_cond_kwargs`` with ``text_embeds`` and ``time_ids``)."""
        return self.text_encoders == 2

    def describe(self) -> str:
        """One line: family, native size, attention sides with layer counts, prediction type."""
        sides = ", ".join(f"{s}x{s} ({n} layer{'s' if n != 1 else ''})"
                          for s, n in sorted(self.layout.items(), reverse=True))
        return (
            f"{self.title} [{self.name}]: native input {self.native_size} px, self-attention at {sides}, "
            f"{self.prediction_type} prediction, {self.text_encoders} text encoder(s)"
        )


def _per_block(value: Any, count: int, name: str) -> list[Any]:
    """A per-block config value (an int applying to every block, or a sequence of ``count``)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise UnsupportedModelError(f"unet config: {name} has {len(value)} entries for {count} blocks")
        return list(value)
    return [value] * count


def _layers(depth: Any, attentions: int) -> int:
    """attn1 layers of one block: ``attentions`` transformers of ``depth`` layers (or a depth per transformer)."""
    if isinstance(depth, Sequence) and not isinstance(depth, str):
        return int(sum(int(d) for d in depth))
    return int(depth) * attentions


def cross_attention_depths(unet_config: Mapping[str, Any]) -> tuple[int, ...]:
    """Transformer layers per transformer of each cross-attention down block, in block order."""
    blocks = list(unet_config.get("down_block_types", ()))
    depths = _per_block(unet_config.get("transformer_layers_per_block", 1), len(blocks), "transformer_layers_per_block")
    out = []
    for block, depth in zip(blocks, depths, strict=True):
        if "CrossAttn" in block:
            out.append(max(int(d) for d in depth) if isinstance(depth, Sequence) else int(depth))
    return tuple(out)


def self_attention_layout(unet_config: Mapping[str, Any], latent_side: int | None = None) -> dict[int, int]:
    """Number of self-attention (``attn1``) layers per spatial side for a square latent.

    Follows ``UNet2DConditionModel``'s construction: down block i runs at ``latent_side / 2**i``
    with ``layers_per_block[i]`` transformers, the mid block (cross-attention type) at the
    smallest side with one transformer of ``transformer_layers_per_block[-1]`` layers, up block j
    mirrors down block ``n-1-j`` with one more transformer (``reverse_transformer_layers_per_block``
    when given). ``latent_side`` defaults to the config's ``sample_size``. Sides are rounded up at
    each downsampling, as the strided convolutions do.

    Returns:
        ``{side: layers}``, largest side first.
    """
    side = int(latent_side if latent_side is not None else unet_config.get("sample_size") or 64)
    down = list(unet_config.get("down_block_types", ()))
    up = list(unet_config.get("up_block_types", ()))
    n = len(down)
    layers_per_block = _per_block(unet_config.get("layers_per_block", 2), n, "layers_per_block")
    depths = _per_block(unet_config.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block")
    reverse = unet_config.get("reverse_transformer_layers_per_block")
    up_depths = list(reverse) if reverse is not None else list(reversed(depths))
    sides = [side]
    for _ in range(n - 1):
        sides.append(-(-sides[-1] // 2))
    layout: dict[int, int] = {}

    def add(s: int, count: int) -> None:
        if count:
            layout[s] = layout.get(s, 0) + count

    for i, block in enumerate(down):
        if "CrossAttn" in block:
            add(sides[i], _layers(depths[i], layers_per_block[i]))
    if unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        depth = depths[-1]
        add(sides[-1], _layers(depth[0] if isinstance(depth, Sequence) else depth, 1))
    reversed_layers = list(reversed(layers_per_block))
    for j, block in enumerate(up):
        if "CrossAttn" in block:
            add(sides[n - 1 - j], _layers(up_depths[j], reversed_layers[j] + 1))
    return dict(sorted(layout.items(), reverse=True))


def detect_family(
    unet_config: Mapping[str, Any],
    scheduler_config: Mapping[str, Any] | None = None,
    vae_config: Mapping[str, Any] | None = None,
) -> BackboneFamily:
    """Recognise the family of a Stable Diffusion checkpoint from its configs (rules in the module docstring).

    Raises :class:`UnsupportedModelError` for UNets this backbone cannot run: inpainting/depth models
    (``in_channels`` != 4), other extra conditionings (``addition_embed_type`` other than
    ``text_time``, class embeddings), or a UNet without self-attention layers.
    """
    in_channels = int(unet_config.get("in_channels", 4))
    if in_channels != 4:
        raise UnsupportedModelError(
            f"unet config: in_channels={in_channels} (an inpainting/depth/upscaling UNet); DiffSeg needs a "
            "text-to-image UNet with 4 latent channels"
        )
    addition = unet_config.get("addition_embed_type")
    if addition not in (None, "text_time"):
        raise UnsupportedModelError(f"unet config: addition_embed_type={addition!r} is not supported "
                                    "(only Stable Diffusion 1.x/2.x and the SDXL family)")
    if unet_config.get("class_embed_type") is not None or unet_config.get("num_class_embeds") is not None:
        raise UnsupportedModelError("unet config: class-conditioned UNets (class_embed_type / num_class_embeds) "
                                    "are not supported")
    prediction = str((scheduler_config or {}).get("prediction_type") or "epsilon")
    if addition == "text_time":
        name = _TEXT_TIME_FAMILIES.get(cross_attention_depths(unet_config), "sdxl-variant")
        encoders = 2
    elif unet_config.get("use_linear_projection"):
        name = "sd2-v" if prediction == "v_prediction" else "sd2-base"
        encoders = 1
    else:
        name = "sd1"
        encoders = 1
    vae_blocks = len((vae_config or {}).get("block_out_channels", (0, 0, 0, 0)))
    scale = 2 ** (vae_blocks - 1)
    layout = self_attention_layout(unet_config)
    if not layout:
        raise UnsupportedModelError("unet config: no cross-attention blocks, so no self-attention layers to capture")
    native = int(unet_config.get("sample_size") or 64) * scale
    return BackboneFamily(name=name, native_size=native, prediction_type=prediction, text_encoders=encoders,
                          layout=layout)


# ------------------------------------------------------------------------------------------------ MM-DiT
_MMDIT_TITLES = {
    "sd3": "Stable Diffusion 3 (MM-DiT)",
    "sd35-medium": "Stable Diffusion 3.5 medium (MM-DiT-X: RMS q/k norms, dual attention)",
    "sd35-large": "Stable Diffusion 3.5 large (MM-DiT, RMS q/k norms)",
    "flux-dev": "FLUX.1 [dev] (guidance-distilled)",
    "flux-schnell": "FLUX.1 [schnell] (timestep-distilled)",
}


@dataclass(frozen=True)
class MMDiTFamily:
    """What an MM-DiT transformer config says: ``name`` (a key of the titles above), token order and block counts.

    ``token_order`` is ``("image", "text")`` for SD3/SD3.5 and ``("text", "image")`` for Flux;
    ``single_blocks`` counts Flux's single-stream blocks (0 for SD3).
    """

    name: str
    joint_blocks: int
    heads: int
    single_blocks: int = 0
    token_order: tuple[str, str] = ("image", "text")

    @property
    def title(self) -> str:
        """Human-readable family name."""
        return _MMDIT_TITLES.get(self.name, self.name)


def detect_mmdit_family(transformer_config: Mapping[str, Any]) -> MMDiTFamily:
    """Recognise an MM-DiT from its transformer config (never from its name).

    Rules: ``num_single_layers`` present -> Flux (``guidance_embeds`` -> flux-dev, else flux-schnell);
    otherwise SD3-style: ``qk_norm`` unset -> sd3, ``qk_norm`` set with ``dual_attention_layers`` ->
    sd35-medium, without -> sd35-large. Anything else raises :class:`UnsupportedModelError`.
    """
    config = dict(transformer_config)
    heads = int(config.get("num_attention_heads") or 0)
    if "num_single_layers" in config:
        name = "flux-dev" if config.get("guidance_embeds") else "flux-schnell"
        return MMDiTFamily(name, int(config["num_layers"]), heads, int(config["num_single_layers"]), ("text", "image"))
    if "joint_attention_dim" not in config or "caption_projection_dim" not in config:
        raise UnsupportedModelError("transformer config: neither SD3-style (joint_attention_dim, "
                                    "caption_projection_dim) nor Flux-style (num_single_layers): not an MM-DiT")
    if not config.get("qk_norm"):
        name = "sd3"
    else:
        name = "sd35-medium" if config.get("dual_attention_layers") else "sd35-large"
    return MMDiTFamily(name, int(config["num_layers"]), heads)
