"""Result tables from run JSON: ``python -m eval.tables RUN_DIR [RUN_DIR ...] --out OUT_DIR``.

Every ``metrics.json`` below the given paths (recursively, so a Hydra multirun folder
works) is read. Runs without an ablation give one main table per dataset (rows =
methods, with the paper's numbers beside ours); runs with ``run.ablation`` give one
table and one sweep figure per ablation. Markdown and CSV are written atomically,
plus a ``README.md`` index. Scores are x100 and rounded only here, when written.

Labels are derived from each run's provenance record (:mod:`eval.provenance`), never
from a flag: files made from random weights or synthetic data start with a banner; a
row produced under settings other than the paper's names each difference; a number
resting on part of a dataset says how many images (and skipped images) it rests on.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from eval.atomic import write_text_atomic
from eval.compare import load_intervals
from eval.data.classes import DATASET_TITLES
from eval.provenance import banner, images_note, method_label
from eval.stats.report import na_text

DEFAULT_PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "conf" / "paper" / "numbers.yaml"
MAIN_COLUMNS = ["ACC", "mIoU", "segments/img", "images", "paper ACC", "paper mIoU", "notes"]
PAPER_NOTE = ("Paper columns: numbers reported in the papers cited below (the DiffSeg paper, arXiv 2308.12469, "
              "for COCO-Stuff-27 and Cityscapes), quoted, never ours; empty where not confirmed.")
METRIC_NOTE = ("ACC = pixel accuracy, mIoU = mean IoU, both x100 (per-image Hungarian matching, "
               "dataset-level IoU).")


def load_paper_numbers(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Paper numbers as ``{dataset: {method: {"acc", "miou", "source"}}}`` ({} if no file)."""
    path = Path(path) if path is not None else DEFAULT_PAPER_NUMBERS
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}


def collect_runs(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Load every ``metrics.json`` found (recursively) below ``paths``.

    A path may also be a ``metrics.json`` file itself. Each returned dict is the file's
    content plus ``"_path"``, the file it came from.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("metrics.json")))
        else:
            raise FileNotFoundError(f"no such run folder or file: {p}")
    runs, seen = [], set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{f}: not valid JSON ({err})") from err
        data["_path"] = str(f)
        runs.append(data)
    return runs


def _info(run: dict[str, Any]) -> dict[str, Any]:
    """The ``run`` section of a metrics.json (empty dict if missing)."""
    return run.get("run") or {}


def _num(value: Any) -> float:
    """A metric value as float, NaN where unknown."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan


def _run_dir(run: dict[str, Any]) -> str:
    """Folder of a run's metrics.json, as given."""
    return str(Path(run.get("_path", "metrics.json")).parent)


