"""Bootstrap confidence intervals, vectorised over statistics (columns).

* :func:`bootstrap_t_bounds`: the bootstrap-t (studentised) interval (Hall 1988, "Theoretical
  comparison of bootstrap confidence intervals", Ann. Statist. 16; Efron & Tibshirani 1993,
  *An Introduction to the Bootstrap*, ch. 12): each resample's statistic is studentised by the
  standard error computed on that resample, ``t* = (theta* - theta) / se*``, and the interval is
  ``theta - se * [upper, lower] critical value of t*``. Symmetric (the default): ``theta +- se * q``
  with ``q`` the ``confidence`` quantile of ``|t*|`` (Hall 1988: coverage error O(1/n^2) against
  O(1/n) for the equal-tailed one); equal-tailed: the ``alpha / 2`` and ``1 - alpha / 2``
  quantiles of ``t*``. The critical values are order statistics chosen so that the interval is
  exactly the inversion of :func:`eval.stats.significance.studentised_p` on the same replicates:
  0 lies in the interval iff ``p >= 1 - confidence``.
* :func:`percentile_bounds`: the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the replicates.
* :func:`bca_bounds`: Efron's bias-corrected and accelerated interval: the quantiles at
  levels moved by the bias correction ``z0`` (the share of replicates below the point
  estimate, as a normal quantile) and the acceleration ``a`` (the skewness of the
  jackknife values, leave-one-image-out).
* :func:`combined_bounds`: an image interval widened by the spread over seeds.

The replicate functions take ``reps`` of shape (R, S): R resamples of S statistics, NaN
where a resample leaves a statistic undefined (such resamples are left out of that
statistic's interval; the caller reports their share).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

__all__ = ["acceleration", "bca_bounds", "bootstrap_t_bounds", "column_quantiles", "combined_bounds", "critical_rank",
           "jackknife_se", "order_statistic", "percentile_bounds"]


def column_quantiles(reps: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of the finite values of each column (numpy's default linear interpolation).

    Args:
        reps: (R, S) replicates, NaN where undefined.
        levels: (L, S) quantile levels in [0, 1], one per output row and column.

    Returns:
        (L, S) quantiles; NaN for a column without a finite value or a NaN level.
    """
    ordered = np.sort(np.where(np.isfinite(reps), reps, np.nan), axis=0)  # NaN last
    count = np.isfinite(ordered).sum(0)
    levels = np.asarray(levels, dtype=np.float64)
    pos = np.clip(levels, 0.0, 1.0) * np.maximum(count - 1, 0)
    low = np.floor(np.nan_to_num(pos)).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    frac = np.nan_to_num(pos) - low
    cols = np.arange(reps.shape[1])
    a, b = ordered[low, cols], ordered[high, cols]
    out = np.where(frac >= 0.5, b - (b - a) * (1.0 - frac), a + (b - a) * frac)
    return np.where((count > 0) & np.isfinite(levels), out, np.nan)


