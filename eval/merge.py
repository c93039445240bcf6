"""Combine shard runs into one result: ``python -m eval.merge SHARD_DIR... --out DIR``.

Each shard (``dataset.shard=i/n``) is a normal, finished run folder. Shards are
merged only when they form one experiment: the same fingerprint (every setting
that can change a per-image result, :mod:`eval.identity`), the same dataset and
``dataset.limit``, and the complete set ``0/n .. n-1/n`` with no shard twice.
Anything else is refused with the reason (exit status 2); ``--allow-partial``
merges an incomplete set and marks the result partial everywhere it is shown.

The per-image records of the images each shard's ``metrics.json`` rests on are
concatenated into ``<out>/per_image.jsonl``, and the totals are written to
``<out>/metrics.json`` exactly as one run over all images would write them, with
each shard's code and library versions under ``merged_from``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic, write_text_atomic
from eval.data.loader import parse_shard
from eval.identity import IDENTITY_FILE, diff_settings
from eval.provenance import build_provenance
from eval.records import METRICS_FILE, RECORDS_FILE, accumulate, load_run_records, method_scores, write_metrics

__all__ = ["MergeError", "main", "merge_runs"]


class MergeError(ValueError):
    """Shards that do not form one experiment (the message says why)."""


def _load(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics_path, identity_path = folder / METRICS_FILE, folder / IDENTITY_FILE
    for path in (metrics_path, identity_path):
        if not path.exists():
            raise MergeError(f"merge: {path} not found (is {folder} a finished run folder of this version?)")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    if "provenance" not in metrics:
        raise MergeError(f"merge: {metrics_path} has no provenance record (made by an older version)")
    return metrics, json.loads(identity_path.read_text(encoding="utf-8"))


def _check_shard_set(dirs: Sequence[Path], metas: Sequence[dict[str, Any]], allow_partial: bool) -> bool:
    """Validate the ``i/n`` specs; returns True when the set is incomplete (and that is allowed)."""
    specs = []
    for d, meta in zip(dirs, metas, strict=True):
        spec = (meta.get("run") or {}).get("shard")
        if spec is None:
            raise MergeError(f"merge: {d} is not a shard run (no dataset.shard); only shards i/n are merged")
        specs.append(parse_shard(spec))
    counts = {n for _, n in specs}
    if len(counts) != 1:
        raise MergeError(f"merge: shards of different splits: {sorted(f'{i}/{n}' for i, n in specs)}")
    count = counts.pop()
    seen: dict[int, Path] = {}
    for d, (i, _) in zip(dirs, specs, strict=True):
        if i in seen:
            raise MergeError(f"merge: shard {i}/{count} given twice ({seen[i]} and {d})")
        seen[i] = d
    missing = sorted(set(range(count)) - set(seen))
    if missing and not allow_partial:
        raise MergeError(f"merge: incomplete shard set: missing {', '.join(f'{i}/{count}' for i in missing)} "
                         "(pass --allow-partial to merge what there is, marked partial)")
    return bool(missing)


def merge_runs(shard_dirs: Sequence[str | Path], out_dir: str | Path, allow_partial: bool = False) -> dict[str, Any]:
    """Merge shard run folders into ``out_dir``; returns the merged ``metrics.json`` content.

    Raises :class:`MergeError` (before writing anything) when the folders are not the
    shards of one experiment: other fingerprints (settings named), datasets or limits, a
    folder that is not a shard, a shard given twice, a missing shard (unless
    ``allow_partial``), or an image evaluated by two shards.
    """
    if not shard_dirs:
        raise MergeError("merge: no shard folders given")
    dirs = [Path(d) for d in shard_dirs]
    loaded = [_load(d) for d in dirs]
    metas = [m for m, _ in loaded]
    identities = [i for _, i in loaded]
    first, first_id = metas[0], identities[0]
    for d, meta, ident in zip(dirs[1:], metas[1:], identities[1:], strict=True):
        if meta["run"]["dataset"] != first["run"]["dataset"]:
            raise MergeError(f"merge: {d} is a {meta['run']['dataset']} run, not {first['run']['dataset']}")
        if ident["fingerprint"] != first_id["fingerprint"]:
            changes = diff_settings({"settings": first_id["settings"], "data": first_id["data"]},
                                    {"settings": ident["settings"], "data": ident["data"]})
            raise MergeError(f"merge: {d} was run under other settings than {dirs[0]}:\n"
                             + "\n".join(f"  {c}" for c in changes))
        if meta["run"].get("limit") != first["run"].get("limit"):
            raise MergeError(f"merge: {d} has dataset.limit={meta['run'].get('limit')}, "
                             f"{dirs[0]} has {first['run'].get('limit')}")
        if list(meta["methods"]) != list(first["methods"]):
            raise MergeError(f"merge: {d} evaluated other methods than {dirs[0]}")
    incomplete = _check_shard_set(dirs, metas, allow_partial)

    records: dict[str, dict[str, Any]] = {}
    owner: dict[str, Path] = {}
    selected = 0
    for d, meta in zip(dirs, metas, strict=True):
        shard_records = load_run_records(d)
        ids = list(meta.get("image_ids") or []) + [i for i, _ in meta.get("skipped") or []]
        for image_id in ids:
            if image_id in owner:
                raise MergeError(f"merge: image {image_id} appears in {owner[image_id]} and {d}")
            if image_id not in shard_records:
                raise MergeError(f"merge: {d}: image {image_id} of metrics.json has no per-image record")
            owner[image_id] = d
            records[image_id] = shard_records[image_id]
        selected += int(meta["provenance"]["images"]["selected"])

    ordered = [records[i] for i in sorted(records)]
    evaluated = sum("methods" in r for r in ordered)
    provenance = build_provenance(
        first_id["fingerprint"], first_id["settings"], first_id["data"],
        random_weights=any(m["provenance"]["random_weights"] for m in metas),
        evaluated=evaluated, skipped=len(ordered) - evaluated, selected=selected, partial_merge=incomplete)
    config = first["config"]
    config.get("dataset", {})["shard"] = None
    run = {**first["run"], "shard": None}
    merged_from = [{"folder": str(d), "shard": m["run"]["shard"], "code": m.get("code"),
                    "versions": m.get("versions")} for d, m in zip(dirs, metas, strict=True)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / IDENTITY_FILE, first_id)
    write_text_atomic(out / RECORDS_FILE, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in ordered))
    tags = {name: m.get("ablation") for name, m in first["methods"].items()}
    metrics = accumulate(ordered, int(config["dataset"]["num_classes"]))
    return write_metrics(out, method_scores(metrics, tags), ordered, run=run, provenance=provenance,
                         config=config, code=first.get("code"), versions=first.get("versions"),
                         merged_from=merged_from)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="+", help="shard run folders (each with metrics.json and run.json)")
    parser.add_argument("--out", required=True, help="folder for the merged per_image.jsonl and metrics.json")
    parser.add_argument("--allow-partial", action="store_true",
                        help="merge an incomplete shard set; the result is marked partial everywhere")
    args = parser.parse_args(argv)
    try:
        result = merge_runs(args.shards, args.out, allow_partial=args.allow_partial)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, m in result["methods"].items():
        print(f"{name:14s} ACC {m.get('acc') or 0:5.1f}  mIoU {m.get('miou') or 0:5.1f}  images {m.get('images', 0)}")
    for note in result["provenance"]["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
