"""Compare methods with confidence intervals: ``python -m eval.compare RUN_DIR... --out DIR``.

Every run folder keeps the matching stats (tp, fp, fn per class, valid pixels) of every
method on every image (``per_image.jsonl``). From them this module computes, for every
method of the given runs:

* the dataset-level ACC and mIoU (exactly the numbers of ``metrics.json``: the same sums,
  the same :func:`eval.metrics.scores`) with a percentile bootstrap interval: images are
  resampled with replacement, their stats re-accumulated, and the dataset-level scores
  recomputed (mIoU is never a mean of per-image IoUs);
* for every pair of methods, the paired bootstrap interval of the difference (the same
  resampled images for both) and a two-sided sign-flip permutation p-value: each image's
  stats of the two methods are swapped at random, the dataset-level difference recomputed,
  and ``p = (1 + #{|d_perm| >= |d_obs|}) / (R + 1)``.

The bootstrap is vectorised over resamples: per-image stats are an ``(images, columns)``
matrix, each resample is a row of image counts, and one matrix product gives every
resample's sums (float64 products of integers below 2**53 are exact).

Runs are combined only when they share the dataset and the evaluated image set; with
``intersect=True`` they are compared on their common images, and the output says so.
Each run's provenance (random weights, synthetic data, partial data) is copied into the
output and marks the method labels.

Output folder: ``compare.json``, ``compare.md`` (all tables, worst / best image ids,
figures), ``methods.csv``, ``pairs.csv``, ``per_class_iou.csv``, ``per_class_iou.png``,
``per_image_miou.png`` and ``extremes_<method>.png`` (plus ``masks_<method>.png`` when the
run saved masks).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from eval.atomic import write_json_atomic, write_text_atomic
from eval.data.classes import DATASET_CLASSES, DATASET_TITLES
from eval.metrics import scores
from eval.records import load_run_records

__all__ = [
    "COMPARE_FILE",
    "CompareError",
    "ImageStats",
    "analyse",
    "batch_scores",
    "compare_runs",
    "load_intervals",
    "main",
    "per_image_miou",
]

COMPARE_FILE = "compare.json"
METRICS_FILE = "metrics.json"
EXTREMES = 6  # worst / best images listed per method
_EXACT_LIMIT = 2**53  # float64 holds every integer below this exactly
_CHUNK_ELEMENTS = 1 << 23  # resample rows are drawn in blocks of about this many counts (64 MiB of float64)


class CompareError(ValueError):
    """Runs that cannot be compared (different datasets or images, missing files)."""


@dataclass(frozen=True)
class ImageStats:
    """Per-image matching stats of one method over N images and C classes.

    ``tp``, ``fp``, ``fn``: int64 (N, C); ``valid``: int64 (N,) valid-pixel counts.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        shape = np.shape(self.tp)
        if len(shape) != 2 or np.shape(self.fp) != shape or np.shape(self.fn) != shape:
            raise ValueError(f"tp, fp, fn must share one (images, classes) shape, got {shape}, "
                             f"{np.shape(self.fp)}, {np.shape(self.fn)}")
        if np.shape(self.valid) != shape[:1]:
            raise ValueError(f"valid must have shape ({shape[0]},), got {np.shape(self.valid)}")

    @property
    def num_images(self) -> int:
        return int(np.shape(self.tp)[0])

    @property
    def num_classes(self) -> int:
        return int(np.shape(self.tp)[1])

    def matrix(self) -> np.ndarray:
        """int64 (N, 3C + 1): the columns tp | fp | fn | valid."""
        return np.concatenate([self.tp, self.fp, self.fn, np.asarray(self.valid)[:, None]], axis=1).astype(np.int64)

    def totals(self) -> dict[str, Any]:
        """Dataset-level :func:`eval.metrics.scores` of the summed stats (as ``metrics.json``)."""
        return scores(self.tp.sum(0), self.fp.sum(0), self.fn.sum(0), int(np.sum(self.valid)))


