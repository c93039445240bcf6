"""Run identity: which settings a run's per-image results depend on, and their fingerprint.

A run folder holds ``run.json``::

    {"fingerprint": "3f9c0a1b2c3d4e5f",          # sha256 of ``settings`` + ``data``, 16 hex digits
     "settings": {"dataset": ..., "model": ..., "aggregation": ..., "methods": ..., "protocol": ...,
                  "device": "cuda"},
     "data": {"ids_sha256": "...", "num_ids": 2175, "synthetic": false},
     "code": {"version": "0.1.0", "git": "5458e27...", "dirty": true, "diff_sha256": "...",
              "id": "5458e27a1b2c+diff.0f3a9e1d2c4b"},
     "outputs": {"save_masks": "png"},            # which files the folder holds besides the records
     "versions": {"torch": ..., "diffusers": ..., ...}}

``settings`` holds every setting that can change a per-image result: the dataset
node (label mapping, evaluation size) without its root, limit and shard; the whole
model node (name, dtype, timestep, noise and its seed, ``head_chunk``: the chunking
rounds the attention head sum, up to 3e-8, backbone); for a backbone loaded from local
files, their content hash (``weights``, :func:`eval.run.weights.weights_identity`; a hub
id is named by its configured revision); the aggregation weights; every method's node;
the protocol (:mod:`eval.metrics.protocols`: geometry and scoring rules); the device type
(CPU and CUDA kernels round differently). ``data`` names the image universe (the
hash of the dataset's full id list) and whether it is synthetic. Settings that only
choose which images (``dataset.limit``, ``dataset.shard``, ``dataset.root``) or how
fast (batch size, workers, cache) are left out, so a folder can be resumed or extended
with other values of them.

``outputs`` holds what the folder writes besides the records (``save_masks``: none, PNG or
COCO masks). It changes no number, so it is not in the fingerprint, but a folder keeps one
value: a run with another one is refused before anything is written (a folder's masks must
cover every image its ``metrics.json`` lists, in one format).

Starting a run in a folder made under another fingerprint raises
:class:`RunMismatchError` before any work, naming each differing setting. Every
per-image record also carries the fingerprint (``"fp"``), and shards are merged only
when their fingerprints agree (:mod:`eval.merge`). On resume the fingerprint is also
recomputed from ``run.json``'s own ``settings`` and ``data``, so an edited ``run.json``
is refused rather than trusted.

The code version (``code["id"]``: the git commit, plus a hash of the uncommitted diff
of tracked files when the checkout is dirty, plus the torch, diffusers and transformers
versions, e.g. ``5458e27a1b2c torch-2.5.1 diffusers-0.31.0 transformers-4.46.3``) is not
part of the fingerprint but is
checked on resume (:func:`check_code_version`): records made by other code are only
extended with ``allow_code_change=true``. Each record also carries the content hashes
of its image and label files, checked on resume (:func:`check_contents`), so a folder
never mixes two datasets that share ids.

``python -m eval.run.identity OVERRIDES... --prefix outputs/coco_stuff27`` prints the
folder ``<prefix>/<fingerprint>`` of a configuration; the Makefile's reproduce
targets use it, so runs with other settings never share a folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.config_path import config_dir
from eval.data.loader import DuplicateIdsError
from eval.data.synthetic_marker import SYNTHETIC_MARKER, is_synthetic
from eval.folder.errors import RunMismatchError
from eval.folder.layout import RUN_JSON as IDENTITY_FILE
from eval.folder.masks import saved_mask_format
from eval.folder.run_json import read_run_json, run_json_path, write_run_json
from eval.instantiate import build_dataset
from eval.run.weights import weights_identity
from eval.spec import RunSpec, SettingError, build_spec

__all__ = [
    "IDENTITY_FILE",
    "SYNTHETIC_MARKER",
    "CodeVersionError",
    "ContentMismatchError",
    "RunIdentity",
    "RunMismatchError",
    "check_code_version",
    "check_contents",
    "check_outputs",
    "check_run_folder",
    "code_id",
    "code_version",
    "code_version_of",
    "data_identity",
    "diff_settings",
    "read_run_json",
    "file_digests",
    "fingerprint_of",
    "identity_of",
    "library_versions",
    "result_settings",
    "versions",
]

# Keys of the dataset node that only choose which images (or where they are).
_SELECTION_KEYS = ("root", "limit", "shard")
# Keys of the model node that only change speed or memory (none: ``head_chunk`` rounds the maps).
_SPEED_KEYS: tuple[str, ...] = ()
# Libraries whose version is part of the code version (they compute the maps and features).
_CODE_LIBRARIES = ("torch", "diffusers", "transformers")


class CodeVersionError(RunMismatchError):
    """A run folder's results were made by another code version (and ``allow_code_change`` is off)."""


class ContentMismatchError(RunMismatchError):
    """A run folder's results were made from other image or label files than the dataset's now."""


