"""The explorer driven in a real headless Chromium: Debian's ``chromium`` through Playwright's ``executable_path``.

Skipped (with the reason) only where Gradio, Playwright or a Chromium binary is missing; under
``CI=true`` (or when screenshots are asked for) a missing piece fails the test instead (``.ci/run``
installs all three).
``EXPLORE_SCREENSHOTS=DIR`` saves the pages as ``DIR/explore_image.png`` and ``DIR/explore_run.png``
(``make explore-screenshot`` writes the README's pictures into ``results/explore/``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from explore_fixtures import disjoint_copy, relative_run_copy, synthetic_run_folder
from PIL import Image

from eval.run.cache import AttentionCache

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SCREENSHOTS = os.environ.get("EXPLORE_SCREENSHOTS")
TIMEOUT_MS = 45_000  # per wait; every wait is for a condition, never a fixed sleep
SEGMENTS = re.compile(r"(\d+) segments?")
WIDE = {"width": 1400, "height": 1000}  # the pages' viewport where the layout matters


def _chromium() -> str | None:
    return os.environ.get("EXPLORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    for module, how in (("gradio", "pip install -e '.[explore]'"), ("playwright", "pip install -e '.[dev]'")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({how})"
    if _chromium() is None:
        return "no Chromium binary (apt-get install chromium, or set EXPLORE_CHROMIUM=/path/to/chrome)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason is not None:
        if CI or SCREENSHOTS:
            pytest.fail(f"the browser test must run here (CI=true or EXPLORE_SCREENSHOTS set), but {reason}; "
                        ".ci/run installs chromium and the explore extra")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        chrome = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        yield chrome
        chrome.close()


@pytest.fixture(autouse=True)
def _telemetry_flag_restored():
    """Gradio's server sets HF_HUB_DISABLE_TELEMETRY in the process environment; put it back as it was."""
    key = "HF_HUB_DISABLE_TELEMETRY"
    before = os.environ.get(key)
    yield
    if before is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = before


@pytest.fixture
def attention_memory_cleared():
    """The explorer's in-memory attention cache empty when the test starts, and emptied again after it."""
    AttentionCache.clear_memory()
    yield
    AttentionCache.clear_memory()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(app):
    from eval.explore.__main__ import serve

    url = serve(app, port=_free_port(), open_browser=False, block=False)
    assert url.startswith("http://127.0.0.1:")
    return url


@contextmanager
def _opened(browser, app, **page_options):
    """A new page of ``browser`` at ``app`` served on a free port; the page and the app are closed after."""
    try:
        url = _serve(app)
        page = browser.new_page(**page_options)
        try:
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            yield page
        finally:
            page.close()
    finally:
        app.close()


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def _count(page) -> int:
    match = SEGMENTS.search(page.inner_text("#segment-count"))
    assert match, page.inner_text("#segment-count")
    return int(match.group(1))


def test_one_image_slider_and_click(browser, tmp_path, attention_memory_cleared):
    from diffseg.testing.tiny import tiny_backbone
    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.explore.__main__ import TINY_ATTENTION_SCALE
    from eval.explore.image_app import build_image_app
    from eval.explore.session import ImageSession
    from eval.run.provenance import RANDOM_BANNER

    write_synthetic_coco_stuff(tmp_path, num_images=1, seed=7, size_range=(300, 360))
    image = next((tmp_path / "val2017").glob("*.jpg"))
    # 256 px input: 32 x 32 attention, so the page is quick on two cores
    session = ImageSession(tiny_backbone(attention_scale=TINY_ATTENTION_SCALE, device="cpu", input_size=256),
                           output_size=256)
    with Image.open(image) as decoded:  # named as a user names it (no temporary folder in the page)
        session.add_array(np.asarray(decoded.convert("RGB")), name=image.name)
    app = build_image_app(session, banner=RANDOM_BANNER)
    with _opened(browser, app, viewport=WIDE) as page:
        page.wait_for_function("() => /\\d+ segments?/.test(document.querySelector('#segment-count')?.innerText)")
        assert "RANDOM WEIGHTS" in page.inner_text("#banner")
        assert page.inner_text("#startup-errors").strip() == ""  # a clean page
        assert page.input_value("#image-choice input") == image.name
        before = _count(page)

        page.locator("#kl input[type=range]").fill("0.3")  # move the KL-threshold slider
        page.wait_for_function(
            "(n) => { const m = /(\\d+) segments?/.exec(document.querySelector('#segment-count')?.innerText || '');"
            " return m !== null && Number(m[1]) !== n; }", arg=before)
        after = _count(page)
        assert after > before  # a lower threshold merges less: more segments
        assert "from the kept attention" in page.inner_text("#segment-count")
        page.locator("#kl input[type=range]").fill("1.1")  # back: the same segments again
        page.wait_for_function(
            "(n) => { const m = /(\\d+) segments?/.exec(document.querySelector('#segment-count')?.innerText || '');"
            " return m !== null && Number(m[1]) === n; }", arg=before)
        page.locator("#kl input[type=range]").fill("0.8")  # a few segments for the picture
        page.wait_for_function(
            "(n) => { const m = /(\\d+) segments?/.exec(document.querySelector('#segment-count')?.innerText || '');"
            " return m !== null && Number(m[1]) !== n; }", arg=before)

        overlay = page.locator("#overlay img")
        box = overlay.bounding_box()
        overlay.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.7})  # click a pixel
        page.wait_for_function("() => document.querySelectorAll('#attention img').length >= 4")
        assert "Attention of pixel" in page.inner_text("#attention-note")
        captions = page.inner_text("#attention")
        for side in ("32 x 32", "16 x 16", "8 x 8", "4 x 4"):
            assert side in captions

        page.locator("#merge-step input[type=range]").fill("0")  # step back to the anchors
        page.wait_for_function("() => (document.querySelector('#merge-note')?.innerText || '').includes('anchors')")
        assert "256 anchors" in page.inner_text("#merge-note")
        page.locator("#merge-step input[type=range]").fill("1")
        page.wait_for_function("() => (document.querySelector('#merge-note')?.innerText || '').includes('iteration 1')")
        page.locator("#merge-step input[type=range]").fill("3")  # the last step: the segments over the image
        page.wait_for_function("() => (document.querySelector('#merge-note')?.innerText || '').includes('segments')")
        assert "Error:" not in page.inner_text("body")
        _shot(page, "explore_image.png")


