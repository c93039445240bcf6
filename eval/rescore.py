"""Re-score a finished run's saved masks under another protocol's scoring rules, without the backbone.

``python -m eval.rescore RUN_DIR --protocol diffcut --out DIR``

Reads ``RUN_DIR/metrics.json`` (its config, methods and evaluated images) and the masks the
run saved (``save_masks=png`` or ``coco``, :mod:`eval.run.mask_files`), rebuilds the run's labels
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
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from eval.metrics import PROTOCOLS, HungarianSegmentationMetric, image_stats, metric_json
from eval.metrics.protocols import ProtocolError, apply_protocol, geometry_differences
from eval.run.build import build_dataset
from eval.run.identity import (
    IDENTITY_FILE,
    RunIdentity,
    RunMismatchError,
    check_contents,
    check_run_folder,
    code_version,
    fingerprint_of,
    read_run_json,
    versions,
)
from eval.run.mask_files import load_saved_masks, read_saved_mask
from eval.run.provenance import build_provenance
from eval.run.records import METRICS_FILE, RECORDS_FILE, RunRecords, load_run_records, write_metrics

__all__ = ["RescoreError", "main", "rescore"]


class RescoreError(RuntimeError):
    """The source run cannot be re-scored (the message names the file and what to do)."""


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise RescoreError(f"{path} not found: re-scoring needs a finished run folder (its metrics.json and run.json)")
    return path


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
    try:
        source = json.loads(_existing(src / METRICS_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RescoreError(f"{src / METRICS_FILE} is not valid JSON ({exc}): run the evaluation in {src} "
                           "again") from None
    stored = read_run_json(_existing(src / IDENTITY_FILE))
    if "config" not in source:
        raise RescoreError(f"{src / METRICS_FILE} holds no config: it predates re-scoring support")
    claimed = (source.get("provenance") or {}).get("fingerprint")
    if fingerprint_of(stored) != stored.get("fingerprint") or claimed not in (None, stored.get("fingerprint")):
        raise RescoreError(f"{src / IDENTITY_FILE} does not match its own settings or {src / METRICS_FILE}'s "
                           "fingerprint: it was edited or comes from another run; re-scoring needs the run's own")
    config = copy.deepcopy(source["config"])
    if data_root is not None:
        config["dataset"]["root"] = data_root
    dataset = build_dataset(config["dataset"])
    source_protocol = apply_protocol(config, dataset)  # the masks were made at the source run's geometry
    info = dict(source.get("run") or {})
    source_geometry = str(info.get("geometry") or source_protocol)
    num_classes = int(config["dataset"]["num_classes"])
    background = config["dataset"].get("background")
    ids = list(source.get("image_ids") or [])

    settings = copy.deepcopy(stored.get("settings") or {})
    settings["protocol"] = {"name": protocol, "geometry_of": source_geometry,
                            "rescored_from": stored.get("fingerprint")}
    data = stored.get("data") or {}
    identity = RunIdentity(fingerprint_of({"settings": settings, "data": data}), settings, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_folder(out, identity, has_records=bool(load_run_records(out)))

    source_records = load_run_records(src)
    check_contents(src, source_records, dataset, ids)  # the labels are the files the run scored
    methods = source.get("methods") or {}
    saved = {name: load_saved_masks(src, name) for name in methods}
    metrics = {name: HungarianSegmentationMetric(num_classes, background, protocol) for name in methods}
    records = [{"id": i, "fp": identity.fingerprint, "methods": {}} for i in ids]
    bar = tqdm(records, desc=f"rescore ({protocol})", unit="img", disable=not progress, file=sys.stderr)
    for record in bar:  # one label in memory at a time
        image_id = record["id"]
        label = dataset.label(image_id)
        for name, (kind, masks) in saved.items():
            mask = read_saved_mask(kind, masks, image_id)
            if tuple(mask.shape) != tuple(label.shape):
                raise RescoreError(f"{src}: mask of {name} for {image_id} is {tuple(mask.shape)} but its label is "
                                   f"{tuple(label.shape)}: was the dataset changed since the run?")
            stats = image_stats(mask[None], label[None], num_classes, background, protocol)
            metrics[name].add_stats(stats)
            record["methods"][name] = stats[0]
        for key in ("root", "files", "code", "batch_size"):  # what the source record says it was made from
            if key in (source_records.get(image_id) or {}):
                record[key] = source_records[image_id][key]
    totals: dict[str, dict[str, Any]] = {}
    for name, summary in methods.items():
        totals[name] = metric_json(metrics[name].compute())
        if summary.get("ablation") is not None:
            totals[name]["ablation"] = summary["ablation"]
    skipped = [{"id": i, "fp": identity.fingerprint, "skipped": msg} for i, msg in source.get("skipped") or []]
    (out / RECORDS_FILE).unlink(missing_ok=True)  # the records are recomputed whole, never appended to
    RunRecords(out).append(records + skipped)

    old = source.get("provenance") or {}
    images = old.get("images") or {}
    provenance = build_provenance(identity.fingerprint, settings, data, bool(old.get("random_weights")),
                                  evaluated=len(ids), skipped=len(skipped),
                                  selected=int(images.get("selected", len(ids) + len(skipped))),
                                  code_versions=old.get("code_versions"), batch_sizes=old.get("batch_sizes"),
                                  threads=old.get("threads"), image_list=old.get("image_list"))
    differs = geometry_differences(source_geometry, protocol)
    provenance["rescored"] = {"source": str(src), "source_fingerprint": stored.get("fingerprint"),
                              "source_protocol": source_protocol, "scoring": protocol,
                              "geometry": source_geometry, "geometry_differs": differs}
    provenance["notes"].append(f"re-scored under {protocol}'s scoring from the masks of {src}"
                               + (f"; {differs[0]}" if differs else ""))
    info.update(protocol=protocol, geometry=source_geometry)
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
    print(f"-> {Path(args.out) / METRICS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
