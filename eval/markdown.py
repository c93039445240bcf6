"""The reports' shared writing helpers (tables, compare, bench): Markdown tables, file-name slugs, output folders."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["check_out_dir", "markdown_rows", "slug"]


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path; ValueError (one line) when it or a parent is an existing file, not a folder."""
    out = Path(out_dir)
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {out}: {folder} is a file, not a folder")
    return out


def slug(text: str, empty: str = "table") -> str:
    """File-name-safe version of ``text`` (runs of other characters become ``_``); ``empty`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or empty


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str]) -> str:
    """GitHub Markdown table text: ``header``, the ``align`` row (``:---`` / ``---:``), then ``rows``.

    A ``|`` inside a cell is escaped; every line ends with a newline.
    """
    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(align), *(line(r) for r in rows)]) + "\n"
