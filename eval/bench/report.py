"""Where a benchmark report goes and how it reads: file names, the replace guard, Markdown and stdout.

A report is the dict ``eval.bench`` builds (``device``, ``versions``, ``config``, ``stages``,
``postprocessing`` and optionally ``precision`` and ``peak_gpu_memory``). It is written as a
``<stem>.json`` + ``<stem>.md`` pair. Without an explicit stem the pair is new
(:func:`new_output_stem`), so a run never overwrites earlier evidence; an explicit stem that
holds a report with rows the new one lacks is not replaced unless forced (:func:`dropped_rows`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eval.atomic import write_json_atomic, write_text_atomic
from eval.markdown import markdown_rows

__all__ = [
    "DEFAULT_OUT_DIR",
    "E2E_SUM",
    "MEASURED",
    "dropped_rows",
    "header_lines",
    "new_output_stem",
    "output_stem",
    "render_markdown",
    "render_table",
    "report_paths",
    "report_rows",
    "write_report",
]

DEFAULT_OUT_DIR = Path("outputs") / "bench"
MEASURED = "measured"
E2E_SUM = "sum of the baseline stage times (not run end to end)"
NOT_RECORDED = "not recorded (a report written before the bench recorded it)"


# --------------------------------------------------------------------------------------------- where to
def report_paths(stem: Path) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.md)``."""
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def new_output_stem(kind: str, mode: str = "", folder: Path = DEFAULT_OUT_DIR, now: datetime | None = None) -> Path:
    """A path stem whose ``.json`` and ``.md`` did not exist; the name is reserved by creating the empty ``.json``.

    ``<folder>/bench_<kind>[_<mode>]_<YYYYmmddTHHMMSSZ>`` (mode: "" for the whole benchmark,
    "postprocessing" or "precision" for a single section), with ``-1``, ``-2``, ... appended when
    that name is taken. ``folder`` (default ``outputs/bench``, git-ignored) is relative to the working
    directory.
    """
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = f"bench_{kind}{'_' + mode if mode else ''}_{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        stem = folder / (base if n == 0 else f"{base}-{n}")
        json_path, md_path = report_paths(stem)
        if not md_path.exists():
            try:
                with open(json_path, "x", encoding="utf-8"):
                    return stem
            except FileExistsError:
                pass
        n += 1


def output_stem(out: Path | None, kind: str, mode: str = "") -> Path:
    """``--out`` as a stem (a ``.json`` / ``.md`` suffix is dropped), else :func:`new_output_stem`."""
    if out is None:
        return new_output_stem(kind, mode)
    return out.with_suffix("") if out.suffix in (".json", ".md") else out


def report_rows(report: dict[str, Any]) -> list[str]:
    """Names of the measurements a report holds (stage rows, official segmentor, precision, memory)."""
    rows = [f"stage '{r['stage']}'" for r in report.get("stages", [])]
    post = report.get("postprocessing") or {}
    if post.get("official_s") is not None:
        rows.append("post-processing: official TensorFlow segmentor")
    if report.get("precision"):
        rows.append("backbone precision")
    if report.get("peak_gpu_memory"):
        rows.append("peak GPU memory")
    return rows


def dropped_rows(stem: Path, report: dict[str, Any]) -> list[str]:
    """Rows of the report already at ``<stem>.json`` that ``report`` lacks; [] when there is none."""
    path = report_paths(stem)[0]
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    new = set(report_rows(report))
    return [row for row in report_rows(old) if row not in new]


