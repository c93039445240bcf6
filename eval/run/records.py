"""Per-image results of a run, kept as JSON lines so an interrupted run resumes.

``<run dir>/per_image.jsonl`` gets one line per image, appended (and fsynced)
after each batch; ``"fp"`` is the run's fingerprint (:mod:`eval.run.identity`), ``"code"``
the code version that made the record, ``"batch_size"`` the batch size it was computed
at, ``"threads"`` torch's CPU thread count then (CPU sums depend on it), ``"root"`` the
dataset root and ``"files"`` the sha256 of its image and label file::

    {"id": "000000000139", "fp": "3f9c...", "code": "5458e27a1b2c", "batch_size": 8, "threads": 8,
     "root": "datasets/coco_stuff27", "files": {"image": "9a1f...", "label": "03c2..."},
     "methods": {"DiffSeg": {"tp": [...27], "fp": [...], "fn": [...], "valid": 262144, "segments": 7}, ...}}
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

__all__ = ["METRICS_FILE", "RECORDS_FILE", "RunRecords", "load_run_records", "read_records", "write_metrics"]

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
        """Append records as one write, flushed to disk.

        All or nothing: when the write fails (a full disk, say) the file is cut back to
        its previous length and the error, naming the file, is raised.
        """
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode("utf-8")
        if not data:
            return
        with open(self.path, "ab") as fh:
            before = fh.tell()
            try:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                try:
                    fh.truncate(before)
                except OSError:
                    pass  # a torn last line is also dropped by the next open (_repair)
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc


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
    data-parallel run. Within a file a later line for the same id wins; across files an
    evaluated record wins over a skipped one (a resume with another number of ranks may
    evaluate, in one file, an image another file recorded as skipped).
    """
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob("per_image*.jsonl")):
        for image_id, record in read_records(path).items():
            if "methods" in record or "methods" not in out.get(image_id, {}):
                out[image_id] = record  # an evaluated image never reverts to skipped
    return out


def write_metrics(
    out_dir: str | os.PathLike,
    methods: dict[str, dict[str, Any]],
    records: Iterable[dict[str, Any]],
    **sections: Any,
) -> dict[str, Any]:
    """Write ``<out_dir>/metrics.json`` (atomic); returns its content.

    ``methods`` maps each method name, in table order, to its scores (``metric_json`` of
    its metric, plus its ablation tag); ``records`` are exactly the images those numbers
    rest on (evaluated or skipped), listed as ``image_ids`` (evaluated, sorted) and
    ``skipped`` (``[id, message]``). ``sections`` (run, provenance, config, code,
    versions, timing, ...) follow as given.
    """
    records = list(records)
    result = {
        "methods": methods,
        "skipped": sorted([r["id"], r["skipped"]] for r in records if "methods" not in r),
        "image_ids": sorted(r["id"] for r in records if "methods" in r),
        **sections,
    }
    write_json_atomic(Path(out_dir) / METRICS_FILE, result)
    return result
