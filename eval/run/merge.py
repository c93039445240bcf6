"""Combine shard runs into one result: ``python -m eval.merge SHARD_DIR... --out DIR``.

Each shard (``dataset.shard=i/n``) is a normal, finished run folder. Shards are
merged only when they form one experiment: the same fingerprint (every setting
that can change a per-image result, :mod:`eval.run.identity`), the same dataset and
``dataset.limit``, and the complete set ``0/n .. n-1/n`` with no shard twice.
Anything else is refused with the reason (exit status 2); ``--allow-partial``
merges an incomplete set and marks the result partial everywhere it is shown.

The shards must also hold the same data: as a resumed run does, the merge hashes the image and
label file of every record under each dataset root the records name (where that root can be
read here) and compares them with the hashes the records carry, so shards of two datasets that
share ids (other pixels under the same names) are refused; shards whose roots differ and none
of which can be read here are refused too (nothing could show they hold the same data).

The per-image records of the images each shard's ``metrics.json`` rests on are
concatenated into ``<out>/per_image.jsonl``, and the totals are written to
``<out>/metrics.json`` exactly as one run over all images would write them, with
each shard's code and library versions under ``merged_from``, every code version
and batch size the records were made with in the provenance, and the unknown label values
of all the records under ``unknown_labels`` (as a run writes them). The shards' saved masks
(``save_masks``: PNG files or COCO results, the same setting in every shard) are carried into
``<out>/masks/`` for exactly the merged images, so :mod:`eval.rescore` and the explorer read the
merged folder as they read a run.

The output folder must not be one of the shards, and must not already hold results
(``metrics.json``, ``run.json`` or per-image records): both are refused before anything
is written. ``--force`` replaces the results of a folder that is not an input (its old
per-image files and masks are removed first); an input is never written to, with or without it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.atomic import write_bytes_atomic
from eval.data.loader import DuplicateIdsError, parse_shard
from eval.folder import RunFolder
from eval.folder.coco_results import CocoResults
from eval.folder.layout import MASK_DIR, RECORDS_FILE, coco_json_path, is_records_file, mask_png_path
from eval.folder.masks import saved_mask_format
from eval.folder.metrics_json import metrics_path, write_metrics
from eval.folder.records import load_run_records, write_records
from eval.folder.run_json import run_json_path, write_run_json
from eval.instantiate import build_dataset
from eval.run.identity import RunMismatchError, code_id, diff_settings, file_digests, read_run_json
from eval.run.provenance import build_provenance, tally
from eval.run.totals import accumulate, method_scores
from eval.run.unknown_labels import summarise_unknown

__all__ = ["MergeError", "main", "merge_runs"]


class MergeError(ValueError):
    """Shards that do not form one experiment (the message says why)."""


def _load(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shard's metrics.json and run.json (:class:`MergeError` naming what is missing or damaged)."""
    metrics_file, identity_file = metrics_path(folder), run_json_path(folder)
    for path in (metrics_file, identity_file):
        if not path.exists():
            raise MergeError(f"merge: {path} not found (is {folder} a finished run folder of this version?)")
    try:
        metrics = RunFolder(folder).metrics
    except ValueError as exc:
        raise MergeError(f"merge: {exc}: run the shard again to rewrite it") from None
    if "provenance" not in metrics:
        raise MergeError(f"merge: {metrics_file} has no provenance record (made by an older version)")
    try:
        return metrics, read_run_json(identity_file)
    except RunMismatchError as exc:
        raise MergeError(f"merge: {exc}") from None


def _check_output(dirs: Sequence[Path], out: Path, force: bool) -> list[str]:
    """Refuse an output folder that is an input, or that holds results (unless ``force``); returns its result files."""
    for d in dirs:
        if d.resolve() == out.resolve():
            raise MergeError(f"merge: the output folder {out} is one of the shards; a merge never writes into its "
                             "inputs (not even with --force): pass another --out")
    found = RunFolder(out).result_files()
    if found and not force:
        raise MergeError(f"merge: the output folder {out} already holds results ({', '.join(found)}); pass another "
                         "--out, or --force to replace them")
    return found


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


def _readable_datasets(config: dict[str, Any], roots: Sequence[str]) -> dict[str, Any]:
    """The dataset (all its ids) under each of ``roots`` that can be built here, by root."""
    out = {}
    for root in roots:
        node = {**config["dataset"], "root": root, "limit": None, "shard": None}
        try:
            out[root] = build_dataset(node)
        except (OSError, ValueError, DuplicateIdsError):
            continue  # not on this machine (or not this dataset): nothing to compare with there
    return out


