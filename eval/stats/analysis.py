"""Intervals and paired tests of methods evaluated on the same images: :func:`analyse`.

Every reported number is a function of stat sums over images (:mod:`eval.stats.scores`):
resampling images and re-summing gives the bootstrap, leaving one image out the
jackknife. A method may have several seed runs on the same images (blocks); its
statistic is then the mean over its seeds of the dataset-level metric, and all its
blocks are resampled with the same images.

Fixed class sets: a block's mIoU is, in every resample and jackknife sample, the mean
IoU over the classes present (``tp + fp + fn > 0``) in its full sample, so every
resample scores the same quantity; a resample that lacks one of these classes leaves the
mIoU undefined there and is left out of its interval (the share is reported).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from eval.stats.intervals import bca_bounds, combined_bounds, percentile_bounds
from eval.stats.resample import bootstrap_weights, flip_weights, weighted_sums
from eval.stats.scores import dataset_scores, scores, split_columns
from eval.stats.significance import holm, influence, mc_se, min_detectable, signflip_p, studentised_p

__all__ = ["INTERVALS", "ImageStats", "analyse"]

INTERVALS = ("bca", "percentile")
METRICS = ("acc", "miou")


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

    @classmethod
    def from_records(cls, rows: Sequence[dict[str, Any]]) -> ImageStats:
        """From one method's per-image record entries (``{"tp": [C], "fp": [C], "fn": [C], "valid": int}``
        each, :mod:`eval.run.records`), in image order; KeyError/TypeError/ValueError when malformed."""
        tp, fp, fn = (np.asarray([r[k] for r in rows], dtype=np.int64).reshape(len(rows), -1)
                      for k in ("tp", "fp", "fn"))
        return cls(tp, fp, fn, np.asarray([r["valid"] for r in rows], dtype=np.int64))

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
        """Dataset-level :func:`eval.stats.scores.scores` of the summed stats (as ``metrics.json``)."""
        return scores(self.tp.sum(0), self.fp.sum(0), self.fn.sum(0), int(np.sum(self.valid)))

    def class_images(self) -> np.ndarray:
        """(C,) number of images whose ground truth holds each class (``tp + fn > 0``; the same for every method)."""
        return ((self.tp + self.fn) > 0).sum(0)


def per_image_miou(stats: ImageStats) -> np.ndarray:
    """(N,) per-image mIoU: mean IoU over the classes with ``tp + fp + fn > 0`` in that image.

    For figures and worst / best lists only; the reported mIoU is dataset level.
    """
    return dataset_scores(stats.matrix(), stats.num_classes)[1]


@dataclass
class _Design:
    """Methods as blocks of columns of one (N, B * K) matrix, their class sets and pairs."""

    names: list[str]
    blocks: list[list[int]]  # method -> its block indices
    matrix: np.ndarray  # (N, B * K) int64
    num_classes: int
    classes: np.ndarray  # (B, C) bool: the fixed class set of each block
    pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def width(self) -> int:
        return 3 * self.num_classes + 1

    @property
    def num_images(self) -> int:
        return self.matrix.shape[0]

    def statistics(self, sums: np.ndarray) -> dict[str, np.ndarray]:
        """Every reported statistic of stat sums (R, B * K): per method and per pair.

        Returns ``acc``, ``miou`` (R, M), ``iou`` (R, M, C) and the pair differences
        ``d_acc``, ``d_miou`` (R, P), ``d_iou`` (R, P, C) (A - B), NaN where undefined.
        """
        rows = sums.shape[0]
        blocks = sums.reshape(rows, -1, self.width)
        acc, _, iou = dataset_scores(blocks, self.num_classes)
        miou = np.stack([dataset_scores(blocks[:, b], self.num_classes, self.classes[b])[1]
                         for b in range(blocks.shape[1])], axis=1)
        out = {"acc": np.stack([acc[:, bs].mean(1) for bs in self.blocks], axis=1),
               "miou": np.stack([miou[:, bs].mean(1) for bs in self.blocks], axis=1),
               "iou": np.stack([iou[:, bs].mean(1) for bs in self.blocks], axis=1)}
        a, b = (np.asarray([p[i] for p in self.pairs], dtype=np.int64) for i in (0, 1))
        for key in ("acc", "miou", "iou"):
            out[f"d_{key}"] = out[key][:, a] - out[key][:, b]
        return out

    def influences(self) -> dict[str, np.ndarray]:
        """Per-image influence values of each pair's differences: ``d_acc``, ``d_miou`` (N, P), ``d_iou`` (N, P, C)."""
        per_block = [influence(self.matrix[:, b * self.width:(b + 1) * self.width], self.num_classes,
                               self.classes[b]) for b in range(len(self.classes))]
        methods = {key: np.stack([np.mean([per_block[b][k] for b in bs], axis=0) for bs in self.blocks], axis=1)
                   for k, key in enumerate(("acc", "iou", "miou"))}
        a, b = (np.asarray([p[i] for p in self.pairs], dtype=np.int64) for i in (0, 1))
        return {f"d_{key}": value[:, a] - value[:, b] for key, value in methods.items()}


