"""One image, kept: the backbone pass runs once per image and timestep, everything else re-draws from it.

:class:`ImageSession` holds images (from a path or an upload) and, through the project's
attention cache (:class:`eval.run.cache.AttentionCache`, memory mode), each image's per-resolution
self-attention ``{s: (s*s, s*s)}`` per timestep. A change of the KL threshold, the anchor grid,
the aggregation weights, the KL precision or the refinement re-segments from that kept
attention with the library's own steps (:mod:`diffseg.merging`, :class:`diffseg.DiffSeg`,
:func:`diffseg.nms_mask`). The aggregated tensor and the first merge's anchor distances (the
part no threshold changes, :func:`diffseg.merging.first_merge_distances`) are kept too, so a
move of the threshold slider only regroups, merges and runs NMS.

Every stage of the merge is returned (:class:`Segmentation`): the anchor grid, the proposals
after each iteration, the refined ones, and the final mask, which is exactly what
``DiffSeg(...)(attention)`` gives for the same settings.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffseg.aggregation import aggregate_attention
from diffseg.merging import FirstMergeDistances, anchor_grid, first_merge_distances, first_merge_groups, greedy_merge
from diffseg.nms import nms_mask
from diffseg.preprocess import load_image, preprocess_image
from diffseg.segmenter import DiffSeg
from eval.run.cache import AttentionCache

__all__ = ["ImageSession", "SegmentParams", "Segmentation", "StoredImage", "image_key", "weights_from"]

Weights = tuple[tuple[int, float], ...] | None  # hashable {side: weight}; None = proportional to resolution


@dataclass(frozen=True)
class SegmentParams:
    """The settings a re-segmentation reads (one KL threshold for every iteration, as the paper).

    ``weights``: None for weights proportional to resolution (the paper's), else ``((side, w), ...)``.
    """

    kl_threshold: float = 1.1
    num_points: int = 16
    weights: Weights = None
    kl_precision: str = "float16"
    refine: bool = False
    timestep: int = 300

    def weights_dict(self) -> dict[int, float] | None:
        return None if self.weights is None else {int(s): float(w) for s, w in self.weights}


@dataclass
class Segmentation:
    """Result of one re-segmentation.

    Attributes:
        mask: int64 ``(size, size)`` segment ids (``DiffSeg`` with these settings).
        stages: ``[(name, proposals (P, S*S) float64), ...]``: after each merging iteration,
            then ``"refined"`` when the K-means refinement is on; the last one gives ``mask``.
        anchors: ``LongTensor(M*M, 2)`` ``(row, col)`` anchor coordinates on the ``S x S`` grid.
        side: ``S``, the side of the aggregated attention.
        seconds: wall time of this re-segmentation.
        backbone_ran: True when the backbone pass ran for it (the attention was not kept yet).
    """

    mask: np.ndarray
    stages: list[tuple[str, torch.Tensor]]
    anchors: torch.Tensor
    side: int
    seconds: float
    backbone_ran: bool = False
    _stage_masks: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def segments(self) -> int:
        """Number of segments in the final mask."""
        return int(np.unique(self.mask).size)

    def stage_mask(self, index: int) -> np.ndarray:
        """``(size, size)`` mask NMS draws from the proposals of ``stages[index]`` (computed once)."""
        if index not in self._stage_masks:
            self._stage_masks[index] = nms_mask(self.stages[index][1], self.mask.shape[0]).numpy()
        return self._stage_masks[index]


@dataclass(frozen=True)
class StoredImage:
    """An image as the backbone sees it.

    ``pixels``: float32 ``(3, size, size)`` in [-1, 1] (centre crop + resize to the backbone's input
    size); ``shown``: the same crop as uint8 ``(output_size, output_size, 3)``, the masks' grid;
    ``key``: hash of ``pixels`` (the cache's image id).
    """

    name: str
    key: str
    pixels: torch.Tensor
    shown: np.ndarray


def image_key(pixels: torch.Tensor) -> str:
    """Stable id of a pre-processed image: sha256 of its float32 bytes (16 hex digits)."""
    return hashlib.sha256(pixels.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class ImageSession:
    """Images, their kept attention and re-segmentation (thread-safe: one call at a time).

    Args:
        backbone: a :class:`diffseg.backbone.StableDiffusionBackbone` (``attention_maps``,
            ``input_size``, ``name``, ``dtype``, ``device``).
        output_size: side of the masks (the benchmark's 512).
        cache_gb: memory budget of the kept per-resolution attention.
    """

    def __init__(self, backbone: Any, output_size: int = 512, cache_gb: float = 2.0):
        self.backbone = backbone
        self.size = int(backbone.input_size)
        self.output_size = int(output_size)
        self.cache_gb = float(cache_gb)
        self.images: dict[str, StoredImage] = {}
        self._caches: dict[int, AttentionCache] = {}
        self._aggregated = _LRU(2)
        self._distances = _LRU(1)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------------ images
    def add_path(self, path: str | Path) -> StoredImage:
        """Load an image file (crop + resize as the benchmark); raises ``OSError`` / ``ImageDecodeError``."""
        return self._add(str(path), load_image(path))

    def add_array(self, array: np.ndarray, name: str = "upload") -> StoredImage:
        """Add an uploaded ``(H, W, 3)`` uint8 RGB image (``(H, W)`` grey and RGBA are converted)."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
            raise ValueError(f"{name}: expected an RGB image, got an array of shape {array.shape}")
        rgb = np.ascontiguousarray(array[:, :, :3]).astype(np.uint8)
        return self._add(name, torch.from_numpy(rgb).permute(2, 0, 1))

    def _add(self, name: str, pixels_uint8: torch.Tensor) -> StoredImage:
        pixels = preprocess_image(pixels_uint8, self.size)
        shown_pixels = pixels if self.output_size == self.size else preprocess_image(pixels_uint8, self.output_size)
        shown = ((shown_pixels.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        stored = StoredImage(name=name, key=image_key(pixels), pixels=pixels, shown=shown)
        with self._lock:
            self.images[name] = stored
        return stored

    # --------------------------------------------------------------------------------------- attention
    def _cache(self, timestep: int) -> AttentionCache:
        if timestep not in self._caches:
            setting = {"model": str(self.backbone.name), "dtype": str(self.backbone.dtype), "timestep": int(timestep),
                       "noise": False, "size": self.size, "explore": True}
            self._caches[timestep] = AttentionCache("memory", setting, max_gb=self.cache_gb)
        return self._caches[timestep]

    def has_attention(self, name: str, timestep: int) -> bool:
        """True when the attention of ``name`` at ``timestep`` is kept (no backbone pass needed)."""
        with self._lock:
            cache = self._cache(timestep)
            maps = cache.get(self.images[name].key)
            return maps is not None

    def attention(self, name: str, timestep: int) -> tuple[dict[int, torch.Tensor], bool]:
        """``({s: (s*s, s*s) float32 CPU}, ran)``: the kept maps, after one backbone pass when ``ran``."""
        with self._lock:
            image = self.images[name]
            cache = self._cache(timestep)
            maps = cache.get(image.key)
            if maps is not None:
                return maps, False
            batch = image.pixels[None].to(self.backbone.device)
            out = self.backbone.attention_maps(batch, timestep=int(timestep))
            maps = {int(s): m[0].detach().to("cpu", torch.float32) for s, m in out.items()}
            cache.put(image.key, maps)
            return maps, True

    def aggregated(self, name: str, timestep: int, weights: Weights) -> tuple[torch.Tensor, bool]:
        """``((S, S, S, S) aggregated attention, ran)`` for these weights (the last two kept)."""
        with self._lock:
            maps, ran = self.attention(name, timestep)
            key = (self.images[name].key, int(timestep), weights)
            if ran:
                self._aggregated.pop(key, None)
            weight_map = None if weights is None else {int(s): float(w) for s, w in weights}

            def make() -> torch.Tensor:
                return aggregate_attention({s: m[None] for s, m in maps.items()}, weight_map)[0]

            return self._aggregated.get_or(key, make), ran

    def attention_at(self, name: str, timestep: int, x: float, y: float) -> dict[str, np.ndarray]:
        """The attention of the query under pixel ``(x, y)`` of the shown image (``output_size`` grid).

        Returns ``{"64 x 64": (64, 64) float32, ..., }`` largest side first, each a distribution
        over that resolution's key grid (from the kept maps; runs the backbone if needed).
        """
        with self._lock:
            maps, _ = self.attention(name, timestep)
        out = {}
        for side in sorted(maps, reverse=True):
            row = min(side - 1, max(0, int(y * side / self.output_size)))
            col = min(side - 1, max(0, int(x * side / self.output_size)))
            out[f"{side} x {side}"] = maps[side][row * side + col].reshape(side, side).numpy()
        return out

    # ------------------------------------------------------------------------------------ segmentation
    def segment(self, name: str, params: SegmentParams) -> Segmentation:
        """Re-segment ``name`` with ``params`` from the kept attention (one backbone pass if not kept).

        Raises ``ValueError`` for invalid settings (the library's own checks, e.g. an anchor grid
        larger than the attention side).
        """
        start = time.perf_counter()
        segmenter = DiffSeg(kl_threshold=params.kl_threshold, num_points=int(params.num_points),
                            refine=bool(params.refine), kl_precision=params.kl_precision,
                            output_size=self.output_size)
        with self._lock:
            attention, ran = self.aggregated(name, params.timestep, params.weights)
            side = attention.shape[-1]
            grid = anchor_grid(segmenter.num_points, side)
            key = (self.images[name].key, int(params.timestep), params.weights, segmenter.num_points,
                   segmenter.kl_precision)
            if ran:
                self._distances.pop(key, None)

            def make() -> FirstMergeDistances:
                flat = attention.reshape(side * side, side * side)
                return first_merge_distances(flat, grid[:, 0] * side + grid[:, 1], segmenter.kl_precision)

            prepared = self._distances.get_or(key, make)
            proposals = first_merge_groups(prepared, segmenter.thresholds[0])
            stages = [("iteration 1", proposals)]
            for i, threshold in enumerate(segmenter.thresholds[1:], start=2):
                proposals = greedy_merge(proposals, threshold)
                stages.append((f"iteration {i}", proposals))
            if segmenter.refine:
                proposals = segmenter.refined(attention, proposals)
                stages.append(("refined", proposals))
        mask = nms_mask(proposals, self.output_size).numpy()
        seg = Segmentation(mask=mask, stages=stages, anchors=grid, side=side,
                           seconds=time.perf_counter() - start, backbone_ran=ran)
        seg._stage_masks[len(stages) - 1] = mask
        return seg


def weights_from(values: Mapping[int, float] | None) -> Weights:
    """Hashable weights for :class:`SegmentParams` (None stays None: proportional)."""
    return None if values is None else tuple(sorted((int(s), float(w)) for s, w in values.items()))
