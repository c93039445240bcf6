"""A comparison of finished runs (:func:`compare_runs`, the library of ``python -m eval.compare``) and the
intervals a comparison gives the tables (:func:`load_intervals`).

:func:`compare_runs` reads the run folders (:mod:`eval.stats.runs`), does the statistics
(:mod:`eval.stats.analysis`) and writes ``compare.json`` with the tables and figures
(:mod:`eval.stats.report`); :mod:`eval.compare` documents the output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.data.classes import dataset_title
from eval.folder.compare_output import read_compare, write_compare
from eval.folder.layout import COMPARE_JSON as COMPARE_FILE
from eval.folder.metrics_json import read_metrics
from eval.markdown import check_out_dir
from eval.stats.analysis import analyse
from eval.stats.report import write_report
from eval.stats.runs import CompareError, class_names, comparable_ids, ids_sha256, load_run, method_groups

__all__ = ["COMPARE_FILE", "compare_runs", "load_intervals"]


def _banner(runs: list, notes: list[str]) -> str | None:
    """The bold first line when any number does not come from the real model on real data."""
    if not any(r.marks() for r in runs):
        return None
    parts = [n for n in notes if not n.startswith("no provenance record")]
    parts = parts or sorted({m for r in runs for m in r.marks()})
    return "Not a result about DiffSeg on real data: " + "; ".join(parts)


def compare_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, resamples: int = 2000,
                 seed: int = 0, intersect: bool = False, confidence: float = 0.95, *, interval: str = "bootstrap-t",
                 permutations: int | None = None, min_images: int = 30, min_class_images: int = 5) -> dict[str, Any]:
    """Compare every method of ``run_dirs``; write tables, figures and ``compare.json`` to ``out_dir``.

    Raises :class:`CompareError` for runs on different datasets or (without ``intersect``)
    different image sets, naming the differing images, and for run folders without
    ``metrics.json`` / per-image records. Returns the ``compare.json`` content plus
    ``"_seconds"``, the time of the statistics (not written: the file must not depend on the machine).
    """
    if not run_dirs:
        raise CompareError("no run folders given")
    check_out_dir(out_dir)
    runs = [load_run(d) for d in run_dirs]
    ids = comparable_ids(runs, intersect)
    seed_notes: list[str] = []
    groups = method_groups(runs, ids, seed_notes)
    num_classes = {s.num_classes for entries in groups.values() for _, _, s in entries}
    if len(num_classes) != 1:
        raise CompareError(f"the runs' per-image stats have different class counts: {sorted(num_classes)}")
    start = time.perf_counter()
    result = analyse({k: [s for _, _, s in v] for k, v in groups.items()}, resamples=resamples, seed=seed,
                     confidence=confidence, interval=interval, permutations=permutations, min_images=min_images,
                     min_class_images=min_class_images)
    seconds = time.perf_counter() - start
    notes = list(dict.fromkeys(str(n) for r in runs for n in r.provenance().get("notes") or []))
    for key, entries in groups.items():
        run, method = entries[0][0], entries[0][1]
        marks = ([f"{len(entries)} seeds"] if len(entries) > 1 else []) + run.marks()
        result["methods"][key].update(
            label=f"{key} ({', '.join(marks)})" if marks else key, method=method, run=str(run.path), marks=marks,
            full_run=all(len(r.ids) == len(ids) for r, _, _ in entries), seed_runs=[str(r.path) for r, _, _ in entries])
    dataset = runs[0].dataset
    first = next(iter(groups.values()))[0][2]
    compare = {
        **{k: result[k] for k in ("methods", "pairs", "holm", "interval", "interval_name", "confidence", "resamples",
                                  "permutations")},
        "seed": int(seed), "min_images": int(min_images), "min_class_images": int(min_class_images),
        "dataset": dataset, "classes": class_names(dataset, num_classes.pop(), *(r.meta for r in runs)),
        "images": len(ids),
        "image_ids_sha256": ids_sha256(ids),
        "class_images": first.class_images().tolist(),
        "intersect": {"used": bool(intersect) and not all(len(r.ids) == len(ids) for r in runs),
                      "requested": bool(intersect), "dropped": {str(r.path): len(r.ids) - len(ids) for r in runs}},
        "runs": [{"dir": str(r.path), "run": r.meta.get("run"), "provenance": r.provenance(), "images": len(r.ids),
                  "image_ids_sha256": ids_sha256(r.ids)} for r in runs],
        "notes": notes,
        "seed_notes": seed_notes,
    }
    out = Path(out_dir)
    stats = {k: v[0][2] for k, v in groups.items()}
    written = write_report(compare, stats, ids, out, _banner(runs, notes), dataset_title(dataset))
    compare["files"] = sorted(p.name for p in written) + [COMPARE_FILE]
    write_compare(out, compare)
    compare["_seconds"] = seconds  # not written: the file must not depend on the machine
    return compare


def load_intervals(path: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                   metrics: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Intervals of a compare output, for tables: ``{method: {"acc": (low, high) | None, "miou": ..., ...}}``.

    ``path`` is a compare output folder, a ``compare.json``, or a run folder holding one
    (``<run>/compare.json`` or ``<run>/compare/compare.json``); {} where none exists.
    Each entry also holds ``"confidence"`` (the interval level, e.g. 0.9), ``"interval"``
    (``"bootstrap-t"`` / ``"bca"`` / ``"percentile"``) and ``"refused"`` (metric -> ``{"images", "reason"}``
    where the interval was refused, its bounds then None). Without ``run_dir`` the keys are
    compare.json's method names. With ``run_dir``, only that run's single-seed methods,
    keyed by their names in its metrics.json, and only intervals over all of that run's
    images (not those of an ``--intersect`` comparison on fewer images).

    With ``run_dir``, each entry is checked against the run's current ``metrics.json``
    (``metrics``, else read from ``run_dir``): a compare output over another image set (ids
    hash or count) or with other point estimates than metrics.json (the run was extended or
    re-made since) gives ``"stale"``, a one-line reason, and no bounds.
    """
    read = read_compare(path)
    if read is None:
        return {}
    found, data = read
    target = Path(run_dir).resolve() if run_dir is not None else None
    out: dict[str, dict[str, Any]] = {}
    for key, entry in (data.get("methods") or {}).items():
        name = key
        if target is not None:
            run = entry.get("run")
            if (run is None or Path(run).resolve() != target or not entry.get("full_run", True)
                    or len(entry.get("seed_runs") or [run]) > 1):
                continue
            name = entry.get("method", key)
        item: dict[str, Any] = {"confidence": float(data.get("confidence", 0.95)),
                                "interval": data.get("interval", "percentile"), "refused": {}}
        if target is not None:
            current = _current_metrics(target, metrics)
            stale = _staleness(data, entry, target, name, current) if current is not None else None
            if stale is not None:
                out[name] = {**item, "acc": None, "miou": None, "stale": f"{found}: {stale}"}
                continue
        for metric in ("acc", "miou"):
            values = entry.get(metric) or [None] * 3
            refused = (entry.get("refused") or {}).get(metric)
            bounded = None not in values[1:3]
            item[metric] = (float(values[1]), float(values[2])) if bounded else None
            if not bounded and refused:
                item["refused"][metric] = refused
        if item["acc"] is None and item["miou"] is None and not item["refused"]:
            continue
        out[name] = item
    return out


