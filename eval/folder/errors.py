"""The errors of reading a run folder."""

from __future__ import annotations

__all__ = ["FolderError", "RunMismatchError"]


class FolderError(ValueError):
    """A run folder (or one of its files) that cannot be read; the message names the path and what to do."""


class RunMismatchError(RuntimeError):
    """A run folder's results were made under other settings than the ones requested (or its ``run.json`` is
    damaged, so their settings are unknown)."""