def test_startup_errors_are_shown_in_the_page(browser, tmp_path):
    from diffseg.testing.tiny import tiny_backbone
    from eval.explore.image_app import build_image_app
    from eval.explore.session import ImageSession

    session = ImageSession(tiny_backbone(device="cpu", input_size=64), output_size=64)  # no image: nothing to segment
    app = build_image_app(session, messages=[f"{tmp_path / 'broken.jpg'}: cannot be read as an image"])
    with _opened(browser, app) as page:
        page.wait_for_function("() => (document.querySelector('#startup-errors')?.innerText || '').includes('broken')")
        assert "broken.jpg: cannot be read as an image" in page.inner_text("#startup-errors")


def test_two_runs_without_common_methods_open_side_by_side(browser, tmp_path_factory, tmp_path):
    from eval.explore.run_app import build_run_app
    from eval.explore.runs import RunFolder

    run_dir = synthetic_run_folder(tmp_path_factory)
    other = tmp_path / "ablation"
    rename = disjoint_copy(run_dir, other)
    a, b = RunFolder.open(run_dir), RunFolder.open(other)
    app = build_run_app([str(run_dir), str(other)])
    with _opened(browser, app, viewport=WIDE) as page:
        page.wait_for_selector('#images-table [data-testid="cell-0-0"]')
        assert page.inner_text("#status").strip() == ""  # opened, no error
        banner = page.inner_text("#banner")
        assert "Run A" in banner and "Run B" in banner
        page.get_by_role("tab", name="A vs B").click()
        page.wait_for_selector('#compare-table [data-testid="cell-0-0"]')
        header = page.inner_text("#compare-table")
        for method in a.methods:
            assert f"A: {method}" in header
        for method in rename.values():
            assert f"B: {method}" in header
        assert "no method in common" in page.inner_text("#compare-note")
        shown = [page.inner_text(f'#compare-table [data-testid="cell-{i}-0"]') for i in range(len(a.ids))]
        assert shown == sorted(a.ids)

        page.get_by_role("tab", name="Images").click()
        page.locator('#images-table [data-testid="cell-0-0"]').click()
        page.wait_for_function("() => document.querySelectorAll('#image-masks img').length >= 4")
        note = page.inner_text("#image-note")
        clicked = next(i for i in a.ids if i in note)
        scores = b.per_image_miou_of(clicked)
        for method, value in zip(b.methods, scores, strict=True):
            assert f"{method} mIoU {value:.1f}" in note  # run B's own methods on the same image


def test_run_sort_and_open_image(browser, tmp_path_factory, tmp_path, monkeypatch):
    from eval.explore.run_app import build_run_app
    from eval.explore.runs import RunFolder

    monkeypatch.chdir(tmp_path)  # the page (and its screenshot) names the run by a relative path, as a user would
    run_dir = relative_run_copy(synthetic_run_folder(tmp_path_factory), tmp_path)
    run = RunFolder.open(run_dir)
    descending = run.table(sort_by="K-Means-C", descending=True)["image"].tolist()
    ascending = run.table(sort_by="K-Means-C", descending=False)["image"].tolist()
    assert descending[0] != ascending[0]  # the sort has something to show on these images
    app = build_run_app([str(run_dir)])
    first_cell = "document.querySelector('#images-table [data-testid=\"cell-0-0\"]')?.innerText"
    with _opened(browser, app, viewport=WIDE) as page:
        page.wait_for_selector('#images-table [data-testid="cell-0-0"]')
        banner = page.inner_text("#banner")
        assert "RANDOM WEIGHTS" in banner and "SYNTHETIC DATA" in banner
        assert str(run_dir) in banner and str(tmp_path) not in banner
        assert page.input_value("#run-folders textarea, #run-folders input") == str(run_dir)

        page.locator("#sort-by label", has_text="K-Means-C").click()  # sort the table
        page.wait_for_function(f"(id) => {first_cell} === id", arg=descending[0])
        page.locator("#order label", has_text="lowest first").click()
        page.wait_for_function(f"(id) => {first_cell} === id", arg=ascending[0])
        shown = [page.inner_text(f'#images-table [data-testid="cell-{i}-0"]') for i in range(len(ascending))]
        assert shown == ascending

        page.locator('#images-table [data-testid="cell-0-0"]').click()  # open the image
        page.wait_for_function("() => document.querySelectorAll('#image-masks img').length >= 4")
        assert ascending[0] in page.inner_text("#image-note")
        captions = page.inner_text("#image-masks")
        for caption in ("image", "label", "DiffSeg: mIoU", "K-Means-C: mIoU"):
            assert caption in captions
        scores = run.per_image_miou_of(ascending[0])
        assert f"K-Means-C: mIoU {scores[1]:.1f}" in captions
        page.wait_for_selector("#iou-bars img")
        _shot(page, "explore_run.png")


def test_requirement_check_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("EXPLORE_CHROMIUM", "")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert _chromium() is None
    reason = _missing()
    assert reason is not None and ("apt-get install chromium" in reason or "is not installed" in reason)