def percentile_bounds(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(S,) lower and upper percentile bounds of replicates (R, S)."""
    alpha = (1.0 - confidence) / 2.0
    levels = np.broadcast_to(np.asarray([[alpha], [1.0 - alpha]]), (2, reps.shape[1]))
    low, high = column_quantiles(reps, levels)
    return low, high


def acceleration(jack: np.ndarray) -> np.ndarray:
    """(S,) BCa acceleration from leave-one-out values (N, S): ``sum(d^3) / (6 sum(d^2)^1.5)``, ``d = mean - value``.

    Undefined leave-one-out values (NaN) are left out; 0 where the values do not vary.
    """
    finite = np.isfinite(jack)
    count = np.maximum(finite.sum(0), 1)
    mean = np.where(finite, jack, 0.0).sum(0) / count
    d = np.where(finite, mean - jack, 0.0)
    num, den = (d**3).sum(0), (d**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / (6.0 * np.maximum(den, 1e-300) ** 1.5), 0.0)


def jackknife_se(jack: np.ndarray) -> np.ndarray:
    """(S,) jackknife standard errors ``sqrt((n - 1) / n * sum((value - mean)^2))`` of leave-one-out values (N, S)."""
    finite = np.isfinite(jack)
    count = np.maximum(finite.sum(0), 1)
    mean = np.where(finite, jack, 0.0).sum(0) / count
    square = np.where(finite, (jack - mean) ** 2, 0.0).sum(0)
    return np.sqrt((count - 1) / count * square)


def bca_bounds(reps: np.ndarray, point: np.ndarray, jack: np.ndarray,
               confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(S,) lower and upper BCa bounds.

    Args:
        reps: (R, S) bootstrap replicates (NaN where undefined).
        point: (S,) estimates on the full sample.
        jack: (N, S) leave-one-image-out estimates.
        confidence: coverage, e.g. 0.95.

    The bias correction counts ties with the point estimate as half below, so a statistic
    whose replicates all equal it (two identical methods) gets ``z0 = 0``.
    """
    finite = np.isfinite(reps)
    count = finite.sum(0)
    below = (np.where(finite, reps, np.inf) < point).sum(0) + 0.5 * (np.where(finite, reps, np.inf) == point).sum(0)
    share = np.clip(below / np.maximum(count, 1), 0.5 / np.maximum(count, 1), 1.0 - 0.5 / np.maximum(count, 1))
    z0 = ndtri(share)
    a = acceleration(jack)
    alpha = (1.0 - confidence) / 2.0
    levels = []
    for z in (ndtri(alpha), ndtri(1.0 - alpha)):
        shifted = z0 + z
        den = 1.0 - a * shifted
        with np.errstate(invalid="ignore", divide="ignore"):
            level = np.where(den > 0, ndtr(z0 + shifted / np.where(den > 0, den, 1.0)), (shifted > 0) * 1.0)
        levels.append(level)
    low, high = column_quantiles(reps, np.asarray(levels))
    bad = ~np.isfinite(point) | (count == 0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def critical_rank(used: np.ndarray, alpha: float) -> np.ndarray:
    """(S,) ``j = ceil(alpha (R + 1)) - 1``: a p-value ``(1 + #{extreme}) / (R + 1)`` from R replicates is
    ``>= alpha`` iff at least ``j`` replicates are extreme (0: every p is ``>= alpha``)."""
    used = np.asarray(used, dtype=np.float64)
    return np.maximum(np.ceil(np.round(alpha * (used + 1.0), 9)) - 1.0, 0.0).astype(np.int64)


def order_statistic(values: np.ndarray, rank: np.ndarray, largest: bool) -> np.ndarray:
    """(S,) the ``rank``-th largest (or smallest) finite value of each column of (R, S); NaN where ``rank`` is
    0 or exceeds the column's finite values."""
    filled = np.where(np.isnan(values), -np.inf if largest else np.inf, values)  # NaN never picked
    ordered = np.sort(filled, axis=0)
    if largest:
        ordered = ordered[::-1]
    count = (~np.isnan(values)).sum(0)
    ok = (rank >= 1) & (rank <= count)
    picked = ordered[np.clip(rank - 1, 0, max(values.shape[0] - 1, 0)), np.arange(values.shape[1])]
    return np.where(ok, picked, np.nan)


def bootstrap_t_bounds(t_reps: np.ndarray, point: np.ndarray, se: np.ndarray, confidence: float,
                       symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(S,) lower and upper bootstrap-t bounds.

    Args:
        t_reps: (R, S) studentised replicates ``(theta* - theta) / se*`` (NaN where undefined: left out;
            +-inf where ``se* = 0`` and ``theta* != theta``).
        point: (S,) estimates ``theta``.
        se: (S,) their standard errors on the full sample.
        confidence: coverage, e.g. 0.95.
        symmetric: ``theta +- se q``, ``q`` the ``j``-th largest ``|t*|``; else equal-tailed,
            ``[theta - se u, theta - se l]`` with ``u`` / ``l`` the ``j``-th largest / smallest ``t*``.

    ``j`` is :func:`critical_rank` of the level (``1 - confidence``, halved when equal-tailed), so that
    the interval holds 0 iff the matching :func:`eval.stats.significance.studentised_p` is at least
    ``1 - confidence``. NaN bounds where fewer than about ``1 / (1 - confidence)`` replicates are usable.
    """
    used = (~np.isnan(t_reps)).sum(0)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        if symmetric:
            q = order_statistic(np.abs(t_reps), critical_rank(used, alpha), largest=True)
            low, high = point - se * q, point + se * q
        else:
            rank = critical_rank(used, alpha / 2.0)
            upper = order_statistic(t_reps, rank, largest=True)
            lower = order_statistic(t_reps, rank, largest=False)
            low, high = point - se * upper, point - se * lower
    bad = ~np.isfinite(point) | ~np.isfinite(se) | ~np.isfinite(low) | ~np.isfinite(high)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def combined_bounds(point: float, low: float, high: float, seed_values: np.ndarray,
                    confidence: float) -> tuple[float, float]:
    """An interval over images and seeds: the image interval widened by the spread over seeds.

    The image half-widths become standard errors (divided by the normal quantile), the seed
    part is ``s^2 / S`` (``s``: standard deviation of the S per-seed values), and the two
    variances add; the quantile is Student's t with Welch-Satterthwaite degrees of freedom
    (``S - 1`` for the seed part, many for the image part), so three seeds widen it a lot.
    With no spread over seeds it is the image interval.
    """
    values = np.asarray(seed_values, dtype=np.float64)
    if values.size < 2 or not all(np.isfinite([point, low, high])):
        return low, high
    z = float(ndtri(0.5 + confidence / 2.0))
    v_low, v_high = ((point - low) / z) ** 2, ((high - point) / z) ** 2
    v_seed = float(values.var(ddof=1)) / values.size
    if v_seed == 0.0:
        return low, high
    v_img = (v_low + v_high) / 2.0
    df = (v_img + v_seed) ** 2 / (v_seed**2 / (values.size - 1))
    q = float(stdtrit(df, 0.5 + confidence / 2.0))
    return point - q * float(np.sqrt(v_low + v_seed)), point + q * float(np.sqrt(v_high + v_seed))