def batch_scores(sums: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dataset-level scores of many stat sums at once (x100, NaN where undefined).

    Args:
        sums: (..., 3C + 1) columns tp | fp | fn | valid, as :meth:`ImageStats.matrix`.
        num_classes: C.

    Returns:
        ``(acc (...), miou (...), iou (..., C))``; an IoU is NaN for a class with
        ``tp + fp + fn == 0``, and mIoU averages the other classes.
    """
    c = num_classes
    tp, fp, fn, valid = sums[..., :c], sums[..., c:2 * c], sums[..., 2 * c:3 * c], sums[..., 3 * c]
    union = tp + fp + fn
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, 100.0 * tp / np.where(present, union, 1), np.nan)
        acc = np.where(valid > 0, 100.0 * tp.sum(-1) / np.where(valid > 0, valid, 1), np.nan)
        count = present.sum(-1)
        miou = np.where(count > 0, np.where(present, iou, 0.0).sum(-1) / np.maximum(count, 1), np.nan)
    return acc, miou, iou


def per_image_miou(stats: ImageStats) -> np.ndarray:
    """(N,) per-image mIoU: mean IoU over the classes with ``tp + fp + fn > 0`` in that image.

    For figures and worst / best lists only; the reported mIoU is dataset level.
    """
    return batch_scores(stats.matrix(), stats.num_classes)[1]


def _exact_product(weights: np.ndarray, matrix: np.ndarray, bound: int) -> np.ndarray:
    """``weights @ matrix`` for non-negative integer-valued arrays, exactly.

    ``bound`` is an upper bound of every partial sum; below 2**53 the float64 BLAS
    product is exact, otherwise an int64 product is used.
    """
    if bound < _EXACT_LIMIT:
        return weights @ matrix.astype(np.float64)
    return weights.astype(np.int64) @ matrix.astype(np.int64)


def _chunks(resamples: int, images: int) -> list[int]:
    """Row counts of the blocks the ``resamples`` rows are drawn in (bounded memory)."""
    step = max(1, _CHUNK_ELEMENTS // max(images, 1))
    return [min(step, resamples - start) for start in range(0, resamples, step)]


def _bootstrap_sums(matrix: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, K) sums of ``matrix`` (N, K) over R bootstrap resamples of its rows.

    Each resample draws N row indices with replacement; its count vector (how often
    each row was drawn) times the matrix gives the resample's sums.
    """
    n = matrix.shape[0]
    bound = n * int(np.abs(matrix).max(initial=0))  # resample counts sum to n
    out = []
    for rows in _chunks(resamples, n):
        idx = rng.integers(0, n, size=(rows, n))
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        out.append(_exact_product(counts, matrix, bound))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, matrix.shape[1]), np.int64)


def _flip_sums(matrix: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R, K) sums of ``matrix`` (N, K) over random halves: each row kept with probability 1/2."""
    n = matrix.shape[0]
    bound = n * int(np.abs(matrix).max(initial=0))
    out = []
    for rows in _chunks(resamples, n):
        signs = rng.integers(0, 2, size=(rows, n)).astype(np.float64)
        out.append(_exact_product(signs, matrix, bound))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, matrix.shape[1]), np.int64)


def _interval(dist: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite values of ``dist`` (None if there are none)."""
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return None, None
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(finite, [alpha, 100.0 - alpha])
    return float(low), float(high)


