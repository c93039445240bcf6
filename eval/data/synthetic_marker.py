"""The file by which a dataset root says it was generated (:mod:`eval.data.synthetic`), not downloaded.

A run reads it to mark its numbers as made on synthetic data (:mod:`eval.run.identity`); a dataset
reads it to accept a synthetic root that holds fewer images than the benchmark.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SYNTHETIC_MARKER", "is_synthetic"]

SYNTHETIC_MARKER = "SYNTHETIC.txt"


def is_synthetic(root: str | os.PathLike) -> bool:
    """True when ``root`` was written by :mod:`eval.data.synthetic` (it holds the marker file)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()