def _design(methods: dict[str, Any]) -> _Design:
    """Check and stack the methods' stats (one ImageStats or a sequence of seed runs each)."""
    if not methods:
        raise ValueError("analyse: no methods given")
    names, blocks, mats = list(methods), [], []
    for name in names:
        runs = [methods[name]] if isinstance(methods[name], ImageStats) else list(methods[name])
        if not runs:
            raise ValueError(f"method {name}: no stats given")
        blocks.append(list(range(len(mats), len(mats) + len(runs))))
        mats += runs
    n, c = mats[0].num_images, mats[0].num_classes
    for name, bs in zip(names, blocks, strict=True):
        for b in bs:
            if (mats[b].num_images, mats[b].num_classes) != (n, c):
                raise ValueError(f"method {name}: {mats[b].num_images} images x {mats[b].num_classes} classes, "
                                 f"expected {n} x {c}")
    if n == 0:
        raise ValueError("analyse: no images")
    classes = np.stack([(s.tp.sum(0) + s.fp.sum(0) + s.fn.sum(0)) > 0 for s in mats])
    matrix = np.concatenate([s.matrix() for s in mats], axis=1)
    return _Design(names, blocks, matrix, c, classes, list(combinations(range(len(names)), 2)))


def _bounds(point: np.ndarray, reps: np.ndarray, jack: np.ndarray, confidence: float,
            interval: str) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds of statistics of any shape: ``point`` (...), ``reps`` (R, ...), ``jack`` (N, ...)."""
    flat = reps.reshape(reps.shape[0], -1)
    if interval == "bca":
        low, high = bca_bounds(flat, point.reshape(-1), jack.reshape(jack.shape[0], -1), confidence)
    else:
        low, high = percentile_bounds(flat, confidence)
    return low.reshape(point.shape), high.reshape(point.shape)


def _sd(reps: np.ndarray) -> np.ndarray:
    """(S,) standard deviation of the finite replicates (R, S) of each column (NaN if none)."""
    finite = np.isfinite(reps)
    count = finite.sum(0)
    mean = np.where(finite, reps, 0.0).sum(0) / np.maximum(count, 1)
    var = np.where(finite, (reps - mean) ** 2, 0.0).sum(0) / np.maximum(count, 1)
    return np.where(count > 0, np.sqrt(var), np.nan)


def _num(value: Any) -> float | None:
    """A finite float, else None (JSON null)."""
    return float(value) if value is not None and np.isfinite(value) else None


def _pair_columns(values: dict[str, np.ndarray]) -> np.ndarray:
    """(..., Q) columns ``d_acc (P) | d_miou (P) | d_iou (P * C)`` of a statistics dict with a leading axis."""
    lead = values["d_acc"].shape[0]
    return np.concatenate([values["d_acc"], values["d_miou"], values["d_iou"].reshape(lead, -1)], axis=1)


def _studentised(design: _Design, point: dict[str, np.ndarray], draws: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Studentised paired bootstrap p-values and replicate counts of every pair column (Q,)."""
    n = design.num_images
    psi = _pair_columns(design.influences())  # (N, Q)
    sums, moments = weighted_sums(bootstrap_weights(n, draws, rng), design.matrix, np.concatenate([psi, psi**2], 1))
    q = psi.shape[1]
    mean, square = moments[:, :q] / n, moments[:, q:] / n
    rep_var = (square - mean**2) / n
    variance = ((psi**2).mean(0) - psi.mean(0) ** 2) / n
    reps = _pair_columns(design.statistics(sums))
    return studentised_p(_pair_columns(point)[0], variance, reps, rep_var)


