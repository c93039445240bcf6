"""``run.json``: a run's identity (:mod:`eval.run.identity` computes it), read and written here.

Its content::

    {"fingerprint": "3f9c0a1b2c3d4e5f",          # sha256 of ``settings`` + ``data``, 16 hex digits
     "settings": {...},                           # every setting that can change a per-image result
     "data": {"ids_sha256": "...", "num_ids": 2175, "synthetic": false},
     "code": {...},                               # the code version that made the folder
     "outputs": {"save_masks": "png"},            # which files the folder holds besides the records
     "versions": {...}}                           # library versions
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic
from eval.folder.errors import RunMismatchError
from eval.folder.json_file import read_json_object
from eval.folder.layout import RUN_JSON

__all__ = ["read_run_json", "run_json_path", "write_run_json"]


def run_json_path(folder: str | os.PathLike) -> Path:
    """``<folder>/run.json``."""
    return Path(folder) / RUN_JSON


def read_run_json(path: str | os.PathLike) -> dict[str, Any]:
    """A ``run.json``'s content (``path``: the file, or the run folder holding it).

    Raises:
        FileNotFoundError: there is no such file.
        RunMismatchError: the file is not a JSON object (damaged or edited), naming it.
    """
    return read_json_object(path, RUN_JSON, RunMismatchError, "a run identity",
                            ": it was damaged or edited. Restore it (it names the settings of the per-image results "
                            "beside it), or start a new folder.")


def write_run_json(folder: str | os.PathLike, content: dict[str, Any]) -> Path:
    """Write ``<folder>/run.json`` (atomic); returns its path."""
    return write_json_atomic(run_json_path(folder), content)
