"""Cache of captured attention maps, so sweeps that keep the backbone setting reuse them.

An entry is keyed by the backbone setting (model, dtype, timestep, noise, image size,
device type, batch size) and the *content* of the pre-processed input image (the
sha256 of its float32 tensor, :func:`input_key`), never by the image's id: two
datasets that reuse ids (the synthetic and demo roots use real COCO ids) never share
an entry, and an image that changed on disk misses. Modes:

* ``none``: no caching;
* ``memory``: a process-wide LRU dictionary bounded by ``max_gb`` (Hydra's
  basic launcher runs the jobs of a ``-m`` sweep in one process, so later jobs
  hit it);
* ``disk``: one safetensors file per input under ``dir/<setting hash>/<input hash>.safetensors``,
  written atomically; survives processes and is shared by cluster jobs.

Maps are stored exactly (float32), so a cached run gives the same results as an
uncached one, to the bit. The batch size is part of the setting because the UNet's
floats depend on which images share a batch (about 1e-6 on CPU). A disk entry
carries the sha256 of its tensors in its metadata; an entry that cannot be read or
whose tensors do not match (truncated, corrupted) is logged with its path, never
used, and overwritten by the recomputed maps. One SD 1.x image takes about 68 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from eval.atomic import write_bytes_atomic

__all__ = ["AttentionCache", "input_key", "setting_key"]

log = logging.getLogger(__name__)

_MEMORY: OrderedDict[str, dict[int, torch.Tensor]] = OrderedDict()
_MODES = ("none", "memory", "disk")


def setting_key(setting: dict[str, Any]) -> str:
    """Short stable hash of a backbone setting (a JSON-serialisable dict)."""
    text = json.dumps(setting, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def input_key(image: torch.Tensor) -> str:
    """sha256 (32 hex digits) of one pre-processed image ``(3, S, S)``: dtype, shape and float bytes."""
    cpu = image.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{cpu.dtype}{tuple(cpu.shape)}".encode())
    digest.update(cpu.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def _maps_digest(maps: dict[int, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for side in sorted(maps):
        tensor = maps[side].contiguous()
        digest.update(f"{side}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _nbytes(maps: dict[int, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in maps.values())


class AttentionCache:
    """Per-input attention maps ``{s: Tensor(s*s, s*s)}`` for one backbone setting.

    Entries are keyed by :func:`input_key` of the pre-processed image, so ``get``/``put``
    take that key, not an image id.

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
        self.rejected = 0  # disk entries found unreadable or corrupt (recomputed and overwritten)

    def file(self, key: str) -> Path:
        """The disk entry of an input key."""
        assert self.directory is not None
        return self.directory / f"{key}.safetensors"

    def _read(self, path: Path) -> dict[int, torch.Tensor] | None:
        """An entry's maps when it is whole and matches its checksum, else None (logged)."""
        try:
            data = path.read_bytes()
            (size,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + size])
            stored = ((header.get("__metadata__") if isinstance(header, dict) else None) or {}).get("sha256")
            maps = {int(k): v for k, v in load(data).items()}
            problem = None if stored and stored == _maps_digest(maps) else "checksum mismatch"
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, struct.error, SafetensorError) as exc:  # recomputed, never used
            problem, maps = f"{type(exc).__name__}: {exc}", None
        if problem is None:
            return maps
        self.rejected += 1
        log.warning("attention cache: %s is unreadable or corrupt (%s); not used, recomputing and overwriting it",
                    path, problem)
        return None

    def get(self, key: str) -> dict[int, torch.Tensor] | None:
        """Cached maps of an input (on the CPU), or None."""
        maps = None
        if self.mode == "memory":
            name = f"{self.prefix}/{key}"
            maps = _MEMORY.get(name)
            if maps is not None:
                _MEMORY.move_to_end(name)
        elif self.mode == "disk":
            maps = self._read(self.file(key))
        if self.mode != "none":
            self.hits += maps is not None
            self.misses += maps is None
        return maps

    def put(self, key: str, maps: dict[int, torch.Tensor]) -> None:
        """Store one input's maps (moved to the CPU)."""
        if self.mode == "none":
            return
        cpu = {s: t.detach().to("cpu", torch.float32).contiguous() for s, t in maps.items()}
        if self.mode == "memory":
            _MEMORY[f"{self.prefix}/{key}"] = cpu
            total = sum(_nbytes(m) for m in _MEMORY.values())
            while _MEMORY and total > self.max_bytes:
                _, old = _MEMORY.popitem(last=False)
                total -= _nbytes(old)
        else:
            blob = save({str(s): t for s, t in cpu.items()}, metadata={"sha256": _maps_digest(cpu)})
            write_bytes_atomic(self.file(key), blob)

    @staticmethod
    def clear_memory() -> None:
        """Empty the process-wide memory cache."""
        _MEMORY.clear()
