"""Per-image results of a run, kept as JSON lines so an interrupted run resumes.

``<run dir>/per_image.jsonl`` gets one line per image, appended (and fsynced)
after each batch; ``"fp"`` is the run's fingerprint (:mod:`eval.identity`)::

    {"id": "000000000139", "fp": "3f9c...", "methods": {"DiffSeg": {"tp": [...27], "fp": [...],
                                                   "fn": [...], "valid": 262144, "segments": 7}, ...}}
    {"id": "000000000724", "fp": "3f9c...", "skipped": "OSError: cannot identify image file ..."}

A skipped image is not done: a resumed run tries it again, and a later line for the
same id replaces the earlier one. Totals are always recomputed from these lines, so
a resumed run (or shards merged by :mod:`eval.merge`) gives exactly the totals of one
uninterrupted run. ``metrics.json`` is written from them by :func:`write_metrics`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic
from eval.metrics import MatchAccumulator

__all__ = ["METRICS_FILE", "RECORDS_FILE", "RunRecords", "accumulate", "load_run_records", "read_records",
           "write_metrics"]

RECORDS_FILE = "per_image.jsonl"
METRICS_FILE = "metrics.json"


class RunRecords:
    """Append-only per-image records in ``<out_dir>/per_image.jsonl``.

    Opening repairs a torn last line left by a kill mid-write (it is dropped, so
    that image is evaluated again).
    """

    def __init__(self, out_dir: str | os.PathLike, name: str = RECORDS_FILE):
        self.path = Path(out_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(end)

    def load(self) -> dict[str, dict[str, Any]]:
        """Records by image id (a later line for the same id wins)."""
        return read_records(self.path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records as one write, flushed to disk."""
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def read_records(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Records of a ``per_image.jsonl`` file by image id; unparsable lines are ignored."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[str(record["id"])] = record
    return out


def load_run_records(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every per-image record of a run folder by image id.

    Reads ``per_image.jsonl`` and the per-rank files ``per_image.rank<k>.jsonl`` of a
    data-parallel run, in name order (a later line for the same id wins).
    """
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob("per_image*.jsonl")):
        out.update(read_records(path))
    return out


def accumulate(records: Iterable[dict[str, Any]], num_classes: int) -> dict[str, MatchAccumulator]:
    """One accumulator per method over the (non-skipped) records, in first-seen method order."""
    accs: dict[str, MatchAccumulator] = {}
    for record in records:
        for name, stats in (record.get("methods") or {}).items():
            acc = accs.setdefault(name, MatchAccumulator(num_classes))
            acc.add(stats["tp"], stats["fp"], stats["fn"], stats["valid"], stats.get("segments"))
    return accs


def write_metrics(
    out_dir: str | os.PathLike,
    records: Iterable[dict[str, Any]],
    method_tags: dict[str, dict[str, Any] | None],
    num_classes: int,
    **sections: Any,
) -> dict[str, Any]:
    """Totals of the given per-image records -> ``<out_dir>/metrics.json`` (atomic); returns its content.

    ``records`` are exactly the images the numbers rest on (evaluated or skipped);
    ``method_tags`` maps each method name, in table order, to its ablation tag (or None).
    ``sections`` (run, provenance, config, code, versions, timing, ...) are written as given
    after ``methods``, ``skipped`` and ``image_ids`` (the evaluated ids, sorted).
    """
    records = list(records)
    done = [r for r in records if "methods" in r]
    accs = accumulate(done, num_classes)
    out_methods = {}
    for name, tag in method_tags.items():
        acc = accs.get(name)
        scores = acc.compute() if acc is not None else {"images": 0}
        if tag is not None:
            scores["ablation"] = tag
        out_methods[name] = scores
    result = {
        "methods": out_methods,
        "skipped": sorted([r["id"], r["skipped"]] for r in records if "methods" not in r),
        "image_ids": sorted(r["id"] for r in done),
        **sections,
    }
    write_json_atomic(Path(out_dir) / METRICS_FILE, result)
    return result
