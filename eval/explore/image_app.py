"""The one-image page: DiffSeg's settings as controls over the kept attention of an image (Gradio)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from diffseg.preprocess import ImageDecodeError
from eval.explore.render import anchors_picture, heatmap, mark, mask_overlay
from eval.explore.session import ImageSession, Segmentation, SegmentParams, weights_from

__all__ = ["build_image_app"]

log = logging.getLogger("eval.explore")

PAPER_KL = 1.1
PAPER_POINTS = 16
PAPER_TIMESTEP = 300


def _error(message: str) -> str:
    log.error(message)
    return f"**Error:** {message}"


def _count_text(seg: Segmentation) -> str:
    first = seg.stages[0][1].shape[0]
    final = seg.stages[-1][1].shape[0]
    how = "after a backbone pass" if seg.backbone_ran else "from the kept attention"
    noun = "segment" if seg.segments == 1 else "segments"
    return (f"**{seg.segments} {noun}** ({first} proposals after the first merge, {final} after the last) "
            f"· re-segmented in {seg.seconds:.2f} s {how}")


def _step_names(seg: Segmentation) -> list[str]:
    return ["anchors"] + [name for name, _ in seg.stages]


def _step_picture(session: ImageSession, name: str, seg: Segmentation, step: int) -> tuple[np.ndarray, str]:
    shown = session.images[name].shown
    names = _step_names(seg)
    step = int(min(max(step, 0), len(names) - 1))
    if step == 0:
        return anchors_picture(shown, seg.anchors, seg.side), f"Step 0 of {len(names) - 1}: {len(seg.anchors)} anchors"
    proposals = seg.stages[step - 1][1].shape[0]
    mask = seg.stage_mask(step - 1)
    last = " (the segments)" if step == len(names) - 1 else ""
    text = (f"Step {step} of {len(names) - 1}: {names[step]}{last}: {proposals} proposals, "
            f"{int(np.unique(mask).size)} regions after NMS")
    return mask_overlay(shown, mask), text


@dataclass(frozen=True)
class _ImagePage:
    """The image page's components that the events read or write (``weights``: one slider per attention side)."""

    status: gr.Markdown
    seg_state: gr.State
    choice: gr.Dropdown
    upload: gr.Image
    kl: gr.Slider
    points: gr.Slider
    proportional: gr.Checkbox
    weights: list[gr.Slider]
    precision: gr.Radio
    refine: gr.Checkbox
    timestep: gr.Slider
    count: gr.Markdown
    overlay: gr.Image
    attention_note: gr.Markdown
    attention: gr.Gallery
    step: gr.Slider
    step_note: gr.Markdown
    step_view: gr.Image

    @property
    def controls(self) -> list[Any]:
        """The settings a re-segmentation reads, in the order :func:`_params_of` unpacks them."""
        return [self.choice, self.kl, self.points, self.proportional, *self.weights, self.precision, self.refine,
                self.timestep]


