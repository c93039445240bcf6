"""Safe, resumable downloads and archive extraction for the benchmark data.

* :func:`download` resumes ``<dest>.part`` with an HTTP Range request, verifies the
  pinned checksum and only then moves the file into place (``os.replace``).
* :func:`safe_extract_zip` / :func:`safe_extract_tar` refuse absolute paths, ``..``
  components and links (and, for tars, devices and FIFOs), write each file through a
  temporary name and skip files already extracted.
* :data:`PINNED_FILES` (:func:`pinned_files`) lists the files the ``make data-*`` preparation
  fetches or expects, with the published checksums (sources in each entry's ``source``); each
  dataset module declares its own in a ``PINNED`` dict, merged here on first use.
* ``pinned_files.json`` (beside this module, shipped with the package) holds the repository's records:
  one entry per file, ``{"module", "name", "url", "sha256", "sha1", "md5", "size", "source"}``, every field
  present (``null`` where none is published); :func:`pinned_files_of` gives a dataset module its entries
  (``PINNED = pinned_files_of("voc")``). A malformed entry is refused with its key named.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from eval.data.classes import dataset_modules

__all__ = [
    "ChecksumError",
    "DownloadError",
    "PINNED_FILES",  # noqa: F822 (built on first access, module __getattr__)
    "PinnedFile",
    "UnsafeArchiveError",
    "check_zip",
    "download",
    "download_pinned",
    "md5_file",
    "pinned_files",
    "pinned_files_of",
    "read_tar_member",
    "safe_extract_tar",
    "safe_extract_zip",
    "sha1_file",
    "sha256_file",
    "verify_file",
]

_CHUNK = 1 << 20
_USER_AGENT = "diffseg-repro-downloader/1.0"


class DownloadError(RuntimeError):
    """A file could not be fetched (network, HTTP status, truncated transfer)."""


class ChecksumError(ValueError):
    """A file's digest differs from the pinned one."""


class UnsafeArchiveError(ValueError):
    """An archive entry would escape the destination (absolute, ``..``, symlink)."""


@dataclass(frozen=True)
class PinnedFile:
    """A remote file and the digests it must have (None = not published / not found).

    ``source`` says where each digest comes from. A file with no digest is checked by
    size (when known) and, for zips, by ``zipfile.testzip`` CRCs only. ``sha1`` is
    there because some archives are only published with a SHA-1.
    """

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    source: str = ""
    sha1: str | None = None

    @property
    def digests(self) -> dict[str, str]:
        """The pinned digests as ``{algorithm: hex}`` (empty when none is published)."""
        found = (("sha256", self.sha256), ("sha1", self.sha1), ("md5", self.md5))
        return {name: value for name, value in found if value}


PINNED_TABLE = Path(__file__).with_name("pinned_files.json")
_HEX_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}
_TABLE_FIELDS = ("module", "name", "url", "sha256", "sha1", "md5", "size", "source")


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{PINNED_TABLE.name}: {repeated[0]!r} appears twice")
    return dict(pairs)


