"""``metrics.json``: a run's totals, written from its per-image records, and read back.

Its content: ``methods`` (each method, in table order, to its scores: ``metric_json`` of its
metric plus its ablation tag), ``skipped`` (``[id, message]`` pairs), ``image_ids`` (the
evaluated images, sorted), then the sections the writer passes (``run``, ``provenance``,
``config``, ``code``, ``versions``, ``timing``, ``unknown_labels``, ``merged_from``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic
from eval.folder.errors import FolderError
from eval.folder.json_file import read_json_object
from eval.folder.layout import METRICS_JSON

__all__ = ["metrics_path", "read_metrics", "write_metrics"]


def metrics_path(folder: str | os.PathLike) -> Path:
    """``<folder>/metrics.json``."""
    return Path(folder) / METRICS_JSON


def write_metrics(
    out_dir: str | os.PathLike,
    methods: dict[str, dict[str, Any]],
    records: Iterable[dict[str, Any]],
    **sections: Any,
) -> dict[str, Any]:
    """Write ``<out_dir>/metrics.json`` (atomic); returns its content.

    ``methods`` maps each method name, in table order, to its scores (``metric_json`` of its
    metric, plus its ablation tag); ``records`` are exactly the images those numbers rest on
    (evaluated or skipped), listed as ``image_ids`` (evaluated, sorted) and ``skipped``
    (``[id, message]``). ``sections`` (run, provenance, config, code, versions, timing, ...)
    follow as given.
    """
    records = list(records)
    result = {
        "methods": methods,
        "skipped": sorted([r["id"], r["skipped"]] for r in records if "methods" not in r),
        "image_ids": sorted(r["id"] for r in records if "methods" in r),
        **sections,
    }
    write_json_atomic(metrics_path(out_dir), result)
    return result


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A ``metrics.json``'s content (``path``: the file, or the run folder holding it).

    Raises:
        FileNotFoundError: there is no such file.
        FolderError: it is not valid JSON or not a JSON object (the message names the file).
    """
    return read_json_object(path, METRICS_JSON, FolderError, "a metrics.json")