def write_report(stem: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (atomically); returns both paths."""
    json_path, md_path = report_paths(stem)
    write_json_atomic(json_path, report)
    write_text_atomic(md_path, render_markdown(report))
    return json_path, md_path


# ------------------------------------------------------------------------------------------------- output
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}" if value < 0.001 else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return f"{100 * value:.3f}%"


def _baseline_cells(row: dict[str, Any]) -> tuple[str, str, str]:
    """Baseline s/img, img/s and ratio as shown: a sum is marked "(sum)" in all three."""
    mark = " (sum)" if row.get("baseline_how") == E2E_SUM else ""
    ratio = _fmt(row["ratio"], 2) + "x" if row["ratio"] is not None else "-"
    return (_fmt(row["baseline_s_per_image"]) + (mark if row["baseline_s_per_image"] is not None else ""),
            _fmt(row["baseline_images_per_s"]) + (mark if row["baseline_images_per_s"] is not None else ""),
            ratio + (mark if row["ratio"] is not None else ""))


def _table(header: list[str], rows: list[list[str]], *align: str) -> list[str]:
    """The lines of a Markdown table (:func:`eval.markdown.markdown_rows`); ``align`` names the first
    columns' alignment, the last one repeated for the rest."""
    aligns = [*align, *[align[-1]] * (len(header) - len(align))]
    return markdown_rows(header, rows, aligns).splitlines()


def _precision_markdown(prec: dict[str, Any]) -> list[str]:
    fast = prec["fast_dtype"]
    lines = [
        "",
        f"## Backbone precision: {fast} vs float32 (same images)",
        "",
        f"- model: {prec['model']}; {prec['images']} images at {prec['image_size']} px; DiffSeg (tau "
        f"{prec.get('kl_threshold')}, anchors {prec.get('num_points')}x{prec.get('num_points')}) on the attention of "
        "each backbone precision",
    ]
    if prec["random_weights"]:
        lines.append("- RANDOM WEIGHTS: this shows how the masks react to the backbone's rounding on this model, "
                     "not what it does with Stable Diffusion's weights (`--precision-weights MODEL` measures that)")
    lines += [
        f"- fast variant: {fast} ({prec['fast_dtype_reason']})",
        f"- measure: {prec['measure']}",
        "",
    ]
    header = ["DiffSeg KL precision", "pixels changed (matched ids)", "worst image", "raw id differences",
              "segments float32", f"segments {fast}"]
    rows = [[precision, _pct(r["changed_fraction"]), _pct(r["max_image_changed_fraction"]),
             _pct(r["raw_changed_fraction"]), f"{r['segments_float32']:.1f}", f"{r['segments_fast']:.1f}"]
            for precision, r in prec["diffseg"].items()]
    lines += _table(header, rows, "---", "---:")
    times = ", ".join(f"{name} {_fmt(s)}" for name, s in prec["backbone_s_per_image"].items())
    lines += ["", f"- backbone seconds/image on this model (VAE + UNet + capture, the bench's batches): {times}"]
    if prec.get("note"):
        lines.append(f"- {prec['note']}")
    return lines


def _postprocessing_markdown(post: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Post-processing only (issue 3)",
        "",
        f"{post['what']}; input: {post['input']}; {post['segments']} segments.",
        "",
    ]
    rows = [["ours (aggregate_attention + DiffSeg float16)", _fmt(post["ours_s"]), "1.00x"],
            ["naive port (eval.bench.baselines.naive_diffseg, per image)", _fmt(post["naive_s"]),
             f"{_fmt(post['ratio_vs_naive'], 2)}x"]]
    if post["official_s"] is not None:
        ratio = f"{_fmt(post['ratio_vs_official'], 2)}x"
        rows.append(["official TensorFlow segmentor", _fmt(post["official_s"]), ratio])
    lines += _table(["implementation", "seconds/image", "ratio vs ours"], rows, "---", "---:")
    lines += ["", f"- masks identical to the naive port: {100 * post['agreement_vs_naive']:.3f}% of pixels"]
    if "agreement_vs_official" in post:
        share = 100 * post["agreement_vs_official"]
        lines.append(f"- masks identical to the official segmentor: {share:.3f}% of pixels")
    lines.append(f"- {post['official_note']}")
    return lines


def header_lines(report: dict[str, Any]) -> list[str]:
    """What produced a report (:func:`eval.bench.provenance.run_provenance`), one fact per line: the code version
    (``code.id``), the library versions, the device, the torch CPU threads and the 1-minute load average when
    the run started (and ended, when known). Every benchmark's stdout and Markdown start with these lines."""
    dev, ver = report.get("device") or {}, report.get("versions") or {}
    code = (report.get("code") or {}).get("id") or NOT_RECORDED
    name = dev.get("cpu") if dev.get("kind") == "cpu" and dev.get("cpu") else dev.get("name", NOT_RECORDED)
    device = str(name) + (f" ({dev['gpu_memory_gib']} GiB)" if dev.get("gpu_memory_gib") else "")
    threads = (f"{dev['torch_threads']} torch CPU threads" if dev.get("torch_threads") is not None
               else f"torch CPU threads {NOT_RECORDED}") + (f" of {dev['cpu_cores']} cores" if dev.get("cpu_cores")
                                                            else "")
    load = dev.get("load_average_1m")
    load_text = (f"1-minute load average {load} when the run started" if load is not None
                 else f"1-minute load average {NOT_RECORDED}")
    if dev.get("load_average_1m_end") is not None:
        load_text += f", {dev['load_average_1m_end']} when it ended"
    return [f"code: {code}",
            "versions: " + (", ".join(f"{k} {v}" for k, v in ver.items()) or NOT_RECORDED),
            f"device: {device}; {threads}; {load_text}"]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: what produced it (:func:`header_lines`), setup, the stage table, backbone
    precision, the post-processing headline, memory."""
    cfg, dev = report["config"], report["device"]
    lines = [f"# DiffSeg benchmark ({dev['kind']})", "", *(f"- {line}" for line in header_lines(report))]
    if report["stages"]:
        lines += [
            f"- model: {cfg['model']}; fast-path backbone {cfg.get('dtype', 'float32')}, baseline backbone "
            f"{cfg.get('baseline_dtype', 'float32')} (float32 = TF32 off); images: {cfg['images']} (baseline: the "
            f"first {cfg['baseline_images']}); batch size: {cfg['batch_size']}; loader workers: {cfg['workers']}; "
            f"{cfg['image_size']} px; anchors {cfg['num_points']}x{cfg['num_points']}; tau {cfg['kl_threshold']}; "
            f"K-means inits {cfg['kmeans_n_init']}",
            "- ratio = baseline s/image / fast s/image (higher = fast path faster). Every figure was measured in "
            "this run, except those marked (sum): " + E2E_SUM + ".",
            "",
        ]
        header = ["stage", "fast path", "baseline", "fast s/img", "fast img/s", "baseline s/img", "baseline img/s",
                  "ratio"]
        rows = [[r["stage"], r["fast"], r["baseline"], _fmt(r["fast_s_per_image"]), _fmt(r["fast_images_per_s"]),
                 *_baseline_cells(r)] for r in report["stages"]]
        lines += _table(header, rows, "---", "---", "---", "---:")
    notes = [f"- {r['stage']}: {r['note']}" for r in report["stages"] if r["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    if report.get("precision"):
        lines += _precision_markdown(report["precision"])
    if report.get("postprocessing"):
        lines += _postprocessing_markdown(report["postprocessing"])
    if "peak_gpu_memory" in report:
        mem = report["peak_gpu_memory"]
        lines += ["", "## Peak GPU memory (fast end to end, torch.cuda.max_memory_allocated)", ""]
        lines += [f"- {k}: {v} GiB" for k, v in mem.items()]
    return "\n".join(lines) + "\n"


def render_table(report: dict[str, Any]) -> str:
    """A plain-text table for stdout, under what produced it (:func:`header_lines`)."""
    head = (f"{'stage':<18} {'fast s/img':>11} {'fast img/s':>11} {'base s/img':>17} {'base img/s':>17} "
            f"{'ratio':>14}")
    lines = header_lines(report)
    if report["stages"]:
        lines += [head, "-" * len(head)]
    for r in report["stages"]:
        base_s, base_rate, ratio = _baseline_cells(r)
        lines.append(
            f"{r['stage']:<18} {_fmt(r['fast_s_per_image']):>11} {_fmt(r['fast_images_per_s']):>11} "
            f"{base_s:>17} {base_rate:>17} {ratio:>14}"
        )
    if any(r.get("baseline_how") == E2E_SUM for r in report["stages"]):
        lines.append(f"(sum): {E2E_SUM}")
    prec = report.get("precision")
    if prec:
        lines.append("")
        weights = " (random weights)" if prec["random_weights"] else ""
        lines.append(f"backbone {prec['fast_dtype']} vs float32, {prec['images']} images, {prec['model']}{weights}:")
        for precision, r in prec["diffseg"].items():
            lines.append(f"  DiffSeg {precision}: {_pct(r['changed_fraction'])} of mask pixels change "
                         f"(matched ids; raw ids {_pct(r['raw_changed_fraction'])})")
    post = report.get("postprocessing")
    if not post:
        return "\n".join(lines)
    lines.append("")
    lines.append(
        f"post-processing only (1 image, {'/'.join(str(x) for x in post.get('sides', (64, 32, 16, 8)))}, "
        f"float16): ours {_fmt(post['ours_s'])} s, "
        f"naive {_fmt(post['naive_s'])} s -> {_fmt(post['ratio_vs_naive'], 2)}x"
    )
    if post["official_s"] is not None:
        lines.append(f"  official TF segmentor {_fmt(post['official_s'])} s -> {_fmt(post['ratio_vs_official'], 2)}x")
    lines.append(f"  {post['official_note']}")
    return "\n".join(lines)