def _table_entry(key: str, entry: Any) -> tuple[str, PinnedFile]:
    """``(module, PinnedFile)`` of one entry of the table, or ValueError naming ``key`` and what is wrong."""
    where = f"{PINNED_TABLE.name}: entry {key!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object with the fields {list(_TABLE_FIELDS)}")
    missing = [field for field in _TABLE_FIELDS if field not in entry]
    unknown = sorted(set(entry) - set(_TABLE_FIELDS))
    if missing or unknown:
        wrong = [f"{what} field(s) {fields}" for what, fields in (("missing", missing), ("unknown", unknown)) if fields]
        raise ValueError(f"{where}: {', '.join(wrong)}; each entry has exactly the fields {list(_TABLE_FIELDS)} "
                         "(null where none is published)")
    for field in ("module", "name", "url", "source"):
        if not isinstance(entry[field], str) or not entry[field]:
            raise ValueError(f"{where}: {field} must be a non-empty string, not {entry[field]!r}")
    for field, length in _HEX_LENGTHS.items():
        value = entry[field]
        if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{length}}}", value)):
            raise ValueError(f"{where}: {field} must be null or {length} lowercase hex digits, not {value!r}")
    size = entry["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"{where}: size must be null or a positive whole number of bytes, not {size!r}")
    fields = {field: entry[field] for field in _TABLE_FIELDS if field != "module"}
    return entry["module"], PinnedFile(**fields)


@functools.cache
def _pinned_table() -> dict[str, tuple[str, PinnedFile]]:
    """key -> ``(dataset module, PinnedFile)`` of :data:`PINNED_TABLE`, read and checked once, in file order."""
    table = json.loads(PINNED_TABLE.read_text(encoding="utf-8"), object_pairs_hook=_no_repeated_keys)
    if not isinstance(table, dict):
        raise ValueError(f"{PINNED_TABLE.name} must hold one object: pinned-file key -> entry")
    return {key: _table_entry(key, entry) for key, entry in table.items()}


def pinned_files_of(module: str) -> dict[str, PinnedFile]:
    """The entries of :data:`PINNED_TABLE` that belong to dataset module ``eval.data.<module>``, in file order.

    Raises:
        ValueError: a malformed entry (naming its key), or no entry names ``module``.
    """
    table = _pinned_table()
    found = {key: pinned for key, (owner, pinned) in table.items() if owner == module}
    if not found:
        raise ValueError(f"{PINNED_TABLE.name} has no entry of module {module!r}; its modules are "
                         f"{sorted({owner for owner, _ in table.values()})}")
    return found


@functools.cache
def pinned_files() -> dict[str, PinnedFile]:
    """Every dataset module's ``PINNED`` entries (the modules of ``conf/dataset/*.yaml``) in one dict.

    Built once: the same dict on every call.

    Raises:
        ValueError: two dataset modules pin the same key.
    """
    merged: dict[str, PinnedFile] = {}
    for module in dict.fromkeys(dataset_modules().values()):
        for key, pinned in module.PINNED.items():
            if key in merged:
                raise ValueError(f"pinned file {key!r} is declared twice (again in {module.__name__})")
            merged[key] = pinned
    return merged


def __getattr__(name: str):
    """``PINNED_FILES``: :func:`pinned_files`, built on first access (the dataset modules import this one)."""
    if name == "PINNED_FILES":
        return pinned_files()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- digests


def _hash_file(path: str | os.PathLike, algorithms: Iterable[str]) -> dict[str, str]:
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (streamed)."""
    return _hash_file(path, ["sha256"])["sha256"]


def md5_file(path: str | os.PathLike) -> str:
    """Hex md5 of a file (streamed)."""
    return _hash_file(path, ["md5"])["md5"]


def sha1_file(path: str | os.PathLike) -> str:
    """Hex sha1 of a file (streamed)."""
    return _hash_file(path, ["sha1"])["sha1"]


def verify_file(
    path: str | os.PathLike, sha256: str | None = None, md5: str | None = None, sha1: str | None = None
) -> dict[str, str]:
    """Check ``path`` against the given digests (one pass over the file).

    Returns:
        The computed digests ({} when none was requested).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ChecksumError: a digest differs; the message names the file, expected and actual.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot verify {path}: no such file")
    given = (("sha256", sha256), ("sha1", sha1), ("md5", md5))
    expected = {name: value.lower() for name, value in given if value}
    if not expected:
        return {}
    actual = _hash_file(path, expected)
    for name, value in expected.items():
        if actual[name] != value:
            raise ChecksumError(
                f"checksum mismatch for {path.name} ({path}): expected {name} {value}, got {actual[name]}"
            )
    return actual


def check_zip(path: str | os.PathLike) -> None:
    """Read every member of a zip and check its CRC (``zipfile.testzip``).

    Raises:
        ChecksumError: the archive is not a zip or a member is corrupt.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ChecksumError(f"{path.name} ({path}) is not a readable zip archive: {exc}") from exc
    if bad is not None:
        raise ChecksumError(f"{path.name} ({path}) is corrupt: CRC error in member {bad!r}")


# --------------------------------------------------------------------------- download


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """``"bytes 100-199/200"`` -> (100, 200); ``"bytes 100-199/*"`` -> (100, None)."""
    if not value:
        return None
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _fetch_into(url: str, part: Path, timeout: float, progress: bool, desc: str) -> int | None:
    """One attempt: append to (or restart) ``part``. Returns the expected total size if known.

    Raises urllib/socket errors for the caller to classify.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            # Range not satisfiable: the partial file is already complete (or longer than
            # the remote file); let the caller's verification decide.
            exc.close()
            return offset
        raise
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset > 0 and status == 206:
            content_range = _parse_content_range(response.headers.get("Content-Range"))
            if content_range is None or content_range[0] != offset:
                raise DownloadError(
                    f"server answered the resume of {url} with an unexpected Content-Range "
                    f"{response.headers.get('Content-Range')!r}; delete {part} and retry"
                )
            total = (
                content_range[1] if content_range[1] is not None else (offset + length if length is not None else None)
            )
            mode = "ab"
        else:
            # 200: the server ignored the Range header -> start over.
            offset = 0
            total = length
            mode = "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    have = part.stat().st_size
    if total is not None and have < total:
        # http.client returns short reads silently when the peer closes early.
        raise IncompleteRead(b"", total - have)
    return total


def _fetch_with_retries(url: str, part: Path, name: str, timeout: float, progress: bool, retries: int,
                        backoff: float) -> int | None:
    """:func:`_fetch_into` with ``retries`` resuming retries of transient failures (network errors,
    HTTP 408/429/5xx; ``backoff * attempt`` seconds apart); returns the size the server announced."""
    attempt = 0
    while True:
        try:
            return _fetch_into(url, part, timeout, progress, desc=name)
        except DownloadError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                reason = f"HTTP {exc.code} {exc.reason}"
            else:
                raise DownloadError(f"could not fetch {name} from {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, socket.gaierror):  # no DNS: offline or a wrong host; a retry cannot help
                raise DownloadError(f"could not fetch {name} from {url}: the host name cannot be resolved "
                                    f"({reason}); are you offline?") from None
            reason = f"{type(exc).__name__}: {reason}"
        attempt += 1
        if attempt > retries:
            kept = f" (partial data kept in {part} for a later resume)" if part.exists() else ""
            raise DownloadError(f"could not fetch {name} from {url}: {reason}{kept}")
        time.sleep(backoff * attempt)


def _check_transfer_size(part: Path, name: str, url: str, expected_size: int | None) -> None:
    """A ``.part`` shorter than ``expected_size`` is kept for a resume, a longer one deleted; both raise."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is None or have == expected_size:
        return
    if have > expected_size:
        part.unlink()
        raise DownloadError(
            f"{name} from {url}: got {have} bytes, more than the expected {expected_size}; "
            "the partial file was deleted, run again"
        )
    raise DownloadError(
        f"{name} from {url}: transfer incomplete ({have} of {expected_size} bytes); run again to resume from {part}"
    )


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    *,
    sha1: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    retries: int = 2,
    backoff: float = 2.0,
) -> Path:
    """Download ``url`` to ``dest`` resumably and verify it.

    * If ``dest`` exists and matches the digests (or no digest is given), nothing is fetched.
    * Bytes go to ``<dest>.part``; an existing ``.part`` is resumed with ``Range:
      bytes=<size>-`` (when the server ignores Range and sends the whole file, the
      transfer restarts from zero).
    * After the transfer the ``.part`` is checked (size when known, then digests) and
      moved to ``dest`` with ``os.replace``. A digest mismatch deletes the ``.part``.
    * Network errors are retried ``retries`` times (resuming), then raise
      :class:`DownloadError` naming the URL; the ``.part`` is kept for a later resume.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: the file could not be fetched.
        ChecksumError: the fetched bytes do not match ``sha256``/``sha1``/``md5``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        try:
            verify_file(dest, sha256=sha256, md5=md5, sha1=sha1)
            if size is None or dest.stat().st_size == size:
                return dest
        except ChecksumError:
            pass  # re-fetch; dest is only replaced once the new copy verifies
    total = _fetch_with_retries(url, part, dest.name, timeout, progress, retries, backoff)
    _check_transfer_size(part, dest.name, url, size if size is not None else total)
    try:
        verify_file(part, sha256=sha256, md5=md5, sha1=sha1)
    except ChecksumError as exc:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{exc} (downloaded from {url}; the bad file was deleted)") from None
    os.replace(part, dest)
    return dest


def download_pinned(key: str, downloads_dir: str | os.PathLike, progress: bool = True, **kwargs) -> Path:
    """Download :data:`PINNED_FILES` ``[key]`` into ``downloads_dir`` and verify it.

    Files pinned without digests are checked with :func:`check_zip` when they are zips.
    """
    pinned = pinned_files()[key]
    dest = Path(downloads_dir) / pinned.name
    path = download(
        pinned.url, dest, sha256=pinned.sha256, md5=pinned.md5, progress=progress, sha1=pinned.sha1,
        size=pinned.size, **kwargs,
    )
    if not pinned.digests and pinned.name.endswith(".zip"):
        check_zip(path)
    return path


# --------------------------------------------------------------------------- extraction


def _check_entry(info: zipfile.ZipInfo) -> None:
    """Raise :class:`UnsafeArchiveError` for entries that could escape the destination."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"refusing symlink entry {info.filename!r} in archive")
    _check_name(info.filename)


def _check_name(name: str) -> None:
    """Raise :class:`UnsafeArchiveError` for a member name with a NUL byte, an absolute path or a ``..``."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"refusing entry with a NUL byte {name!r} in archive")
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise UnsafeArchiveError(f"refusing absolute path entry {name!r} in archive")
    if any(component == ".." for component in normalised.split("/")):
        raise UnsafeArchiveError(f"refusing entry with a '..' component {name!r} in archive")


@dataclass(frozen=True)
class _Entry:
    """One archive member, as the extraction sees it (zip and tar alike)."""

    name: str
    size: int
    is_file: bool
    open: Callable[[], IO[bytes]]


def _extract_entries(entries: list[_Entry], archive: Path, dest: Path, members_prefix: str | None,
                     strip_prefix: str | None, members: Iterable[str] | None,
                     member_filter: Callable[[str], bool] | None, progress: bool) -> list[Path]:
    """Select, then write the (already checked) entries under ``dest`` (existing); see :func:`safe_extract_zip`."""
    dest_resolved = dest.resolve()
    if members is not None:
        wanted = set(members)
        missing = sorted(wanted - {e.name for e in entries})
        if missing:
            raise KeyError(f"{len(missing)} entries not in {archive}, e.g. {missing[:3]}")
        entries = [e for e in entries if e.name in wanted]
    selected = [e for e in entries if e.is_file
                and (members_prefix is None or e.name.startswith(members_prefix))
                and (member_filter is None or member_filter(e.name))]
    out: list[Path] = []
    for entry in tqdm(selected, desc=f"extract {archive.name}", unit="file", disable=not progress):
        name = entry.name
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix) :]
        target = dest / name
        if not target.resolve().is_relative_to(dest_resolved):
            raise UnsafeArchiveError(f"refusing entry {entry.name!r}: resolves outside {dest}")
        out.append(target)
        if target.is_file() and target.stat().st_size == entry.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.extracting")
        try:
            with entry.open() as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def safe_extract_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    members_prefix: str | None = None,
    strip_prefix: str | None = None,
    members: Iterable[str] | None = None,
    member_filter: Callable[[str], bool] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Extract (part of) a zip safely into ``dest``.

    Every entry of the archive is checked first; the whole extraction is refused
    (:class:`UnsafeArchiveError`, naming the entry) if any entry has an absolute path, a
    ``..`` component or is a symlink.

    Args:
        zip_path: the archive.
        dest: destination folder (created).
        members_prefix: only extract entries whose name starts with this prefix.
        strip_prefix: remove this prefix from the names before joining with ``dest``
            (e.g. ``"val2017/"`` with ``dest=<root>/annotation_val2017``).
        members: only extract these exact entry names; a name missing from the archive
            raises ``KeyError``.
        member_filter: only extract entries for which it returns True.
        progress: show a tqdm bar.

    Files already present with the entry's uncompressed size are skipped (resume);
    others are written to a temporary name and moved into place with ``os.replace``.

    Returns:
        The destination paths of the selected entries (extracted or already present).
    """
    return _extract(_zip_entries, zip_path, dest, members_prefix, strip_prefix, members, member_filter, progress)


@contextlib.contextmanager
def _zip_entries(zip_path: str | os.PathLike) -> Iterator[list[_Entry]]:
    """Every member of a zip, all checked (:func:`_check_entry`) before any is extracted."""
    with zipfile.ZipFile(zip_path) as zf:
        yield [_checked(_check_entry, i, i.filename, i.file_size, not i.is_dir(), functools.partial(zf.open, i))
               for i in zf.infolist()]


def _checked(check: Callable[[Any], None], info: Any, *entry: Any) -> _Entry:
    check(info)
    return _Entry(*entry)


def _extract(entries_of: Callable[[Any], Any], archive: str | os.PathLike, dest: str | os.PathLike,
             *selection: Any) -> list[Path]:
    """Open ``archive`` with ``entries_of`` (checked entries), then :func:`_extract_entries` into ``dest`` (made)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with entries_of(archive) as entries:
        return _extract_entries(entries, Path(archive), dest, *selection)