@dataclass(frozen=True)
class RunIdentity:
    """Settings, data identity and fingerprint of a run, and the code version running it (module docstring)."""

    fingerprint: str
    settings: dict[str, Any]
    data: dict[str, Any]
    code: dict[str, Any] = field(default_factory=lambda: code_version())
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def code_id(self) -> str:
        """The short code version of this run (:func:`code_id`)."""
        return code_id(self.code)

    def to_json(self) -> dict[str, Any]:
        """``run.json`` content: identity plus code and library versions (provenance)."""
        return {
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "data": self.data,
            "code": self.code,
            "outputs": self.outputs,
            "versions": versions(),
        }


def _without(node: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in keys}


def result_settings(spec: RunSpec, device: torch.device) -> dict[str, Any]:
    """Every setting of a run spec that can change a per-image result (plain, resolved)."""
    out = {
        "dataset": _without(spec.data.node, _SELECTION_KEYS),
        "model": _without(spec.model.node, _SPEED_KEYS),
        "aggregation": spec.aggregation,
        "methods": {m.key: m.node for m in spec.methods},
        "protocol": spec.protocol.params,
        "device": device.type,
    }
    weights = weights_identity(spec.model.backbone, resolve_hub=False)
    if any("sha256" in part for part in weights.values()):  # local files: their content, not their path
        out["weights"] = weights
    return out


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


def fingerprint_of(content: dict[str, Any]) -> str:
    """The fingerprint a ``run.json`` content's own ``settings`` and ``data`` give (not its stored one)."""
    return _fingerprint(content.get("settings"), content.get("data"))


def identity_of(spec: RunSpec, dataset: Any, device: torch.device) -> RunIdentity:
    """The identity of running ``spec`` on ``dataset`` on ``device``."""
    settings = result_settings(spec, device)
    data = data_identity(dataset)
    return RunIdentity(_fingerprint(settings, data), settings, data, outputs={"save_masks": spec.options.save_masks})


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
    path = run_json_path(out)
    hint = ("Results of different settings are never mixed: start a new folder (drop `hydra.run.dir=...` "
            "to get a fresh time-stamped one, or name another), or run again with the folder's settings.")
    if not has_records:
        # A new folder, or one whose earlier start recorded no image (it stopped on missing weights,
        # say): there is nothing to protect, so the folder belongs to the settings requested now.
        content = identity.to_json()
        write_run_json(out, content)
        return content
    if not path.exists():
        raise RunMismatchError(
            f"{out} holds per-image results but no {IDENTITY_FILE}: their settings are unknown "
            f"(made by an older version). {hint}")
    stored = read_run_json(path)
    if fingerprint_of(stored) != stored.get("fingerprint"):
        raise RunMismatchError(
            f"{path} was edited: its settings and data give fingerprint {fingerprint_of(stored)}, not the "
            f"{stored.get('fingerprint')} it states (and its per-image results were made under). Restore the "
            "original run.json, or start a new folder.")
    if stored.get("fingerprint") != identity.fingerprint:
        changes = diff_settings({"settings": stored.get("settings"), "data": stored.get("data")},
                                {"settings": identity.settings, "data": identity.data})
        listing = "\n".join(f"  {c}" for c in changes) or "  (same settings, other fingerprint rule)"
        raise RunMismatchError(
            f"{out} holds results made under other settings (fingerprint {stored.get('fingerprint')}, "
            f"requested {identity.fingerprint}):\n{listing}\n{hint}")
    check_outputs(out, stored, identity.outputs)
    return stored