def _lay_out_image_page(session: ImageSession, banner: str | None, messages: list[str] | None,
                        kl_threshold: float, sides: tuple[int, ...]) -> _ImagePage:
    """Place the page's components (inside an open ``gr.Blocks``): settings left, segments and attention right."""
    proportional_weights = {s: s / sum(sides) for s in sides}
    max_points = min(64, max(sides)) if sides else 64
    names = list(session.images)
    gr.Markdown(f"## DiffSeg explorer: one image · backbone `{session.backbone.name}`")
    gr.Markdown(f"**{banner}**" if banner else "", elem_id="banner")
    gr.Markdown("\n\n".join(f"**Error:** {m}" for m in messages or []), elem_id="startup-errors")
    status = gr.Markdown("", elem_id="status")
    seg_state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            choice = gr.Dropdown(choices=names, value=names[0] if names else None, label="Image",
                                 elem_id="image-choice")
            upload = gr.Image(sources=["upload"], type="numpy", label="Upload an image", height=150,
                              elem_id="upload")
            kl = gr.Slider(0.05, 3.0, value=kl_threshold, step=0.05, label="KL threshold", elem_id="kl")
            points = gr.Slider(2, max_points, value=min(PAPER_POINTS, max_points), step=1,
                               label="Anchor grid M (M x M anchors)", elem_id="anchors")
            proportional = gr.Checkbox(True, label="Aggregation weights proportional to resolution (paper)",
                                       elem_id="proportional")
            weights = [gr.Slider(0.0, 1.0, value=round(proportional_weights[s], 3), step=0.01,
                                 label=f"weight of the {s} x {s} maps", interactive=False,
                                 elem_id=f"weight-{s}") for s in sides]
            precision = gr.Radio(["float16", "float32"], value="float16",
                                 label="KL precision (float16 = the official rounding)", elem_id="precision")
            refine = gr.Checkbox(False, label="K-means refinement", elem_id="refine")
            timestep = gr.Slider(1, 999, value=PAPER_TIMESTEP, step=1,
                                 label="Timestep (re-runs the backbone once per image and timestep)",
                                 elem_id="timestep")
        with gr.Column(scale=2):
            count = gr.Markdown("", elem_id="segment-count")
            overlay = gr.Image(label="Segments: click a pixel to see its attention", interactive=False,
                               type="numpy", format="png", elem_id="overlay")
        with gr.Column(scale=2):
            attention_note = gr.Markdown("Click a pixel of the segments to see its attention at each "
                                         "resolution.", elem_id="attention-note")
            attention = gr.Gallery(label="Attention of the clicked pixel", columns=4, height="auto",
                                   elem_id="attention", format="png")
            step = gr.Slider(0, 3, value=3, step=1, label="Merge step (anchors -> proposals -> segments)",
                             elem_id="merge-step")
            step_note = gr.Markdown("", elem_id="merge-note")
            step_view = gr.Image(label="Merge step", interactive=False, type="numpy", format="png",
                                 height=360, elem_id="merge-view")
    return _ImagePage(status=status, seg_state=seg_state, choice=choice, upload=upload, kl=kl, points=points,
                      proportional=proportional, weights=weights, precision=precision, refine=refine,
                      timestep=timestep, count=count, overlay=overlay, attention_note=attention_note,
                      attention=attention, step=step, step_note=step_note, step_view=step_view)


def _params_of(sides: tuple[int, ...], values: list[Any]) -> tuple[str | None, SegmentParams]:
    """The image name and :class:`SegmentParams` from the values of :attr:`_ImagePage.controls`."""
    name, kl_v, points_v, prop_v, *rest = values
    weight_values = rest[:len(sides)]
    precision_v, refine_v, timestep_v = rest[len(sides):]
    chosen = None
    if not prop_v:
        chosen = {s: float(w) for s, w in zip(sides, weight_values, strict=True)}
        if not any(w > 0 for w in chosen.values()):
            raise ValueError("every aggregation weight is 0: give at least one resolution a weight")
    return name, SegmentParams(kl_threshold=float(kl_v), num_points=int(points_v),
                               weights=weights_from(chosen), kl_precision=str(precision_v),
                               refine=bool(refine_v), timestep=int(timestep_v))


