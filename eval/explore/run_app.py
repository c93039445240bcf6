"""The run page: a run's images with each method's per-image mIoU, one image with its masks, two runs' differences."""

from __future__ import annotations

import logging
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from eval.explore.render import label_picture, mask_overlay
from eval.explore.runs import ALL_CLASSES, IMAGE_COLUMN, RunError, RunFolder, compare_runs, matched_colours
from eval.stats.figures import per_class_iou_bars

__all__ = ["build_run_app", "open_runs"]

log = logging.getLogger("eval.explore")
DESCENDING = "highest first"
COMPARE_LABEL = "Per-image mIoU differences (largest drops first)"
SIDE_BY_SIDE_LABEL = "Per-image mIoU of each run's own methods (no method in common)"
ASCENDING = "lowest first"


def open_runs(paths: list[str]) -> list[RunFolder]:
    """Open one or two run folders; :class:`RunError` for a missing or unfinished one, or for three and more."""
    if not paths:
        raise RunError("no run folder given: name one (or two, to compare them)")
    if len(paths) > 2:
        raise RunError(f"{len(paths)} run folders given: the explorer shows one run, or two side by side")
    return [RunFolder.open(p) for p in paths]


def _banner(runs: list[RunFolder]) -> str:
    parts = []
    for tag, run in zip("AB", runs, strict=False):
        warnings, notes = run.banner_lines()
        head = f"Run {tag}" if len(runs) > 1 else "Run"
        text = f"**{head}** `{run.path}` ({run.dataset}, {len(run.ids)} images, masks: {run.mask_format() or 'none'})"
        if warnings:
            text += ": **" + "; ".join(warnings) + "**"
        if notes:
            text += "  \n<small>" + "; ".join(notes) + "</small>"
        parts.append(text)
    return "\n\n".join(parts)


def _segments(mask: np.ndarray) -> str:
    count = int(np.unique(mask).size)
    return f"{count} segment" if count == 1 else f"{count} segments"


def _error(message: str) -> str:
    log.error(message)
    return f"**Error:** {message}"


def _iou_picture(run: RunFolder, out_dir: Path) -> np.ndarray:
    warnings, _ = run.banner_lines()
    marks = "; ".join(w.split(":")[0] for w in warnings)
    path = per_class_iou_bars(run.class_names, run.per_class_iou(), out_dir / f"iou_{abs(hash(run.path))}.png",
                              banner=marks or None)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@dataclass(frozen=True)
class _RunPage:
    """The run page's components that the events read or write."""

    folders: gr.Textbox
    open_button: gr.Button
    banner: gr.Markdown
    status: gr.Markdown
    runs_state: gr.State
    which: gr.Radio
    class_filter: gr.Dropdown
    sort_by: gr.Radio
    order: gr.Radio
    table: gr.Dataframe
    image_id: gr.Dropdown
    image_note: gr.Markdown
    pictures: gr.Gallery
    iou: gr.Image
    compare_tab: gr.Tab
    compare_note: gr.Markdown
    compare_table: gr.Dataframe


def _lay_out_run_page(paths: list[str]) -> _RunPage:
    """Place the page's components (inside an open ``gr.Blocks``): folders on top, an images tab and an A-vs-B tab."""
    gr.Markdown("## DiffSeg explorer: runs")
    with gr.Row():
        folders = gr.Textbox(shlex.join(paths), label="Run folders (one, or two to compare)", scale=4,
                             elem_id="run-folders")
        open_button = gr.Button("Open", scale=1, elem_id="open-runs")
    banner = gr.Markdown("", elem_id="banner")
    status = gr.Markdown("", elem_id="status")
    runs_state = gr.State(None)
    with gr.Tabs():
        with gr.Tab("Images", id="images"):
            with gr.Row():
                which = gr.Radio([], label="Run", visible=False, elem_id="which-run")
                class_filter = gr.Dropdown([ALL_CLASSES], value=ALL_CLASSES, label="Only images whose label holds",
                                           elem_id="class-filter")
                sort_by = gr.Radio([IMAGE_COLUMN], value=IMAGE_COLUMN, label="Sort by (per-image mIoU)",
                                   elem_id="sort-by")
                order = gr.Radio([DESCENDING, ASCENDING], value=DESCENDING, label="Order", elem_id="order")
            table = gr.Dataframe(label="Images (click a row to open it)", interactive=False, max_height=320,
                                 elem_id="images-table")
            image_id = gr.Dropdown([], label="Image", allow_custom_value=True, elem_id="image-id")
            image_note = gr.Markdown("", elem_id="image-note")
            pictures = gr.Gallery(label="Image, label and every method's saved mask", columns=5, height="auto",
                                  format="png", elem_id="image-masks")
            iou = gr.Image(label="Per-class IoU of the run", interactive=False, format="png",
                           elem_id="iou-bars")
        with gr.Tab("A vs B", id="compare", visible=False) as compare_tab:
            compare_note = gr.Markdown("", elem_id="compare-note")
            compare_table = gr.Dataframe(label=COMPARE_LABEL,
                                         interactive=False, max_height=420, elem_id="compare-table")
    return _RunPage(folders=folders, open_button=open_button, banner=banner, status=status, runs_state=runs_state,
                    which=which, class_filter=class_filter, sort_by=sort_by, order=order, table=table,
                    image_id=image_id, image_note=image_note, pictures=pictures, iou=iou, compare_tab=compare_tab,
                    compare_note=compare_note, compare_table=compare_table)


