"""DiffSeg in PyTorch: unsupervised zero-shot segmentation from Stable Diffusion self-attention.

Pipeline: :class:`StableDiffusionBackbone` (one UNet pass, self-attention captured
by :func:`capture_self_attention`) -> :func:`aggregate_attention` -> :class:`DiffSeg`
(iterative KL merging + NMS) or the :class:`KMeansSegmenter` baselines.
"""

from diffseg.aggregation import aggregate_attention, resolution_weights
from diffseg.backbone import StableDiffusionBackbone
from diffseg.capture import capture_self_attention
from diffseg.diffcut import DiffCut
from diffseg.merging import anchor_grid, merge_proposals
from diffseg.nms import nms_mask
from diffseg.segmenter import DiffSeg, KMeansSegmenter

__all__ = [
    "DiffCut",
    "DiffSeg",
    "KMeansSegmenter",
    "StableDiffusionBackbone",
    "aggregate_attention",
    "anchor_grid",
    "capture_self_attention",
    "merge_proposals",
    "nms_mask",
    "resolution_weights",
]

