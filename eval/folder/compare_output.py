"""The output of ``python -m eval.compare``: ``compare.json`` (read by tables) and its file names.

A compare output is a folder of its own, or ``<run>/compare/`` beside a run (the ``--out`` a
user gives); tables (:mod:`eval.report.tables`) look in both places.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic
from eval.folder.errors import FolderError
from eval.folder.layout import COMPARE_DIR, COMPARE_JSON

__all__ = ["find_compare_json", "read_compare", "write_compare"]


def find_compare_json(path: str | os.PathLike) -> Path | None:
    """The ``compare.json`` that ``path`` names: the file itself, ``<path>/compare.json`` or
    ``<path>/compare/compare.json`` (a run folder holding its comparison); None where none exists."""
    path = Path(path)
    candidates = [path] if path.suffix == ".json" else [path / COMPARE_JSON, path / COMPARE_DIR / COMPARE_JSON]
    return next((p for p in candidates if p.is_file()), None)


def read_compare(path: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """``(file, content)`` of the compare output ``path`` names (:func:`find_compare_json`), None where none.

    Raises:
        FolderError: the file is not valid JSON (a ValueError naming the file).
    """
    found = find_compare_json(path)
    if found is None:
        return None
    try:
        return found, json.loads(found.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FolderError(f"{found}: not valid JSON ({exc})") from exc


def write_compare(out_dir: str | os.PathLike, compare: dict[str, Any]) -> Path:
    """Write ``<out_dir>/compare.json`` (atomic); returns its path."""
    return write_json_atomic(Path(out_dir) / COMPARE_JSON, compare)
