"""The per-image records and ``metrics.json`` of a run: names kept for the runner and older imports.

The files are read and written by :mod:`eval.folder.records` and :mod:`eval.folder.metrics_json`
(torch-free, with their formats documented there); the totals from the records are
:mod:`eval.run.totals` (the metric, torch).
"""

from __future__ import annotations

from eval.folder.layout import METRICS_JSON as METRICS_FILE
from eval.folder.layout import RECORDS_FILE
from eval.folder.metrics_json import write_metrics
from eval.folder.records import RunRecords, load_run_records, read_records

__all__ = ["METRICS_FILE", "RECORDS_FILE", "RunRecords", "load_run_records", "read_records", "write_metrics"]