def _check_same_data(config: dict[str, Any], records: dict[str, dict[str, Any]], owner: dict[str, Path]) -> int:
    """Refuse shards made from different data (what a resume checks, across the shards); returns files compared.

    Every evaluated record's image and label hashes are compared with the files of the same id
    under every dataset root the records name and this machine can read.
    """
    hashed = {i: r for i, r in records.items() if "methods" in r and r.get("files")}
    roots = sorted({str(r.get("root")) for r in hashed.values()})
    datasets = _readable_datasets(config, roots)
    if len(roots) > 1 and not datasets:
        raise MergeError(f"merge: the shards were made from the dataset roots {', '.join(roots)}, none of which can "
                         "be read here, so nothing shows they hold the same data: merge where one can be read")
    compared = 0
    for root, dataset in datasets.items():
        for image_id, record in hashed.items():
            try:
                now = file_digests(dataset, image_id)
            except OSError:
                continue  # no such file under this root: nothing to compare
            compared += 1
            changed = [k for k in ("image", "label") if record["files"].get(k) != now[k]]
            if changed:
                raise MergeError(
                    f"merge: {owner[image_id]} holds results for image {image_id} made from other "
                    f"{' and '.join(changed)} files (dataset root {record.get('root')}) than {root} holds now: "
                    "shards of different data are never merged; run every shard on the same data")
    return compared


def _mask_plan(dirs: Sequence[Path], identities: Sequence[dict[str, Any]], methods: Sequence[str],
               owner: dict[str, Path], evaluated: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """The shards' common mask format and, per method, what the merged folder gets (all read before any write).

    PNG: ``{method: [(source file, image id), ...]}``; COCO: ``{method: CocoResults}`` of the merged images.
    """
    formats = {d: (ident.get("outputs") or {"save_masks": saved_mask_format(d)}).get("save_masks")
               for d, ident in zip(dirs, identities, strict=True)}
    if len(set(formats.values())) > 1:
        raise MergeError("merge: the shards saved masks differently ("
                         + ", ".join(f"{d}: save_masks={f or 'false'}" for d, f in formats.items())
                         + "); a merged folder holds the masks of every image or of none: run every shard with "
                         "the same save_masks")
    fmt = next(iter(formats.values()))
    plan: dict[str, Any] = {}
    for name in methods if fmt else []:
        if fmt == "png":
            files = [(mask_png_path(owner[i], name, i), i) for i in evaluated]
            missing = [str(f) for f, _ in files if not f.is_file()]
            if missing:
                raise MergeError(f"merge: {len(missing)} saved mask(s) of {name} missing, first {missing[0]}")
            plan[name] = files
            continue
        loaded: dict[Path, dict[str, list[dict[str, Any]]]] = {}
        for d in dirs:
            path = coco_json_path(d, name)
            try:
                by_image: dict[str, list[dict[str, Any]]] = {}
                for record in CocoResults.load(path).records():
                    by_image.setdefault(str(record["image_id"]), []).append(record)
            except (OSError, ValueError) as exc:
                raise MergeError(f"merge: {d}: the saved COCO masks of {name} cannot be read ({exc})") from None
            loaded[d] = by_image
        records = []
        for image_id in evaluated:
            if image_id not in loaded[owner[image_id]]:
                raise MergeError(f"merge: {owner[image_id]}: no saved COCO mask of {name} for image {image_id}")
            records += loaded[owner[image_id]][image_id]
        plan[name] = CocoResults(records)
    return fmt, plan


def _write_masks(out: Path, fmt: str | None, plan: dict[str, Any]) -> None:
    for name, item in plan.items():
        if fmt == "png":
            for source, image_id in item:
                write_bytes_atomic(mask_png_path(out, name, image_id), source.read_bytes())
        else:
            item.save(coco_json_path(out, name))


def _check_one_experiment(dirs: Sequence[Path], metas: Sequence[dict[str, Any]],
                          identities: Sequence[dict[str, Any]]) -> None:
    """Refuse shards of other datasets, settings (each difference named), limits or methods than the first."""
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


def _gather_records(dirs: Sequence[Path], metas: Sequence[dict[str, Any]]
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, Path], int]:
    """The records of the images each shard's metrics.json rests on, the shard of each image, the images selected."""
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
    return records, owner, selected


