"""The run folder: the names of its files and how each is read and written (torch-free).

* :mod:`eval.folder.layout`: every file name a run folder holds (the only module that spells them).
* :mod:`eval.folder.run_json`, :mod:`eval.folder.metrics_json`, :mod:`eval.folder.records`,
  :mod:`eval.folder.masks` (with :mod:`eval.folder.coco_results`), :mod:`eval.folder.compare_output`:
  read and write of each file (atomic writes, :mod:`eval.atomic`).
* :class:`RunFolder`: a run folder as every reader sees it.

:class:`RunFolder` is imported on first use (PEP 562), so the file names and the JSON readers
load without the mask decoders (PIL, pycocotools, matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

from eval.folder.errors import FolderError, RunMismatchError

__all__ = ["FolderError", "RunFolder", "RunMismatchError"]


def __getattr__(name: str) -> Any:
    if name == "RunFolder":
        return importlib.import_module("eval.folder.run_folder").RunFolder
    raise AttributeError(f"module 'eval.folder' has no attribute {name!r}")
