"""A run folder as a resource: one run at a time, writable before any work, storage errors in one line.

* :class:`FolderLock`: an exclusive ``flock`` on ``<run folder>/run.lock``, held by rank 0
  for the whole run; the file names its holder (``pid 1234 on host gpu07 since
  2025-01-31T10:00:00+00:00``). A second run on the same folder raises
  :class:`FolderLockedError` naming the holder. The kernel drops the lock when its
  process dies (``kill -9`` included), so there is never a stale lock to remove.
  ``flock`` is POSIX; on a network file system without lock support the run stops
  with a message saying so.
* :class:`CheckRunFolder`: a Hydra callback that stops a command with exit status 2
  and one line when its run (or sweep) folder cannot be written or a setting is outside its
  range (:func:`eval.spec.build_spec`), before Hydra creates the folder; it notes a folder Hydra
  is about to create, so a run refused later removes it again while it is empty
  (:func:`remove_if_new_and_empty`).
* :func:`storage_error`: the one-line message of a full disk, a read-only or
  permission-denied path (exit status 2 in :func:`eval.run.main`).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from eval.folder.layout import LOCK_FILE
from eval.spec import SettingError, build_spec

__all__ = ["LOCK_FILE", "CheckRunFolder", "FolderLock", "FolderLockedError", "RunFolderError", "check_writable",
           "remove_if_new_and_empty", "storage_error"]

_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used (not writable, no lock support); the message says what to do."""


class FolderLockedError(RunFolderError):
    """Another run holds the folder's lock; the message names it (pid, host, start time)."""


def _denied(path: Path, exc: OSError) -> str:
    return (f"cannot write in the run folder {path} ({exc.strerror or exc}): make it a writable folder, or "
            "choose another one (hydra.run.dir=...)")


def check_writable(folder: str | os.PathLike) -> None:
    """Raise :class:`RunFolderError` unless a file can be created in ``folder`` (or, if it does not exist yet,
    in its nearest existing parent, where it would be created)."""
    path = Path(folder).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise RunFolderError(_denied(path, exc)) from None


def _open_lock_file(path: Path, flags: int, mode: int) -> int:
    return os.open(path, flags, mode)


class FolderLock:
    """Exclusive lock of a run folder (context manager); see the module docstring."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`FolderLockedError` (held) / :class:`RunFolderError` (unusable)."""
        try:
            fd = _open_lock_file(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunFolderError(_denied(self.folder, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that has not named itself"
            os.close(fd)
            raise FolderLockedError(
                f"{self.folder} is in use by another run ({holder}); two runs in one folder would interleave "
                "their records: wait for it to finish, or choose another folder (hydra.run.dir=...)") from None
        except OSError as exc:
            os.close(fd)
            raise RunFolderError(f"cannot lock {self.path} ({exc.strerror}): its file system does not support "
                                 "locks; use a run folder on a local disk") from None
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        holder = f"pid {os.getpid()} on host {socket.gethostname()} since {started}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder + "\n").encode("utf-8"), 0)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _FULL or exc.errno in _DENIED:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its holder line is cleared)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock is what matters; the holder line is only read while the lock is held
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def storage_error(exc: OSError, folder: str | os.PathLike) -> str | None:
    """One line for a full disk or a read-only / permission-denied path, or None for other errors."""
    where = exc.filename or folder
    if exc.errno in _FULL:
        return (f"{exc.strerror or 'no space left'} writing {where}: free space there (or put hydra.run.dir or "
                "cache.dir on another disk) and run the same command again; every finished batch is recorded "
                "and the run resumes from it")
    if exc.errno in _DENIED:
        return (f"cannot write {where} ({exc.strerror}): make it writable, or choose another folder "
                "(hydra.run.dir=...)")
    return None


# Folders that did not exist when Hydra started this process (Hydra creates them before the run).
_NEW_FOLDERS: set[Path] = set()


def remove_if_new_and_empty(folder: str | os.PathLike) -> bool:
    """Remove ``folder`` when Hydra created it for this process's run and it is still empty; True when removed."""
    path = Path(folder).absolute()
    if path not in _NEW_FOLDERS and path.parent not in _NEW_FOLDERS:  # a run folder, or a sweep job's folder
        return False
    try:
        path.rmdir()  # only ever an empty folder
    except OSError:
        return False
    return True


class CheckRunFolder(Callback):
    """Hydra callback: exit 2 with one line when the run (sweep) folder is not writable or a setting is out of
    range, before Hydra creates or writes the folder."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _exit_unless_writable(config.hydra.run.dir)
        _exit_unless_valid(config)
        _note_new(config.hydra.run.dir)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _exit_unless_writable(config.hydra.sweep.dir)
        _note_new(config.hydra.sweep.dir)


def _note_new(folder: Any) -> None:
    path = Path(str(folder)).absolute()
    if not path.exists():
        _NEW_FOLDERS.add(path)


def _exit_unless_valid(config: Any) -> None:
    try:
        build_spec(config)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _exit_unless_writable(folder: Any) -> None:
    try:
        check_writable(str(folder))
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
