"""Atomic file writes of the harness (bytes, text, JSON, matplotlib figures).

The bytes writer is :func:`diffseg.atomic.write_bytes_atomic` (a new file beside the
target, then ``os.replace``; permissions follow the user's umask); this module adds the
text, JSON and figure forms.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffseg.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (indented, keys in insertion order) version of :func:`write_bytes_atomic`."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_figure(fig: Figure, out_path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save ``fig`` atomically to ``out_path`` (format from its suffix), close it, return the path.

    ``kwargs`` go to ``fig.savefig`` (e.g. ``dpi``). The caller made ``fig`` with pyplot, so pyplot is
    already imported (with the caller's backend) when this closes it.
    """
    import matplotlib.pyplot as plt  # the figure's caller imported it: matplotlib stays out of plain writes

    out = Path(out_path)
    fmt = out.suffix.lstrip(".") or "png"
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, **kwargs)
    finally:
        plt.close(fig)
    return write_bytes_atomic(out, buf.getvalue())