def _p_value(perm: np.ndarray, observed: float) -> float | None:
    """Two-sided permutation p-value with the +1 correction (None if undefined)."""
    if not math.isfinite(observed):
        return None
    tol = 1e-9 * max(1.0, abs(observed))
    extreme = np.count_nonzero(np.abs(np.nan_to_num(perm, nan=0.0)) >= abs(observed) - tol)
    return float((1 + extreme) / (perm.size + 1))


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def analyse(methods: dict[str, ImageStats], resamples: int = 2000, seed: int = 0,
            confidence: float = 0.95) -> dict[str, Any]:
    """Bootstrap intervals, paired differences and sign-flip p-values of methods on the same images.

    Args:
        methods: name -> per-image stats; all on the same N images (same row order) and C classes.
        resamples: R, the number of bootstrap resamples and of sign-flip permutations.
        seed: seeds the numpy generators (bootstrap and permutations get independent streams).
        confidence: interval coverage (0.95: the 2.5th and 97.5th percentiles).

    Returns:
        ``{"methods": {name: {"acc": [point, low, high], "miou": [...], "iou": [[point, low, high]
        or None per class], "images": N}}, "pairs": {"A vs B": {"acc": [A - B, low, high, p],
        "miou": [...]}}}``; points are :func:`eval.metrics.scores` of the full sums.
    """
    if not methods:
        raise ValueError("analyse: no methods given")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    names = list(methods)
    first = methods[names[0]]
    n, c = first.num_images, first.num_classes
    for name, stats in methods.items():
        if (stats.num_images, stats.num_classes) != (n, c):
            raise ValueError(f"method {name}: {stats.num_images} images x {stats.num_classes} classes, "
                             f"expected {n} x {c}")
    if n == 0:
        raise ValueError("analyse: no images")
    k = 3 * c + 1
    matrix = np.concatenate([methods[m].matrix() for m in names], axis=1)  # (N, M*K)
    boot_seq, flip_seq = np.random.SeedSequence(seed).spawn(2)
    boot = _bootstrap_sums(matrix, resamples, np.random.default_rng(boot_seq)).reshape(resamples, len(names), k)
    acc_d, miou_d, iou_d = batch_scores(boot, c)  # (R, M), (R, M), (R, M, C)

    out_methods: dict[str, Any] = {}
    points: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        point = points[name] = methods[name].totals()
        iou_rows = []
        for cls in range(c):
            value = point["iou"][cls]
            iou_rows.append(None if value is None else [value, *_interval(iou_d[:, j, cls], confidence)])
        out_methods[name] = {
            "acc": [point["acc"], *_interval(acc_d[:, j], confidence)],
            "miou": [point["miou"], *_interval(miou_d[:, j], confidence)],
            "iou": iou_rows,
            "images": n,
        }

    pairs: dict[str, Any] = {}
    if len(names) > 1:
        totals = matrix.sum(0).reshape(len(names), k)
        flips = _flip_sums(matrix, resamples, np.random.default_rng(flip_seq)).reshape(resamples, len(names), k)
        for a, b in combinations(range(len(names)), 2):
            # swapping image i's stats moves (B_i - A_i) from B's sums to A's
            moved = flips[:, b] - flips[:, a]
            acc_a, miou_a, _ = batch_scores(totals[a] + moved, c)
            acc_b, miou_b, _ = batch_scores(totals[b] - moved, c)
            entry = {}
            for metric, dist, perm in (("acc", acc_d, acc_a - acc_b), ("miou", miou_d, miou_a - miou_b)):
                observed = _diff(points[names[a]][metric], points[names[b]][metric])
                low, high = _interval(dist[:, a] - dist[:, b], confidence)
                entry[metric] = [observed, low, high, _p_value(perm, observed if observed is not None else math.nan)]
            pairs[f"{names[a]} vs {names[b]}"] = entry
    return {"methods": out_methods, "pairs": pairs}


# --------------------------------------------------------------------------- run folders


@dataclass
class _Run:
    """One run folder: its metrics.json, its non-skipped records and its provenance."""

    path: Path
    meta: dict[str, Any]
    records: dict[str, dict[str, Any]]

    @property
    def dataset(self) -> str:
        return str((self.meta.get("run") or {}).get("dataset", "?"))

    @property
    def ids(self) -> set[str]:
        return set(self.records)

    def method_names(self) -> list[str]:
        """Methods in metrics.json order, then any others found in the records."""
        names = [m for m, v in (self.meta.get("methods") or {}).items() if (v or {}).get("images", 1)]
        for record in self.records.values():
            names += [m for m in record["methods"] if m not in names]
        return names

    def stats(self, method: str, ids: Sequence[str]) -> ImageStats:
        """Per-image stats of ``method`` on ``ids`` (in that order)."""
        rows = []
        for image_id in ids:
            s = self.records[image_id]["methods"].get(method)
            if s is None:
                raise CompareError(f"{self.path}: image {image_id} has no stats for method {method!r} "
                                   "(the per-image records are incomplete; re-run the evaluation in this folder)")
            rows.append(s)
        try:
            tp = np.asarray([s["tp"] for s in rows], dtype=np.int64).reshape(len(rows), -1)
            fp = np.asarray([s["fp"] for s in rows], dtype=np.int64).reshape(len(rows), -1)
            fn = np.asarray([s["fn"] for s in rows], dtype=np.int64).reshape(len(rows), -1)
            valid = np.asarray([s["valid"] for s in rows], dtype=np.int64)
            return ImageStats(tp, fp, fn, valid)
        except (KeyError, TypeError, ValueError) as exc:
            raise CompareError(f"{self.path}: malformed per-image stats of method {method!r}: {exc}") from exc

    def provenance(self) -> dict[str, Any]:
        """The run's provenance record; for an older metrics.json one derived from ``run.demo``."""
        prov = self.meta.get("provenance")
        if isinstance(prov, dict):
            return prov
        demo = bool((self.meta.get("run") or {}).get("demo"))
        notes = ["random-weight backbone", "synthetic data"] if demo else []
        return {"fingerprint": None, "random_weights": demo, "synthetic_data": demo, "partial": None,
                "notes": notes + ["no provenance record in metrics.json (older run); derived from run.demo"]}

    def marks(self) -> list[str]:
        """Short marks for method labels: random weights, synthetic data, partial."""
        prov = self.provenance()
        marks = []
        if prov.get("random_weights"):
            marks.append("random weights")
        if prov.get("synthetic_data"):
            marks.append("synthetic data")
        if prov.get("partial"):
            marks.append("partial")
        return marks


