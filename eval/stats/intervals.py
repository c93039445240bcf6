"""Bootstrap confidence intervals, vectorised over statistics (columns).

Every function takes bootstrap replicates ``reps`` of shape (R, S): R resamples of S
statistics, NaN where a resample leaves a statistic undefined (such resamples are left
out of that statistic's interval; the caller reports their share).

* :func:`percentile_bounds`: the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the replicates.
* :func:`bca_bounds`: Efron's bias-corrected and accelerated interval: the quantiles at
  levels moved by the bias correction ``z0`` (the share of replicates below the point
  estimate, as a normal quantile) and the acceleration ``a`` (the skewness of the
  jackknife values, leave-one-image-out). It corrects the downward bias of a
  ratio-of-sums IoU at small N that the percentile interval keeps. Small-sample floor:
  where the jackknife standard error exceeds the replicates' standard deviation, the
  replicates are first scaled about the estimate to the jackknife standard error (the
  bootstrap spread of a ratio of sums is biased low with few images per class, the
  jackknife's is not: at 50 images, 27 classes, the bootstrap SD was 1.86, the jackknife
  SE 2.03, the true SD 2.11 mIoU points); ``z0`` and ``a`` do not change under that scaling.
* :func:`combined_bounds`: an image interval widened by the spread over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

__all__ = ["acceleration", "bca_bounds", "column_quantiles", "combined_bounds", "jackknife_se", "percentile_bounds"]


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
               confidence: float, floor: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(S,) lower and upper BCa bounds.

    Args:
        reps: (R, S) bootstrap replicates (NaN where undefined).
        point: (S,) estimates on the full sample.
        jack: (N, S) leave-one-image-out estimates.
        confidence: coverage, e.g. 0.95.
        floor: scale the replicates about ``point`` up to the jackknife standard error where
            their standard deviation is smaller (see the module docstring).

    The bias correction counts ties with the point estimate as half below, so a statistic
    whose replicates all equal it (two identical methods) gets ``z0 = 0``.
    """
    finite = np.isfinite(reps)
    count = finite.sum(0)
    if floor:
        mean = np.where(finite, reps, 0.0).sum(0) / np.maximum(count, 1)
        spread = np.sqrt(np.where(finite, (reps - mean) ** 2, 0.0).sum(0) / np.maximum(count, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(spread > 0, np.maximum(1.0, jackknife_se(jack) / spread), 1.0)
        reps = np.where(finite, point + (reps - point) * np.nan_to_num(scale, nan=1.0), reps)
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
