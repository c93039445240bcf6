"""Result tables from run JSON: ``python -m eval.tables RUN_DIR [RUN_DIR ...] --out OUT_DIR``.

Every ``metrics.json`` below the given paths (recursively, so a Hydra multirun folder
works) is read. Runs without an ablation give one main table per dataset and protocol
(rows = methods, with the published claims of the same protocol beside ours, from the
ledger ``conf/paper/numbers.yaml``, :mod:`eval.report.ledger`); rows under different protocols
never share a table. Runs with ``run.ablation`` give one table and one sweep figure per
ablation. Runs re-scored from the same masks (:mod:`eval.rescore`) give a
protocol-sensitivity table (methods x protocols, same predictions). Markdown and CSV are written atomically,
plus a ``README.md`` index. Scores are x100 and rounded only here, when written.

Labels are derived from each run's provenance record (:mod:`eval.run.provenance`), never
from a flag: Markdown files made from random weights or synthetic data start with a banner
(CSV files carry it as their first column, ``banner``); a row produced under settings
other than the paper's names each difference; a number resting on part of a dataset says
how many images (and skipped images) it rests on.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import numbers
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eval.atomic import write_text_atomic
from eval.data.classes import dataset_title
from eval.folder.layout import METRICS_JSON
from eval.folder.metrics_json import read_metrics
from eval.markdown import check_out_dir, markdown_rows, slug
from eval.report.ledger import Claim, claims_for, load_ledger, render_claims
from eval.run.provenance import banner, images_note, method_label, protocol_key
from eval.stats.comparison import load_intervals
from eval.stats.report import na_text
from eval.stats.runs import flatten, ids_sha256

MAIN_COLUMNS = ["ACC", "mIoU", "segments/img", "images", "protocol", "claims", "notes"]
PAPER_NOTE = ("Claims: numbers published by others for the same method, dataset and protocol "
              "(conf/paper/numbers.yaml), quoted, never ours, as ACC / mIoU with ours minus the claim "
              "and the claim's status (confirmed: read in the primary text; secondary: quoted from elsewhere); "
              "sources below.")
METRIC_NOTE = ("ACC = pixel accuracy, mIoU = mean IoU, both x100 (per-image Hungarian matching, "
               "dataset-level IoU).")


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
            files.extend(sorted(p.rglob(METRICS_JSON)))
        else:
            raise FileNotFoundError(f"no such run folder or file: {p}")
    runs, seen = [], set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        data = read_metrics(f)  # a FolderError (ValueError) naming the file when it is not a JSON object
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
    return str(Path(run.get("_path", METRICS_JSON)).parent)


def main_table(runs: Sequence[dict[str, Any]], dataset: str, ledger: Sequence[Claim] | None = None,
               compare_dir: str | os.PathLike | None = None, protocol: str = "diffseg") -> pd.DataFrame:
    """Main table of ``dataset`` under ``protocol``: rows = methods of the runs without an ablation.

    Only runs made under ``protocol`` (:func:`eval.run.provenance.protocol_key`) are rows.
    Columns: ACC, mIoU, segments/img, images (unrounded, NaN where unknown), protocol,
    claims (the ledger's claims for the row's method, dataset and protocol, with ours minus
    each, :func:`eval.report.ledger.render_claims`) and notes (partial data, skipped images).
    ``df.attrs["claims"]`` holds the claims of each row (dicts with ``d_acc``, ``d_miou``)
    and ``df.attrs["sources"]`` the numbered claims shown. Row labels come from
    the run's provenance (:func:`eval.run.provenance.method_label`): a method run under
    settings other than the paper's names them, a random-weight run says so. A label
    found in several runs is followed by its model, its seed where the runs differ in seed
    (``-m seed=0,1,2``), and its run folder if still ambiguous.
    Where ``compare_dir`` holds an ``eval.compare`` output over a run's images, the
    columns ``ACC 95% CI`` and ``mIoU 95% CI`` give its bootstrap intervals, labelled with the
    level the compare output used (``ACC 90% CI`` after ``--confidence 0.9``); a refused
    interval reads ``n/a (3 images)``. An interval whose compare output no longer matches the
    run's metrics.json (other image set or point estimates) reads ``n/a (stale compare output)``
    and the notes cell says why.
    """
    ledger = load_ledger() if ledger is None else ledger
    entries, metrics_of = [], {}
    for run in runs:
        info = _info(run)
        if info.get("dataset") != dataset or info.get("ablation") is not None or protocol_key(run) != protocol:
            continue
        for method, m in (run.get("methods") or {}).items():
            entries.append((method, method_label(method, run), str(info.get("model", "?")), _run_dir(run), m,
                            images_note(run), info.get("subset")))
            metrics_of[_run_dir(run)] = run
    counts: dict[Any, int] = {}
    for _, label, model, run_dir, _, _, _ in entries:
        seed = json.dumps(_seed(metrics_of[run_dir]))
        for key in (label, (label, model), (label, model, seed)):
            counts[key] = counts.get(key, 0) + 1
    intervals = {d: load_intervals(compare_dir, d, metrics=metrics_of[d]) if compare_dir is not None else {}
                 for d in {e[3] for e in entries}}
    rows, labels, row_claims, numbers = [], [], [], {}
    subsets = {e[3]: e[6] for e in entries}
    for method, label, model, run_dir, m, note, _ in entries:
        run = metrics_of[run_dir]
        if counts[label] > 1:  # the model, then the seed, then the folder tell rows of one label apart
            seed = _seed(run)
            parts = [model]
            if counts[(label, model)] > 1 and counts[(label, model, json.dumps(seed))] < counts[(label, model)]:
                parts.append(f"seed {seed}")
            if counts[(label, model, json.dumps(seed))] > 1:
                parts.append(run_dir)
            label = f"{label} ({', '.join(parts)})"
        listed = image_list_note(run)
        note = "; ".join(filter(None, [note, listed]))
        claims = [] if listed else claims_for(ledger, method, dataset, protocol, subsets[run_dir], model=model_id(run),
                            settings=recorded_settings(run, method))
        for claim in claims:
            numbers.setdefault(claim, len(numbers) + 1)
        cell, structured = render_claims(claims, _num(m.get("acc")), _num(m.get("miou")), numbers)
        cell = "not compared: non-standard image list" if listed else cell
        labels.append(label)
        row_claims.append(structured)
        rows.append({
            "ACC": _num(m.get("acc")),
            "mIoU": _num(m.get("miou")),
            "segments/img": _num(m.get("mean_segments")),
            "images": m.get("images"),
            "protocol": protocol,
            "claims": cell,
            "notes": note or "",
        })
        ci = intervals[run_dir].get(method)
        if ci is not None:
            rows[-1].update(_interval_cells(ci))
            if ci.get("stale"):
                rows[-1]["notes"] = "; ".join(filter(None, [rows[-1]["notes"], f"interval not shown: {ci['stale']}"]))
    columns = list(MAIN_COLUMNS)
    columns[2:2] = list(dict.fromkeys(k for r in rows for k in r if k.endswith(" CI")))
    df = pd.DataFrame(rows, index=pd.Index(labels, name="method"), columns=columns)
    df.attrs.update(dataset=dataset, protocol=protocol, methods=[e[0] for e in entries], claims=row_claims,
                    sources=[f"[{n}] {c.describe()}" for c, n in numbers.items()])
    return df


def image_list_note(run: dict[str, Any]) -> str | None:
    """``"non-standard image list: 4 images, sha256 0123456789ab"`` for a run on a list other than the benchmark's.

    Read from ``provenance.image_list`` (``{"standard", "name", "count", "sha256"}``); None when the
    list is the benchmark's or the run predates the record. Such a row is never set beside a claim.
    """
    listed = (run.get("provenance") or {}).get("image_list")
    if not isinstance(listed, dict) or listed.get("standard") is not False:
        return None
    return f"non-standard image list: {listed.get('count', '?')} images, sha256 {str(listed.get('sha256') or '?')[:12]}"


def _row_notes(runs: Iterable[dict[str, Any]]) -> str:
    """The notes cell of a row built from ``runs``: their distinct image-list notes."""
    return "; ".join(dict.fromkeys(n for n in map(image_list_note, runs) if n))


def _interval_cells(ci: dict[str, Any]) -> dict[str, str]:
    """``{"ACC 95% CI": "[42.1, 45.0]", "mIoU 95% CI": "n/a (3 images)"}``: the level is the compare output's."""
    level = f"{100 * float(ci.get('confidence', 0.95)):g}%"
    if ci.get("stale"):
        return {f"{column} {level} CI": "n/a (stale compare output)" for column in ("ACC", "mIoU")}
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
        if not tagged or run.get("_in_run"):  # no variants, or a virtual run made here already (idempotent)
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
                # _in_run: the tag sits in the method's own config node, beside the setting it names
                virtual[key] = {**run, "run": info, "methods": {}, "_in_run": True, "_variants": {}}
            base = str(tag.get("method", name))
            if base in virtual[key]["methods"]:
                raise ValueError(f"{_run_dir(run)}: methods {virtual[key]['_variants'][base]!r} and {name!r} are both "
                                 f"tagged {tag['param']}={tag.get('value')} of {base}; give each variant its own value")
            virtual[key]["methods"][base] = metrics
            virtual[key]["_variants"][base] = name
        out.extend(virtual.values())
    return out


