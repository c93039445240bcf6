"""DiffSeg in PyTorch: unsupervised zero-shot segmentation from Stable Diffusion self-attention.

Pipeline: :class:`StableDiffusionBackbone` (one UNet pass, self-attention captured
by :func:`capture_self_attention`) -> :func:`aggregate_attention` -> :class:`DiffSeg`
(iterative KL merging + NMS) or the :class:`KMeansSegmenter` baselines.

The names below are imported on first use (PEP 562), so importing a light submodule
such as :mod:`diffseg.atomic` or :mod:`diffseg.masks` does not import torch, diffusers
or transformers. A missing dependency fails loudly when the name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_EXPORTS = {
    "DiffCut": "diffseg.diffcut",
    "DiffSeg": "diffseg.segmenter",
    "KMeansSegmenter": "diffseg.segmenter",
    "Seg4Diff": "diffseg.seg4diff",
    "StableDiffusionBackbone": "diffseg.backbone",
    "aggregate_attention": "diffseg.aggregation",
    "anchor_grid": "diffseg.merging",
    "capture_joint_attention": "diffseg.joint_attention",
    "capture_self_attention": "diffseg.capture",
    "image_self_attention": "diffseg.joint_aggregation",
    "merge_proposals": "diffseg.merging",
    "nms_mask": "diffseg.nms",
    "resolution_weights": "diffseg.aggregation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
