"""Paired tests of two methods on the same images, multiplicity, and power.

* :func:`studentised_p`: the studentised paired bootstrap test of **equal dataset-level
  metric** (null: ``metric(A) == metric(B)`` on the image population). Its statistic is
  ``t = d / se(d)``; the bootstrap replicates ``t* = (d* - d) / se*(d*)`` are centred on
  the observed difference, so they follow the null distribution of ``t`` whatever the
  methods' error profiles. ``se`` is the linearisation (influence-function) standard
  error of the ratio-of-sums metric (:func:`influence`). Two-sided:
  ``p = (1 + #{|t*| >= |t|}) / (R + 1)``.
* :func:`signflip_p`: the sign-flip permutation test (null: **exchangeability**, the two
  methods' per-image stats are interchangeable on every image). Two methods with equal
  mIoU but different error profiles are not exchangeable; this test rejects them.
* :func:`mc_se`: Monte Carlo standard error of a p-value from R draws, ``sqrt(p (1 - p) / R)``.
* :func:`holm`: Holm's step-down adjustment (family-wise error control).
* :func:`min_detectable`: the smallest true difference a two-sided level-``alpha`` test
  detects with the given power, ``(z_{1 - alpha/2} + z_power) * sd``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri

from eval.stats.scores import split_columns

__all__ = ["holm", "influence", "mc_se", "min_detectable", "signflip_p", "studentised_p"]


def influence(matrix: np.ndarray, num_classes: int, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image influence (linearisation) values of ACC, IoU and mIoU, x100.

    For a ratio of sums ``T / U`` the influence of image i is ``(t_i - (T / U) u_i) / mean(u)``:
    the estimate moves by about ``mean_i(weight_i * influence_i)`` when images are reweighted,
    and its variance is about ``var(influence) / N``.

    Args:
        matrix: (N, 3C + 1) per-image stats, columns ``tp | fp | fn | valid``.
        num_classes: C.
        classes: bool (C,) class set of the mIoU.

    Returns:
        ``acc (N,)``, ``iou (N, C)`` (0 for a class without stats), ``miou (N,)``.
    """
    tp, fp, fn, valid = (x.astype(np.float64) for x in split_columns(matrix, num_classes))
    n = max(matrix.shape[0], 1)
    union = tp + fp + fn
    tp_sum, union_sum, valid_sum = tp.sum(0), union.sum(0), valid.sum()
    ratio = np.divide(tp_sum, union_sum, out=np.zeros_like(tp_sum), where=union_sum > 0)
    scale = np.divide(100.0 * n, union_sum, out=np.zeros_like(union_sum), where=union_sum > 0)
    iou = (tp - ratio * union) * scale
    acc = 100.0 * n * (tp.sum(1) - tp.sum() / valid_sum * valid) / valid_sum if valid_sum > 0 else np.zeros(n)
    keep = np.asarray(classes, dtype=bool)
    miou = iou[:, keep].mean(1) if keep.any() else np.zeros(matrix.shape[0])
    return acc, iou, miou


def studentised_p(observed: np.ndarray, variance: np.ndarray, reps: np.ndarray,
                  rep_variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided studentised bootstrap p-values of ``observed == 0``, and the replicates used.

    Args:
        observed: (S,) observed differences ``d``.
        variance: (S,) their estimated variances.
        reps: (R, S) bootstrap replicates ``d*`` (NaN where undefined: left out).
        rep_variance: (R, S) variance estimates of each replicate.

    Returns:
        ``p (S,)`` (NaN where undefined; 1 where ``d = 0`` with zero variance) and the
        number of replicates used per statistic (S,).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        t_obs = np.abs(observed) / np.sqrt(variance)
        t_rep = np.abs(reps - observed) / np.sqrt(np.maximum(rep_variance, 0.0))
    t_rep = np.where(reps == observed, 0.0, t_rep)  # a replicate equal to d is not extreme, even with se* = 0
    used = np.isfinite(reps).sum(0)
    extreme = (np.where(np.isfinite(reps), t_rep, -np.inf) >= t_obs * (1 - 1e-12)).sum(0)
    p = (1.0 + extreme) / (used + 1.0)
    p = np.where(np.isfinite(t_obs), p, np.nan)
    p = np.where((observed == 0) & (variance == 0), 1.0, p)
    return np.where(np.isfinite(observed), p, np.nan), used


def signflip_p(perm: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Two-sided sign-flip p-values ``(1 + #{|d_perm| >= |d|}) / (R + 1)`` (S,), from (R, S) flipped differences."""
    tol = 1e-9 * np.maximum(1.0, np.abs(observed))
    extreme = (np.abs(np.nan_to_num(perm, nan=0.0)) >= np.abs(observed) - tol).sum(0)
    return np.where(np.isfinite(observed), (1.0 + extreme) / (perm.shape[0] + 1.0), np.nan)


def mc_se(p: np.ndarray, draws: np.ndarray | int) -> np.ndarray:
    """Monte Carlo standard error of p-values estimated from ``draws`` random draws."""
    p = np.asarray(p, dtype=np.float64)
    return np.sqrt(p * (1.0 - p) / np.maximum(draws, 1))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (None stays None and is not part of the family)."""
    index = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(index)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(index, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def min_detectable(sd: np.ndarray, confidence: float, power: float = 0.8) -> np.ndarray:
    """Smallest detectable true difference at ``power`` for a two-sided test at level ``1 - confidence``."""
    return (ndtri(0.5 + confidence / 2.0) + ndtri(power)) * np.asarray(sd, dtype=np.float64)
