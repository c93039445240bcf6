"""Run identity: which settings a run's per-image results depend on, and their fingerprint.

A run folder holds ``run.json``::

    {"fingerprint": "3f9c0a1b2c3d4e5f",          # sha256 of ``settings`` + ``data``, 16 hex digits
     "settings": {"dataset": ..., "model": ..., "aggregation": ..., "methods": ..., "protocol": ...,
                  "device": "cuda"},
     "data": {"ids_sha256": "...", "num_ids": 2175, "synthetic": false},
     "code": {"version": "0.1.0", "git": "5458e27...", "dirty": false},
     "versions": {"torch": ..., "diffusers": ..., ...}}

``settings`` holds every setting that can change a per-image result: the dataset
node (label mapping, evaluation size) without its root, limit and shard; the whole
model node (name, dtype, timestep, noise and its seed, backbone) without
``head_chunk``; the aggregation weights; every method's node; the protocol
(:mod:`eval.protocols`: geometry and scoring rules); the device type
(CPU and CUDA kernels round differently). ``data`` names the image universe (the
hash of the dataset's full id list) and whether it is synthetic. Settings that only
choose which images (``dataset.limit``, ``dataset.shard``, ``dataset.root``) or how
fast (batch size, workers, cache, ``model.head_chunk``) are left out, so a folder can
be resumed or extended with other values of them.

Starting a run in a folder made under another fingerprint raises
:class:`RunMismatchError` before any work, naming each differing setting. Every
per-image record also carries the fingerprint (``"fp"``), and shards are merged only
when their fingerprints agree (:mod:`eval.merge`).

``python -m eval.identity OVERRIDES... --prefix outputs/coco_stuff27`` prints the
folder ``<prefix>/<fingerprint>`` of a configuration; the Makefile's reproduce
targets use it, so runs with other settings never share a folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from eval.atomic import write_json_atomic
from eval.protocols import protocol_settings

__all__ = [
    "IDENTITY_FILE",
    "SYNTHETIC_MARKER",
    "RunIdentity",
    "RunMismatchError",
    "check_run_folder",
    "code_version",
    "data_identity",
    "diff_settings",
    "identity_of",
    "result_settings",
    "versions",
]

IDENTITY_FILE = "run.json"
SYNTHETIC_MARKER = "SYNTHETIC.txt"
# Keys of the dataset node that only choose which images (or where they are).
_SELECTION_KEYS = ("root", "limit", "shard")
# Keys of the model node that only change speed or memory.
_SPEED_KEYS = ("head_chunk",)


class RunMismatchError(RuntimeError):
    """A run folder's results were made under other settings than the ones requested."""


@dataclass(frozen=True)
class RunIdentity:
    """Settings, data identity and fingerprint of a run (see the module docstring)."""

    fingerprint: str
    settings: dict[str, Any]
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """``run.json`` content: identity plus code and library versions (provenance)."""
        return {
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "data": self.data,
            "code": code_version(),
            "versions": versions(),
        }


def _without(node: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in keys}