def _check_tar_entry(info: tarfile.TarInfo) -> None:
    """Raise :class:`UnsafeArchiveError` for tar entries that could escape or are not plain data."""
    name = info.name
    if info.issym() or info.islnk():
        raise UnsafeArchiveError(f"refusing link entry {name!r} in archive")
    if not (info.isfile() or info.isdir()):
        raise UnsafeArchiveError(f"refusing special entry {name!r} (device, FIFO or unknown type) in archive")
    _check_name(name)


def safe_extract_tar(tar_path: str | os.PathLike, dest: str | os.PathLike, members_prefix: str | None = None,
                     strip_prefix: str | None = None, members: Iterable[str] | None = None,
                     member_filter: Callable[[str], bool] | None = None, progress: bool = False) -> list[Path]:
    """Extract (part of) an uncompressed or gzip/bz2/xz tar safely into ``dest``.

    Same arguments, checks and resume behaviour as :func:`safe_extract_zip`: every
    entry is checked first and the whole extraction is refused
    (:class:`UnsafeArchiveError`, naming the entry) if any entry is absolute, has a
    ``..`` component, is a symlink or hard link, or is a device/FIFO. Only regular
    files are written (bytes only: no modes, owners or times are taken from the archive).

    Returns:
        The destination paths of the selected entries (extracted or already present).
    """
    return _extract(_tar_entries, tar_path, dest, members_prefix, strip_prefix, members, member_filter, progress)


@contextlib.contextmanager
def _tar_entries(tar_path: str | os.PathLike) -> Iterator[list[_Entry]]:
    """Every member of a tar, all checked (:func:`_check_tar_entry`) before any is extracted."""
    with tarfile.open(tar_path, mode="r:*") as tf:
        yield [_checked(_check_tar_entry, i, i.name, i.size, i.isfile(), functools.partial(_tar_data, tf, i))
               for i in tf.getmembers()]


def _tar_data(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    src = tf.extractfile(info)
    if src is None:  # not a regular file after all
        raise UnsafeArchiveError(f"refusing entry {info.name!r}: no file data")
    return src


def read_tar_member(tar_path: str | os.PathLike, name: str) -> bytes:
    """The bytes of one regular-file entry of a tar (``KeyError`` naming it when absent)."""
    with tarfile.open(tar_path, mode="r:*") as tf:
        try:
            info = tf.getmember(name)
        except KeyError:
            raise KeyError(f"{name} is not in {tar_path}") from None
        _check_tar_entry(info)
        src = tf.extractfile(info)
        if src is None:
            raise KeyError(f"{name} in {tar_path} is not a regular file")
        with src:
            return src.read()