def _current(runs: list[RunFolder] | None, tag: str | None) -> RunFolder | None:
    """The run the "Run" radio names (``tag`` "A: ..." or "B: ..."); the first one when there is no choice."""
    if not runs:
        return None
    index = 1 if (tag or "").startswith("B") and len(runs) > 1 else 0
    return runs[index]


def _wire_open(app: gr.Blocks, page: _RunPage, workdir: Path) -> None:
    """Open the named run folders on page load, on Enter in the folders box and on the Open button."""

    def load(text: str) -> tuple[Any, ...]:
        keep = gr.update()
        try:
            runs = open_runs(shlex.split(text or ""))
            comparison = compare_runs(*runs) if len(runs) == 2 else None
        except (RunError, ValueError) as exc:
            return (keep,) * 12 + (_error(str(exc)),)
        for run in runs:
            log.info("opened run %s: %s, %d images, methods %s, masks %s", run.path, run.dataset, len(run.ids),
                     ", ".join(run.methods), run.mask_format() or "not saved")
        run = runs[0]
        tags = [f"{t}: {r.name}" for t, r in zip("AB", runs, strict=False)]
        frame = run.table(None, run.methods[0], descending=True)
        ids = frame[IMAGE_COLUMN].tolist()
        compare_frame, note = comparison if comparison is not None else (pd.DataFrame(), "")
        label = (COMPARE_LABEL if "B - A" in compare_frame.columns else SIDE_BY_SIDE_LABEL)
        return (runs, _banner(runs), gr.update(choices=tags, value=tags[0], visible=len(runs) > 1),
                gr.update(choices=[ALL_CLASSES, *run.class_names], value=ALL_CLASSES),
                gr.update(choices=[IMAGE_COLUMN, *run.methods], value=run.methods[0]),
                gr.update(value=DESCENDING), frame, gr.update(choices=ids, value=None),
                _iou_picture(run, workdir), gr.update(visible=comparison is not None), note,
                gr.update(value=compare_frame, label=label), "")

    load_outputs = [page.runs_state, page.banner, page.which, page.class_filter, page.sort_by, page.order,
                    page.table, page.image_id, page.iou, page.compare_tab, page.compare_note, page.compare_table,
                    page.status]
    page.open_button.click(load, page.folders, load_outputs)
    page.folders.submit(load, page.folders, load_outputs)
    app.load(load, page.folders, load_outputs)