def _signflip(design: _Design, point: dict[str, np.ndarray], draws: int,
              rng: np.random.Generator) -> list[dict[str, float] | None]:
    """Sign-flip p-values of ACC and mIoU per pair (None where the methods have different seed counts)."""
    flips, _ = weighted_sums(flip_weights(design.num_images, draws, rng), design.matrix)
    total = design.matrix.sum(0)
    k, c = design.width, design.num_classes
    out: list[dict[str, float] | None] = []
    for j, (a, b) in enumerate(design.pairs):
        if len(design.blocks[a]) != len(design.blocks[b]):
            out.append(None)
            continue
        diffs = {"acc": 0.0, "miou": 0.0}
        for ba, bb in zip(design.blocks[a], design.blocks[b], strict=True):
            # swapping image i's stats moves (B_i - A_i) from B's sums to A's
            moved = flips[:, bb * k:(bb + 1) * k] - flips[:, ba * k:(ba + 1) * k]
            acc_a, miou_a, _ = dataset_scores(total[ba * k:(ba + 1) * k] + moved, c)
            acc_b, miou_b, _ = dataset_scores(total[bb * k:(bb + 1) * k] - moved, c)
            diffs = {"acc": diffs["acc"] + acc_a - acc_b, "miou": diffs["miou"] + miou_a - miou_b}
        entry = {}
        for metric in METRICS:
            perm = diffs[metric] / len(design.blocks[a])
            p = float(signflip_p(perm[:, None], point[f"d_{metric}"][0, j:j + 1])[0])
            entry[metric] = {"p": _num(p), "mc_se": _num(mc_se(p, draws))}
        out.append(entry)
    return out


def _class_images(design: _Design) -> list[np.ndarray]:
    """Per method, (C,) the number of images whose ground truth holds each class (its first block)."""
    out = []
    for bs in design.blocks:
        tp, _, fn, _ = split_columns(design.matrix[:, bs[0] * design.width:(bs[0] + 1) * design.width],
                                     design.num_classes)
        out.append(((tp + fn) > 0).sum(0))
    return out


def _refusal(count: int, limit: int, flag: str, prefix: str = "") -> dict[str, Any]:
    """A refused interval: its image count (tables write "n/a (3 images)") and the reason."""
    return {"images": int(count), "reason": f"{prefix}{count} image{'s' if count != 1 else ''}, fewer than "
            f"{flag} {limit}: no interval or test is given"}


def _seeds(design: _Design, m: int, entry: dict[str, Any], confidence: float) -> dict[str, Any]:
    """Per-seed values, their spread and the interval over images and seeds of a method with several seed runs."""
    total = design.matrix.sum(0)
    values: dict[str, list[float]] = {"acc": [], "miou": []}
    for b in design.blocks[m]:
        acc, miou, _ = dataset_scores(total[b * design.width:(b + 1) * design.width], design.num_classes,
                                      design.classes[b])
        values["acc"].append(float(acc))
        values["miou"].append(float(miou))
    out: dict[str, Any] = {"runs": len(design.blocks[m]), "values": values, "sd": {}, "combined": {}}
    for metric in METRICS:
        point, low, high = entry[metric]
        out["sd"][metric] = _num(np.std(values[metric], ddof=1))
        bounds = (None, None)
        if low is not None and high is not None:
            bounds = tuple(map(_num, combined_bounds(point, low, high, np.asarray(values[metric]), confidence)))
        out["combined"][metric] = [point, *bounds]
    return out


