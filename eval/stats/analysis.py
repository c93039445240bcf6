"""Intervals and paired tests of methods evaluated on the same images: :func:`analyse`.

Every reported number is a function of stat sums over images (:mod:`eval.metrics.summed_scores`):
resampling images and re-summing gives the bootstrap, leaving one image out the
jackknife. A method may have several seed runs on the same images (blocks); its
statistic is then the mean over its seeds of the dataset-level metric, and all its
blocks are resampled with the same images.

Intervals (default) and the paired test share one studentised bootstrap of the bias-corrected
statistic ``theta~ = theta - b``, ``b`` its delta-method (quadratic) bias (:meth:`_Design.biases`,
:func:`eval.stats.significance.ratio_bias`): in each resample every statistic, its bias and its
delta-method standard error on that resample (:meth:`_Design.variances`,
:func:`eval.stats.significance.ratio_variance`) give ``t* = (theta~* - theta~) / se*``; the
bootstrap-t interval ``theta~ +- se q`` (:func:`eval.stats.intervals.bootstrap_t_bounds`) and the
test's p-value of ``t = theta~ / se`` (:func:`eval.stats.significance.studentised_p`) are read off
the same ``t*``. The reported point is the metric itself (``theta``, as ``metrics.json``). The bias
of a mean of ratios (the mIoU over 27 classes, and differences of two methods whose errors fall on
different images) adds up over classes while its standard error does not: on the simulated
populations of :mod:`eval.stats.calibration` at 50 images it is about 0.2 standard errors, and
without the correction the symmetric test rejected a true null in 0.059 of 4300 samples (0.049 with it).

Fixed class sets: a block's mIoU is, in every resample, jackknife sample and sign flip, the
mean IoU over the classes present (``tp + fp + fn > 0``) in its full sample, so every
resample scores the same quantity as the observed one; a resample that lacks one of these
classes leaves the mIoU undefined there and is left out (the share is reported).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from eval.metrics.summed_scores import dataset_scores, scores, split_columns
from eval.stats.intervals import bca_bounds, bootstrap_t_bounds, combined_bounds, percentile_bounds
from eval.stats.resample import bootstrap_weights, exact_product, flip_weights, weighted_sums
from eval.stats.significance import holm, mc_se, min_detectable, ratio_bias, ratio_variance, signflip_p, studentised_p

__all__ = ["INTERVALS", "ImageStats", "analyse"]

INTERVALS = ("bootstrap-t", "bca", "percentile")
INTERVAL_NAMES = {
    "bootstrap-t": "symmetric bootstrap-t (studentised by the delta-method standard error recomputed in each "
                   "resample, about the delta-method bias-corrected estimate; Hall 1988, Efron & Tibshirani 1993 "
                   "ch. 12, Davison & Hinkley 1997 sec. 2.7)",
    "bca": "BCa (bias-corrected and accelerated, jackknife acceleration over images; Efron 1987)",
    "percentile": "percentile bootstrap",
}
SYMMETRIC = True  # the bootstrap-t interval and the paired test are symmetric (|t*|), see eval.stats.intervals
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
        each, :mod:`eval.folder.records`), in image order; KeyError/TypeError/ValueError when malformed."""
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
        """Dataset-level :func:`eval.metrics.summed_scores.scores` of the summed stats (as ``metrics.json``)."""
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

    def combinations(self) -> np.ndarray:
        """(M + P, B) weights of the blocks in each reported statistic: a method's mean over its seed blocks,
        then each pair's difference A - B."""
        weights = np.zeros((len(self.names) + len(self.pairs), len(self.classes)))
        for m, bs in enumerate(self.blocks):
            weights[m, bs] = 1.0 / len(bs)
        for j, (a, b) in enumerate(self.pairs):
            weights[len(self.names) + j] = weights[a] - weights[b]
        return weights

    def _units(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Per-image numerators and denominators of the ratios, and their products (cached).

        Returns ``num``, ``den`` (B, N, C + 1) float64 (``tp`` / union per class, then ``sum tp`` / valid for
        ACC), ``products`` (N, L * 4 * (C + 1)): for each block pair ``(b, b2)``, ``b <= b2``, in the order
        of the returned list, the per-image products ``num_b num_b2 | num_b den_b2 | den_b num_b2 | den_b den_b2``.
        """
        if getattr(self, "_cache", None) is None:
            tp, fp, fn, valid = (x.astype(np.float64) for x in split_columns(
                self.matrix.reshape(self.num_images, -1, self.width).transpose(1, 0, 2), self.num_classes))
            num = np.concatenate([tp, tp.sum(-1, keepdims=True)], axis=-1)
            den = np.concatenate([tp + fp + fn, valid[..., None]], axis=-1)
            pairs = [(b, b2) for b in range(len(self.classes)) for b2 in range(b, len(self.classes))]
            products = np.concatenate([x * y for b, b2 in pairs for x, y in
                                       ((num[b], num[b2]), (num[b], den[b2]), (den[b], num[b2]), (den[b], den[b2]))],
                                      axis=1)
            self._cache = (num, den, products, pairs)
        return self._cache

    def variances(self, weights: np.ndarray, sums: np.ndarray) -> dict[str, np.ndarray]:
        """Delta-method variances of every reported statistic, each computed on its own resample.

        Args:
            weights: (R, N) image counts of each resample (ones for the full sample).
            sums: (R, B * K) their stat sums (``weights @ matrix``).

        Returns:
            The keys and shapes of :meth:`statistics` (x100^2 units): ``n^-2 sum_i w_i l_i^2`` with ``l_i``
            the influence value of image i of the statistic in that resample
            (:func:`eval.stats.significance.ratio_variance`); NaN where a ratio is undefined. ACC and
            per-class IoU come from weighted moments of the per-image numerators and denominators; the
            mIoU, a mean over classes, from its per-image influence values (R, N) directly.
        """
        num, den, products, pairs = self._units()
        rows, blocks, units, c = weights.shape[0], len(self.classes), self.num_classes + 1, self.num_classes
        tp, fp, fn, valid = (x.astype(np.float64) for x in split_columns(sums.reshape(rows, blocks, self.width), c))
        total_num = np.concatenate([tp, tp.sum(-1, keepdims=True)], axis=-1)  # (R, B, C + 1)
        total_den = np.concatenate([tp + fp + fn, valid[..., None]], axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(total_den > 0, total_num / total_den, np.nan)
            scale = np.where(total_den > 0, 100.0 / total_den, np.nan)
        moments = (weights @ products).reshape(rows, len(pairs), 4, units)
        gram = np.zeros((rows, blocks, blocks, units))
        for k, (b, b2) in enumerate(pairs):
            value = ratio_variance(scale[:, b], ratio[:, b], scale[:, b2], ratio[:, b2],
                                   tuple(moments[:, k, j] for j in range(4)))
            gram[:, b, b2] = gram[:, b2, b] = value
        # mIoU: l_i = mean over the block's classes of the class influence values, (R, N) per block
        influence = np.zeros((blocks, rows, self.num_images))
        for b in range(blocks):
            keep = self.classes[b]
            if not keep.any():
                continue
            coef = np.nan_to_num(scale[:, b, :c][:, keep]) / keep.sum()
            influence[b] = coef @ num[b][:, :c][:, keep].T - (coef * np.nan_to_num(ratio[:, b, :c][:, keep])) @ \
                den[b][:, :c][:, keep].T
        weighted = influence * weights[None]
        gram_miou = np.matmul(weighted.transpose(1, 0, 2), influence.transpose(1, 2, 0))  # (R, B, B)
        combos = self.combinations()
        var = np.einsum("sb,rbcu,sc->rsu", combos, np.nan_to_num(gram), combos, optimize=True)
        var_miou = np.einsum("sb,rbc,sc->rs", combos, gram_miou, combos, optimize=True)
        var, var_miou = np.maximum(var, 0.0), np.maximum(var_miou, 0.0)
        m = len(self.names)
        return {"acc": var[:, :m, c], "miou": var_miou[:, :m], "iou": var[:, :m, :c],
                "d_acc": var[:, m:, c], "d_miou": var_miou[:, m:], "d_iou": var[:, m:, :c]}


    def biases(self, weights: np.ndarray, sums: np.ndarray) -> dict[str, np.ndarray]:
        """Delta-method (quadratic) bias estimates of every reported statistic, each on its own resample.

        Args:
            weights: (R, N) image counts of each resample (ones for the full sample).
            sums: (R, B * K) their stat sums (``weights @ matrix``).

        Returns:
            The keys and shapes of :meth:`statistics` (x100 units): each ratio's
            :func:`eval.stats.significance.ratio_bias` on that resample, the mIoU's the mean of its classes',
            a seeded method's the mean of its blocks', a difference's the difference. Where a ratio is
            undefined the statistic is too (NaN in :meth:`statistics`); its bias is then 0.
        """
        _, _, products, pairs = self._units()
        rows, blocks, units, c = weights.shape[0], len(self.classes), self.num_classes + 1, self.num_classes
        # each block's own moments sum w (num den) and sum w (den den): products 1 and 3 of the pair (b, b)
        cols = np.asarray([(pairs.index((b, b)) * 4 + j) * units + u
                           for b in range(blocks) for j in (1, 3) for u in range(units)])
        moments = (weights @ products[:, cols]).reshape(rows, blocks, 2, units)
        tp, fp, fn, valid = (x.astype(np.float64) for x in split_columns(sums.reshape(rows, blocks, self.width), c))
        total_num = np.concatenate([tp, tp.sum(-1, keepdims=True)], axis=-1)  # (R, B, C + 1)
        total_den = np.concatenate([tp + fp + fn, valid[..., None]], axis=-1)
        bias = np.nan_to_num(100.0 * ratio_bias(total_num, total_den, moments[:, :, 0], moments[:, :, 1]))
        miou = np.where(self.classes[None], bias[..., :c], 0.0).sum(-1) / np.maximum(self.classes.sum(-1), 1)
        combos = self.combinations()
        ratios, means, m = np.einsum("sb,rbu->rsu", combos, bias), miou @ combos.T, len(self.names)
        return {"acc": ratios[:, :m, c], "miou": means[:, :m], "iou": ratios[:, :m, :c],
                "d_acc": ratios[:, m:, c], "d_miou": means[:, m:], "d_iou": ratios[:, m:, :c]}

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


def _studentise(values: np.ndarray, point: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``(theta* - theta) / se*`` of replicates (R, ...) about ``point`` (...): 0 where ``theta* == theta`` (even
    with ``se* = 0``), +-inf where ``se* = 0`` otherwise, NaN where ``theta*`` is undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (values - point) / np.sqrt(var)
    return np.where(values == point, 0.0, t)


def _bootstrap(design: _Design, centre: dict[str, np.ndarray], draws: int,
               rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Bootstrap replicates ``theta*`` and studentised replicates ``t*`` (draws, ...) of every statistic.

    ``t* = (theta* - b* - centre) / se*``: each resample's bias-corrected statistic (its own delta-method bias
    ``b*``, :meth:`_Design.biases`) about ``centre``, the bias-corrected estimate of the full sample, over that
    resample's delta-method standard error ``se*`` (:meth:`_Design.variances`). The resamples are processed in
    blocks of bounded memory.
    """
    n = design.num_images
    step = max(1, (1 << 20) // max(n, 1))
    reps: dict[str, list[np.ndarray]] = {key: [] for key in centre}
    studentised: dict[str, list[np.ndarray]] = {key: [] for key in centre}
    for block in bootstrap_weights(n, draws, rng):
        for start in range(0, block.shape[0], step):
            weights = block[start:start + step]
            sums = exact_product(weights, design.matrix)
            values, var, bias = design.statistics(sums), design.variances(weights, sums), design.biases(weights, sums)
            for key in centre:
                reps[key].append(values[key])
                studentised[key].append(_studentise(values[key] - bias[key], centre[key], var[key]))
    return ({key: np.concatenate(v) for key, v in reps.items()},
            {key: np.concatenate(v) for key, v in studentised.items()})


def _bounds(interval: str, confidence: float, point: np.ndarray, centre: np.ndarray, se: np.ndarray,
            reps: np.ndarray, t_reps: np.ndarray, jack: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds of statistics of any shape: ``point``, its bias-corrected ``centre`` (the bootstrap-t's),
    ``se`` (...), ``reps``, ``t_reps`` (R, ...), ``jack`` (N, ...) (BCa only)."""
    flat = reps.reshape(reps.shape[0], -1)
    if interval == "bootstrap-t":
        low, high = bootstrap_t_bounds(t_reps.reshape(t_reps.shape[0], -1), centre.reshape(-1), se.reshape(-1),
                                       confidence, symmetric=SYMMETRIC)
    elif interval == "bca":
        low, high = bca_bounds(flat, point.reshape(-1), jack.reshape(jack.shape[0], -1), confidence)
    else:
        low, high = percentile_bounds(flat, confidence)
    return low.reshape(point.shape), high.reshape(point.shape)


def _num(value: Any) -> float | None:
    """A finite float, else None (JSON null)."""
    return float(value) if value is not None and np.isfinite(value) else None


def _pair_columns(values: dict[str, np.ndarray]) -> np.ndarray:
    """(..., Q) columns ``d_acc (P) | d_miou (P) | d_iou (P * C)`` of a statistics dict with a leading axis."""
    lead = values["d_acc"].shape[0]
    return np.concatenate([values["d_acc"], values["d_miou"], values["d_iou"].reshape(lead, -1)], axis=1)


def _signflip(design: _Design, point: dict[str, np.ndarray], draws: int,
              rng: np.random.Generator) -> list[dict[str, float] | None]:
    """Sign-flip p-values of ACC and mIoU per pair (None where the methods have different seed counts).

    Each side of a flip is scored as the observed difference is: its mIoU over the fixed class set of the
    method it stands for (that method's classes with ``tp + fp + fn > 0`` over all images). A flip in which
    one of those classes has no stats on its side leaves the difference undefined; it is left out.
    """
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
            acc_a, miou_a, _ = dataset_scores(total[ba * k:(ba + 1) * k] + moved, c, design.classes[ba])
            acc_b, miou_b, _ = dataset_scores(total[bb * k:(bb + 1) * k] - moved, c, design.classes[bb])
            diffs = {"acc": diffs["acc"] + acc_a - acc_b, "miou": diffs["miou"] + miou_a - miou_b}
        entry = {}
        for metric in METRICS:
            perm = diffs[metric] / len(design.blocks[a])
            p, used = signflip_p(perm[:, None], point[f"d_{metric}"][0, j:j + 1])
            entry[metric] = {"p": _num(p[0]), "mc_se": _num(mc_se(p[0], used[0])), "draws": int(used[0])}
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


def _rare_refusals(design: _Design, class_images: list[np.ndarray], min_class_images: int) -> list[dict | None]:
    """Per method, the refusal of its mIoU interval where most (over half) of its mIoU's classes with ground truth
    are in fewer than ``min_class_images`` images (their IoUs barely vary over resamples, so the interval is too
    narrow), else None.

    A class of the mIoU in no image's ground truth (only predicted: an absent class matched to a leftover segment
    gets its pixels as false positives) has IoU 0 in the sample and in every resample: a constant term of the mean
    that adds nothing to its spread, so it is neither rare nor counted among the classes.
    """
    out: list[dict | None] = []
    for m, bs in enumerate(design.blocks):
        seen = class_images[m][design.classes[bs[0]] & (class_images[m] > 0)]
        rare, classes = int((seen < min_class_images).sum()), int(seen.size)
        if rare * 2 > classes:
            out.append({"images": design.num_images, "rare_classes": rare, "classes": classes,
                        "reason": f"{rare} of the mIoU's {classes} classes with ground truth in fewer than "
                                  f"--min-class-images {min_class_images} images: no mIoU interval or test is given"})
        else:
            out.append(None)
    return out


def _method_entries(design: _Design, point: dict[str, np.ndarray], bounds: dict[str, tuple[np.ndarray, np.ndarray]],
                    lacking: np.ndarray, refusal: dict[str, Any] | None, rare: list[dict | None],
                    class_images: list[np.ndarray], min_class_images: int, confidence: float) -> dict[str, Any]:
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
        if not refusal and rare[m]:
            entry["miou"][1:] = [None, None]
            entry["refused"]["miou"] = rare[m]
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
                  tests: dict[str, Any], refusal: dict[str, Any] | None, rare: list[dict | None],
                  class_images: list[np.ndarray], min_class_images: int) -> dict[str, Any]:
    """``pairs`` of the result (before Holm): differences A - B with interval, p and the sign-flip p.

    ``refused`` is the refusal of the whole pair (too few images); ``refused_metrics`` maps a metric refused on
    its own (the mIoU where most classes are rare in either method) to its reason.
    """
    npairs, c = len(design.pairs), design.num_classes
    out = {}
    for j, (a, b) in enumerate(design.pairs):
        entry: dict[str, Any] = {"refused": refusal, "refused_metrics": {}}
        if not refusal and (rare[a] or rare[b]):
            entry["refused_metrics"]["miou"] = rare[a] or rare[b]
        for k, metric in enumerate(METRICS):
            col = k * npairs + j
            off = metric in entry["refused_metrics"]
            p = tests["p"][col] if tests and not off else math.nan
            low, high = (math.nan, math.nan) if off else (bounds[f"d_{metric}"][0][j], bounds[f"d_{metric}"][1][j])
            entry[metric] = [_num(point[f"d_{metric}"][0, j]), _num(low), _num(high), _num(p)]
            entry.setdefault("test", {})[metric] = {
                "p": _num(p), "mc_se": _num(mc_se(p, tests["draws"][col])) if tests else None,
                "draws": int(tests["draws"][col]) if tests else 0}
            mdd = tests["mdd"][metric][j] if tests and not off else math.nan
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
            confidence: float = 0.95, *, interval: str = "bootstrap-t", permutations: int | None = None,
            min_images: int = 30, min_class_images: int = 5) -> dict[str, Any]:
    """Intervals, paired differences and tests of methods on the same images.

    One bootstrap of ``max(resamples, permutations)`` resamples of the images gives every statistic's
    replicate and its studentised replicate (:func:`_bootstrap`); the intervals use the first
    ``resamples`` of them, the studentised paired test the first ``permutations``, so with equal counts a
    pair's interval holds 0 iff its p is at least ``1 - confidence`` (bootstrap-t interval).

    Args:
        methods: name -> per-image stats (N images, C classes, same row order), or a list of
            one method's seed runs on those images.
        resamples: bootstrap resamples of the intervals.
        seed: seeds the generators (the bootstrap and the sign flips get independent streams).
        confidence: interval coverage; ``1 - confidence`` is also the tests' level after Holm.
        interval: ``"bootstrap-t"`` (default), ``"bca"`` or ``"percentile"`` (:data:`INTERVAL_NAMES`).
        permutations: draws of each p-value (bootstrap resamples of the studentised test and
            sign flips); default ``resamples``.
        min_images: fewer images give no interval and no test (bounds and p None, with a reason).
        min_class_images: a class in fewer images gets no per-class interval; a method with most of
            its mIoU's classes below it gets no mIoU interval (nor its pairs a mIoU test).

    Returns:
        ``{"methods": {name: {"acc": [point, low, high], "miou": [...], "iou": [[point, low, high]
        or None per class], "images": N, "refused": {...}, ...}}, "pairs": {"A vs B": {"acc":
        [A - B, low, high, p], "miou": [...], "test", "signflip", "power", "iou", "refused",
        "refused_metrics"}}, "holm": {...}, "interval", "interval_name", ...}``.
    """
    if resamples < 1 or (permutations is not None and permutations < 1):
        raise ValueError(f"resamples and permutations must be >= 1, got {resamples}, {permutations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    design = _design(methods)
    draws = resamples if permutations is None else permutations
    boot_seq, flip_seq = np.random.SeedSequence(seed).spawn(2)
    n = design.num_images
    total = design.matrix.sum(0, keepdims=True)
    point = design.statistics(total)
    se = {key: np.sqrt(v[0]) for key, v in design.variances(np.ones((1, n)), total).items()}
    centre = {key: point[key] - v for key, v in design.biases(np.ones((1, n)), total).items()}  # bias-corrected
    refusal = _refusal(n, min_images, "--min-images") if n < min_images else None
    nan = {key: (np.full(v.shape[1:], np.nan),) * 2 for key, v in point.items()}
    bounds, tests, lacking = nan, None, np.full(len(design.names), np.nan)
    if refusal is None:
        reps, t_reps = _bootstrap(design, centre, max(resamples, draws), np.random.default_rng(boot_seq))
        jack = design.statistics(total - design.matrix) if interval == "bca" else {key: None for key in point}
        bounds = {key: _bounds(interval, confidence, point[key][0], centre[key][0], se[key], reps[key][:resamples],
                               t_reps[key][:resamples], jack[key]) for key in point}
        lacking = np.isnan(reps["miou"][:resamples]).mean(0)
        if design.pairs:
            d, d_se, d_t = _pair_columns(centre)[0], _pair_columns({k: v[None] for k, v in se.items()})[0], \
                _pair_columns(t_reps)[:draws]
            with np.errstate(invalid="ignore", divide="ignore"):
                t_obs = np.where(d == 0, np.where(d_se > 0, 0.0, np.nan), d / d_se)
            p, used = studentised_p(t_obs, d_t, symmetric=SYMMETRIC)
            p = np.where(np.isfinite(_pair_columns(point)[0]), p, np.nan)
            mdd = {m: min_detectable(se[f"d_{m}"], t_reps[f"d_{m}"][:draws], confidence, symmetric=SYMMETRIC)
                   for m in METRICS}
            tests = {"p": p, "draws": used, "mdd": mdd,
                     "signflip": _signflip(design, point, draws, np.random.default_rng(flip_seq))}
    class_images = _class_images(design)
    rare = _rare_refusals(design, class_images, min_class_images)
    out_methods = _method_entries(design, point, bounds, lacking, refusal, rare, class_images, min_class_images,
                                  confidence)
    pairs = _pair_entries(design, point, bounds, tests, refusal, rare, class_images, min_class_images)
    holm_info = _adjust(pairs, round(1.0 - confidence, 12))
    return {"methods": out_methods, "pairs": pairs, "holm": holm_info, "interval": interval,
            "interval_name": INTERVAL_NAMES[interval], "confidence": confidence, "resamples": resamples,
            "permutations": draws}