def main_table(runs: Sequence[dict[str, Any]], dataset: str,
               paper: dict[str, Any] | None = None, compare_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Main table of ``dataset``: rows = methods of the runs without an ablation.

    Columns: ACC, mIoU, segments/img, images, paper ACC, paper mIoU (unrounded floats,
    NaN where unknown) and notes (partial data, skipped images). Row labels come from
    the run's provenance (:func:`eval.provenance.method_label`): a method run under
    settings other than the paper's names them, a random-weight run says so. A label
    found in several runs is followed by its model (and its run folder if still ambiguous).
    Where ``compare_dir`` holds an ``eval.compare`` output over a run's images, the
    columns ``ACC 95% CI`` and ``mIoU 95% CI`` give its bootstrap intervals, labelled with the
    level the compare output used (``ACC 90% CI`` after ``--confidence 0.9``); a refused
    interval reads ``n/a (3 images)``.
    """
    paper = load_paper_numbers() if paper is None else paper
    entries = []
    for run in runs:
        info = _info(run)
        if info.get("dataset") != dataset or info.get("ablation") is not None:
            continue
        for method, m in (run.get("methods") or {}).items():
            entries.append((method, method_label(method, run), str(info.get("model", "?")), _run_dir(run), m,
                            images_note(run)))
    counts: dict[Any, int] = {}
    for _, label, model, _, _, _ in entries:
        counts[label] = counts.get(label, 0) + 1
        counts[(label, model)] = counts.get((label, model), 0) + 1
    intervals = {d: load_intervals(compare_dir, d) if compare_dir is not None else {}
                 for d in {e[3] for e in entries}}
    rows, labels = [], []
    for method, label, model, run_dir, m, note in entries:
        if counts[label] > 1:
            unique_model = counts[(label, model)] == 1
            label = f"{label} ({model})" if unique_model else f"{label} ({model}, {run_dir})"
        ref = (paper.get(dataset) or {}).get(method) or {}
        labels.append(label)
        rows.append({
            "ACC": _num(m.get("acc")),
            "mIoU": _num(m.get("miou")),
            "segments/img": _num(m.get("mean_segments")),
            "images": m.get("images"),
            "paper ACC": _num(ref.get("acc")),
            "paper mIoU": _num(ref.get("miou")),
            "notes": note or "",
        })
        ci = intervals[run_dir].get(method)
        if ci is not None:
            rows[-1].update(_interval_cells(ci))
    columns = list(MAIN_COLUMNS)
    columns[2:2] = list(dict.fromkeys(k for r in rows for k in r if k.endswith(" CI")))
    df = pd.DataFrame(rows, index=pd.Index(labels, name="method"), columns=columns)
    df.attrs.update(dataset=dataset, methods=[e[0] for e in entries])
    return df


def _interval_cells(ci: dict[str, Any]) -> dict[str, str]:
    """``{"ACC 95% CI": "[42.1, 45.0]", "mIoU 95% CI": "n/a (3 images)"}``: the level is the compare output's."""
    level = f"{100 * float(ci.get('confidence', 0.95)):g}%"
    cells = {}
    for column, metric in (("ACC", "acc"), ("mIoU", "miou")):
        bounds, refused = ci.get(metric), (ci.get("refused") or {}).get(metric)
        if bounds is not None:
            cells[f"{column} {level} CI"] = f"[{bounds[0]:.1f}, {bounds[1]:.1f}]"
        elif refused is not None:
            cells[f"{column} {level} CI"] = na_text(refused)
    return cells


def _value_key(value: Any) -> tuple[int, Any]:
    """Sort key of swept values: numbers first (numerically), then strings."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _hashable(value: Any) -> Any:
    """Swept value usable as an index label (lists / dicts become their JSON text)."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _slug(text: str) -> str:
    """File-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "ablation"


def expand_method_ablations(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split runs whose methods carry ``ablation`` tags into one virtual run per value.

    A run may evaluate several variants of a method on the same attention (e.g.
    DiffSeg at five KL thresholds); each such method entry has
    ``"ablation": {"param", "value", "method"}``. They become runs with
    ``run.ablation = {param, value}`` whose methods are named by the base method,
    so :func:`ablation_tables` treats both kinds of sweep alike. Untagged methods
    stay in the original run.
    """
    out: list[dict[str, Any]] = []
    for run in runs:
        methods = run.get("methods") or {}
        tagged = {name: m for name, m in methods.items() if isinstance(m, dict) and m.get("ablation")}
        if not tagged:
            out.append(run)
            continue
        plain = {name: m for name, m in methods.items() if name not in tagged}
        if plain:
            out.append({**run, "methods": plain})
        virtual: dict[tuple[str, Any], dict[str, Any]] = {}
        for name, metrics in tagged.items():
            tag = metrics["ablation"]
            key = (str(tag["param"]), _hashable(tag.get("value")))
            if key not in virtual:
                info = {**_info(run), "ablation": {"param": tag["param"], "value": tag.get("value")}}
                virtual[key] = {**run, "run": info, "methods": {}}
            virtual[key]["methods"][str(tag.get("method", name))] = metrics
        out.extend(virtual.values())
    return out


def ablation_tables(runs: Sequence[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """One table per ablation group (runs sharing ``run.name`` and dataset).

    Keys are the swept parameter (``<param>_<dataset>`` if a parameter was swept on
    several datasets); rows = swept values, sorted; columns ``'<method> ACC'`` and
    ``'<method> mIoU'``. ``df.attrs`` holds param, dataset, name and runs (folders).
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in expand_method_ablations(runs):
        info = _info(run)
        if info.get("ablation") is None:
            continue
        groups.setdefault((str(info.get("name")), str(info.get("dataset"))), []).append(run)
    params = [str(_info(g[0])["ablation"].get("param", name)) for (name, _), g in groups.items()]
    tables: dict[str, pd.DataFrame] = {}
    for ((name, dataset), group), param in zip(groups.items(), params, strict=True):
        by_value: dict[Any, dict[str, Any]] = {}
        for run in group:
            value = _hashable(_info(run)["ablation"].get("value"))
            if value in by_value:
                warnings.warn(f"ablation {name}: value {value!r} found twice; keeping {run['_path']}",
                              stacklevel=2)
            by_value[value] = run
        methods: list[str] = []
        for run in by_value.values():
            methods += [m for m in (run.get("methods") or {}) if m not in methods]
        values = sorted(by_value, key=_value_key)
        columns = [f"{m} {metric}" for m in methods for metric in ("ACC", "mIoU")]
        data = []
        for v in values:
            ms = by_value[v].get("methods") or {}
            data.append([_num((ms.get(m) or {}).get(key)) for m in methods for key in ("acc", "miou")])
        df = pd.DataFrame(data, index=pd.Index(values, name=param, dtype=object), columns=columns)
        df.attrs.update(param=param, dataset=dataset, name=name, runs=[_run_dir(by_value[v]) for v in values],
                        banner=banner(list(by_value.values())), notes=_group_notes(by_value.values()))
        key = param if params.count(param) == 1 else f"{param}_{dataset}"
        if key in tables:
            key = f"{name}_{dataset}"
        tables[_slug(key)] = df
    return tables


def _group_notes(runs: Iterable[dict[str, Any]]) -> list[str]:
    """Distinct provenance notes of a group of runs, first-seen order."""
    notes: list[str] = []
    for run in runs:
        for note in (run.get("provenance") or {}).get("notes") or []:
            if note not in notes:
                notes.append(note)
    return notes


def _fmt(column: str, value: Any) -> str:
    """Cell text: empty if unknown, ints as ints, segments/img with 2 decimals, else 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if column == "images" or isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:.2f}" if column == "segments/img" else f"{value:.1f}"


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """String copy of ``df`` with the display rounding applied (the index as str)."""
    out = pd.DataFrame({c: [_fmt(str(c), v) for v in df[c]] for c in df.columns}, columns=df.columns)
    out.index = pd.Index([str(v) for v in df.index], name=df.index.name)
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub Markdown table of ``df`` (index as first column), values formatted for display."""
    text = format_table(df)

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row([df.index.name or ""] + [str(c) for c in df.columns]),
             row([":---"] + ["---:"] * len(df.columns))]
    lines += [row([idx, *vals]) for idx, vals in zip(text.index, text.itertuples(index=False), strict=True)]
    return "\n".join(lines) + "\n"


def csv_text(df: pd.DataFrame, banner: str | None = None) -> str:
    """CSV of ``df`` with display rounding; a banner becomes a leading ``# `` comment line."""
    buf = io.StringIO()
    if banner:
        buf.write(f"# {banner}\n")
    format_table(df).to_csv(buf)
    return buf.getvalue()


def _header(banner: str | None, title: str) -> list[str]:
    """First lines of a Markdown file: the banner (if any), then the title."""
    return ([f"**{banner}**", ""] if banner else []) + [f"# {title}", ""]


def _runs_section(run_dirs: Iterable[str], out: Path) -> list[str]:
    """Markdown list of the run folders a table was built from, relative to ``out``."""
    return ["", "Runs:", ""] + [f"- `{os.path.relpath(d, out)}`" for d in run_dirs]


def _is_main(run: dict[str, Any], dataset: str) -> bool:
    """True for a run of ``dataset`` without an ablation."""
    return _info(run).get("dataset") == dataset and _info(run).get("ablation") is None


def _write_main(runs: Sequence[dict[str, Any]], dataset: str, out: Path,
                paper: dict[str, Any]) -> tuple[list[Path], str]:
    """Write ``<dataset>.md`` / ``.csv``; returns the paths and the README index line."""
    mine = [r for r in runs if _is_main(r, dataset)]
    banner_text = banner(mine)
    df = main_table(runs, dataset, paper, compare_dir=out)
    title = DATASET_TITLES.get(dataset, dataset)
    sources = [f"- {m}: {ref.get('source', '')}" for m, ref in (paper.get(dataset) or {}).items()
               if m in df.attrs["methods"] and ref.get("acc") is not None]
    md = _header(banner_text, f"{title}: main results")
    md += [METRIC_NOTE, PAPER_NOTE, "", markdown_table(df).rstrip()]
    notes = _group_notes(mine)
    if notes:
        md += ["", "Provenance notes (from the runs' metrics.json):", "", *[f"- {n}" for n in notes]]
    if sources:
        md += ["", "Paper sources:", "", *sources]
    md += _runs_section((_run_dir(r) for r in mine), out)
    paths = [write_text_atomic(out / f"{dataset}.md", "\n".join(md) + "\n"),
             write_text_atomic(out / f"{dataset}.csv", csv_text(df, banner_text))]
    return paths, f"- [{title}]({dataset}.md) ([csv]({dataset}.csv))"


def _write_ablation(key: str, df: pd.DataFrame, out: Path) -> tuple[list[Path], str]:
    """Write ``ablation_<key>.md`` / ``.csv`` / ``.png``; returns the paths and the index line."""
    attrs = df.attrs
    banner_text = attrs.get("banner")
    dataset = DATASET_TITLES.get(attrs["dataset"], attrs["dataset"])
    title = f"Ablation: {attrs['param']} ({dataset}, {attrs['name']})"
    stem = f"ablation_{key}"
    from eval.figures import plot_sweep  # matplotlib only when a sweep is drawn

    png = plot_sweep(df, attrs["param"], out / f"{stem}.png", banner=banner_text)
    md = _header(banner_text, title) + [METRIC_NOTE, "", markdown_table(df).rstrip()]
    if attrs.get("notes"):
        md += ["", "Provenance notes (from the runs' metrics.json):", "", *[f"- {n}" for n in attrs["notes"]]]
    md += ["", f"![{title}]({png.name})"]
    md += _runs_section(attrs["runs"], out)
    paths = [write_text_atomic(out / f"{stem}.md", "\n".join(md) + "\n"),
             write_text_atomic(out / f"{stem}.csv", csv_text(df, banner_text)), png]
    return paths, f"- [{title}]({stem}.md) ([csv]({stem}.csv), [figure]({png.name}))"


def write_tables(runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
                 paper: dict[str, Any] | None = None) -> list[Path]:
    """Write every main and ablation table (Markdown + CSV), sweep figures and README.md.

    Returns the written paths (README.md last).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paper = load_paper_numbers() if paper is None else paper
    banner_text = banner(runs)
    runs = expand_method_ablations(runs)  # in-run variants go to the ablation tables
    written: list[Path] = []
    index = _header(banner_text, "Results")
    index += ["Generated by `python -m eval.tables` from run JSON; do not edit by hand.", ""]
    index += ["## Main tables", ""]

    datasets: list[str] = []
    for run in runs:
        ds = _info(run).get("dataset")
        if ds is not None and _is_main(run, ds) and ds not in datasets:
            datasets.append(ds)
    for ds in datasets:
        paths, line = _write_main(runs, ds, out, paper)
        written += paths
        index.append(line)
    if not datasets:
        index.append("- (none)")

    index += ["", "## Ablations", ""]
    tables = ablation_tables(runs)
    for key, df in tables.items():
        paths, line = _write_ablation(key, df, out)
        written += paths
        index.append(line)
    if not tables:
        index.append("- (none)")

    ours = {p.name for p in written}
    others = sorted(p.name for p in out.glob("*.png") if p.name not in ours)
    if others:
        index += ["", "## Other figures", ""] + [f"- [{name}]({name})" for name in others]
    written.append(write_text_atomic(out / "README.md", "\n".join(index) + "\n"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: collect runs, write tables; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m eval.tables", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, Hydra multirun folders or metrics.json files")
    parser.add_argument("--out", required=True, help="output folder for tables and figures")
    parser.add_argument("--paper", default=None, help="paper numbers YAML (default: conf/paper/numbers.yaml)")
    args = parser.parse_args(argv)
    runs = collect_runs(args.runs)
    if not runs:
        print(f"no metrics.json found below: {' '.join(args.runs)}", file=sys.stderr)
        return 1
    for path in write_tables(runs, args.out, load_paper_numbers(args.paper)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
