"""The explorer names a run by the path it was given: a relative path stays relative on the page.

``results/explore/explore_run.png`` once showed ``/tmp/pytest-of-root/...``: the browser test gave the page an
absolute temporary folder. It now gives ``outputs/synthetic_run`` from a working directory holding a copy
(:func:`explore_fixtures.relative_run_copy`); this checks the text the page shows for that input, without a browser.
"""

from __future__ import annotations

import re
import tempfile

import pytest
from explore_fixtures import SCREENSHOT_RUN, relative_run_copy, synthetic_run_folder

gr = pytest.importorskip("gradio")


def _absolute_paths(text: str) -> list[str]:
    return re.findall(r"(?:^|[\s`'\"(])(/[\w.-]+(?:/[\w.-]+)+)", text)


def test_a_relative_run_path_is_shown_relative(tmp_path_factory, tmp_path, monkeypatch):
    from eval.explore.run_app import _banner, build_run_app, open_runs

    monkeypatch.chdir(tmp_path)
    given = relative_run_copy(synthetic_run_folder(tmp_path_factory), tmp_path)
    assert given == SCREENSHOT_RUN and not given.is_absolute()
    runs = open_runs([str(given)])
    banner = _banner(runs)
    assert f"`{given}` (coco_stuff27, 3 images, masks: PNG)" in banner
    assert _absolute_paths(banner) == [] and str(tmp_path) not in banner and tempfile.gettempdir() + "/" not in banner

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # gradio sets it; restored as it was after the test
    app = build_run_app([str(given)])
    try:
        folders = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "run-folders")
        assert folders.value == str(given)  # the "Run folders" box the screenshot shows
    finally:
        app.close()


def test_the_check_sees_an_absolute_path(tmp_path_factory):
    """The twin: the same banner for the absolute folder holds an absolute path, and the check finds it."""
    from eval.explore.run_app import _banner, open_runs

    run_dir = synthetic_run_folder(tmp_path_factory)
    assert _absolute_paths(_banner(open_runs([str(run_dir)]))) == [str(run_dir)]
