"""The files of a comparison: Markdown and CSV tables, figures and ``compare.md``.

Everything is read from the ``compare.json`` content (:func:`eval.stats.comparison.compare_runs`);
nothing is computed here but formatting. Refused intervals read ``n/a (3 images)``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.atomic import write_text_atomic
from eval.folder import layout
from eval.markdown import markdown_rows, slug
from eval.stats.analysis import INTERVAL_NAMES, ImageStats, per_image_miou

__all__ = ["EXTREMES", "fmt_interval", "fmt_p", "na_text", "slug", "table", "write_report"]

EXTREMES = 6  # worst / best images listed per method
TEST_NOTE = {
    "studentised": "studentised paired bootstrap test (the difference over its delta-method standard error, against "
                   "the resampled differences each over the standard error of its own resample; the inversion of the "
                   "bootstrap-t interval); null: equal dataset-level metric of A and B",
    "signflip": "sign-flip permutation test; null: the two methods' per-image stats are exchangeable",
}


def na_text(refused: dict[str, Any] | None) -> str:
    """``n/a (3 images)`` for a refused interval; ``n/a (19 of 27 classes rare)`` for a mIoU refused because most
    of its classes with ground truth are in fewer than --min-class-images images."""
    refused = refused or {}
    if refused.get("rare_classes") is not None:
        return f"n/a ({refused['rare_classes']} of {refused['classes']} classes rare)"
    count = int(refused.get("images", 0))
    return f"n/a ({count} image{'s' if count != 1 else ''})"


def fmt_interval(entry: Sequence[float | None] | None, signed: bool = False,
                 refused: dict[str, Any] | None = None) -> str:
    """``43.6 [42.1, 45.0]``, ``43.6 [n/a (3 images)]`` where refused (empty when the point is undefined)."""
    if entry is None or entry[0] is None:
        return ""
    point = f"{entry[0]:+.1f}" if signed else f"{entry[0]:.1f}"
    if entry[1] is None or entry[2] is None:
        return f"{point} [{na_text(refused)}]" if refused else point
    return f"{point} [{entry[1]:.1f}, {entry[2]:.1f}]"


def fmt_p(test: dict[str, Any] | None) -> str:
    """``0.0123 ± 0.0011`` (p and its Monte Carlo standard error), empty where there is no test."""
    if not test or test.get("p") is None:
        return ""
    return f"{test['p']:.4f} ± {test['mc_se']:.4f}" if test.get("mc_se") is not None else f"{test['p']:.4f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], banner: str | None = None) -> tuple[str, str]:
    """(Markdown, CSV) text of a table: first and ``run`` columns left-aligned, the others right-aligned.

    A banner becomes the CSV's first column, ``banner``, repeated on every row, so that the file
    parses with a plain ``pandas.read_csv`` and the warning stays with every row that is copied.
    """
    align = [":---"] + [":---" if h == "run" else "---:" for h in header[1:]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["banner"] if banner else []) + list(header))
    writer.writerows(([banner] if banner else []) + list(row) for row in rows)
    return markdown_rows(header, rows, align), buf.getvalue()


def _method_rows(compare: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    level = f"{100 * compare['confidence']:g}%"
    header = ["method", f"ACC [{level} CI]", f"mIoU [{level} CI]", "images", "run"]
    seeded = any(v.get("seed_spread") for v in compare["methods"].values())
    if seeded:
        header[3:3] = ["seeds", "seed SD (mIoU)", f"mIoU [{level} CI, images + seeds]"]
    rows = []
    for v in compare["methods"].values():
        refused = v.get("refused") or {}
        row = [v["label"], fmt_interval(v["acc"], refused=refused.get("acc")),
               fmt_interval(v["miou"], refused=refused.get("miou")), str(v["images"]), v["run"]]
        if seeded:
            spread = v.get("seed_spread")
            row[3:3] = ([str(spread["runs"]), f"{spread['sd']['miou']:.2f}", fmt_interval(spread["combined"]["miou"])]
                        if spread else ["1", "", ""])
        rows.append(row)
    return header, rows


def _pair_rows(compare: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["pair (A vs B)", "ΔACC (A − B)", "p (ACC)", "Holm p (ACC)", "ΔmIoU (A − B)", "p (mIoU)",
              "Holm p (mIoU)", "sign-flip p (mIoU)", "detectable ΔmIoU (80%)", "images for 1 mIoU"]
    rows = []
    for name, v in compare["pairs"].items():
        row = [name]
        for metric in ("acc", "miou"):
            test = v["test"][metric]
            holm = test.get("holm")
            mark = " *" if test.get("significant") else ""
            refused = v.get("refused") or (v.get("refused_metrics") or {}).get(metric)
            row += [fmt_interval(v[metric], True, refused), fmt_p(test),
                    ("" if holm is None else f"{holm:.4f}") + mark]
        power = v["power"]["miou"]
        row += [fmt_p((v.get("signflip") or {}).get("miou")),
                "" if power["mdd"] is None else f"{power['mdd']:.2f}",
                "" if power["images_for_1_point"] is None else str(power["images_for_1_point"])]
        rows.append(row)
    return header, rows


def _class_rows(compare: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names, methods = compare["classes"], compare["methods"]
    header = ["class", "images"] + [v["label"] for v in methods.values()] + list(compare["pairs"])
    counts = compare.get("class_images") or [""] * len(names)
    rows = []
    for c, name in enumerate(names):
        row = [name, str(counts[c])]
        for v in methods.values():
            refused = ((v.get("refused") or {}).get("iou") or {}).get(str(c))
            row.append(fmt_interval(v["iou"][c], refused=refused))
        for v in compare["pairs"].values():
            cell = v["iou"][c]
            if cell is None:
                row.append("")
                continue
            refused = v.get("refused") or ({"images": counts[c]} if cell[1] is None else None)
            row.append(fmt_interval(cell, True, refused) + (" *" if cell[5] else ""))
        rows.append(row)
    return header, rows


def _load_masks(run_path: Path, method: str, ids: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Saved masks ``masks/<method>/<id>.png`` of ``ids`` (None unless all exist)."""
    from PIL import Image

    out = {}
    for image_id in ids:
        path = layout.mask_png_path(run_path, method, image_id)
        if not path.is_file():
            return None
        with Image.open(path) as img:
            out[image_id] = np.asarray(img)
    return out