def check_outputs(out_dir: str | os.PathLike, stored: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Raise :class:`RunMismatchError` when ``outputs`` (``save_masks``) differ from the folder's.

    A ``run.json`` written before it had ``outputs`` counts as the masks the folder holds.
    """
    had = stored.get("outputs") or {"save_masks": saved_mask_format(out_dir)}
    changes = [f"{key}: {json.dumps(had.get(key))} -> {json.dumps(value)}" for key, value in outputs.items()
               if had.get(key) != value]
    if changes:
        raise RunMismatchError(
            f"{out_dir} holds results written with other output settings ({'; '.join(changes)}): its masks "
            "would cover only part of the images its metrics.json lists. Run again with the folder's "
            f"save_masks={had.get('save_masks') or 'false'}, or start a new folder.")


def check_code_version(out_dir: str | os.PathLike, stored: dict[str, Any], records: dict[str, dict[str, Any]],
                       current: dict[str, Any], allow_change: bool) -> list[str]:
    """The code versions of the folder's evaluated records; raises when they are not all ``current``'s.

    A record without a ``"code"`` key (made before records carried it) counts as the
    version in ``run.json``. Raises :class:`CodeVersionError` naming the folder's
    versions and the current one unless ``allow_change``.
    """
    fallback = code_id(stored.get("code") or {})
    found = sorted({str(r.get("code") or fallback) for r in records.values() if "methods" in r})
    now = code_id(current)
    other = [v for v in found if v != now]
    if other and not allow_change:
        raise CodeVersionError(
            f"{out_dir} holds results made by code version {', '.join(other)}; this is {now}. Results of "
            "different code are not mixed silently: run the folder's code version again (git checkout), start "
            "a new folder, or pass allow_code_change=true to extend it (every record then carries its code "
            "version and metrics.json lists them all).")
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(dataset: Any, image_id: str) -> dict[str, str]:
    """``{"image": sha256, "label": sha256}`` of an item's files (``dataset.image_path`` / ``label_path``)."""
    return {"image": _sha256_file(Path(dataset.image_path(image_id))),
            "label": _sha256_file(Path(dataset.label_path(image_id)))}


def check_contents(out_dir: str | os.PathLike, records: dict[str, dict[str, Any]], dataset: Any,
                   ids: Sequence[str]) -> int:
    """Check that the evaluated records of ``ids`` were made from the dataset's files as they are now.

    Hashes the image and label file of every such record that carries ``"files"``
    (records made before they did are not checked) and raises
    :class:`ContentMismatchError` on the first difference, naming the id, both roots and
    what to do. A file that cannot be read now is left to the run (it is retried there).
    Returns the number of records checked.
    """
    checked = 0
    for image_id in ids:
        record = records.get(image_id) or {}
        recorded = record.get("files")
        if "methods" not in record or not recorded:
            continue
        try:
            now = file_digests(dataset, image_id)
        except OSError:
            continue
        checked += 1
        changed = [k for k in ("image", "label") if recorded.get(k) != now[k]]
        if changed:
            raise ContentMismatchError(
                f"{out_dir} holds results for image {image_id} made from other {' and '.join(changed)} files: "
                f"recorded from dataset root {record.get('root', '(unknown)')}, now "
                f"{getattr(dataset, 'root', '(unknown)')} ({dataset.image_path(image_id)} has sha256 "
                f"{now['image'][:12]}, recorded {str(recorded.get('image'))[:12]}). A folder holds the results "
                "of one dataset's content: point dataset.root back at the data it was made from, or start a new "
                "folder.")
    return checked


def _package_root() -> Path:
    """The folder above the ``eval`` package: the checkout whose git commit names the code (not a conf/ lookup)."""
    return Path(__file__).resolve().parents[2]


def code_id(code: dict[str, Any]) -> str:
    """Short code version of a ``code`` record: ``<commit12>``, ``<commit12>+diff.<sha12>``, or the package version,
    followed by the library versions when the record has them (`` torch-2.5.1 diffusers-0.31.0 ...``).

    Records written before ``code`` had an ``id`` get one from their fields; a dirty
    checkout whose diff was not hashed then reads ``<commit12>+diff.unknown``.
    """
    if code.get("id"):
        return str(code["id"])
    git = code.get("git")
    if git and not str(git).startswith("unavailable"):
        out = str(git)[:12] + (f"+diff.{str(code.get('diff_sha256') or 'unknown')[:12]}" if code.get("dirty") else "")
    else:
        out = f"package {code.get('version', 'unknown')}"
    return out + "".join(f" {name}-{version}" for name, version in (code.get("libraries") or {}).items())


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30, check=True).stdout


def code_version_of(root: str | os.PathLike) -> dict[str, Any]:
    """The version of the code in ``root``: package version, plus git commit, dirty flag and diff hash in a checkout.

    ``diff_sha256`` hashes ``git diff HEAD`` (staged and unstaged changes of tracked
    files; untracked files are not covered), so the same commit with another
    uncommitted change gets another ``id``.
    """
    try:
        version = importlib.metadata.version("diffseg-repro")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    out: dict[str, Any] = {"version": version}
    root = Path(root)
    if (root / ".git").exists():
        try:
            commit = _git(root, "rev-parse", "HEAD").decode().strip()
            diff = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
            out.update(git=commit, dirty=bool(diff))
            if diff:
                out["diff_sha256"] = hashlib.sha256(diff).hexdigest()
        except (OSError, subprocess.SubprocessError) as exc:
            out["git"] = f"unavailable ({type(exc).__name__})"
    out["id"] = code_id(out)
    return out


@functools.lru_cache(maxsize=1)
def _own_code_version() -> str:
    return json.dumps(code_version_of(_package_root()))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute the maps and features (part of the code version)."""
    return {name: versions()[name] for name in _CODE_LIBRARIES}


def code_version() -> dict[str, Any]:
    """The harness's own version (:func:`code_version_of` its checkout, computed once per process) and the
    versions of the libraries that compute the maps (:func:`library_versions`), both in its ``id``.

    Once per process because the code that runs is the code that was imported: later
    edits of the working tree do not change it. A resume after a torch or diffusers upgrade
    is therefore refused like one after a code change (:func:`check_code_version`).
    """
    out = {k: v for k, v in json.loads(_own_code_version()).items() if k != "id"}
    out["libraries"] = library_versions()
    out["id"] = code_id(out)
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

    parser = argparse.ArgumentParser(prog="python -m eval.run.identity", description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to `python -m eval.run`")
    parser.add_argument("--prefix", required=True, help="parent folder of the run folders")
    args = parser.parse_intermixed_args(argv)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=list(args.overrides))
    try:
        spec = build_spec(cfg)
        dataset = build_dataset(spec.data.node)
    except (FileNotFoundError, DuplicateIdsError, SettingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    identity = identity_of(spec, dataset, resolve_device(spec.options.device))
    print(Path(args.prefix) / identity.fingerprint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
