"""Atomic writes (eval.atomic, diffseg.atomic): whole files only, and the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest

from diffseg.masks import write_mask_png
from eval.atomic import save_figure, write_bytes_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert _mode(write_bytes_atomic(tmp_path / "a.bin", b"xyz")) == expected
    assert _mode(write_json_atomic(tmp_path / "sub" / "m.json", {"a": 1})) == expected
    assert _mode(write_mask_png(tmp_path / "m.png", [[0, 1], [2, 3]])) == expected


def test_figures_follow_the_umask(tmp_path, umask):
    import matplotlib.pyplot as plt

    umask(0o022)
    fig = plt.figure(figsize=(1, 1))
    path = save_figure(fig, tmp_path / "f.png")
    assert _mode(path) == 0o644 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overwrite_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "r.json"
    write_text_atomic(target, "old\n")
    write_json_atomic(target, {"k": [1, 2]})
    assert json.loads(target.read_text()) == {"k": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.txt"
    write_text_atomic(target, "old")
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]
