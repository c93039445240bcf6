"""Atomic file writes: a new file in the target folder, then ``os.replace``.

Readers see the old file or the new one, never a part of it; a failed write (a full
disk, say) leaves the old file as it was, removes the temporary one and raises an
``OSError`` naming the target. The temporary file is
created with mode ``0o666`` and the kernel applies the process umask (and any default
ACL of the folder) at creation, exactly as for a file opened with ``open(path, "w")``:
the result has the user's usual permissions (``0o644`` under a ``0o022`` umask), not
the ``0o600`` of :func:`tempfile.mkstemp`. The umask is never read or changed, so
there is no window in which another thread creates files under a wrong umask.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_bytes_atomic"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` beside ``path`` (mode 0o666 & ~umask); returns (fd, temp path)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}: 100 names already taken")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents created), with the user's umask; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # name the target (a full disk, say)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    return path