def _method_entries(design: _Design, point: dict[str, np.ndarray], bounds: dict[str, tuple[np.ndarray, np.ndarray]],
                    lacking: np.ndarray, refusal: dict[str, Any] | None, class_images: list[np.ndarray],
                    min_class_images: int, confidence: float) -> dict[str, Any]:
    """``methods`` of the result: points, bounds (None where refused or undefined) and the refusals' reasons."""
    out = {}
    for m, name in enumerate(design.names):
        entry: dict[str, Any] = {"images": design.num_images, "seeds": len(design.blocks[m]),
                                 "classes": int(design.classes[design.blocks[m][0]].sum()),
                                 "lacking_class_share": None if refusal else _num(lacking[m]), "refused": {}}
        for metric in METRICS:
            entry[metric] = [_num(point[metric][0, m]), _num(bounds[metric][0][m]), _num(bounds[metric][1][m])]
            if refusal:
                entry["refused"][metric] = refusal
        rows = []
        for c in range(design.num_classes):
            value = _num(point["iou"][0, m, c])
            if value is None:
                rows.append(None)
                continue
            rows.append([value, _num(bounds["iou"][0][m, c]), _num(bounds["iou"][1][m, c])])
            count = int(class_images[m][c])
            if refusal or count < min_class_images:
                rows[-1][1:] = [None, None]
                entry["refused"].setdefault("iou", {})[str(c)] = refusal or _refusal(
                    count, min_class_images, "--min-class-images", prefix="class in ")
        entry["iou"] = rows
        if len(design.blocks[m]) > 1:
            entry["seed_spread"] = _seeds(design, m, entry, confidence)
        out[name] = entry
    return out


def _pair_entries(design: _Design, point: dict[str, np.ndarray], bounds: dict[str, tuple[np.ndarray, np.ndarray]],
                  tests: dict[str, Any], refusal: dict[str, Any] | None, class_images: list[np.ndarray],
                  min_class_images: int) -> dict[str, Any]:
    """``pairs`` of the result (before Holm): differences A - B with interval, p and the sign-flip p."""
    npairs, c = len(design.pairs), design.num_classes
    out = {}
    for j, (a, b) in enumerate(design.pairs):
        entry: dict[str, Any] = {"refused": refusal}
        for k, metric in enumerate(METRICS):
            col = k * npairs + j
            p = tests["p"][col] if tests else math.nan
            entry[metric] = [_num(point[f"d_{metric}"][0, j]), _num(bounds[f"d_{metric}"][0][j]),
                             _num(bounds[f"d_{metric}"][1][j]), _num(p)]
            entry.setdefault("test", {})[metric] = {
                "p": _num(p), "mc_se": _num(mc_se(p, tests["draws"][col])) if tests else None,
                "draws": int(tests["draws"][col]) if tests else 0}
            mdd = tests["mdd"][metric][j] if tests else math.nan
            entry.setdefault("power", {})[metric] = {
                "mdd": _num(mdd), "images_for_1_point": (int(math.ceil(design.num_images * mdd**2))
                                                         if _num(mdd) is not None else None)}
        entry["signflip"] = tests["signflip"][j] if tests else None
        rows = []
        for cls in range(c):
            diff = _num(point["d_iou"][0, j, cls])
            if diff is None:
                rows.append(None)
                continue
            p = tests["p"][2 * npairs + j * c + cls] if tests else math.nan
            small = min(class_images[a][cls], class_images[b][cls]) < min_class_images
            rows.append([diff, None, None, None] if refusal or small else
                        [diff, _num(bounds["d_iou"][0][j, cls]), _num(bounds["d_iou"][1][j, cls]), _num(p)])
        entry["iou"] = rows
        out[f"{design.names[a]} vs {design.names[b]}"] = entry
    return out


