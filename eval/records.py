"""Per-image results of a run, kept as JSON lines so an interrupted run resumes.

``<run dir>/per_image.jsonl`` gets one line per image, appended (and fsynced)
after each batch::

    {"id": "000000000139", "methods": {"DiffSeg": {"tp": [...27], "fp": [...], "fn": [...],
                                                   "valid": 262144, "segments": 7}, ...}}
    {"id": "000000000724", "skipped": "OSError: cannot identify image file ..."}

Totals are always recomputed from these lines, so a resumed run (or shards
merged by :mod:`eval.merge`) gives exactly the totals of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eval.metrics import MatchAccumulator

__all__ = ["RECORDS_FILE", "RunRecords", "accumulate", "load_run_records", "read_records"]

RECORDS_FILE = "per_image.jsonl"


class RunRecords:
    """Append-only per-image records in ``<out_dir>/per_image.jsonl``.

    Opening repairs a torn last line left by a kill mid-write (it is dropped, so
    that image is evaluated again).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / RECORDS_FILE
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
