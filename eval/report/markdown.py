"""The one Markdown table writer and file-name slug of the reports (tables, compare, bench)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["markdown_rows", "slug"]


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