def _figures(compare: dict[str, Any], stats: dict[str, ImageStats], ids: Sequence[str], out: Path,
             banner: str | None) -> tuple[list[Path], list[str], dict[str, Any]]:
    """Per-class bars, per-image distribution and worst / best grids; returns paths, Markdown, extremes."""
    from eval.stats.figures import image_extremes, per_class_iou_bars, per_image_distribution  # matplotlib on use

    methods = compare["methods"]
    labels = {k: methods[k]["label"] for k in stats}
    short = banner if banner is None or len(banner) < 140 else banner[:137] + "..."
    iou_points = {labels[k]: [None if e is None else e[0] for e in methods[k]["iou"]] for k in stats}
    iou_ranges = {labels[k]: [None if e is None or e[1] is None else (e[1], e[2]) for e in methods[k]["iou"]]
                  for k in stats}
    written = [per_class_iou_bars(compare["classes"], iou_points, out / layout.PER_CLASS_IOU_PNG, intervals=iou_ranges,
                                  banner=short)]
    per_image = {k: per_image_miou(s) for k, s in stats.items()}
    written.append(per_image_distribution({labels[k]: v for k, v in per_image.items()}, out / layout.PER_IMAGE_MIOU_PNG,
                                          dataset_level={labels[k]: methods[k]["miou"][0] for k in stats},
                                          banner=short))
    md: list[str] = []
    extremes: dict[str, Any] = {}
    for key, values in per_image.items():
        order = [i for i in sorted(range(len(ids)), key=lambda i: (values[i], ids[i])) if np.isfinite(values[i])]
        count = min(EXTREMES, len(order) // 2) if len(order) > 1 else len(order)
        worst = [(ids[i], float(values[i])) for i in order[:count]]
        best = [(ids[i], float(values[i])) for i in order[::-1][:count]]
        masks = _load_masks(Path(methods[key]["run"]), methods[key]["method"], [i for i, _ in worst + best])
        extremes[key] = {"worst": [list(w) for w in worst], "best": [list(b) for b in best], "masks": masks is not None}
        fig = image_extremes(worst, best, out / layout.extremes_png(slug(key, 'method')),
                             title=f"{labels[key]}: per-image mIoU", masks=masks, banner=short)
        written.append(fig)
        md += [f"### {labels[key]}", "", "Worst: " + ", ".join(f"`{i}` ({v:.1f})" for i, v in worst),
               "", "Best: " + ", ".join(f"`{i}` ({v:.1f})" for i, v in best), "", f"![{labels[key]}]({fig.name})", ""]
    return written, md, extremes


def _method_note(compare: dict[str, Any], full: bool) -> str:
    """The paragraph under the title: what the points, brackets and p-values are."""
    n, level = compare["images"], f"{100 * compare['confidence']:g}%"
    kind = compare.get("interval_name") or INTERVAL_NAMES[compare["interval"]]
    return (f"Point estimates are the dataset-level scores over the {n} images (x100; ACC = pixel accuracy, "
            "mIoU = mean over classes of the IoU of the summed tp/fp/fn, per-image Hungarian matching)"
            + (", equal to each run's metrics.json. " if full else ". ")
            + f"Brackets: {level} interval over images, {kind} ({compare['resamples']} resamples, seed "
            f"{compare['seed']}); `n/a (k images)`: refused, fewer than --min-images {compare['min_images']} images "
            f"(--min-class-images {compare['min_class_images']} for a class); `n/a (k of K classes rare)`: mIoU "
            "interval and test refused, most of the mIoU's classes with ground truth are in fewer than "
            "--min-class-images images. "
            "Differences are paired (the same "
            f"resampled images for both methods). p: {TEST_NOTE['studentised']}; sign-flip p: "
            f"{TEST_NOTE['signflip']} (a different null: it also rejects equal scores with different error "
            f"profiles). Each p is given ± its Monte Carlo standard error ({compare['permutations']} draws); "
            f"Holm: adjusted over all pairs x (ACC, mIoU), * = significant at {compare['holm']['alpha']:g} after "
            "adjustment. Detectable ΔmIoU: the true difference this comparison finds with 80% power; images for "
            "1 mIoU: the images it would need for a 1-point difference (the detectable difference shrinks as "
            "1 / sqrt(images)).")


def _runs_md(runs: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Runs", ""]
    for run in runs:
        prov, info = run.get("provenance") or {}, run.get("run") or {}
        line = f"- `{run['dir']}`: {info.get('dataset', '?')}, model {info.get('model', '?')}, {run['images']} images"
        if prov.get("fingerprint"):
            line += f", fingerprint `{prov['fingerprint']}`"
        if prov.get("notes"):
            line += "; " + "; ".join(map(str, prov["notes"]))
        lines.append(line)
    return lines


def write_report(compare: dict[str, Any], stats: dict[str, ImageStats], ids: Sequence[str], out: Path,
                 banner: str | None, title: str) -> list[Path]:
    """Write compare.md, the CSV tables and the figures; adds ``extremes`` to ``compare``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    methods_md, methods_csv = table(*_method_rows(compare), banner=banner)
    pairs_md, pairs_csv = table(*_pair_rows(compare), banner=banner)
    class_md, class_csv = table(*_class_rows(compare), banner=banner)
    written, extremes_md, compare["extremes"] = _figures(compare, stats, ids, out, banner)
    # a seeded method's point is the mean over its seed runs, not any one run's metrics.json
    full = all(v.get("full_run", True) and not v.get("seed_spread") for v in compare["methods"].values())
    md = ([f"**{banner}**", ""] if banner else []) + [f"# Method comparison: {title}", ""]
    if compare["intersect"]["used"]:
        dropped = ", ".join(f"{n} from `{d}`" for d, n in compare["intersect"]["dropped"].items() if n)
        md += [f"**Compared on the {len(ids)} images common to all runs (--intersect); dropped: {dropped}.** "
               "These numbers are not the runs' metrics.json numbers.", ""]
    md += [_method_note(compare, full), "", "## Methods", "", methods_md.rstrip(), ""]
    if any(v.get("seed_spread") for v in compare["methods"].values()):
        md += ["Seeds: runs whose settings differ only in seeds are one method; its point is the mean over seeds, "
               "`seed SD` the standard deviation of the per-seed scores, the first interval resamples images only, "
               "the last adds the seed variance (Student t, Welch-Satterthwaite degrees of freedom).", ""]
        md += ["The per-image figures and the worst and best images show each seeded method's first seed run.", ""]
    if compare.get("seed_notes"):
        md += ["Not seed replicates (the same settings of the method in several seed folders):", "",
               *[f"- {n}" for n in compare["seed_notes"]], ""]
    if compare["pairs"]:
        md += ["## Paired differences", "", pairs_md.rstrip(), ""]
    md += ["## Per-class IoU", "", "Per-class IoU of each method and per-class differences of each pair "
           "(* = significant after Holm over all pairs x classes); `images`: images whose ground truth holds "
           "the class.", "", class_md.rstrip(), "", "![per-class IoU](per_class_iou.png)", "",
           "## Per-image mIoU", "",
           "Distribution of the per-image mIoU (mean IoU over the classes present in each image); a figure "
           "aid only, the reported mIoU is dataset level (marked).", "", "![per-image mIoU](per_image_miou.png)",
           "", "## Worst and best images", "", "By per-image mIoU (ties by id).", "", *extremes_md,
           *_runs_md(compare["runs"])]
    written += [write_text_atomic(out / layout.COMPARE_MD, "\n".join(md) + "\n"),
                write_text_atomic(out / layout.METHODS_CSV, methods_csv),
                write_text_atomic(out / layout.PER_CLASS_IOU_CSV, class_csv)]
    if compare["pairs"]:
        written.append(write_text_atomic(out / layout.PAIRS_CSV, pairs_csv))
    return written
