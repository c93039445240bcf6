"""Cache of captured attention maps, so sweeps that keep the backbone setting reuse them.

A key names the backbone setting (model, dtype, timestep, noise, image size)
and the image. Modes:

* ``none``: no caching;
* ``memory``: a process-wide LRU dictionary bounded by ``max_gb`` (Hydra's
  basic launcher runs the jobs of a ``-m`` sweep in one process, so later jobs
  hit it);
* ``disk``: one safetensors file per image under ``dir/<setting hash>/``,
  written atomically; survives processes and is shared by cluster jobs.

Maps are stored exactly (float32), so a cached run gives the same results as an
uncached one. One SD 1.x image takes about 68 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from eval.atomic import write_bytes_atomic

__all__ = ["AttentionCache", "setting_key"]

_MEMORY: OrderedDict[str, dict[int, torch.Tensor]] = OrderedDict()
_MODES = ("none", "memory", "disk")


def setting_key(setting: dict[str, Any]) -> str:
    """Short stable hash of a backbone setting (a JSON-serialisable dict)."""
    text = json.dumps(setting, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _nbytes(maps: dict[int, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in maps.values())


class AttentionCache:
    """Per-image attention maps ``{s: Tensor(s*s, s*s)}`` for one backbone setting.

    Args:
        mode: ``"none"``, ``"memory"`` or ``"disk"``.
        setting: the backbone setting the maps depend on.
        max_gb: memory budget of the ``memory`` mode (least recently used out first).
        directory: root folder of the ``disk`` mode.
    """

    def __init__(self, mode: str, setting: dict[str, Any], max_gb: float = 8.0,
                 directory: str | os.PathLike | None = None):
        if mode not in _MODES:
            raise ValueError(f"cache.mode: expected one of {_MODES}, got {mode!r}")
        if mode == "disk" and directory is None:
            raise ValueError("cache.dir: the disk cache needs a directory")
        self.mode = mode
        self.prefix = setting_key(setting)
        self.max_bytes = int(max_gb * 2**30)
        self.directory = Path(directory) / self.prefix if directory is not None else None
        self.hits = 0
        self.misses = 0

    def _file(self, image_id: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{image_id.replace('/', '_')}.safetensors"

    def get(self, image_id: str) -> dict[int, torch.Tensor] | None:
        """Cached maps of an image (on the CPU), or None."""
        maps = None
        if self.mode == "memory":
            key = f"{self.prefix}/{image_id}"
            maps = _MEMORY.get(key)
            if maps is not None:
                _MEMORY.move_to_end(key)
        elif self.mode == "disk" and self._file(image_id).exists():
            maps = {int(k): v for k, v in load_file(self._file(image_id)).items()}
        if self.mode != "none":
            self.hits += maps is not None
            self.misses += maps is None
        return maps

    def put(self, image_id: str, maps: dict[int, torch.Tensor]) -> None:
        """Store one image's maps (moved to the CPU)."""
        if self.mode == "none":
            return
        cpu = {s: t.detach().to("cpu", torch.float32).contiguous() for s, t in maps.items()}
        if self.mode == "memory":
            _MEMORY[f"{self.prefix}/{image_id}"] = cpu
            total = sum(_nbytes(m) for m in _MEMORY.values())
            while _MEMORY and total > self.max_bytes:
                _, old = _MEMORY.popitem(last=False)
                total -= _nbytes(old)
        else:
            write_bytes_atomic(self._file(image_id), save({str(s): t for s, t in cpu.items()}))

    @staticmethod
    def clear_memory() -> None:
        """Empty the process-wide memory cache."""
        _MEMORY.clear()