def _load_run(path: str | os.PathLike) -> _Run:
    path = Path(path)
    meta_path = path / METRICS_FILE
    if not meta_path.is_file():
        raise CompareError(f"{meta_path} not found: give finished run folders (each with metrics.json and "
                           "per_image.jsonl), e.g. outputs/coco_stuff27")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CompareError(f"{meta_path}: not valid JSON ({exc})") from exc
    records = {i: r for i, r in load_run_records(path).items() if isinstance(r.get("methods"), dict)}
    if not records:
        raise CompareError(f"{path}: no per-image records (per_image.jsonl); this run cannot be compared")
    return _Run(path, meta, records)


def _first(ids: Sequence[str], count: int = 5) -> str:
    shown = ", ".join(ids[:count])
    return shown + (", ..." if len(ids) > count else "")


def _check_comparable(runs: list[_Run], intersect: bool) -> list[str]:
    """The sorted image ids to compare on; raises :class:`CompareError` where runs differ."""
    datasets = {r.dataset for r in runs}
    if len(datasets) > 1:
        listing = ", ".join(f"{r.path} ({r.dataset})" for r in runs)
        raise CompareError(f"runs on different datasets cannot be compared: {listing}")
    common = set.intersection(*(r.ids for r in runs))
    if not intersect:
        ref = runs[0]
        problems = []
        for run in runs[1:]:
            only_ref = sorted(ref.ids - run.ids)
            only_run = sorted(run.ids - ref.ids)
            if only_ref or only_run:
                problems.append(f"{len(only_ref)} image(s) only in {ref.path} ({_first(only_ref)}) and "
                                f"{len(only_run)} only in {run.path} ({_first(only_run)})")
        if problems:
            raise CompareError("runs evaluated different images: " + "; ".join(problems)
                               + f". Use --intersect to compare on the {len(common)} common images.")
    if not common:
        raise CompareError("the runs have no evaluated image in common")
    return sorted(common)


def _unique_names(runs: list[_Run]) -> list[list[tuple[str, str]]]:
    """Per run, ``(method, key)`` pairs; a method found in several runs gets its run folder's name."""
    counts: dict[str, int] = {}
    for run in runs:
        for m in run.method_names():
            counts[m] = counts.get(m, 0) + 1
    out, taken = [], set()
    for i, run in enumerate(runs):
        pairs = []
        for m in run.method_names():
            key = m if counts[m] == 1 else f"{m} [{run.path.name}]"
            if key in taken:
                key = f"{m} [{run.path.name} #{i + 1}]"
            taken.add(key)
            pairs.append((m, key))
        out.append(pairs)
    return out


def _check_against_metrics(run: _Run, method: str, stats: ImageStats) -> None:
    """Raise if ``metrics.json``'s sums of ``method`` differ from its per-image records."""
    saved = (run.meta.get("methods") or {}).get(method)
    if not saved or "tp" not in saved:
        return
    for field, ours in (("tp", stats.tp.sum(0)), ("fp", stats.fp.sum(0)), ("fn", stats.fn.sum(0))):
        if list(map(int, saved[field])) != ours.tolist():
            raise CompareError(f"{run.path}: metrics.json {field} of {method!r} differs from the sums of the "
                               "per-image records; re-create metrics.json from the records (re-run the "
                               "evaluation in this folder, or eval.merge for shards)")
    if int(saved.get("valid", stats.valid.sum())) != int(stats.valid.sum()):
        raise CompareError(f"{run.path}: metrics.json valid of {method!r} differs from the per-image records")


def _class_names(dataset: str, num_classes: int) -> list[str]:
    names = DATASET_CLASSES.get(dataset)
    if names is not None and len(names) == num_classes:
        return list(names)
    return [f"class {i}" for i in range(num_classes)]


