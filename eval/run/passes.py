"""What the methods of a run read from the backbone, per batch, with as few UNet passes as possible.

Attention methods (DiffSeg, the K-Means baselines) read the self-attention maps of the
run's pass (``model.timestep``, ``model.noise``), from the attention cache when it has
them (keyed by the content of each pre-processed image, :func:`eval.run.cache.input_key`).
Feature methods (DiffCut) read the output of the last encoder self-attention layer of
their own pass (:class:`eval.run.methods.FeaturePass`: DiffCut's release runs t = 50 with
one seeded noise for the batch). Methods that need the same pass share it, and a feature
method whose ``features.timestep`` is null reads the attention pass itself: one UNet pass
then feeds both captures.
"""

from __future__ import annotations

from typing import Any

import torch

from diffseg import aggregate_attention
from diffseg.devices import resolve_dtype
from eval.instantiate import build
from eval.run.cache import AttentionCache, input_key, library_digest
from eval.run.identity import versions
from eval.run.machine import cpu_name
from eval.run.methods import FeaturePass, Method, weights_key
from eval.run.weights import unresolved, weights_identity
from eval.spec import RunSpec

__all__ = ["BackbonePasses", "map_device", "segment_batch"]

# Libraries whose code computes the maps (besides diffseg's own source).
_MAP_LIBRARIES = ("torch", "diffusers", "transformers", "cuda")


def map_device(device: torch.device) -> dict[str, Any]:
    """The device as the maps depend on it: type and name; on CPU also torch's thread count.

    The thread count splits the CPU matmuls' sums differently (a few pixels of the totals differ
    between 1 and 2 threads); a CUDA pass does not depend on it.
    """
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    if device.type == "cpu":
        return {"type": "cpu", "name": cpu_name(), "threads": torch.get_num_threads()}
    return {"type": device.type}


class BackbonePasses:
    """Per-batch attention maps and features for ``methods``, from the cache or the backbone."""

    def __init__(self, spec: RunSpec, device: torch.device, methods: list[Method]):
        self.spec = spec
        self.device = device
        self.dtype = resolve_dtype(str(spec.model.dtype))
        self.backbone = None
        self.needs_attention = any(m.features is None for m in methods)
        self.feature_passes = sorted({m.features for m in methods if m.features is not None},
                                     key=lambda p: (p.timestep is None, p.timestep or 0, p.noise_seed))
        self.cache = self._attention_cache()

    def _attention_cache(self) -> AttentionCache:
        """The cache of this setting (module :mod:`eval.run.cache`: what the key holds)."""
        model, cache, device = self.spec.model, self.spec.options.cache, self.device
        self.weights = weights_identity(model.backbone) if cache.mode != "none" else {}
        setting = {
            "model": model.name,
            "dtype": str(self.dtype),
            "timestep": int(model.timestep),
            "noise": bool(model.noise),
            "noise_seed": int(model.noise_seed),
            "size": self.spec.data.size,
            "backbone": model.backbone,
            "head_chunk": model.head_chunk,  # the chunking rounds the head sum (up to 3e-8)
            "batch_size": self.spec.options.batch_size,  # the UNet's floats depend on the batch (about 1e-6)
            "weights": self.weights,
            "code": library_digest(),
            "libraries": {name: v for name, v in versions().items() if name in _MAP_LIBRARIES},
            "device": map_device(device),  # kernels round differently per device (and CPU thread count)
        }
        geometry = self.spec.protocol.geometry
        if geometry is not None:  # another protocol's crop gives other attention (key unchanged under diffseg)
            setting["geometry"] = geometry
        return AttentionCache(cache.mode, setting, cache.max_gb, cache.dir)

    def load(self):
        """The backbone, built on first use (so a run fully served by the cache never loads weights).

        A hub revision that was not in the local Hugging Face cache is resolved once the weights
        are loaded: the attention cache is then keyed by its commit.
        """
        if self.backbone is None:
            self.backbone = build(self.spec.model.backbone, dtype=self.dtype, device=self.device)
            if unresolved(self.weights):
                counts = (self.cache.hits, self.cache.misses, self.cache.rejected)
                self.cache = self._attention_cache()
                self.cache.hits, self.cache.misses, self.cache.rejected = counts
        return self.backbone

    @property
    def needs_backbone(self) -> bool:
        """True unless every input can come from the attention cache (whose key must know the weights' commit)."""
        return self.cache.mode == "none" or bool(self.feature_passes) or unresolved(self.weights)

    def __call__(self, images: torch.Tensor, ids: list[str]) -> tuple[dict[int, torch.Tensor] | None,
                                                                      dict[FeaturePass, torch.Tensor]]:
        """``({s: (B, s*s, s*s)} or None, {pass: (B, h*w, C)})``, float32 on the run device.

        ``images``: float32 ``(B, 3, S, S)``; the attention cache is keyed by their content, not by ``ids``.
        """
        shared = [p for p in self.feature_passes if p.timestep is None]
        keys = [input_key(image) for image in images] if self.cache.mode != "none" else []
        images = images.to(self.device, non_blocking=True)
        maps = None
        features: dict[FeaturePass, torch.Tensor] = {}
        if self.needs_attention or shared:
            cached = [self.cache.get(k) for k in keys] if keys and not shared else [None]
            if all(c is not None for c in cached):
                maps = {s: torch.stack([c[s] for c in cached]).to(self.device) for s in cached[0]}
            else:
                model = self.spec.model
                maps, feats = self.load().unet_pass(
                    images, int(model.timestep), noise="per_image" if model.noise else None,
                    seed=int(model.noise_seed), features=bool(shared), head_chunk=model.head_chunk)
                for b, key in enumerate(keys):
                    self.cache.put(key, {s: m[b] for s, m in maps.items()})
                for p in shared:
                    features[p] = feats
        for p in self.feature_passes:
            if p.timestep is not None:
                _, features[p] = self.load().unet_pass(images, p.timestep, noise="shared", seed=p.noise_seed,
                                                       attention=False, features=True)
        return maps, features

    def segment(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """:func:`segment_batch` (the MM-DiT passes bring masks to the protocol's sizes here)."""
        return segment_batch(*args, **kwargs)


def segment_batch(methods: list[Method], maps: dict[int, torch.Tensor] | None, features: dict[FeaturePass, Any],
                  labels: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """Masks ``(B, H, W)`` of every method; aggregation computed once per weight setting.

    ``labels`` maps each method to the ``(B, H, W)`` labels it is scored against (the run's, one
    protocol per run).
    """
    masks: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list[Method]] = {}
    for method in methods:
        if method.features is not None:
            masks[method.name] = method(features[method.features], labels[method.name], num_classes)
        else:
            groups.setdefault(weights_key(method.weights), []).append(method)
    for group in groups.values():
        attention = aggregate_attention(maps, group[0].weights)
        for method in group:
            masks[method.name] = method(attention, labels[method.name], num_classes)
        del attention
    return {m.name: masks[m.name] for m in methods}