def _adjust(pairs: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Holm-adjust the pairs' p-values in place: one family over all pairs x {ACC, mIoU}, one over pairs x classes."""
    keys = [(name, metric) for name in pairs for metric in METRICS]
    adjusted = holm([pairs[n][m][3] for n, m in keys])
    for (name, metric), value in zip(keys, adjusted, strict=True):
        pairs[name]["test"][metric]["holm"] = value
        pairs[name]["test"][metric]["significant"] = value is not None and value <= alpha
    cells = [(name, c) for name in pairs for c, row in enumerate(pairs[name]["iou"]) if row is not None]
    adjusted = holm([pairs[n]["iou"][c][3] for n, c in cells])
    for (name, c), value in zip(cells, adjusted, strict=True):
        pairs[name]["iou"][c] += [value, value is not None and value <= alpha]
    return {"alpha": alpha, "families": {"pairs x (acc, miou)": len(keys), "pairs x classes": len(cells)}}


def analyse(methods: dict[str, ImageStats | list[ImageStats]], resamples: int = 2000, seed: int = 0,
            confidence: float = 0.95, *, interval: str = "bca", permutations: int | None = None,
            min_images: int = 30, min_class_images: int = 5) -> dict[str, Any]:
    """Intervals, paired differences and tests of methods on the same images.

    Args:
        methods: name -> per-image stats (N images, C classes, same row order), or a list of
            one method's seed runs on those images.
        resamples: bootstrap resamples of the intervals.
        seed: seeds the generators (intervals, sign flips and the test get independent streams).
        confidence: interval coverage; ``1 - confidence`` is also the tests' level after Holm.
        interval: ``"bca"`` (default) or ``"percentile"``.
        permutations: draws of each p-value (bootstrap resamples of the studentised test and
            sign flips); default ``resamples``.
        min_images: fewer images give no interval and no test (bounds and p None, with a reason).
        min_class_images: a class in fewer images gets no per-class interval.

    Returns:
        ``{"methods": {name: {"acc": [point, low, high], "miou": [...], "iou": [[point, low, high]
        or None per class], "images": N, "refused": {...}, ...}}, "pairs": {"A vs B": {"acc":
        [A - B, low, high, p], "miou": [...], "test", "signflip", "power", "iou"}}, "holm": {...}}``.
    """
    if resamples < 1 or (permutations is not None and permutations < 1):
        raise ValueError(f"resamples and permutations must be >= 1, got {resamples}, {permutations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    design = _design(methods)
    draws = resamples if permutations is None else permutations
    boot_seq, flip_seq, test_seq = np.random.SeedSequence(seed).spawn(3)
    n = design.num_images
    point = design.statistics(design.matrix.sum(0, keepdims=True))
    refusal = _refusal(n, min_images, "--min-images") if n < min_images else None
    nan = {key: (np.full(v.shape[1:], np.nan),) * 2 for key, v in point.items()}
    bounds, tests, lacking = nan, None, np.full(len(design.names), np.nan)
    if refusal is None:
        reps = design.statistics(weighted_sums(bootstrap_weights(n, resamples, np.random.default_rng(boot_seq)),
                                               design.matrix)[0])
        jack = design.statistics(design.matrix.sum(0, keepdims=True) - design.matrix)
        bounds = {key: _bounds(point[key][0], reps[key], jack[key], confidence, interval) for key in point}
        lacking = np.isnan(reps["miou"]).mean(0)
        if design.pairs:
            p, used = _studentised(design, point, draws, np.random.default_rng(test_seq))
            mdd = {m: min_detectable(_sd(reps[f"d_{m}"]), confidence) for m in METRICS}
            tests = {"p": p, "draws": used, "mdd": mdd,
                     "signflip": _signflip(design, point, draws, np.random.default_rng(flip_seq))}
    class_images = _class_images(design)
    out_methods = _method_entries(design, point, bounds, lacking, refusal, class_images, min_class_images, confidence)
    pairs = _pair_entries(design, point, bounds, tests, refusal, class_images, min_class_images)
    holm_info = _adjust(pairs, round(1.0 - confidence, 12))
    return {"methods": out_methods, "pairs": pairs, "holm": holm_info, "interval": interval,
            "confidence": confidence, "resamples": resamples, "permutations": draws}
