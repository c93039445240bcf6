"""What the methods of a run read from an MM-DiT backbone (SD3, SD3.5, Flux), per batch: one transformer pass.

A model config with ``kind: mmdit`` (``conf/model/sd3_medium.yaml`` ...) builds a
:class:`~diffseg.mmdit_backbone.MMDiTBackbone`; its pass captures the joint attention of the blocks
``model.joint_layers`` (and of every Seg4Diff method's ``layers``) once
(:func:`diffseg.capture_joint_attention`). From that one capture:

* Seg4Diff (a method with ``inputs: image_to_text``) reads the image-to-text maps and upsamples its
  groups to the protocol's prediction size (:meth:`JointAttentionPasses.segment`);
* DiffSeg and the K-Means baselines read the image-to-image maps of ``model.joint_layers``
  (:func:`diffseg.image_self_attention`: rows renormalised over the image keys, layers averaged), as
  ``{s: (B, s*s, s*s)}``; their square masks are stretched to the prediction size as the release
  stretches Seg4Diff's maps (each segment's indicator bilinearly, argmax).

Then the protocol's :meth:`fit` (``protocol=seg4diff``: the release's top-left crop on Cityscapes)
brings every mask to its label. No attention cache: ``cache=none`` only.
"""

from __future__ import annotations

from typing import Any

import torch

from diffseg.joint_aggregation import image_self_attention
from eval.instantiate import build
from eval.run.cache import AttentionCache
from eval.run.methods import Method
from eval.run.passes import BackbonePasses, segment_batch
from eval.spec import RunSpec, SettingError

__all__ = ["JointAttentionPasses", "check_backbone", "is_mmdit", "make_passes", "stretch_ids"]

IMAGE_TO_TEXT = "image_to_text"  # a method's ``inputs``: Seg4Diff


def is_mmdit(spec: RunSpec) -> bool:
    """True when the run's model config is an MM-DiT one (``model.kind: mmdit``)."""
    return spec.model.kind == "mmdit"


def stretch_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks ``(B, s, s)`` -> ``(B, H, W)``: each segment's indicator resized bilinearly (half-pixel), argmax."""
    if tuple(ids.shape[-2:]) == tuple(size):
        return ids
    count = int(ids.max()) + 1
    onehot = torch.nn.functional.one_hot(ids.long(), count).permute(0, 3, 1, 2).float()
    up = torch.nn.functional.interpolate(onehot, size=tuple(size), mode="bilinear", align_corners=False)
    return up.argmax(dim=1)


def _joint_name(layer: Any) -> str:
    text = layer if isinstance(layer, str) else f"transformer_blocks.{int(layer)}"
    return text[: -len(".attn")] if text.endswith(".attn") else text


class JointAttentionPasses:
    """Per-batch MM-DiT maps for ``methods``: ``(maps or None, {"image_to_text": {name: (B, N, T)}})``.

    The same interface as :class:`eval.run.passes.BackbonePasses` (``load``, ``backbone``,
    ``needs_backbone``, ``cache``, ``segment``), so the runner treats both alike.
    """

    def __init__(self, spec: RunSpec, device: torch.device, methods: list[Method], geometry: Any = None):
        self.spec, self.device, self.geometry = spec, device, geometry
        self.backbone = None
        self.self_attention_layers = [_joint_name(x) for x in spec.model.joint_layers]
        self.needs_attention = any(not m.text_attention for m in methods)
        if self.needs_attention and not self.self_attention_layers:
            raise ValueError("model.joint_layers: DiffSeg / K-Means on an MM-DiT need the joint blocks whose "
                             "image-to-image maps they read")
        text_layers = [_joint_name(x) for m in methods if m.text_attention for x in m.segmenter.layers]
        wanted = (self.self_attention_layers if self.needs_attention else []) + text_layers
        self.layers = list(dict.fromkeys(wanted))
        self.cache = AttentionCache("none", {})
        self.integer_pixels = bool(getattr(geometry, "integer_pixels", False))

    @property
    def needs_backbone(self) -> bool:
        return True

    def load(self):
        """The :class:`~diffseg.mmdit_backbone.MMDiTBackbone`, built on first use."""
        if self.backbone is None:
            self.backbone = build(self.spec.model.backbone, device=self.device)
        return self.backbone

    def __call__(self, images: torch.Tensor, ids: list[str]) -> tuple[dict[int, torch.Tensor] | None,
                                                                      dict[str, Any]]:
        """``images``: float32 ``(B, 3, H, W)`` in [-1, 1] (any H, W); one transformer pass."""
        pixels = (images.float() + 1.0) * 127.5
        if self.integer_pixels:  # the protocol's images were uint8: recover them exactly
            pixels = pixels.round()
        store = self.load().joint_attention(pixels, layers=self.layers, query_chunk=self.spec.model.query_chunk)
        maps = None
        if self.needs_attention:
            maps = {s: m.to(self.device) for s, m in
                    image_self_attention(store.image_to_image(), self.self_attention_layers).items()}
        return maps, {IMAGE_TO_TEXT: store.image_to_text()}

    def segment(self, methods: list[Method], maps: dict[int, torch.Tensor] | None, features: dict[str, Any],
                labels: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
        """Masks ``(B, h, w)`` at each method's labels, through the protocol's prediction size and fit."""
        masks: dict[str, torch.Tensor] = {}
        others = [m for m in methods if not m.text_attention]
        if others:
            masks.update(segment_batch(others, maps, {}, labels, num_classes))
        for method in methods:
            target = tuple(labels[method.name].shape[-2:])
            size = self.geometry.prediction_size(target) if hasattr(self.geometry, "prediction_size") else target
            if method.text_attention:
                mask = method.segmenter(features[IMAGE_TO_TEXT], out_size=size)
            else:
                mask = stretch_ids(masks[method.name], size)
            if hasattr(self.geometry, "fit"):
                mask = self.geometry.fit(mask, target)
            masks[method.name] = mask.to(labels[method.name].device)
        return {m.name: masks[m.name] for m in methods}


def make_passes(spec: RunSpec, device: torch.device, methods: list[Method], geometry: Any = None):
    """The run's backbone passes: :class:`JointAttentionPasses` for an MM-DiT model, else UNet passes."""
    if is_mmdit(spec):
        return JointAttentionPasses(spec, device, methods, geometry)
    return BackbonePasses(spec, device, methods)


def check_backbone(spec: RunSpec, methods: list[Method], geometry: Any = None) -> None:
    """Refuse (before anything is written) a run whose methods or protocol its backbone cannot feed.

    Raises :class:`~eval.spec.SettingError`: Seg4Diff on a UNet model, a protocol whose images keep
    their own sizes (``protocol=seg4diff``) on a UNet model, or an MM-DiT run with an attention cache.
    """
    problems = []
    model = spec.model.name
    if not is_mmdit(spec):
        text = [m.name for m in methods if m.text_attention]
        if text:
            problems.append(f"methods {text} read MM-DiT image-to-text attention, but model={model} is a "
                            "UNet (pick model=sd3_medium, sd35_medium, ...)")
        if getattr(geometry, "max_batch_size", None) is not None:
            problems.append(f"protocol={geometry.name} feeds each image at its own size, which only the MM-DiT "
                            f"backbones take; model={model} is a UNet")
    elif (cache := spec.options.cache.mode) != "none":
        problems.append(f"cache={cache}: the attention cache holds UNet maps; MM-DiT runs take cache=none")
    if problems:
        raise SettingError("; ".join(problems))

