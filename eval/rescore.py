"""Re-score a finished run's saved masks under another protocol's scoring rules, without the backbone.

``python -m eval.rescore RUN_DIR --protocol diffcut --out DIR``

Reads ``RUN_DIR/metrics.json`` (its config, methods and evaluated images) and the masks the
run saved (``save_masks=png`` or ``coco``, :mod:`eval.folder.masks`), rebuilds the run's labels
with the run's own geometry (the masks were made at it), scores every image with
:func:`eval.metrics.image_stats` under ``--protocol``'s rules and writes a new run folder
(``run.json``, ``per_image.jsonl``, ``metrics.json``). Its provenance names the source run
and, where the source's geometry is not the target protocol's, says so
(``provenance.rescored``, a note, and ``run.protocol`` / ``run.geometry``, which tables show
as e.g. ``diffcut scoring, diffseg geometry``).

Exit status: 0 done; 2 a missing run, file or mask, or an ``--out`` folder holding other results.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.folder import RunFolder
from eval.folder.layout import METRICS_JSON, RUN_JSON
from eval.folder.masks import load_saved_masks, read_saved_mask
from eval.folder.metrics_json import metrics_path, write_metrics
from eval.folder.records import write_records
from eval.folder.run_json import read_run_json, run_json_path
from eval.instantiate import build_dataset
from eval.metrics import PROTOCOLS, HungarianSegmentationMetric, image_stats, metric_json
from eval.metrics.protocols import ProtocolError, geometry_differences, get_protocol
from eval.run.build import build_protocol
from eval.run.identity import (
    RunIdentity,
    RunMismatchError,
    check_contents,
    check_run_folder,
    code_version,
    fingerprint_of,
    versions,
)
from eval.run.provenance import build_provenance

__all__ = ["RescoreError", "main", "rescore"]


class RescoreError(RuntimeError):
    """The source run cannot be re-scored (the message names the file and what to do)."""


def _read_source(src: Path) -> tuple[RunFolder, dict[str, Any], dict[str, Any]]:
    """The source folder, its metrics.json and its run.json, checked to belong together."""
    run = RunFolder(src)
    for path in (metrics_path(src), run_json_path(src)):
        if not path.is_file():
            raise RescoreError(f"{path} not found: re-scoring needs a finished run folder (its {METRICS_JSON} "
                               f"and {RUN_JSON})")
    try:
        source = run.metrics
    except ValueError as exc:
        raise RescoreError(f"{exc}: run the evaluation in {src} again") from None
    stored = read_run_json(run_json_path(src))
    if "config" not in source:
        raise RescoreError(f"{metrics_path(src)} holds no config: it predates re-scoring support")
    claimed = (source.get("provenance") or {}).get("fingerprint")
    if fingerprint_of(stored) != stored.get("fingerprint") or claimed not in (None, stored.get("fingerprint")):
        raise RescoreError(f"{run_json_path(src)} does not match its own settings or {metrics_path(src)}'s "
                           "fingerprint: it was edited or comes from another run; re-scoring needs the run's own")
    return run, source, stored


def _rescored_identity(stored: dict[str, Any], protocol: str, source_geometry: str) -> RunIdentity:
    """The new folder's identity: the source's settings with the protocol replaced (and where it came from)."""
    settings = copy.deepcopy(stored.get("settings") or {})
    settings["protocol"] = {"name": protocol, "geometry_of": source_geometry,
                            "rescored_from": stored.get("fingerprint")}
    data = stored.get("data") or {}
    return RunIdentity(fingerprint_of({"settings": settings, "data": data}), settings, data)


def _score(run: RunFolder, methods: dict[str, Any], dataset: Any, ids: list[str], identity: RunIdentity,
           scoring: tuple[int, Any, Any], progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every saved mask of ``ids``; returns the new records and one metric per method.

    ``scoring``: ``(num_classes, background, protocol)``, the protocol a :class:`~eval.metrics.protocols.Protocol`.
    """
    num_classes, background, protocol = scoring
    saved = {name: load_saved_masks(run.path, name) for name in methods}
    metrics = {name: HungarianSegmentationMetric(num_classes, background, protocol) for name in methods}
    records = [{"id": i, "fp": identity.fingerprint, "methods": {}} for i in ids]
    bar = tqdm(records, desc=f"rescore ({protocol.name})", unit="img", disable=not progress, file=sys.stderr)
    for record in bar:  # one label in memory at a time
        image_id = record["id"]
        label = dataset.label(image_id)
        for name, (kind, masks) in saved.items():
            mask = read_saved_mask(kind, masks, image_id)
            if tuple(mask.shape) != tuple(label.shape):
                raise RescoreError(f"{run.path}: mask of {name} for {image_id} is {tuple(mask.shape)} but its label "
                                   f"is {tuple(label.shape)}: was the dataset changed since the run?")
            stats = image_stats(mask[None], label[None], num_classes, background, protocol)
            metrics[name].add_stats(stats)
            record["methods"][name] = stats[0]
        for key in ("root", "files", "code", "batch_size"):  # what the source record says it was made from
            if key in (run.all_records.get(image_id) or {}):
                record[key] = run.all_records[image_id][key]
    return records, metrics