def _merged_provenance(dirs: Sequence[Path], metas: Sequence[dict[str, Any]], identities: Sequence[dict[str, Any]],
                       records: dict[str, dict[str, Any]], owner: dict[str, Path], selected: int,
                       incomplete: bool) -> dict[str, Any]:
    """The provenance one run over the merged images would have written (every shard's code versions)."""
    ordered = [records[i] for i in sorted(records)]
    evaluated = sum("methods" in r for r in ordered)
    code_versions: dict[str, int] = {}
    for d, ident in zip(dirs, identities, strict=True):  # a record without "code" counts as its shard's run.json
        mine = [records[i] for i in sorted(records) if owner[i] == d]
        for version, n in tally(mine, "code", code_id(ident.get("code") or {})).items():
            code_versions[version] = code_versions.get(version, 0) + n
    lists = {json.dumps(m["provenance"].get("image_list"), sort_keys=True) for m in metas}
    if len(lists) > 1:
        raise MergeError("merge: the shards list different images (provenance image_list differs): "
                         "shards of one run share one image list")
    first_id = identities[0]
    return build_provenance(
        first_id["fingerprint"], first_id["settings"], first_id["data"],
        random_weights=any(m["provenance"]["random_weights"] for m in metas),
        evaluated=evaluated, skipped=len(ordered) - evaluated, selected=selected, partial_merge=incomplete,
        code_versions=dict(sorted(code_versions.items())), batch_sizes=tally(ordered, "batch_size"),
        threads=tally(ordered, "threads"), image_list=metas[0]["provenance"].get("image_list"))


def _clear_stale(out: Path, stale: Sequence[str]) -> None:
    """``--force``: remove the old per-image files and masks (they would otherwise be read with the new ones)."""
    for name in stale:
        if name == MASK_DIR:
            shutil.rmtree(out / name)
        elif is_records_file(name) and name != RECORDS_FILE:
            (out / name).unlink()


def merge_runs(shard_dirs: Sequence[str | Path], out_dir: str | Path, allow_partial: bool = False,
               force: bool = False) -> dict[str, Any]:
    """Merge shard run folders into ``out_dir``; returns the merged ``metrics.json`` content.

    Raises :class:`MergeError` (before writing anything) when the folders are not the
    shards of one experiment: other fingerprints (settings named), datasets, data files
    (hashes), mask settings or limits, a
    folder that is not a shard, a shard given twice, a missing shard (unless
    ``allow_partial``), or an image evaluated by two shards; or when ``out_dir`` is one of
    the shards, or already holds results and ``force`` is off.
    """
    if not shard_dirs:
        raise MergeError("merge: no shard folders given")
    dirs = [Path(d) for d in shard_dirs]
    stale = _check_output(dirs, Path(out_dir), force)
    loaded = [_load(d) for d in dirs]
    metas = [m for m, _ in loaded]
    identities = [i for _, i in loaded]
    first, first_id = metas[0], identities[0]
    _check_one_experiment(dirs, metas, identities)
    incomplete = _check_shard_set(dirs, metas, allow_partial)
    records, owner, selected = _gather_records(dirs, metas)
    ordered = [records[i] for i in sorted(records)]
    _check_same_data(first["config"], records, owner)
    mask_format, masks = _mask_plan(dirs, identities, list(first["methods"]),
                                    owner, [r["id"] for r in ordered if "methods" in r])
    provenance = _merged_provenance(dirs, metas, identities, records, owner, selected, incomplete)
    config = first["config"]
    config.get("dataset", {})["shard"] = None
    run = {**first["run"], "shard": None}
    merged_from = [{"folder": str(d), "shard": m["run"]["shard"], "code": m.get("code"),
                    "versions": m.get("versions")} for d, m in zip(dirs, metas, strict=True)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_stale(out, stale)
    _write_masks(out, mask_format, masks)
    write_run_json(out, first_id)
    write_records(out, ordered)
    tags = {name: m.get("ablation") for name, m in first["methods"].items()}
    metrics = accumulate(ordered, int(config["dataset"]["num_classes"]))
    unknown = {**summarise_unknown(ordered, int(config["dataset"]["size"]) ** 2),
               "max_fraction": (first.get("unknown_labels") or {}).get("max_fraction")}
    return write_metrics(out, method_scores(metrics, tags), ordered, run=run, provenance=provenance,
                         config=config, code=first.get("code"), versions=first.get("versions"),
                         merged_from=merged_from, unknown_labels=unknown)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="+", help="shard run folders (each with metrics.json and run.json)")
    parser.add_argument("--out", required=True, help="folder for the merged per_image.jsonl and metrics.json")
    parser.add_argument("--allow-partial", action="store_true",
                        help="merge an incomplete shard set; the result is marked partial everywhere")
    parser.add_argument("--force", action="store_true",
                        help="replace the results already in --out (never allowed when --out is one of the shards)")
    args = parser.parse_args(argv)
    try:
        result = merge_runs(args.shards, args.out, allow_partial=args.allow_partial, force=args.force)
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