def _current_metrics(run_dir: Path, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's metrics.json as it is now (``metrics`` if given), None when unreadable."""
    if metrics is not None:
        return metrics
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError):
        return None


def _staleness(data: dict[str, Any], entry: dict[str, Any], run_dir: Path, method: str,
               current: dict[str, Any]) -> str | None:
    """Why a compare.json ``entry`` (of ``method`` in ``run_dir``) no longer describes ``current``; None if it does.

    Compares the image set (the ids' sha256 where both record it, else the count) and the
    point estimates (ACC, mIoU) with the run's current metrics.json.
    """
    scores = (current.get("methods") or {}).get(method) or {}
    ids = current.get("image_ids")
    now = len(ids) if isinstance(ids, list) else scores.get("images")
    then_run = next((r for r in data.get("runs") or [] if Path(str(r.get("dir"))).resolve() == run_dir), {})
    then = entry.get("images", then_run.get("images", data.get("images")))
    if now is not None and then is not None and int(then) != int(now):
        return f"compared {then} images, metrics.json now has {now}; re-run eval.compare"
    digest = then_run.get("image_ids_sha256")
    if digest and isinstance(ids, list) and ids_sha256(ids) != digest:
        return f"compared another image set of {then} images than metrics.json lists; re-run eval.compare"
    for metric, title in (("acc", "ACC"), ("miou", "mIoU")):
        point, value = (entry.get(metric) or [None])[0], scores.get(metric)
        if point is not None and isinstance(value, int | float) and abs(float(point) - float(value)) > 1e-6:
            return f"{title} {float(point):.2f} in the compare output, {float(value):.2f} in metrics.json; " \
                   "re-run eval.compare"
    return None