def result_settings(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Every setting of a composed config that can change a per-image result (plain, resolved)."""
    container = {key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig)
                 else cfg[key] for key in ("dataset", "model", "aggregation", "methods")}
    return {
        "dataset": _without(container["dataset"], _SELECTION_KEYS),
        "model": _without(container["model"], _SPEED_KEYS),
        "aggregation": container.get("aggregation"),
        "methods": {k: v for k, v in (container.get("methods") or {}).items() if v is not None},
        "protocol": protocol_settings(cfg),
        "device": device.type,
    }


def is_synthetic(root: str | os.PathLike) -> bool:
    """True when ``root`` was written by :mod:`eval.data.synthetic` (it holds the marker file)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def data_identity(dataset: Any) -> dict[str, Any]:
    """The image universe of a dataset object: hash and count of its full id list, synthetic or not.

    Uses ``dataset.all_ids`` (every id before limit/shard) when present, else ``dataset.ids``.
    """
    ids = [str(i) for i in (getattr(dataset, "all_ids", None) or dataset.ids)]
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
    root = getattr(dataset, "root", None)
    return {"ids_sha256": digest, "num_ids": len(ids), "synthetic": bool(root is not None and is_synthetic(root))}


def _fingerprint(settings: dict[str, Any], data: dict[str, Any]) -> str:
    text = json.dumps({"settings": settings, "data": data}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def identity_of(cfg: DictConfig, dataset: Any, device: torch.device) -> RunIdentity:
    """The identity of running ``cfg`` on ``dataset`` on ``device``."""
    settings = result_settings(cfg, device)
    data = data_identity(dataset)
    return RunIdentity(_fingerprint(settings, data), settings, data)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def diff_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences ``"key: old -> new"`` between two nested dicts, sorted by key."""
    a, b = _flatten(old), _flatten(new)
    missing = "(absent)"
    return [f"{key}: {json.dumps(a.get(key, missing))} -> {json.dumps(b.get(key, missing))}"
            for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing)]


def check_run_folder(out_dir: str | os.PathLike, identity: RunIdentity, has_records: bool) -> dict[str, Any]:
    """Claim ``out_dir`` for ``identity``: write ``run.json`` while it holds no record, else verify it matches.

    Raises :class:`RunMismatchError` when the folder's results were made under another
    fingerprint (each differing setting named, old -> new), or when it holds per-image
    records but no ``run.json`` (made by an older version: their settings are unknown).
    Returns the folder's ``run.json`` content.
    """
    out = Path(out_dir)
    path = out / IDENTITY_FILE
    hint = ("Results of different settings are never mixed: start a new folder (drop `hydra.run.dir=...` "
            "to get a fresh time-stamped one, or name another), or run again with the folder's settings.")
    if not has_records:
        # A new folder, or one whose earlier start recorded no image (it stopped on missing weights,
        # say): there is nothing to protect, so the folder belongs to the settings requested now.
        content = identity.to_json()
        write_json_atomic(path, content)
        return content
    if not path.exists():
        raise RunMismatchError(
            f"{out} holds per-image results but no {IDENTITY_FILE}: their settings are unknown "
            f"(made by an older version). {hint}")
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("fingerprint") != identity.fingerprint:
        changes = diff_settings({"settings": stored.get("settings"), "data": stored.get("data")},
                                {"settings": identity.settings, "data": identity.data})
        listing = "\n".join(f"  {c}" for c in changes) or "  (same settings, other fingerprint rule)"
        raise RunMismatchError(
            f"{out} holds results made under other settings (fingerprint {stored.get('fingerprint')}, "
            f"requested {identity.fingerprint}):\n{listing}\n{hint}")
    return stored


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def code_version() -> dict[str, Any]:
    """The harness's own version: package version, plus the git commit and dirty flag when in a checkout."""
    try:
        version = importlib.metadata.version("diffseg-repro")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    out: dict[str, Any] = {"version": version}
    root = _package_root()
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip()
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout
            out.update(git=commit, dirty=bool(status.strip()))
        except (OSError, subprocess.SubprocessError) as exc:
            out["git"] = f"unavailable ({type(exc).__name__})"
    return out


def versions() -> dict[str, str]:
    """Versions of the packages that can change results, and the GPU when there is one."""
    import diffusers
    import scipy
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print ``<prefix>/<fingerprint>`` for a configuration given as Hydra overrides."""
    import argparse

    from hydra import compose, initialize_config_dir

    from diffseg.devices import resolve_device
    from eval.build import build_dataset

    parser = argparse.ArgumentParser(prog="python -m eval.identity", description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to `python -m eval.run`")
    parser.add_argument("--prefix", required=True, help="parent folder of the run folders")
    args = parser.parse_intermixed_args(argv)
    with initialize_config_dir(config_dir=str(_package_root() / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=list(args.overrides))
    try:
        dataset = build_dataset(cfg.dataset)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    identity = identity_of(cfg, dataset, resolve_device(str(cfg.device)))
    print(Path(args.prefix) / identity.fingerprint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
