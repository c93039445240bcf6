"""What a run's numbers rest on, recorded in ``metrics.json`` and read by every table.

``metrics.json["provenance"]``::

    {"fingerprint": "3f9c0a1b2c3d4e5f",
     "random_weights": false,          # backbone built without pretrained weights (e.g. model=tiny)
     "synthetic_data": false,          # dataset root written by eval.data.synthetic
     "images": {"evaluated": 2175, "skipped": 0, "selected": 2175, "dataset": 2175},
     "partial": false,                 # fewer images than the dataset (limit, shard, skipped, partial merge)
     "non_default": {"DiffSeg": {"segmenter.kl_threshold": [0.5, 1.1]}},   # [ours, paper]
     "code_versions": {"5458e27a1b2c": 2175},   # code version -> evaluated images it made
     "batch_sizes": {"8": 2175},       # batch size -> evaluated images computed at it ("unknown": older records)
     "threads": {"8": 2175},           # torch CPU thread count -> evaluated images computed with it
     "image_list": {"standard": true, "name": "...", "count": 2175, "sha256": "..."},  # the listed images
     "notes": ["..."]}                 # the same facts as short human-readable marks

Labels are derived from this record, never from a flag: :func:`banner` for files
made from random weights or synthetic data, :func:`method_label` for a row whose
method ran under settings other than the paper's (``conf/paper/protocol.yaml``) or
whose images were made by several code versions, and :func:`images_note` for numbers
resting on part of a dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from eval.config_path import config_dir

__all__ = [
    "DEFAULT_PROTOCOL",
    "banner",
    "build_provenance",
    "protocol_key",
    "images_note",
    "load_protocol",
    "method_label",
    "non_default",
    "tally",
]

DEFAULT_PROTOCOL = config_dir() / "paper" / "protocol.yaml"
RANDOM_BANNER = "RANDOM WEIGHTS: backbone without pretrained weights: these numbers say nothing about DiffSeg"
SYNTHETIC_BANNER = "SYNTHETIC DATA: generated images and labels, not the benchmark"
UNKNOWN_BANNER = "UNKNOWN PROVENANCE: some results predate provenance records (settings and weights unchecked)"
_MISSING = object()


def load_protocol(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The paper's settings (``conf/paper/protocol.yaml``) as a plain dict ({} if no file)."""
    path = Path(path) if path is not None else DEFAULT_PROTOCOL
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _get(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _base_name(method_node: Mapping[str, Any], key: str) -> str:
    tag = method_node.get("ablation") or {}
    return str(tag.get("method") or method_node.get("name") or key)


def non_default(settings: Mapping[str, Any], protocol: Mapping[str, Any] | None = None) -> dict[str, dict[str, list]]:
    """Per method (by table name), the settings that differ from the paper's: ``{key: [ours, paper]}``.

    ``settings`` is a run's ``run.json["settings"]``. Methods the protocol does not know
    get only the common checks. The aggregation check uses the method's effective
    weights (its own, else the run's; None = proportional).
    """
    protocol = load_protocol() if protocol is None else protocol
    dataset = str(_get(settings, "dataset.name"))
    run_protocol = _get(settings, "protocol.name")
    run_protocol = "diffseg" if run_protocol is _MISSING else str(run_protocol)
    out: dict[str, dict[str, list]] = {}
    for key, node in (settings.get("methods") or {}).items():
        base = _base_name(node, key)
        expected = dict(protocol.get("common") or {})
        expected.update((protocol.get("protocols") or {}).get(run_protocol) or {})  # what the run's protocol fixes
        expected.update((protocol.get("methods") or {}).get(base) or {})
        expected.update(((protocol.get("datasets") or {}).get(dataset) or {}).get(base) or {})
        diffs: dict[str, list] = {}
        for dotted, paper in expected.items():
            if dotted == "aggregation":
                ours = node.get("aggregation")
                if ours is None:
                    ours = _get(settings, "aggregation.weights")
            elif dotted.startswith(("model.", "dataset.")):
                ours = _get(settings, dotted)
            else:
                ours = _get(node, dotted)
            if ours is _MISSING:
                continue
            if ours != paper:
                diffs[dotted] = [ours, paper]
        out[str(node.get("name") or key)] = diffs
    return out


def tally(records: Iterable[Mapping[str, Any]], key: str, fallback: Any = "unknown") -> dict[str, int]:
    """How many evaluated records carry each value of ``key`` (``fallback`` when absent), sorted by value."""
    counts: dict[str, int] = {}
    for record in records:
        if "methods" in record:
            value = str(record.get(key) if record.get(key) is not None else fallback)
            counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def build_provenance(
    fingerprint: str,
    settings: Mapping[str, Any],
    data: Mapping[str, Any],
    random_weights: bool,
    evaluated: int,
    skipped: int,
    selected: int,
    partial_merge: bool = False,
    protocol: Mapping[str, Any] | None = None,
    code_versions: Mapping[str, int] | None = None,
    batch_sizes: Mapping[str, int] | None = None,
    threads: Mapping[str, int] | None = None,
    image_list: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``provenance`` record of a run (module docstring).

    ``code_versions``, ``batch_sizes`` and ``threads`` are :func:`tally` of the evaluated records by
    ``"code"``, ``"batch_size"`` and ``"threads"``; more than one value of any adds a note. ``image_list``
    is the dataset's :meth:`~eval.data.base.LabelledImages.image_list` (kept as ``"image_list"``); a list
    other than the benchmark's adds the note ``non-standard image list: <count> images, sha256 <12 hex>``.
    """
    total = int(data.get("num_ids", selected))
    partial = bool(partial_merge or skipped or evaluated < total)
    notes = []
    if random_weights:
        notes.append("random-weight backbone")
    if data.get("synthetic"):
        notes.append("synthetic data")
    if image_list is not None and not image_list.get("standard"):
        notes.append(f"non-standard image list: {image_list.get('count')} images, "
                     f"sha256 {str(image_list.get('sha256'))[:12]}")
    if partial:
        text = f"partial: {evaluated} of {total} images"
        if skipped:
            text += f", {skipped} skipped"
        if partial_merge:
            text += ", incomplete shard set"
        notes.append(text)
    diffs = non_default(settings, protocol)
    for method, changed in diffs.items():
        if changed:
            notes.append(f"{method}: " + ", ".join(f"{k}={_short(v[0])} (paper {_short(v[1])})"
                                                   for k, v in changed.items()))
    code_versions = dict(code_versions or {})
    batch_sizes = dict(batch_sizes or {})
    if len(code_versions) > 1:
        notes.append("mixed code versions: " + ", ".join(f"{v} ({n} images)" for v, n in code_versions.items()))
    if len(batch_sizes) > 1:
        notes.append("several batch sizes: " + ", ".join(f"{b} ({n} images)" for b, n in batch_sizes.items())
                     + "; per-image floats depend on the batch (about 1e-6 on CPU)")
    threads = dict(threads or {})
    if len(threads) > 1:
        notes.append("several CPU thread counts: " + ", ".join(f"{t} ({n} images)" for t, n in threads.items())
                     + "; per-image floats on CPU depend on the thread count")
    record: dict[str, Any] = {
        "fingerprint": fingerprint,
        "random_weights": bool(random_weights),
        "synthetic_data": bool(data.get("synthetic")),
        "images": {"evaluated": int(evaluated), "skipped": int(skipped), "selected": int(selected),
                   "dataset": total},
        "partial": partial,
        "non_default": diffs,
        "code_versions": code_versions,
        "batch_sizes": batch_sizes,
        "threads": threads,
        "notes": notes,
    }
    if image_list is not None:
        record["image_list"] = dict(image_list)
    return record


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def banner(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The warning line for files made from these runs' metrics.json, or None when none applies.

    Derived from each run's ``provenance`` (random weights, synthetic data); a metrics.json
    without one (written before provenance was recorded) is marked as of unknown provenance.
    """
    random = any((r.get("provenance") or {}).get("random_weights") for r in runs)
    synthetic = any((r.get("provenance") or {}).get("synthetic_data") for r in runs)
    unknown = any("provenance" not in r for r in runs)
    parts = [RANDOM_BANNER] if random else []
    if synthetic:
        parts.append(SYNTHETIC_BANNER)
    if unknown:
        parts.append(UNKNOWN_BANNER)
    return "; ".join(parts) or None


def method_label(method: str, run: Mapping[str, Any]) -> str:
    """``method`` with its differences from the paper's settings, e.g. ``DiffSeg [segmenter.kl_threshold=0.5]``.

    Adds ``(random weights)`` for a random-weight backbone and ``(mixed code versions)``
    when the images were made by more than one code version. The settings common to all
    methods (model, timestep, ...) are included, since a row must say what it is alone.
    """
    prov = run.get("provenance") or {}
    changed = (prov.get("non_default") or {}).get(method) or {}
    label = method
    if changed:
        label += " [" + ", ".join(f"{k.split('.')[-1] if k.startswith('segmenter.') else k}={_short(v[0])}"
                                  for k, v in changed.items()) + "]"
    if prov.get("random_weights"):
        label += " (random weights)"
    if len(prov.get("code_versions") or {}) > 1:
        label += " (mixed code versions)"
    return label


def images_note(run: Mapping[str, Any]) -> str | None:
    """``"8 of 2175 images, 1 skipped"`` for a partial run, None for a complete one."""
    prov = run.get("provenance") or {}
    images = prov.get("images") or {}
    if not prov.get("partial"):
        return None
    text = f"{images.get('evaluated')} of {images.get('dataset')} images"
    if images.get("skipped"):
        text += f", {images['skipped']} skipped"
    return text


def protocol_key(run: Mapping[str, Any]) -> str:
    """The protocol a metrics.json's numbers were produced under, as tables group them.

    What the run's :meth:`eval.metrics.protocols.Protocol.describe` said: ``run.protocol_label``, stored where
    it is not the protocol's name (``"diffcut scoring, diffseg geometry"`` for a re-scored run,
    :mod:`eval.rescore`, whose geometry is another protocol's); else the name, ``run.protocol``. Folders
    written before the label was stored: the same text from ``run.protocol`` and ``run.geometry`` (none
    recorded: ``diffseg``).
    """
    info = run.get("run") or {}
    if info.get("protocol_label"):
        return str(info["protocol_label"])
    name = str(info.get("protocol") or "diffseg")
    geometry = str(info.get("geometry") or name)
    return name if geometry == name else f"{name} scoring, {geometry} geometry"