_ABSENT = object()  # a method without the swept setting (e.g. K-Means in a KL-threshold sweep)
_UNRECORDED = object()  # no recorded setting names the swept parameter: the run's tag is all there is
MODEL_PARAMS = ("backbone", "model")  # sweeps over the model: rows are model ids (``run.model``)
_PARAM_SETTINGS = {"anchors": "num_points"}  # a sweep label -> the recorded setting it names
_SHARED_SECTIONS = ("model", "aggregation")  # run-wide settings of the attention pass every method reads


def _find_leaf(node: Any, key: str) -> Any:
    """The scalar at dotted ``key`` of ``node``, else of the unique leaf named ``key`` below it; else _UNRECORDED.

    A config node (dict or list) is no setting value: it counts as unrecorded.
    """
    key = _PARAM_SETTINGS.get(key, key)
    here = node
    for part in key.split("."):
        if not isinstance(here, dict) or part not in here:
            break
        here = here[part]
    else:
        return _UNRECORDED if isinstance(here, dict | list) else here
    found = []

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            for k, v in n.items():
                if k == key and not isinstance(v, dict | list):
                    found.append(v)
                walk(v)

    walk(node)
    return found[0] if len(found) == 1 else _UNRECORDED


def _method_nodes(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's recorded config node (``metrics.json["config"]["methods"]``) by its table name."""
    nodes = ((run.get("config") or {}).get("methods") or {})
    return {str(n.get("name") or k): n for k, n in nodes.items() if isinstance(n, dict)}


def recorded_settings(run: dict[str, Any], method: str) -> dict[str, Any] | None:
    """``method``'s settings by dotted key (its node's, plus ``model.*`` / ``dataset.*``); None without a config."""
    config = run.get("config") or {}
    node = _method_nodes(run).get(method)
    if node is None:
        return None
    return {**flatten({k: config.get(k) for k in ("model", "dataset") if isinstance(config.get(k), dict)}),
            **flatten(node)}


def model_id(run: dict[str, Any]) -> str:
    """The model a run used: ``run.model`` (the hub id or folder), else ``config.model.name``; ``?`` if neither."""
    return str(_info(run).get("model") or ((run.get("config") or {}).get("model") or {}).get("name") or "?")


def own_setting(run: dict[str, Any], method: str, param: str) -> Any:
    """The value of the swept ``param`` that ``method`` itself ran with, from the run's recorded config.

    A model sweep (``backbone``, ``model``) gives the model id (:func:`model_id`). Otherwise
    the method's own node first (``segmenter.kl_threshold``, ``features.timestep``; a null
    there defers to the run-wide value of the same name, e.g. DiffCut reading the shared pass),
    then the run-wide settings of the attention pass every method reads (``model``,
    ``aggregation``: DiffSeg's timestep is ``model.timestep``); a setting that other methods'
    nodes have and neither this one's nor the shared ones gives ``_ABSENT`` (K-Means in a
    KL-threshold sweep); then ``dataset``; ``_UNRECORDED`` when no recorded setting has that name.
    """
    if param in MODEL_PARAMS:
        return model_id(run)
    config = run.get("config") or {}
    nodes = _method_nodes(run)
    shared = _UNRECORDED
    for section in _SHARED_SECTIONS:
        shared = _find_leaf(config.get(section) or {}, param)
        if shared is not _UNRECORDED:
            break
    if method in nodes:
        value = _find_leaf(nodes[method], param)
        if value is not _UNRECORDED:
            return shared if value is None and shared is not _UNRECORDED else value
    if shared is not _UNRECORDED:
        return shared
    if method in nodes and any(_find_leaf(n, param) is not _UNRECORDED for name, n in nodes.items() if name != method):
        return _ABSENT
    return _find_leaf(config.get("dataset") or {}, param)


def _variant_setting(run: dict[str, Any], method: str, param: str) -> Any:
    """The value an in-run variant of ``method`` ran with: its own node's setting, else the run's tag."""
    variant = (run.get("_variants") or {}).get(method, method)
    node = _method_nodes(run).get(variant)
    value = _find_leaf(node, param) if node is not None else _UNRECORDED
    return value if value is not _UNRECORDED and value is not None else _info(run)["ablation"].get("value")


def _seed(run: dict[str, Any]) -> Any:
    """The run's ``seed`` setting (None where not recorded)."""
    return (run.get("config") or {}).get("seed")


def _sweep_cells(group: list[dict[str, Any]], param: str, name: str) -> tuple[dict[str, dict[Any, dict]], list[str]]:
    """``{method: {own value: (scores, run)}}`` of a sweep, and notes on methods it did not vary.

    Each method's numbers go to the row of the value it ran with (:func:`own_setting`; an in-run
    variant's own node, :func:`_variant_setting`), never to the row of the ``ablation`` tag; a
    method whose own value is the same in every run (or that has no such setting) was not
    varied by the sweep and is left out with a note. Two runs giving one method the same value
    are refused (ValueError naming both folders): the table cannot say which one it shows.
    """
    cells: dict[str, dict[Any, tuple[dict, dict]]] = {}
    own: dict[str, list[Any]] = {}
    collisions: list[tuple[str, Any, dict, dict]] = []
    for run in group:
        tag_value = _hashable(_info(run)["ablation"].get("value"))
        in_run = bool(run.get("_in_run"))
        for method, scores in (run.get("methods") or {}).items():
            value = _variant_setting(run, method, param) if in_run else own_setting(run, method, param)
            value = tag_value if value is _UNRECORDED else value
            own.setdefault(method, []).append(value)
            if value is _ABSENT:
                continue
            value = _hashable(value)
            if value in cells.setdefault(method, {}):
                collisions.append((method, value, cells[method][value][1], run))
                continue
            cells[method][value] = (scores, run)
    notes = []
    rows = {v for per in cells.values() for v in per}
    varied = set()
    for method, values in own.items():
        if any(v is _ABSENT for v in values):
            cells.pop(method, None)
            notes.append(f"{method}: has no {param} setting; not varied by this sweep, left out")
        elif len(group) > 1 and len(rows) > 1 and len({_hashable(v) for v in values}) == 1:
            cells.pop(method, None)
            notes.append(f"{method}: ran at {param}={values[0]} in every run of the sweep; not varied, left out")
        else:
            varied.add(method)
    for method, value, first, second in collisions:
        if method in varied:
            where = _run_dir(first) if first is second else f"{_run_dir(first)} and {_run_dir(second)}"
            raise ValueError(f"ablation {name}: {method} ran at {param}={value} in {where} "
                             f"(model {model_id(first)}); one row cannot hold both, give the tables one of them")
    return cells, notes


def ablation_tables(runs: Sequence[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """One table per ablation group (runs sharing ``run.name``, dataset, protocol, model and seed).

    Keys are the swept parameter (``<param>_<dataset>`` if a parameter was swept on
    several datasets; ``_<model>`` / ``_seed<n>`` added where one run name holds several
    models or seeds); rows = swept values, sorted (model ids in a ``backbone`` sweep); columns
    ``'<method> ACC'`` and ``'<method> mIoU'``. A method's numbers sit in the row of the value
    it ran with, read from its recorded settings (:func:`own_setting`), not from the sweep's
    ``ablation`` tag; methods the sweep did not vary are left out and named in ``df.attrs["notes"]``.
    ``df.attrs`` holds param, dataset, name, model, seed, runs (folders), banner and notes.

    Raises:
        ValueError: two runs of one group give a method the same value (:func:`_sweep_cells`).
    """
    groups: dict[tuple[str, str, str, str, Any], list[dict[str, Any]]] = {}
    for run in expand_method_ablations(runs):
        info = _info(run)
        if info.get("ablation") is None:
            continue
        param = str(info["ablation"].get("param"))
        model = "*" if param in MODEL_PARAMS else model_id(run)
        groups.setdefault((str(info.get("name")), str(info.get("dataset")), protocol_key(run), model,
                           json.dumps(_seed(run))), []).append(run)
    params = [str(_info(g[0])["ablation"].get("param", name)) for (name, *_), g in groups.items()]
    per_name: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for name, dataset, protocol, model, seed in groups:
        per_name.setdefault((name, dataset, protocol), []).append((model, seed))
    tables: dict[str, pd.DataFrame] = {}
    for ((name, dataset, protocol, model, seed), group), param in zip(groups.items(), params, strict=True):
        cells, sweep_notes = _sweep_cells(group, param, name)
        methods = list(cells)
        values = sorted({v for per in cells.values() for v in per}, key=_value_key)
        columns = [f"{m} {metric}" for m in methods for metric in ("ACC", "mIoU")]
        data = []
        for v in values:
            row = []
            for m in methods:
                scores = cells[m][v][0] if v in cells[m] else {}
                row += [_num(scores.get(key)) for key in ("acc", "miou")]
            data.append(row)
        used = []
        for v in values:
            for m in methods:
                if v in cells[m] and cells[m][v][1] not in used:
                    used.append(cells[m][v][1])
        row_notes = [_row_notes(cells[m][v][1] for m in methods if v in cells[m]) for v in values]
        if any(row_notes):
            columns.append("notes")
            data = [[*row, note] for row, note in zip(data, row_notes, strict=True)]
        label = "model" if param in MODEL_PARAMS else param
        df = pd.DataFrame(data, index=pd.Index(values, name=label, dtype=object), columns=columns)
        siblings = per_name[(name, dataset, protocol)]
        seed_value = json.loads(seed)
        df.attrs.update(param=param, dataset=dataset, name=name, protocol=protocol,
                        model=None if model == "*" else model, seed=seed_value,
                        runs=list(dict.fromkeys(_run_dir(r) for r in used)),
                        banner=banner(group), notes=_group_notes(used) + sweep_notes)
        parts = ([f"model {model}"] if len({m for m, _ in siblings}) > 1 else []) + \
            ([f"seed {seed_value}"] if len({s for _, s in siblings}) > 1 else [])
        suffix = "".join("_" + p.replace(" ", "") for p in parts)
        df.attrs["variant"] = ", ".join(parts) or None
        several = len({d for (_, d, *_), p in zip(groups, params, strict=True) if p == param}) > 1
        key = (f"{param}_{dataset}" if several else param) + suffix
        if key in tables:
            key = f"{name}_{dataset}{suffix}"
        if key in tables or protocol != "diffseg":
            key = f"{key}_{protocol}"
        tables[slug(key, 'ablation')] = df
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

    header = [df.index.name or ""] + [str(c) for c in df.columns]
    rows = [[idx, *vals] for idx, vals in zip(text.index, text.itertuples(index=False), strict=True)]
    return markdown_rows(header, rows, [":---"] + ["---:"] * len(df.columns))


def csv_text(df: pd.DataFrame, banner: str | None = None) -> str:
    """CSV of ``df`` with display rounding, plain enough for ``pandas.read_csv``.

    A banner becomes the first column, ``banner``, repeated on every row (so it stays with
    any row read alone); no comment lines.
    """
    buf = io.StringIO()
    text = format_table(df)
    if banner:
        text.insert(0, "banner", banner)
    text.to_csv(buf)
    return buf.getvalue()


def _header(banner: str | None, title: str) -> list[str]:
    """First lines of a Markdown file: the banner (if any), then the title."""
    return ([f"**{banner}**", ""] if banner else []) + [f"# {title}", ""]


def _runs_section(run_dirs: Iterable[str], out: Path) -> list[str]:
    """Markdown list of the run folders a table was built from, relative to ``out``."""
    return ["", "Runs:", ""] + [f"- `{os.path.relpath(d, out)}`" for d in run_dirs]


def _is_main(run: dict[str, Any], dataset: str, protocol: str | None = None) -> bool:
    """True for a run of ``dataset`` without an ablation (and under ``protocol``, when given)."""
    return (_info(run).get("dataset") == dataset and _info(run).get("ablation") is None
            and (protocol is None or protocol_key(run) == protocol))


def _main_stem(dataset: str, protocol: str) -> str:
    """File stem of a main table: ``<dataset>`` under DiffSeg's protocol, ``<dataset>.<protocol>`` otherwise."""
    return dataset if protocol == "diffseg" else f"{dataset}.{slug(protocol)}"


def _write_main(runs: Sequence[dict[str, Any]], dataset: str, protocol: str, out: Path,
                df: pd.DataFrame) -> tuple[list[Path], str]:
    """Write ``<stem>.md`` / ``.csv`` (:func:`_main_stem`) of ``df`` (:func:`main_table`); returns the paths
    and the README index line."""
    mine = [r for r in runs if _is_main(r, dataset, protocol)]
    banner_text = banner(mine)
    title = f"{dataset_title(dataset)} ({protocol} protocol)"
    md = _header(banner_text, f"{title}: main results")
    md += [METRIC_NOTE, PAPER_NOTE, "", markdown_table(df).rstrip()]
    notes = _group_notes(mine)
    if notes:
        md += ["", "Provenance notes (from the runs' metrics.json):", "", *[f"- {n}" for n in notes]]
    if df.attrs["sources"]:
        md += ["", "Claims (conf/paper/numbers.yaml):", "", *[f"- {line}" for line in df.attrs["sources"]]]
    md += _runs_section((_run_dir(r) for r in mine), out)
    stem = _main_stem(dataset, protocol)
    paths = [write_text_atomic(out / f"{stem}.md", "\n".join(md) + "\n"),
             write_text_atomic(out / f"{stem}.csv", csv_text(df, banner_text))]
    return paths, f"- [{title}]({stem}.md) ([csv]({stem}.csv))"


def _source_fingerprint(run: dict[str, Any]) -> str | None:
    """The fingerprint of the run whose predictions a run scored (its own, or the re-scored source's)."""
    prov = run.get("provenance") or {}
    return (prov.get("rescored") or {}).get("source_fingerprint") or prov.get("fingerprint")


def protocol_sensitivity_tables(runs: Sequence[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """Methods x protocols on the same predictions: a run and its re-scorings (:mod:`eval.rescore`).

    Groups runs by the fingerprint of the run that made the masks and by the image set scored
    (:func:`image_set`: a run extended after its re-scoring has other images than the
    re-scoring); a group with more than one protocol gives a table with rows = methods and
    columns ``'<protocol> ACC'`` / ``'<protocol> mIoU'``, the source run's protocol first.
    Keys are ``<dataset>_<fingerprint>`` (plus ``_<n>images`` where the same masks were
    scored on several image sets); runs left out for their image set are named in the notes.
    """
    groups: dict[tuple[str, tuple[int | None, str | None]], list[dict[str, Any]]] = {}
    for run in runs:
        fp = _source_fingerprint(run)
        if fp is not None and _info(run).get("ablation") is None:
            groups.setdefault((fp, image_set(run)), []).append(run)
    sets_per_fp: dict[str, int] = {}
    for fp, _ in groups:
        sets_per_fp[fp] = sets_per_fp.get(fp, 0) + 1
    tables: dict[str, pd.DataFrame] = {}
    for (fp, images), group in groups.items():
        group = sorted(group, key=lambda r: "rescored" in (r.get("provenance") or {}))  # the source first
        protocols = list(dict.fromkeys(protocol_key(r) for r in group))
        if len(protocols) < 2:
            continue
        methods = list(dict.fromkeys(m for r in group for m in (r.get("methods") or {})))
        columns = [f"{p} {k}" for p in protocols for k in ("ACC", "mIoU")]
        data = {m: dict.fromkeys(columns, math.nan) for m in methods}
        for run in group:
            for m, scores in (run.get("methods") or {}).items():
                data[m][f"{protocol_key(run)} ACC"] = _num(scores.get("acc"))
                data[m][f"{protocol_key(run)} mIoU"] = _num(scores.get("miou"))
        row_notes = [_row_notes(r for r in group if m in (r.get("methods") or {})) for m in methods]
        if any(row_notes):
            columns.append("notes")
            for m, note in zip(methods, row_notes, strict=True):
                data[m]["notes"] = note
        df = pd.DataFrame([data[m] for m in methods], index=pd.Index(methods, name="method"), columns=columns)
        dataset = str(_info(group[0]).get("dataset"))
        others = [f"{_run_dir(r)} ({image_set(r)[0]} images) left out: not the {images[0]} images of this table"
                  for (ofp, oimages), og in groups.items() if ofp == fp and oimages != images for r in og]
        df.attrs.update(dataset=dataset, fingerprint=fp, runs=[_run_dir(r) for r in group], banner=banner(group),
                        notes=_group_notes(group) + others)
        key = f"{dataset}_{fp}" if sets_per_fp[fp] == 1 else f"{dataset}_{fp}_{images[0]}images"
        tables[key if key not in tables else f"{key}_{(images[1] or '')[:8]}"] = df
    return tables


def image_set(run: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(count, sha256)`` of the images a metrics.json's numbers rest on (count only for older files)."""
    ids = run.get("image_ids")
    if isinstance(ids, list):
        return len(ids), ids_sha256(ids)
    evaluated = ((run.get("provenance") or {}).get("images") or {}).get("evaluated")
    if evaluated is None:
        counts = {m.get("images") for m in (run.get("methods") or {}).values() if isinstance(m, dict)}
        evaluated = counts.pop() if len(counts) == 1 else None
    return evaluated, None


def _write_sensitivity(key: str, df: pd.DataFrame, out: Path) -> tuple[list[Path], str]:
    """Write ``protocol_sensitivity_<key>.md`` / ``.csv``; returns the paths and the index line."""
    attrs = df.attrs
    title = (f"Protocol sensitivity: {dataset_title(attrs['dataset'])}, "
             f"predictions of run {attrs['fingerprint']}")
    stem = f"protocol_sensitivity_{slug(key)}"
    md = _header(attrs.get("banner"), title)
    md += ["The same masks scored under each protocol's rules (`python -m eval.rescore`); a column "
           "named `<scoring> scoring, <geometry> geometry` keeps the source run's crop and label sizes.", "",
           METRIC_NOTE, "", markdown_table(df).rstrip()]
    if attrs.get("notes"):
        md += ["", "Provenance notes (from the runs' metrics.json):", "", *[f"- {n}" for n in attrs["notes"]]]
    md += _runs_section(attrs["runs"], out)
    paths = [write_text_atomic(out / f"{stem}.md", "\n".join(md) + "\n"),
             write_text_atomic(out / f"{stem}.csv", csv_text(df, attrs.get("banner")))]
    return paths, f"- [{title}]({stem}.md) ([csv]({stem}.csv))"


def _write_ablation(key: str, df: pd.DataFrame, out: Path) -> tuple[list[Path], str]:
    """Write ``ablation_<key>.md`` / ``.csv`` / ``.png``; returns the paths and the index line."""
    attrs = df.attrs
    banner_text = attrs.get("banner")
    dataset = dataset_title(attrs["dataset"])
    variant = f", {attrs['variant']}" if attrs.get("variant") else ""
    title = (f"Ablation: {attrs['param']} ({dataset}, {attrs['name']}{variant}, "
             f"{attrs.get('protocol', 'diffseg')} protocol)")
    stem = f"ablation_{key}"
    from eval.report.figures import plot_sweep  # matplotlib only when a sweep is drawn

    png = plot_sweep(df, attrs["param"], out / f"{stem}.png", banner=banner_text)
    md = _header(banner_text, title) + [METRIC_NOTE, "", markdown_table(df).rstrip()]
    if attrs.get("notes"):
        md += ["", "Provenance notes (from the runs' metrics.json):", "", *[f"- {n}" for n in attrs["notes"]]]
    md += ["", f"![{title}]({png.name})"]
    md += _runs_section(attrs["runs"], out)
    paths = [write_text_atomic(out / f"{stem}.md", "\n".join(md) + "\n"),
             write_text_atomic(out / f"{stem}.csv", csv_text(df, banner_text)), png]
    return paths, f"- [{title}]({stem}.md) ([csv]({stem}.csv), [figure]({png.name}))"


MANIFEST = ".eval_tables_manifest.json"  # the files an earlier `eval.tables --out` wrote in that folder


class TablesWritten(list):
    """The paths :func:`write_tables` wrote (README.md last); ``.removed``: stale tables it deleted."""

    removed: list[Path]


def _previous_tables(out: Path) -> list[str]:
    """File names the manifest of an earlier run in ``out`` lists ([] without a readable one)."""
    try:
        names = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names or [] if isinstance(n, str) and n == Path(n).name and n != MANIFEST]


def write_tables(runs: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
                 ledger: Sequence[Claim] | None = None) -> TablesWritten:
    """Write every main, ablation and protocol-sensitivity table (Markdown + CSV), sweep figures and README.md.

    Every table is computed before anything is written, so a refused input (ValueError) leaves
    ``out_dir`` untouched. Tables an earlier call wrote in ``out_dir`` and this one did not (listed
    in its manifest, ``.eval_tables_manifest.json``) are deleted; no other file is touched.
    Returns the written paths (README.md last) with ``.removed``, the deleted ones.
    """
    out = check_out_dir(out_dir)
    ledger = load_ledger() if ledger is None else ledger
    banner_text = banner(runs)
    runs = expand_method_ablations(runs)  # in-run variants go to the ablation tables
    keys: list[tuple[str, str]] = []  # (dataset, protocol): rows under different protocols never share a table
    for run in runs:
        ds = _info(run).get("dataset")
        if ds is not None and _is_main(run, ds) and (ds, protocol_key(run)) not in keys:
            keys.append((ds, protocol_key(run)))
    mains = {key: main_table(runs, key[0], ledger, compare_dir=out, protocol=key[1]) for key in keys}
    sensitivity = protocol_sensitivity_tables(runs)
    tables = ablation_tables(runs)

    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_tables(out)
    written = TablesWritten()
    index = _header(banner_text, "Results")
    index += ["Generated by `python -m eval.tables` from run JSON; do not edit by hand.", ""]
    index += ["## Main tables", ""]
    for (ds, protocol), df in mains.items():
        paths, line = _write_main(runs, ds, protocol, out, df)
        written += paths
        index.append(line)
    if not keys:
        index.append("- (none)")
    if sensitivity:
        index += ["", "## Protocol sensitivity", ""]
        for key, df in sensitivity.items():
            paths, line = _write_sensitivity(key, df, out)
            written += paths
            index.append(line)
    index += ["", "## Ablations", ""]
    for key, df in tables.items():
        paths, line = _write_ablation(key, df, out)
        written += paths
        index.append(line)
    if not tables:
        index.append("- (none)")

    ours = {p.name for p in written} | {"README.md"}
    written.removed = []
    for name in previous:
        if name not in ours and (out / name).is_file():
            (out / name).unlink()
            written.removed.append(out / name)
    others = sorted(p.name for p in out.glob("*.png") if p.name not in ours)
    if others:
        index += ["", "## Other figures", ""] + [f"- [{name}]({name})" for name in others]
    written.append(write_text_atomic(out / MANIFEST, json.dumps({"files": sorted(ours)}, indent=1) + "\n"))
    written.append(write_text_atomic(out / "README.md", "\n".join(index) + "\n"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: collect runs, write tables; returns the exit status.

    2 with a one-line message, and nothing written, for a missing run folder, an unreadable
    metrics.json or compare.json, an ``--out`` that is a file, a bad ledger or refused sweep
    rows; 1 when no metrics.json is found.
    """
    parser = argparse.ArgumentParser(prog="python -m eval.tables", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, Hydra multirun folders or metrics.json files")
    parser.add_argument("--out", required=True, help="output folder for tables and figures")
    parser.add_argument("--ledger", default=None, help="claimed numbers YAML (default: conf/paper/numbers.yaml)")
    args = parser.parse_args(argv)
    try:
        check_out_dir(args.out)
        runs = collect_runs(args.runs)
        if not runs:
            print(f"no metrics.json found below: {' '.join(args.runs)}", file=sys.stderr)
            return 1
        ledger = load_ledger(args.ledger)
        written = write_tables(runs, args.out, ledger)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    for path in written.removed:
        print(f"removed stale table: {path}")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
