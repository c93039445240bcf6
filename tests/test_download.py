"""Downloads (local HTTP server), safe zip extraction and the datasets/prepare.py CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from archives import LINK_CASE, assert_refused, escaping_cases, write_zip

from eval.data import cityscapes, coco_stuff
from eval.data import download as dl
from eval.data.coco_object import CocoObject81
from eval.data.coco_stuff import CocoStuff27
from eval.data.download import (
    ChecksumError,
    DownloadError,
    check_zip,
    download,
    md5_file,
    safe_extract_zip,
    sha256_file,
    verify_file,
)
from eval.data.loader import DatasetNotFoundError
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1000 + b"tail"  # 256004 bytes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        range_header = self.headers.get("Range")
        srv.requests.append((self.path, range_header))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and srv.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.truncate_next is not None:  # simulate a dropped connection
            body = body[: srv.truncate_next]
            srv.truncate_next = None
            self.close_connection = True
        # Counted before the write: once the client has read the body, download() may return and the test read
        # bytes_sent while this thread has not run its next line (under load a count after the write read 0).
        srv.bytes_sent += len(body)
        self.wfile.write(body)
        if srv.hold_after_write is not None:  # the test's worst case: this thread stops right after the write
            srv.hold_after_write.wait(timeout=60)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {}
    srv.requests = []
    srv.honour_range = True
    srv.truncate_next = None
    srv.bytes_sent = 0
    srv.hold_after_write = None
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    if srv.hold_after_write is not None:
        srv.hold_after_write.set()
    srv.shutdown()
    srv.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.zip"


# ----------------------------------------------------------------------------- digests


def test_digests_and_verify(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == sha256(PAYLOAD)
    assert md5_file(path) == hashlib.md5(PAYLOAD).hexdigest()
    assert verify_file(path, sha256=sha256(PAYLOAD).upper(), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert verify_file(path) == {}
    with pytest.raises(ChecksumError) as info:
        verify_file(path, md5="0" * 32)
    assert "f.bin" in str(info.value) and "0" * 32 in str(info.value)
    assert hashlib.md5(PAYLOAD).hexdigest() in str(info.value)


def test_pinned_table():
    pinned = dl.PINNED_FILES
    assert pinned["coco_val2017"].sha256 == "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"
    assert pinned["coco_stuff27_list"].sha256 == "7c629734c88f1a74bba6311e01d4d9fe976df84f07cb4fc86452ce5116e51655"
    assert pinned["coco_stuff27_list"].url.endswith("google/diffseg/main/data/coco/Coco164kFull_Stuff_Coarse_7.txt")
    for entry in pinned.values():
        assert entry.source, entry.name
        for digest, length in ((entry.sha256, 64), (entry.md5, 32)):
            assert digest is None or re.fullmatch(f"[0-9a-f]{{{length}}}", digest)


# ----------------------------------------------------------------------------- download


def test_download_fresh(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "a.bin"
    out = download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]


def test_download_resumes_part_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    half = len(PAYLOAD) // 2
    dest.with_name("a.bin.part").write_bytes(PAYLOAD[:half])
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", f"bytes={half}-")]
    assert server.bytes_sent == len(PAYLOAD) - half


def test_bytes_sent_is_counted_before_the_client_can_finish(server, tmp_path):
    """The resume test's count without the race: the handler thread is held right after writing the body until
    the test has read ``bytes_sent``, the interleaving that once gave ``bytes_sent == 0`` under load (the count
    came after the write); the count must already be there, for the resumed and for a fresh transfer."""
    server.files["/a.bin"] = PAYLOAD
    server.hold_after_write = threading.Event()
    dest = tmp_path / "a.bin"
    half = len(PAYLOAD) // 2
    dest.with_name("a.bin.part").write_bytes(PAYLOAD[:half])
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert not server.hold_after_write.is_set()  # the handler is still held: the client finished first
    assert dest.read_bytes() == PAYLOAD and server.bytes_sent == len(PAYLOAD) - half
    download(f"{server.base}/a.bin", tmp_path / "b.bin", sha256=sha256(PAYLOAD), progress=False)
    assert server.bytes_sent == len(PAYLOAD) - half + len(PAYLOAD)
    assert server.requests == [("/a.bin", f"bytes={half}-"), ("/a.bin", None)]


def test_download_restarts_when_range_ignored(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.honour_range = False
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(b"stale bytes that must not survive")
    download(f"{server.base}/a.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.bytes_sent == len(PAYLOAD)


def test_download_resumes_after_dropped_connection(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.truncate_next = 1000
    dest = tmp_path / "a.bin"
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False, retries=2, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0][1] is None
    assert server.requests[-1][1] is not None and server.requests[-1][1].startswith("bytes=")


def test_download_complete_part_gets_416(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(PAYLOAD)
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and server.bytes_sent == 0


def test_download_checksum_mismatch(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as info:
        download(f"{server.base}/a.bin", dest, sha256=wrong, progress=False)
    message = str(info.value)
    assert "a.bin" in message and wrong in message and sha256(PAYLOAD) in message
    assert not dest.exists() and not dest.with_name("a.bin.part").exists()


def test_download_skips_verified_file_and_replaces_bad_one(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    dest.write_bytes(PAYLOAD)
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert server.requests == []  # nothing fetched
    dest.write_bytes(b"corrupted")
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and len(server.requests) == 1


def test_download_network_errors(server, tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "x.zip", progress=False, retries=0)
    assert url in str(info.value) and "x.zip" in str(info.value)
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.base}/missing.zip", tmp_path / "m.zip", progress=False, retries=0)
    assert not (tmp_path / "m.zip").exists()


def test_download_incomplete_transfer_keeps_part(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.truncate_next = 5000
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as info:
        download(f"{server.base}/a.bin", dest, progress=False, retries=0)
    assert f"{server.base}/a.bin" in str(info.value)
    assert dest.with_name("a.bin.part").stat().st_size == 5000 and not dest.exists()
    download(f"{server.base}/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and server.requests[-1][1] == "bytes=5000-"


# ----------------------------------------------------------------------------- zip extraction


@pytest.mark.parametrize(
    ("entries", "symlinks", "bad"),
    [*escaping_cases("..\\evil.txt"), LINK_CASE],
)
def test_unsafe_entries_are_refused(tmp_path, entries, symlinks, bad):
    assert_refused(safe_extract_zip, write_zip(tmp_path / "bad.zip", entries, symlinks), bad)


def test_extract_prefix_strip_members_and_resume(tmp_path):
    entries = {
        "train2017/1.png": b"train",
        "val2017/1.png": b"one",
        "val2017/2.png": b"two!",
        "val2017/sub/3.png": b"three",
        "README": b"readme",
    }
    archive = write_zip(tmp_path / "maps.zip", entries)
    dest = tmp_path / "root" / "annotation_val2017"
    out = safe_extract_zip(archive, dest, members_prefix="val2017/", strip_prefix="val2017/")
    assert sorted(p.relative_to(dest).as_posix() for p in out) == ["1.png", "2.png", "sub/3.png"]
    assert (dest / "2.png").read_bytes() == b"two!" and (dest / "sub" / "3.png").read_bytes() == b"three"
    assert not (dest / "README").exists() and not (dest / "train2017").exists()
    assert not list(dest.rglob("*.extracting"))
    # resume: a file of the right size is kept as it is, a wrong-sized one is rewritten
    (dest / "1.png").write_bytes(b"ONE")
    (dest / "2.png").write_bytes(b"short")
    safe_extract_zip(archive, dest, members_prefix="val2017/", strip_prefix="val2017/")
    assert (dest / "1.png").read_bytes() == b"ONE" and (dest / "2.png").read_bytes() == b"two!"
    # explicit members
    picked = tmp_path / "picked"
    out = safe_extract_zip(archive, picked, members=["val2017/2.png"], strip_prefix="val2017/")
    assert out == [picked / "2.png"] and [p.name for p in picked.iterdir()] == ["2.png"]
    with pytest.raises(KeyError):
        safe_extract_zip(archive, picked, members=["val2017/999.png"])
    # no strip: the archive paths are kept
    kept = safe_extract_zip(archive, tmp_path / "kept", member_filter=lambda n: n.endswith("1.png"))
    assert sorted(p.relative_to(tmp_path / "kept").as_posix() for p in kept) == [
        "train2017/1.png",
        "val2017/1.png",
    ]


def test_check_zip_detects_corruption(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"x.bin": PAYLOAD})
    check_zip(archive)
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF  # inside the stored member's data
    archive.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="a.zip"):
        check_zip(archive)
    (tmp_path / "no.zip").write_bytes(b"nope")
    with pytest.raises(ChecksumError, match="no.zip"):
        check_zip(tmp_path / "no.zip")


# ----------------------------------------------------------------------------- prepare.py


def test_no_package_named_datasets():
    assert not (REPO / "datasets" / "__init__.py").exists()


def _fake_coco_archives(tmp_path: Path, server) -> tuple[list[str], dict[str, bytes]]:
    """Serve a fake val2017.zip / stuffthingmaps zip (with extra, unlisted ids) and a list."""
    src = tmp_path / "src"
    all_ids = write_synthetic_coco_stuff(src, num_images=5, seed=4, size_range=(40, 60))
    listed = all_ids[:3]
    images = write_zip(
        tmp_path / "val2017.zip",
        {f"val2017/{i}.jpg": (src / "val2017" / f"{i}.jpg").read_bytes() for i in all_ids},
    )
    maps = write_zip(
        tmp_path / "maps.zip",
        {
            **{f"val2017/{i}.png": (src / "annotation_val2017" / f"{i}.png").read_bytes() for i in all_ids},
            "train2017/000000999999.png": b"not needed",
        },
    )
    blobs = {
        "/val2017.zip": images.read_bytes(),
        "/maps.zip": maps.read_bytes(),
        "/list.txt": "".join(f"{i}\n" for i in listed).encode(),
    }
    server.files.update(blobs)
    return listed, blobs


def _pin(monkeypatch, key: str, **changes):
    monkeypatch.setitem(dl.PINNED_FILES, key, dataclasses.replace(dl.PINNED_FILES[key], **changes))


def test_prepare_coco_end_to_end(prepare, server, tmp_path, monkeypatch, capsys):
    listed, blobs = _fake_coco_archives(tmp_path, server)
    _pin(monkeypatch, "coco_val2017", url=f"{server.base}/val2017.zip",
         sha256=sha256(blobs["/val2017.zip"]), md5=None, size=len(blobs["/val2017.zip"]))  # fmt: skip
    _pin(monkeypatch, "cocostuff_stuffthingmaps", url=f"{server.base}/maps.zip")
    _pin(monkeypatch, "coco_stuff27_list", url=f"{server.base}/list.txt",
         sha256=sha256(blobs["/list.txt"]), size=len(blobs["/list.txt"]))  # fmt: skip
    root, downloads = tmp_path / "coco_root", tmp_path / "downloads"
    argv = ["--quiet", "coco", "--root", str(root), "--downloads", str(downloads)]
    assert prepare.main(argv) == 0
    assert sorted(p.stem for p in (root / "val2017").iterdir()) == sorted(listed)  # only listed ids
    assert sorted(p.stem for p in (root / "annotation_val2017").iterdir()) == sorted(listed)
    assert (root / "Coco164kFull_Stuff_Coarse_7.txt").read_bytes() == blobs["/list.txt"]
    assert sorted(p.name for p in downloads.iterdir()) == sorted(
        ["val2017.zip", "stuffthingmaps_trainval2017.zip", "Coco164kFull_Stuff_Coarse_7.txt"]
    )
    ds = CocoStuff27(root, size=16)
    assert ds.ids == listed and ds[0][1].shape == (16, 16)
    # second run: already complete, nothing fetched
    capsys.readouterr()
    count = len(server.requests)
    assert prepare.main(argv) == 0
    assert "ready" in capsys.readouterr().out and len(server.requests) == count


def test_prepare_coco_bad_checksum_exits_2(prepare, server, tmp_path, monkeypatch, capsys):
    _listed, blobs = _fake_coco_archives(tmp_path, server)
    _pin(monkeypatch, "coco_stuff27_list", url=f"{server.base}/list.txt", sha256="0" * 64, size=None)
    _pin(monkeypatch, "coco_val2017", url=f"{server.base}/val2017.zip")  # every host is probed before any fetch
    _pin(monkeypatch, "cocostuff_stuffthingmaps", url=f"{server.base}/maps.zip")
    code = prepare.main(["--quiet", "coco", "--root", str(tmp_path / "r"), "--downloads", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "checksum mismatch" in err and "0" * 64 in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_prepare_coco_without_network_exits_2(prepare, tmp_path, monkeypatch, capsys):
    url = closed_port_url()
    _pin(monkeypatch, "coco_stuff27_list", url=url)
    monkeypatch.setattr(dl.time, "sleep", lambda _s: None)
    code = prepare.main(["--quiet", "coco", "--root", str(tmp_path / "r"), "--downloads", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    # Every host is probed before anything is fetched: every file the step needs is named, no folder made.
    assert "cannot reach 127.0.0.1" in err and url in err
    for name in ("Coco164kFull_Stuff_Coarse_7.txt", "val2017.zip", "stuffthingmaps_trainval2017.zip"):
        assert name in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_prepare_cityscapes_missing_zips(prepare, tmp_path, capsys):
    zips = tmp_path / "zips"
    zips.mkdir()
    code = prepare.main(["cityscapes", "--root", str(tmp_path / "cs"), "--zips", str(zips)])
    err = capsys.readouterr().err
    assert code == 2
    assert "gtFine_trainvaltest.zip" in err and "leftImg8bit_trainvaltest.zip" in err
    assert "https://www.cityscapes-dataset.com/downloads/" in err and str(zips.resolve()) in err
    assert not (tmp_path / "cs").exists()


def test_prepare_cityscapes_from_zips(prepare, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    names = write_synthetic_cityscapes(src, num_images=3, seed=1, size=(32, 64))
    gt_entries, left_entries = {}, {}
    for path in (src / "gtFine").rglob("*.png"):
        rel = path.relative_to(src).as_posix()
        gt_entries[rel] = path.read_bytes()
        gt_entries[rel.replace("_labelIds", "_color")] = b"colour map"
        gt_entries[rel.replace("/val/", "/train/")] = b"train label"
    for path in (src / "leftImg8bit").rglob("*.png"):
        rel = path.relative_to(src).as_posix()
        left_entries[rel] = path.read_bytes()
        left_entries[rel.replace("/val/", "/test/")] = b"test image"
    zips = tmp_path / "zips"
    zips.mkdir()
    gt = write_zip(zips / "gtFine_trainvaltest.zip", {**gt_entries, "README": b"r", "license.txt": b"l"})
    left = write_zip(zips / "leftImg8bit_trainvaltest.zip", left_entries)
    _pin(monkeypatch, "cityscapes_gtfine", md5=md5_file(gt))
    _pin(monkeypatch, "cityscapes_leftimg8bit", md5=md5_file(left))
    monkeypatch.setattr(cityscapes, "VAL_IMAGES", 3)
    root = tmp_path / "cs"
    assert prepare.main(["--quiet", "cityscapes", "--root", str(root), "--zips", str(zips)]) == 0
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert len(files) == 6
    assert all(f.startswith(("gtFine/val/", "leftImg8bit/val/")) for f in files)
    assert all(f.endswith(("_gtFine_labelIds.png", "_leftImg8bit.png")) for f in files)
    assert prepare.main(["cityscapes", "--root", str(root), "--zips", str(zips)]) == 0
    assert "ready" in capsys.readouterr().out
    # a corrupted zip is refused (fresh root)
    _pin(monkeypatch, "cityscapes_gtfine", md5="f" * 32)
    code = prepare.main(["--quiet", "cityscapes", "--root", str(tmp_path / "cs2"), "--zips", str(zips)])
    assert code == 2 and "f" * 32 in capsys.readouterr().err
    assert sorted(names) == names


def test_prepare_script_runs_from_any_cwd(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "datasets" / "prepare.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "coco" in result.stdout and "cityscapes" in result.stdout


def test_prepare_coco_all_val2017_images(prepare, server, tmp_path, monkeypatch, capsys):
    listed, blobs = _fake_coco_archives(tmp_path, server)
    _pin(monkeypatch, "coco_val2017", url=f"{server.base}/val2017.zip",
         sha256=sha256(blobs["/val2017.zip"]), md5=None, size=len(blobs["/val2017.zip"]))  # fmt: skip
    _pin(monkeypatch, "cocostuff_stuffthingmaps", url=f"{server.base}/maps.zip")
    root = tmp_path / "coco_root"
    argv = ["--quiet", "coco", "--root", str(root), "--downloads", str(tmp_path / "d"), "--subset", "all"]
    assert prepare.main(argv) == 0
    all_ids = sorted(p.stem for p in (root / "val2017").iterdir())
    assert len(all_ids) == 5 and set(listed) < set(all_ids)
    assert (root / "val2017_all.txt").read_text().split() == all_ids
    with pytest.raises(DatasetNotFoundError, match="not the 5000 val2017 images"):
        CocoStuff27(root, size=16, subset="all")  # a real (unmarked) root must hold all 5000
    monkeypatch.setattr(coco_stuff, "VAL2017_IMAGES", 5)
    assert CocoStuff27(root, size=16, subset="all").ids == all_ids
    assert CocoObject81(root, size=16, subset="all").ids == all_ids
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="COCO_SUBSET=all"):
        CocoStuff27(tmp_path / "empty", size=16, subset="all")
