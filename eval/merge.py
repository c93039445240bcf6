"""Combine shard runs into one result: ``python -m eval.merge SHARD_DIR... --out DIR``.

Each shard (``dataset.shard=i/n``) is a normal run folder. Their per-image
records are concatenated (in the dataset's order, which does not change the
sums) into ``<out>/per_image.jsonl`` and the totals are written to
``<out>/metrics.json`` exactly as a single run over all images would write them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.atomic import write_text_atomic
from eval.records import RECORDS_FILE, read_records
from eval.run import METRICS_FILE, write_metrics

__all__ = ["main", "merge_runs"]


def merge_runs(shard_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Merge shard run folders into ``out_dir``; returns the merged ``metrics.json`` content.

    Raises ``ValueError`` when a folder has no results, when shards evaluated
    different methods or datasets, or when an image appears in two shards.
    """
    if not shard_dirs:
        raise ValueError("merge: no shard folders given")
    metas, records = [], {}
    for d in shard_dirs:
        d = Path(d)
        meta_path = d / METRICS_FILE
        if not meta_path.exists():
            raise ValueError(f"merge: {meta_path} not found (is {d} a finished run folder?)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        metas.append(meta)
        shard = read_records(d / RECORDS_FILE)
        overlap = sorted(set(shard) & set(records))
        if overlap:
            raise ValueError(f"merge: image {overlap[0]} appears in more than one shard ({d})")
        records.update(shard)
    first = metas[0]
    for d, meta in zip(shard_dirs[1:], metas[1:], strict=True):
        if list(meta["methods"]) != list(first["methods"]):
            raise ValueError(f"merge: {d} evaluated other methods than {shard_dirs[0]}")
        if meta["run"]["dataset"] != first["run"]["dataset"]:
            raise ValueError(f"merge: {d} is a {meta['run']['dataset']} run, not {first['run']['dataset']}")
    tags = {name: m.get("ablation") for name, m in first["methods"].items()}
    config = first["config"]
    config.get("dataset", {})["shard"] = None
    run = {**first["run"], "shard": None, "merged_from": [str(d) for d in shard_dirs]}
    num_classes = int(config["dataset"]["num_classes"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records.values(), key=lambda r: r["id"])
    write_text_atomic(out / RECORDS_FILE, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in ordered))
    return write_metrics(out, {r["id"]: r for r in ordered}, tags, config, run, num_classes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="+", help="shard run folders (each with metrics.json)")
    parser.add_argument("--out", required=True, help="folder for the merged per_image.jsonl and metrics.json")
    args = parser.parse_args(argv)
    try:
        result = merge_runs(args.shards, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, m in result["methods"].items():
        print(f"{name:14s} ACC {m.get('acc') or 0:5.1f}  mIoU {m.get('miou') or 0:5.1f}  images {m.get('images', 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