def _wire_resegment(app: gr.Blocks, session: ImageSession, page: _ImagePage, sides: tuple[int, ...]) -> None:
    """Re-segment on page load and on every change of a setting; the weight sliders follow the checkbox."""

    def resegment(*values: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        keep = gr.update()
        try:
            name, params = _params_of(sides, list(values))
            if name is None or name not in session.images:
                return keep, "", None, keep, keep, "", "Choose or upload an image."
            if not session.has_attention(name, params.timestep):
                progress(0.0, desc=f"backbone pass at t = {params.timestep}")
                log.info("backbone pass: %s at t = %d", name, params.timestep)
            seg = session.segment(name, params)
        except (ValueError, OSError, RuntimeError) as exc:
            return keep, keep, keep, keep, keep, keep, _error(str(exc))
        log.info("%s: %d segments (kl %.2f, M %d, %s, refine %s, t %d) in %.3f s", name, seg.segments,
                 params.kl_threshold, params.num_points, params.kl_precision, params.refine, params.timestep,
                 seg.seconds)
        last = len(seg.stages)
        picture, note = _step_picture(session, name, seg, last)
        return (mask_overlay(session.images[name].shown, seg.mask), _count_text(seg), seg,
                gr.update(maximum=last, value=last), picture, note, "")

    controls = page.controls
    outputs = [page.overlay, page.count, page.seg_state, page.step, page.step_view, page.step_note, page.status]
    for control in controls:
        control.change(resegment, controls, outputs, trigger_mode="always_last", concurrency_id="compute",
                       show_progress_on=page.overlay)
    app.load(resegment, controls, outputs, concurrency_id="compute", show_progress_on=page.overlay)

    def toggle(prop_v: bool) -> list[Any]:
        return [gr.update(interactive=not prop_v) for _ in sides]

    page.proportional.change(toggle, page.proportional, page.weights)


def _wire_merge_steps(session: ImageSession, page: _ImagePage) -> None:
    """The merge-step slider shows the anchors, then each merge's proposals."""

    def show_step(name: str | None, seg: Segmentation | None, index: float) -> tuple[Any, str]:
        if seg is None or name not in session.images:
            return gr.update(), ""
        return _step_picture(session, name, seg, int(index))

    page.step.change(show_step, [page.choice, page.seg_state, page.step], [page.step_view, page.step_note],
                     concurrency_id="compute", trigger_mode="always_last", show_progress_on=page.step_view)


def _wire_attention_click(session: ImageSession, page: _ImagePage) -> None:
    """A click on the segments shows the clicked pixel's attention at each resolution."""

    def clicked(name: str | None, seg: Segmentation | None, t: float, evt: gr.SelectData) -> tuple[Any, ...]:
        keep = gr.update()
        if seg is None or name not in session.images:
            return keep, keep, "Segment an image first.", keep
        x, y = (float(v) for v in evt.index[:2])
        try:
            maps = session.attention_at(name, int(t), x, y)
        except (ValueError, OSError, RuntimeError) as exc:
            return keep, keep, keep, _error(str(exc))
        size = session.output_size
        where = (x / size, y / size)
        gallery = [(heatmap(m, where=where), f"{label} (max {m.max():.3g})") for label, m in maps.items()]
        shown = mark(mask_overlay(session.images[name].shown, seg.mask), x, y)
        note = (f"Attention of pixel ({int(x)}, {int(y)}) at {len(maps)} resolutions "
                "(each map scaled to its maximum)")
        log.info("%s: attention of pixel (%d, %d)", name, int(x), int(y))
        return gallery, shown, note, ""

    page.overlay.select(clicked, [page.choice, page.seg_state, page.timestep],
                        [page.attention, page.overlay, page.attention_note, page.status],
                        concurrency_id="compute", show_progress_on=page.attention)


def _wire_upload(session: ImageSession, page: _ImagePage) -> None:
    """An uploaded image joins the session's images and is chosen."""

    def uploaded(array: np.ndarray | None) -> tuple[Any, str]:
        if array is None:
            return gr.update(), ""
        try:
            stored = session.add_array(array, name=f"upload {len(session.images) + 1}")
        except (ValueError, OSError, ImageDecodeError) as exc:
            return gr.update(), _error(f"the uploaded image cannot be used: {exc}")
        log.info("uploaded image added as %r", stored.name)
        return gr.update(choices=list(session.images), value=stored.name), ""

    page.upload.upload(uploaded, page.upload, [page.choice, page.status])


def build_image_app(session: ImageSession, banner: str | None = None, messages: list[str] | None = None,
                    kl_threshold: float = PAPER_KL) -> gr.Blocks:
    """The page over ``session``'s images (its ``images``, in order; uploads are added to them).

    ``banner``: a provenance warning shown at the top (e.g. random weights); ``messages``: errors
    found before the page opened (e.g. an unreadable ``--image``), shown in the page.
    """
    family = session.backbone.family
    sides = tuple(int(s) * session.size // int(family.native_size) for s in family.attention_sides)
    with gr.Blocks(title="DiffSeg explorer: one image", analytics_enabled=False) as app:
        page = _lay_out_image_page(session, banner, messages, kl_threshold, sides)
        _wire_resegment(app, session, page, sides)
        _wire_merge_steps(session, page)
        _wire_attention_click(session, page)
        _wire_upload(session, page)
    return app
