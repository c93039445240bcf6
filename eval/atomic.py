"""Atomic file writes of the harness (bytes, text, JSON).

The bytes writer is :func:`diffseg.atomic.write_bytes_atomic` (a new file beside the
target, then ``os.replace``; permissions follow the user's umask); this module adds the
text and JSON forms.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffseg.atomic import write_bytes_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (indented, keys in insertion order) version of :func:`write_bytes_atomic`."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
