"""Reading one JSON-object file of a run folder (``run.json``, ``metrics.json``) with errors that name it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_object"]


def read_json_object(path: str | os.PathLike, name: str, error: type[Exception], what: str,
                     advice: str = "") -> dict[str, Any]:
    """The content of ``path`` (a file, or a folder holding the file ``name``), a JSON object.

    Raises:
        FileNotFoundError: there is no such file.
        error: the file is not valid JSON, or not an object (``what`` names what it should be), each
            message naming the file and ending in ``advice``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / name
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}){advice}") from None
    if not isinstance(content, dict):
        raise error(f"{path} is not {what} (a JSON {type(content).__name__}, not an object){advice}")
    return content