def _fmt_interval(entry: Sequence[float | None] | None, signed: bool = False) -> str:
    """``43.6 [42.1, 45.0]`` (empty when the point is undefined)."""
    if entry is None or entry[0] is None:
        return ""
    point = f"{entry[0]:+.1f}" if signed else f"{entry[0]:.1f}"
    if entry[1] is None or entry[2] is None:
        return point
    return f"{point} [{entry[1]:.1f}, {entry[2]:.1f}]"


def _fmt_p(p: float | None) -> str:
    return "" if p is None else f"{p:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> tuple[str, str]:
    """(Markdown, CSV) text of a table: first and ``run`` columns left-aligned, the others right-aligned."""
    def md_row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    align = [":---"] + [":---" if h == "run" else "---:" for h in header[1:]]
    md = [md_row(header), md_row(align)] + [md_row(r) for r in rows]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return "\n".join(md) + "\n", buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "method"


def _load_masks(run: _Run, method: str, ids: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Saved masks ``masks/<method>/<id>.png`` of ``ids`` (None unless all exist)."""
    from PIL import Image

    folder = run.path / "masks" / method.replace("/", "_")
    out = {}
    for image_id in ids:
        path = folder / f"{image_id.replace('/', '_')}.png"
        if not path.is_file():
            return None
        with Image.open(path) as img:
            out[image_id] = np.asarray(img)
    return out


def compare_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, resamples: int = 2000,
                 seed: int = 0, intersect: bool = False, confidence: float = 0.95) -> dict[str, Any]:
    """Compare every method of ``run_dirs``; write tables, figures and ``compare.json`` to ``out_dir``.

    Raises :class:`CompareError` for runs on different datasets or (without ``intersect``)
    different image sets, naming the differing images, and for run folders without
    ``metrics.json`` / per-image records. Returns the ``compare.json`` content plus
    ``"_seconds"``, the time of the bootstrap and permutations (not written: the file must
    not depend on the machine).
    """
    from eval.figures import image_extremes, per_class_iou_bars, per_image_distribution

    if not run_dirs:
        raise CompareError("no run folders given")
    runs = [_load_run(d) for d in run_dirs]
    ids = _check_comparable(runs, intersect)
    full = all(len(r.ids) == len(ids) for r in runs)
    names = _unique_names(runs)
    stats: dict[str, ImageStats] = {}
    origin: dict[str, tuple[_Run, str]] = {}
    for run, pairs in zip(runs, names, strict=True):
        for method, key in pairs:
            s = run.stats(method, ids)
            if len(run.ids) == len(ids):
                _check_against_metrics(run, method, s)
            stats[key] = s
            origin[key] = (run, method)
    num_classes = {s.num_classes for s in stats.values()}
    if len(num_classes) != 1:
        raise CompareError(f"the runs' per-image stats have different class counts: {sorted(num_classes)}")
    num_classes_value = num_classes.pop()
    start = time.perf_counter()
    result = analyse(stats, resamples=resamples, seed=seed, confidence=confidence)
    seconds = time.perf_counter() - start

    dataset = runs[0].dataset
    class_names = _class_names(dataset, num_classes_value)
    labels = {}
    for key, (run, method) in origin.items():
        marks = run.marks()
        labels[key] = f"{key} ({', '.join(marks)})" if marks else key
        entry = result["methods"][key]
        entry.update(label=labels[key], method=method, run=str(run.path), marks=marks,
                     full_run=len(run.ids) == len(ids))
    notes: list[str] = []
    for run in runs:
        for note in run.provenance().get("notes") or []:
            if note not in notes:
                notes.append(str(note))
    compare = {
        "methods": result["methods"],
        "pairs": result["pairs"],
        "resamples": int(resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "dataset": dataset,
        "classes": class_names,
        "images": len(ids),
        "intersect": {
            "used": bool(intersect) and not full,
            "requested": bool(intersect),
            "dropped": {str(r.path): len(r.ids) - len(ids) for r in runs},
        },
        "runs": [{"dir": str(r.path), "run": r.meta.get("run"), "provenance": r.provenance()} for r in runs],
        "notes": notes,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    banner = None
    if any(r.marks() for r in runs):
        parts = [n for n in notes if not n.startswith("no provenance record")]
        parts = parts or sorted({m for r in runs for m in r.marks()})
        banner = "Not a result about DiffSeg on real data: " + "; ".join(parts)
    figure_banner = banner if banner is None or len(banner) < 140 else banner[:137] + "..."

    # tables
    method_rows = [[labels[k], _fmt_interval(v["acc"]), _fmt_interval(v["miou"]), str(v["images"]),
                    str(origin[k][0].path)] for k, v in result["methods"].items()]
    conf_pct = f"{100 * confidence:g}%"
    methods_md, methods_csv = _table(
        ["method", f"ACC [{conf_pct} CI]", f"mIoU [{conf_pct} CI]", "images", "run"], method_rows)
    pair_rows = [[name, _fmt_interval(v["acc"], True), _fmt_p(v["acc"][3]), _fmt_interval(v["miou"], True),
                  _fmt_p(v["miou"][3])] for name, v in result["pairs"].items()]
    pairs_md, pairs_csv = _table(["pair (A vs B)", "ΔACC (A − B)", "p (ACC)", "ΔmIoU (A − B)", "p (mIoU)"],
                                 pair_rows)
    class_rows = [[class_names[c]] + [_fmt_interval(result["methods"][k]["iou"][c]) for k in stats]
                  for c in range(num_classes_value)]
    class_md, class_csv = _table(["class"] + [labels[k] for k in stats], class_rows)

    # figures
    written = []
    iou_points = {labels[k]: [None if e is None else e[0] for e in result["methods"][k]["iou"]] for k in stats}
    iou_ranges = {labels[k]: [None if e is None or e[1] is None else (e[1], e[2])
                              for e in result["methods"][k]["iou"]] for k in stats}
    written.append(per_class_iou_bars(class_names, iou_points, out / "per_class_iou.png", intervals=iou_ranges,
                                      banner=figure_banner))
    per_image = {k: per_image_miou(s) for k, s in stats.items()}
    written.append(per_image_distribution({labels[k]: v for k, v in per_image.items()}, out / "per_image_miou.png",
                                          dataset_level={labels[k]: result["methods"][k]["miou"][0] for k in stats},
                                          banner=figure_banner))
    extremes_md: list[str] = []
    extremes_json: dict[str, Any] = {}
    for key, values in per_image.items():
        order = [i for i in sorted(range(len(ids)), key=lambda i: (values[i], ids[i])) if np.isfinite(values[i])]
        count = min(EXTREMES, len(order) // 2) if len(order) > 1 else len(order)
        worst = [(ids[i], float(values[i])) for i in order[:count]]
        best = [(ids[i], float(values[i])) for i in order[::-1][:count]]
        stem = _slug(key)
        run, method = origin[key]
        masks = _load_masks(run, method, [i for i, _ in worst + best])
        extremes_json[key] = {"worst": [list(w) for w in worst], "best": [list(b) for b in best],
                              "masks": masks is not None}
        fig = image_extremes(worst, best, out / f"extremes_{stem}.png", title=f"{labels[key]}: per-image mIoU",
                             masks=masks, banner=figure_banner)
        written.append(fig)
        extremes_md += [f"### {labels[key]}", "",
                        "Worst: " + ", ".join(f"`{i}` ({v:.1f})" for i, v in worst),
                        "", "Best: " + ", ".join(f"`{i}` ({v:.1f})" for i, v in best), "",
                        f"![{labels[key]}]({fig.name})", ""]
    compare["extremes"] = extremes_json

    title = DATASET_TITLES.get(dataset, dataset)
    md = ([f"**{banner}**", ""] if banner else []) + [f"# Method comparison: {title}", ""]
    if compare["intersect"]["used"]:
        dropped = ", ".join(f"{n} from `{d}`" for d, n in compare["intersect"]["dropped"].items() if n)
        md += [f"**Compared on the {len(ids)} images common to all runs (--intersect); dropped: {dropped}.** "
               "These numbers are not the runs' metrics.json numbers.", ""]
    md += [
        f"Point estimates are the dataset-level scores over the {len(ids)} images (x100; ACC = pixel accuracy, "
        "mIoU = mean over classes of the IoU of the summed tp/fp/fn, per-image Hungarian matching)"
        + (", equal to each run's metrics.json. " if full else ". ")
        + f"Brackets: {conf_pct} percentile bootstrap interval over images ({resamples} resamples, seed {seed}). "
        "Differences are paired (the same resampled images for both methods); p is the two-sided sign-flip "
        f"permutation p-value ({resamples} permutations, smallest possible {1 / (resamples + 1):.4f}).",
        "", "## Methods", "", methods_md.rstrip(), "",
    ]
    if pair_rows:
        md += ["## Paired differences", "", pairs_md.rstrip(), ""]
    md += ["## Per-class IoU", "", class_md.rstrip(), "", "![per-class IoU](per_class_iou.png)", "",
           "## Per-image mIoU", "",
           "Distribution of the per-image mIoU (mean IoU over the classes present in each image); a figure "
           "aid only, the reported mIoU is dataset level (marked).", "", "![per-image mIoU](per_image_miou.png)",
           "", "## Worst and best images", "", "By per-image mIoU (ties by id).", "", *extremes_md,
           "## Runs", ""]
    for run in runs:
        prov = run.provenance()
        info = run.meta.get("run") or {}
        line = f"- `{run.path}`: {info.get('dataset', '?')}, model {info.get('model', '?')}, {len(run.ids)} images"
        if prov.get("fingerprint"):
            line += f", fingerprint `{prov['fingerprint']}`"
        if prov.get("notes"):
            line += "; " + "; ".join(map(str, prov["notes"]))
        md.append(line)
    header = f"# {banner}\n" if banner else ""
    written += [
        write_text_atomic(out / "compare.md", "\n".join(md) + "\n"),
        write_text_atomic(out / "methods.csv", header + methods_csv),
        write_text_atomic(out / "per_class_iou.csv", header + class_csv),
    ]
    if pair_rows:
        written.append(write_text_atomic(out / "pairs.csv", header + pairs_csv))
    compare["files"] = sorted(p.name for p in written) + [COMPARE_FILE]
    write_json_atomic(out / COMPARE_FILE, compare)
    compare["_seconds"] = seconds  # not written: the file must not depend on the machine
    return compare


def load_intervals(path: str | os.PathLike, run_dir: str | os.PathLike | None = None
                   ) -> dict[str, dict[str, tuple[float, float]]]:
    """Bootstrap intervals of a compare output, for tables: ``{method: {"acc": (low, high), "miou": ...}}``.

    ``path`` is a compare output folder, a ``compare.json``, or a run folder holding one
    (``<run>/compare.json`` or ``<run>/compare/compare.json``); {} where none exists.
    Without ``run_dir`` the keys are compare.json's method names (disambiguated with the run
    folder name where two runs share a method). With ``run_dir``, only that run's methods,
    keyed by their names in its metrics.json, and only intervals over all of that run's
    images (not those of an ``--intersect`` comparison on fewer images).
    """
    path = Path(path)
    candidates = [path] if path.suffix == ".json" else [path / COMPARE_FILE, path / "compare" / COMPARE_FILE]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return {}
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{found}: not valid JSON ({exc})") from exc
    target = Path(run_dir).resolve() if run_dir is not None else None
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for key, entry in (data.get("methods") or {}).items():
        name = key
        if target is not None:
            run = entry.get("run")
            if run is None or Path(run).resolve() != target or not entry.get("full_run", True):
                continue
            name = entry.get("method", key)
        acc, miou = entry.get("acc") or [None] * 3, entry.get("miou") or [None] * 3
        if None in acc[1:3] or None in miou[1:3]:
            continue
        out[name] = {"acc": (float(acc[1]), float(acc[2])), "miou": (float(miou[1]), float(miou[2]))}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 2 when the runs cannot be compared."""
    parser = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with metrics.json and per_image.jsonl)")
    parser.add_argument("--out", required=True, help="output folder for compare.json, tables and figures")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples = permutations (2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage (0.95)")
    parser.add_argument("--intersect", action="store_true",
                        help="compare on the images common to all runs instead of refusing different image sets")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.runs, args.out, resamples=args.resamples, seed=args.seed,
                              intersect=args.intersect, confidence=args.confidence)
    except (CompareError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_methods = len(result["methods"])
    print(f"{n_methods} method(s), {result['images']} images, {args.resamples} resamples: "
          f"bootstrap and permutations in {result['_seconds']:.2f} s")
    for entry in result["methods"].values():
        print(f"{entry['label']:40s} ACC {_fmt_interval(entry['acc']):>20s}  mIoU {_fmt_interval(entry['miou']):>20s}")
    for name, entry in result["pairs"].items():
        print(f"{name:40s} ΔmIoU {_fmt_interval(entry['miou'], True):>20s}  p {_fmt_p(entry['miou'][3])}")
    print(Path(args.out) / "compare.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