def _wire_table(page: _RunPage, workdir: Path) -> None:
    """The images table follows the filter, sort and run choices; a click on a row picks its image."""

    def view(runs: list[RunFolder] | None, tag: str | None, cls: str | None, key: str | None,
             direction: str | None) -> tuple[Any, Any, str]:
        run = _current(runs, tag)
        if run is None:
            return gr.update(), gr.update(), ""
        try:
            frame = run.table(cls, key, descending=direction != ASCENDING)
        except RunError as exc:
            return gr.update(), gr.update(), _error(str(exc))
        ids = frame[IMAGE_COLUMN].tolist()
        return frame, gr.update(choices=ids), ""

    for control in (page.class_filter, page.sort_by, page.order):
        control.input(view, [page.runs_state, page.which, page.class_filter, page.sort_by, page.order],
                      [page.table, page.image_id, page.status])

    def switch(runs: list[RunFolder] | None, tag: str | None) -> tuple[Any, ...]:
        run = _current(runs, tag)
        if run is None:
            return (gr.update(),) * 6
        frame = run.table(None, run.methods[0], descending=True)
        return (gr.update(choices=[ALL_CLASSES, *run.class_names], value=ALL_CLASSES),
                gr.update(choices=[IMAGE_COLUMN, *run.methods], value=run.methods[0]), frame,
                gr.update(choices=frame[IMAGE_COLUMN].tolist(), value=None), _iou_picture(run, workdir), "")

    page.which.input(switch, [page.runs_state, page.which],
                     [page.class_filter, page.sort_by, page.table, page.image_id, page.iou, page.status])

    def row_clicked(evt: gr.SelectData) -> Any:
        row = getattr(evt, "row_value", None)
        if row:
            return gr.update(value=str(row[0]))
        return gr.update()

    page.table.select(row_clicked, None, page.image_id)


def _other_run_scores(runs: list[RunFolder], run: RunFolder, image_id: str) -> str:
    """`` · B (name): method mIoU x, ...``: the other open run's methods on ``image_id`` (empty with one run)."""
    others = [(tag, r) for tag, r in zip("AB", runs, strict=False) if r is not run]
    if len(runs) < 2 or not others:
        return ""
    tag, other = others[0]
    if image_id not in other.records:
        return f" · run {tag} ({other.name}) did not evaluate this image"
    values = ", ".join(f"{m} mIoU {v:.1f}" for m, v in zip(other.methods, other.per_image_miou_of(image_id),
                                                             strict=True))
    return f" · run {tag} ({other.name}): {values}"


def _wire_image(page: _RunPage) -> None:
    """The chosen image is shown with its label and every method's saved mask, coloured by matched class."""

    def show(runs: list[RunFolder] | None, tag: str | None, chosen: str | None) -> tuple[Any, str, str]:
        run = _current(runs, tag)
        if run is None or not chosen:
            return gr.update(value=[]), "", ""
        if chosen not in run.records:
            return gr.update(), "", _error(f"image {chosen} is not among the images of {run.path}")
        scores = {m: v for m, v in zip(run.methods, run.per_image_miou_of(chosen), strict=True)}
        present = [n for n, p in zip(run.class_names, run.present_of(chosen), strict=True) if p]
        note = f"**{chosen}** · classes in the label: {', '.join(present) or 'none'}"
        note += _other_run_scores(runs, run, chosen)
        try:
            shown, label = run.image_and_label(chosen)
        except RunError as exc:
            return gr.update(value=[]), note, _error(str(exc))
        items = [(shown, "image"), (label_picture(label), "label (black: ignored)")]
        missing = []
        try:
            for method in run.methods:
                mask = run.mask(method, chosen)
                if mask is None:
                    missing.append(method)
                    continue
                coloured = matched_colours(mask, label, run.num_classes)
                items.append((mask_overlay(shown, coloured), f"{method}: mIoU {scores[method]:.1f}, "
                                                             f"{_segments(mask)}"))
        except RunError as exc:
            return gr.update(value=items), note, _error(str(exc))
        if missing:
            what = "saved no masks" if run.mask_format() is None else f"has no saved mask of {chosen} for"
            note += f" · this run {what} {', '.join(missing)}"
            if run.mask_format() is None:
                note += " (run with save_masks=true to keep them)"
        note += (f" · image and label cut as the run's {run.protocol} protocol cuts them; masks coloured by the "
                 "class the metric matched each segment to")
        log.info("%s: image %s", run.path, chosen)
        return gr.update(value=items), note, ""

    page.image_id.change(show, [page.runs_state, page.which, page.image_id],
                         [page.pictures, page.image_note, page.status])


def build_run_app(paths: list[str]) -> gr.Blocks:
    """The page over the run folders ``paths`` (one, or two to compare); more can be opened in the page."""
    workdir = Path(tempfile.mkdtemp(prefix="diffseg-explore-"))
    with gr.Blocks(title="DiffSeg explorer: runs", analytics_enabled=False) as app:
        page = _lay_out_run_page(paths)
        _wire_open(app, page, workdir)
        _wire_table(page, workdir)
        _wire_image(page)
    return app
