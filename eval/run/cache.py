"""Cache of captured attention maps, so sweeps that keep the backbone setting reuse them.

An entry is keyed by the backbone setting and the *content* of the pre-processed input
image (the sha256 of its float32 tensor, :func:`input_key`), never by the image's id: two
datasets that reuse ids (the synthetic and demo roots use real COCO ids) never share an
entry, and an image that changed on disk misses. The setting
(:class:`eval.run.passes.BackbonePasses`) holds everything the maps depend on: model,
dtype, timestep, noise, image size, batch size, ``model.head_chunk``, the source of the
library that computes them (:func:`source_digest` of ``diffseg``), the torch, diffusers and
transformers versions, the weights (:mod:`eval.run.weights`: revision and commit, or a hash
of the local files), and the device (type and name; on CPU also the torch thread count).
Modes:

* ``none``: no caching;
* ``memory``: a process-wide LRU dictionary bounded by ``max_gb`` (Hydra's
  basic launcher runs the jobs of a ``-m`` sweep in one process, so later jobs
  hit it);
* ``disk``: one safetensors file per input under ``dir/<setting hash>/<input hash>.safetensors``,
  written atomically; survives processes and is shared by cluster jobs. The whole of ``dir``
  (every setting) is bounded by ``max_gb``: after a write, the least recently used entries
  (by modification time, which a hit refreshes) are deleted until it fits; an entry larger
  than the budget is not written. Its size is logged when the run starts and after evictions.

Maps are stored exactly (float32), so a cached run gives the same results as an
uncached one, to the bit. The batch size is part of the setting because the UNet's
floats depend on which images share a batch (about 1e-6 on CPU). A disk entry
carries the sha256 of its tensors in its metadata; an entry that cannot be read or
whose tensors do not match (truncated, corrupted) is logged with its path, never
used, and overwritten by the recomputed maps. One SD 1.x image takes about 68 MB.
"""

from __future__ import annotations

import contextlib
import functools
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

__all__ = ["AttentionCache", "input_key", "library_digest", "setting_key", "source_digest"]

log = logging.getLogger(__name__)

_MEMORY: OrderedDict[str, dict[int, torch.Tensor]] = OrderedDict()
_MODES = ("none", "memory", "disk")


def source_digest(root: str | os.PathLike) -> str:
    """sha256 of a package's Python source: every ``*.py`` under ``root`` (relative path and bytes, sorted)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def library_digest() -> str:
    """:func:`source_digest` of the ``diffseg`` package that computes the maps, once per process.

    Once per process because the code that runs is the code that was imported: a later edit
    of the files must not key this process's maps as the edited code's.
    """
    import diffseg

    return source_digest(Path(diffseg.__file__).resolve().parent)


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
        max_gb: budget of the ``memory`` mode and of the whole ``disk`` directory (least recently used out first).
        directory: root folder of the ``disk`` mode.
    """

    def __init__(self, mode: str, setting: dict[str, Any], max_gb: float = 8.0,
                 directory: str | os.PathLike | None = None):
        if mode not in _MODES:
            raise ValueError(f"cache.mode: expected one of {_MODES}, got {mode!r}")
        if mode == "disk" and directory is None:
            raise ValueError("cache.dir: the disk cache needs a directory")
        if not max_gb > 0:
            raise ValueError(f"cache.max_gb: expected a positive size in GB, got {max_gb!r}")
        self.mode = mode
        self.prefix = setting_key(setting)
        self.max_gb = float(max_gb)
        self.max_bytes = int(max_gb * 2**30)
        self.root = Path(directory) if directory is not None else None
        self.directory = self.root / self.prefix if self.root is not None else None
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # disk entries found unreadable or corrupt (recomputed and overwritten)
        self.evicted = 0  # disk entries deleted to stay under max_gb
        self.too_large = 0  # disk entries not written: one alone is larger than max_gb
        self._sizes: dict[Path, int] | None = None  # disk entries of the whole root and their sizes
        if mode == "disk":
            self._scan()
            log.info("attention cache: %s holds %d entries, %.2f GB of max_gb=%s", self.root, len(self._sizes),
                     self.size_bytes / 1e9, max_gb)

    @property
    def size_bytes(self) -> int:
        """Bytes of every disk entry under the cache root (0 for the other modes)."""
        return sum(self._sizes.values()) if self._sizes else 0

    def _scan(self) -> None:
        """Index every entry of the root (all settings; temporary files of writes in flight left out)."""
        assert self.root is not None
        sizes: dict[Path, int] = {}
        for path in self.root.glob("*/*.safetensors") if self.root.is_dir() else ():
            if path.name.startswith("."):
                continue
            try:
                sizes[path] = path.stat().st_size
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
        self._sizes = sizes

    def _evict(self, keep: Path) -> None:
        """Delete least recently used disk entries (modification time) until the root fits ``max_bytes``."""
        self._scan()  # other processes may share the root
        if self.size_bytes <= self.max_bytes:
            return
        ages = []
        for path in self._sizes:
            try:
                ages.append((path.stat().st_mtime_ns, str(path), path))
            except FileNotFoundError:
                ages.append((0, str(path), path))
        freed, count = 0, 0
        for _, _, path in sorted(ages):
            if self.size_bytes - freed <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process evicted it first
                path.unlink()
            freed += self._sizes[path]
            count += 1
        for path in [p for p in self._sizes if not p.exists()]:
            del self._sizes[path]
        self.evicted += count
        log.info("attention cache: evicted %d least recently used entries (%.2f GB); %s now holds %d entries, "
                 "%.2f GB of max_gb=%.6g", count, freed / 1e9, self.root, len(self._sizes), self.size_bytes / 1e9,
                 self.max_gb)

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
            with contextlib.suppress(FileNotFoundError):  # a hit is a use: least recently used goes first
                os.utime(path)
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
            if len(blob) > self.max_bytes:
                if not self.too_large:
                    log.warning("attention cache: one entry takes %.1f MB, more than max_gb=%.6g: nothing is written "
                                "to %s (raise cache.max_gb)", len(blob) / 1e6, self.max_gb, self.root)
                self.too_large += 1
                return
            path = self.file(key)
            write_bytes_atomic(path, blob)
            assert self._sizes is not None
            self._sizes[path] = len(blob)
            if self.size_bytes > self.max_bytes:
                self._evict(keep=path)

    def summary(self) -> dict[str, Any]:
        """``metrics.json["cache"]``: mode, hits, misses, rejected; for the disk mode its size and evictions."""
        out: dict[str, Any] = {"mode": self.mode, "hits": self.hits, "misses": self.misses, "rejected": self.rejected}
        if self.mode == "disk":
            out.update(evicted=self.evicted, too_large=self.too_large, size_gb=round(self.size_bytes / 1e9, 6),
                       max_gb=self.max_gb)
        return out

    @staticmethod
    def clear_memory() -> None:
        """Empty the process-wide memory cache."""
        _MEMORY.clear()
