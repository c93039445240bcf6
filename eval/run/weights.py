"""Which weights a backbone setting loads: content hashes of local files, the commit of a hub revision.

A model node names its weights by ``model_id`` (and ``vae``, ``config``): a hub id, a local
diffusers folder, or one ``.safetensors`` file. The name alone does not say which weights:
a local file can be replaced under the same path, and a hub id with ``revision: null``
follows the repo's ``main``. :func:`weights_identity` says which:

* a local file: ``{"sha256": ...}`` of its bytes;
* a local folder: ``{"sha256": ...}`` over its files (relative path and bytes, sorted; hidden
  files left out);
* a hub id: ``{"revision": <configured or null>, "commit": <the commit it resolves to in the
  local Hugging Face cache, or null when it is not there yet>}`` (no network);
* any other backbone (the seeded tiny one): ``{}`` (its node is all there is to know).

Hashes are computed once per process per (path, size, modification time); hashing a 4 GB
SD 1.x folder takes some seconds and is logged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["hub_commit", "local_digest", "unresolved", "weights_identity"]

log = logging.getLogger(__name__)

_SOURCES = ("model_id", "vae", "config")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _hash_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)


@functools.lru_cache(maxsize=64)
def _digest(path: str, signature: tuple) -> str:
    start = time.perf_counter()
    root = Path(path)
    digest = hashlib.sha256()
    if root.is_file():
        _hash_file(digest, root)
    else:
        for rel, _size, _mtime in signature:
            digest.update(f"{rel}\0".encode())
            _hash_file(digest, root / rel)
            digest.update(b"\0")
    size = sum(s for _, s, _ in signature)
    log.info("weights: hashed %s (%.2f GB) in %.1f s", path, size / 1e9, time.perf_counter() - start)
    return digest.hexdigest()


def local_digest(path: str | os.PathLike) -> str:
    """sha256 of a local weights file, or of a folder's files (relative paths and bytes, sorted; hidden left out)."""
    root = Path(path).expanduser().resolve()
    if root.is_file():
        stat = root.stat()
        signature: tuple = ((root.name, stat.st_size, stat.st_mtime_ns),)
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        signature = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(str(root), signature)


def hub_commit(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The commit a hub repo's ``revision`` (None: ``main``) resolves to in the local Hugging Face cache, or None.

    A 40-hex revision is a commit already. No network: None when the repo is not cached.
    """
    if revision is not None and _COMMIT.fullmatch(str(revision)):
        return str(revision)
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str):
            commit = Path(found).parent.name
            return commit if _COMMIT.fullmatch(commit) else None
    return None


def _source_identity(name: str, revision: str | None, cache_dir: Any, resolve_hub: bool) -> dict[str, Any]:
    local = Path(name).expanduser()
    if local.exists():
        return {"sha256": local_digest(local)}
    out: dict[str, Any] = {"revision": revision}
    if resolve_hub:
        out["commit"] = hub_commit(name, revision, cache_dir)
    return out


def weights_identity(backbone: Mapping[str, Any], resolve_hub: bool = True) -> dict[str, Any]:
    """Which weights a (resolved, plain) ``model.backbone`` node loads (module docstring).

    ``{"model_id": {...}, "vae": {...}, "config": {...}}`` for the sources the node names;
    ``{}`` for a backbone that loads no checkpoint. ``resolve_hub=False`` leaves hub ids at their
    configured revision (no cache lookup).
    """
    if not str(backbone.get("_target_", "")).endswith(".from_pretrained"):
        return {}
    out = {}
    for key in _SOURCES:
        name = backbone.get(key)
        if name is None:
            continue
        revision = backbone.get("revision") if key == "model_id" else None
        out[key] = _source_identity(str(name), revision, backbone.get("cache_dir"), resolve_hub)
    return out


def unresolved(identity: Mapping[str, Any]) -> bool:
    """True when a hub source of :func:`weights_identity` has no commit yet (not in the local cache)."""
    return any("commit" in part and part["commit"] is None for part in identity.values())