def _provenance(source: dict[str, Any], identity: RunIdentity, src: Path, evaluated: int, skipped: int,
                rescored: dict[str, Any]) -> dict[str, Any]:
    """The new folder's provenance: the source's, with ``rescored`` (``rescored``'s fields) and a note."""
    old = source.get("provenance") or {}
    images = old.get("images") or {}
    provenance = build_provenance(identity.fingerprint, identity.settings, identity.data,
                                  bool(old.get("random_weights")), evaluated=evaluated, skipped=skipped,
                                  selected=int(images.get("selected", evaluated + skipped)),
                                  code_versions=old.get("code_versions"), batch_sizes=old.get("batch_sizes"),
                                  threads=old.get("threads"), image_list=old.get("image_list"))
    differs = geometry_differences(rescored["geometry"], rescored["scoring"])
    provenance["rescored"] = {**rescored, "geometry_differs": differs}
    provenance["notes"].append(f"re-scored under {rescored['scoring']}'s scoring from the masks of {src}"
                               + (f"; {differs[0]}" if differs else ""))
    return provenance


def rescore(run_dir: str | os.PathLike, protocol: str, out_dir: str | os.PathLike,
            data_root: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Re-score ``run_dir`` under ``protocol``'s scoring rules into ``out_dir``; returns the new metrics.json.

    ``progress``: a progress bar over the images on stderr.

    Raises:
        RescoreError: the run is not finished, saved no masks, or a mask does not fit its label.
        RunMismatchError: ``out_dir`` holds results of other settings.
        FileNotFoundError: the dataset root is gone (give ``data_root``).
    """
    if protocol not in PROTOCOLS:
        raise RescoreError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    src = Path(run_dir)
    run, source, stored = _read_source(src)
    config = copy.deepcopy(source["config"])
    if data_root is not None:
        config["dataset"]["root"] = data_root
    source_protocol = build_protocol(config)  # the masks were made at the source run's geometry
    dataset = build_dataset(config["dataset"], source_protocol.geometry)
    source_protocol = source_protocol.name
    info = dict(source.get("run") or {})
    source_geometry = str(info.get("geometry") or source_protocol)
    ids = list(source.get("image_ids") or [])

    identity = _rescored_identity(stored, protocol, source_geometry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_folder(out, identity, has_records=bool(RunFolder(out).all_records))
    check_contents(src, run.all_records, dataset, ids)  # the labels are the files the run scored
    methods = source.get("methods") or {}
    scoring = (int(config["dataset"]["num_classes"]), config["dataset"].get("background"), get_protocol(protocol))
    records, metrics = _score(run, methods, dataset, ids, identity, scoring, progress)
    totals: dict[str, dict[str, Any]] = {}
    for name, summary in methods.items():
        totals[name] = metric_json(metrics[name].compute())
        if summary.get("ablation") is not None:
            totals[name]["ablation"] = summary["ablation"]
    skipped = [{"id": i, "fp": identity.fingerprint, "skipped": msg} for i, msg in source.get("skipped") or []]
    write_records(out, records + skipped)  # the records are recomputed whole, never appended to
    provenance = _provenance(source, identity, src, len(ids), len(skipped),
                             {"source": str(src), "source_fingerprint": stored.get("fingerprint"),
                              "source_protocol": source_protocol, "scoring": protocol, "geometry": source_geometry})
    info.update(protocol=protocol, geometry=source_geometry, protocol_label=scoring[2].describe(source_geometry))
    return write_metrics(out, totals, records + skipped, run=info, provenance=provenance,
                         config=source["config"], code=code_version(), versions=versions())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m eval.rescore", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run folder that saved its masks (save_masks=png or coco)")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, help="scoring rules to apply")
    parser.add_argument("--out", required=True, help="the new run folder")
    parser.add_argument("--root", default=None, help="dataset root, when it moved since the run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = rescore(args.run_dir, args.protocol, args.out, args.root, progress=not args.no_progress)
    except (RescoreError, RunMismatchError, ProtocolError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, s in result["methods"].items():
        print(f"{name:<14} ACC {s.get('acc') or 0.0:5.1f}  mIoU {s.get('miou') or 0.0:5.1f}  images {s['images']}")
    print(f"-> {metrics_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
