"""Small tar and zip archives written for the safe-extraction tests, hostile entries included."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from eval.data.download import UnsafeArchiveError

# Entry names that leave the destination folder; every safe extractor must refuse them.
ESCAPING_NAMES = ("../evil.txt", "a/../../evil.txt", "/tmp/abs_evil.txt")


def escaping_cases(*extra_names: str) -> list[tuple[dict[str, bytes], None, str]]:
    """``(entries, links, bad name)`` cases: a harmless file and one escaping entry each."""
    return [({"ok.txt": b"1", name: b"x"}, None, name) for name in (*ESCAPING_NAMES, *extra_names)]


# A symbolic link out of the destination: ``(entries, links, bad name)``.
LINK_CASE = ({"ok.txt": b"1"}, {"link": "/etc/passwd"}, "link")


def write_tar(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """An uncompressed tar at ``path``: files ``{name: bytes}``, then symbolic links ``{name: target}``."""
    with tarfile.open(path, "w") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def write_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A zip at ``path``: files ``{name: bytes}``, then Unix symbolic links ``{name: target}``."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 & 0xFFFF) << 16
            zf.writestr(info, target)
    return path


def assert_refused(extract: Callable[[Path, Path], object], archive: Path, bad: str) -> None:
    """``extract(archive, dest)`` raises UnsafeArchiveError naming ``bad`` and writes nothing anywhere.

    ``dest`` is ``<archive's folder>/out/inner``; nothing may appear in it, nor an ``evil.txt`` next to it
    or next to the archive.
    """
    base = archive.parent
    dest = base / "out" / "inner"
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, dest)
    assert repr(bad) in str(info.value)
    assert list(dest.iterdir()) == []  # refused before anything was written
    assert not (base / "out" / "evil.txt").exists() and not (base / "evil.txt").exists()
