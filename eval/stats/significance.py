"""Paired tests of two methods on the same images, their standard errors, multiplicity and power.

* **Standard error** (:func:`ratio_variance`): every statistic is a ratio of sums over images or a
  linear combination of such ratios (ACC = sum tp / sum valid, IoU = sum tp / sum union, mIoU and
  differences: means and differences of those). Its variance is the nonparametric delta-method
  (linearisation, infinitesimal-jackknife) variance ``v_L = n^-2 sum_i l_i^2`` with the empirical
  influence values of a ratio ``l_i = (t_i - (T / U) u_i) / mean(u)`` (Davison & Hinkley 1997,
  *Bootstrap Methods and their Application*, sec. 2.7.2 and example 2.18; Efron & Tibshirani 1993,
  sec. 21.3). In a bootstrap resample it is recomputed on the resample itself (weights ``w_i``:
  how often image i was drawn): ``v_L* = n^-2 sum_i w_i l*_i^2`` with ``T*``, ``U*`` the resample's
  sums; this is what studentises the bootstrap-t (Davison & Hinkley sec. 5.2.1).
* **Bias** (:func:`ratio_bias`): the delta-method (quadratic) bias ``b`` of each ratio, also
  recomputed on every resample; the tested and interval statistic is ``d~ = d - b``.
* :func:`studentised_p`: the studentised paired bootstrap test of **equal dataset-level
  metric** (null: ``metric(A) == metric(B)`` on the image population). Its statistic is
  ``t = d~ / se(d)``; the replicates ``t* = (d~* - d~) / se*(d*)``, each with the bias and over the
  standard error of its own resample, are centred on the observed difference, so they follow the
  null distribution of ``t`` whatever the methods' error profiles. Two-sided, symmetric:
  ``p = (1 + #{|t*| >= |t|}) / (R + 1)`` (equal-tailed: twice the smaller tail). It is the
  inversion of :func:`eval.stats.intervals.bootstrap_t_bounds` on the same replicates.
* :func:`signflip_p`: the sign-flip permutation test (null: **exchangeability**, the two
  methods' per-image stats are interchangeable on every image). Two methods with equal
  mIoU but different error profiles are not exchangeable; this test rejects them.
* :func:`mc_se`: Monte Carlo standard error of a p-value from R draws, ``sqrt(p (1 - p) / R)``.
* :func:`holm`: Holm's step-down adjustment (family-wise error control).
* :func:`min_detectable`: the smallest true difference the test detects with the given power,
  from the test's own standard error and critical value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.stats.intervals import critical_rank, order_statistic

__all__ = ["holm", "mc_se", "min_detectable", "ratio_bias", "ratio_variance", "signflip_p", "studentised_p"]


def ratio_variance(scale_a: np.ndarray, ratio_a: np.ndarray, scale_b: np.ndarray, ratio_b: np.ndarray,
                   moments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``n^-2 sum_i w_i l_i^a l_i^b``: the delta-method (co)variance of two ratios of weighted sums.

    With ``l_i = s (t_i - r u_i)`` (``r = T / U`` the ratio, ``s = n / U``, any common factor such as
    100 folded into ``s``), the sum expands into weighted moments of the per-image numerators and
    denominators, so one matrix product of the weights with the per-image products gives it for every
    resample. All arguments broadcast together.

    Args:
        scale_a, ratio_a: ``s`` and ``r`` of the first ratio (divided by ``n`` already: ``s = 1 / U``
            gives ``n^-2 sum w l^2`` directly).
        scale_b, ratio_b: those of the second.
        moments: weighted sums ``sum_i w_i x_i y_i`` of ``(t^a t^b, t^a u^b, u^a t^b, u^a u^b)``.
    """
    tt, tu, ut, uu = moments
    return scale_a * scale_b * (tt - ratio_b * tu - ratio_a * ut + ratio_a * ratio_b * uu)


def ratio_bias(total_num: np.ndarray, total_den: np.ndarray, num_den: np.ndarray, den_den: np.ndarray) -> np.ndarray:
    """``(r sum_i w_i u_i^2 - sum_i w_i t_i u_i) / U^2``: the delta-method (quadratic) bias of a ratio ``r = T / U``
    of weighted sums, NaN where ``U = 0``.

    It is ``(2 n^2)^-1 sum_i w_i q_ii`` with the ratio's second-order empirical influence values
    ``q_ii = -2 u_i l_i / mean(u)`` (Davison & Hinkley 1997, sec. 2.7.4, the quadratic approximation ``b_Q``;
    Efron 1982, ch. 6): the leading ``O(1 / n)`` term of ``E[T / U] - ratio``, estimated on the sums it is
    given, so a bootstrap resample gets its own. All arguments broadcast together.

    Args:
        total_num, total_den: ``T = sum_i w_i t_i`` and ``U = sum_i w_i u_i``.
        num_den, den_den: ``sum_i w_i t_i u_i`` and ``sum_i w_i u_i^2``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = total_num / total_den
        return np.where(total_den > 0, (ratio * den_den - num_den) / np.square(total_den), np.nan)


def studentised_p(t_obs: np.ndarray, t_reps: np.ndarray,
                  symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided studentised bootstrap p-values of ``d == 0`` (S,), and the replicates used (S,).

    Args:
        t_obs: (S,) observed ``d / se(d)`` (``d`` bias-corrected in :func:`eval.stats.analysis.analyse`); NaN where
            ``d = 0`` with ``se = 0`` (p = 1 there).
        t_reps: (R, S) replicates ``(d* - d) / se*`` (NaN where undefined: left out).
        symmetric: extremes by ``|t*| >= |t|``; else ``2 min(#{t* >= t}, #{t* <= t})`` (+1 each).
    """
    t_obs = np.asarray(t_obs, dtype=np.float64)
    used = (~np.isnan(t_reps)).sum(0)
    with np.errstate(invalid="ignore"):
        if symmetric:
            extreme = (np.abs(t_reps) >= np.abs(t_obs)).sum(0)
            p = (1.0 + extreme) / (used + 1.0)
        else:
            upper, lower = (t_reps >= t_obs).sum(0), (t_reps <= t_obs).sum(0)
            p = np.minimum(1.0, 2.0 * (1.0 + np.minimum(upper, lower)) / (used + 1.0))
    p = np.where(np.isnan(t_obs), 1.0, p)
    return np.where(used > 0, p, np.nan), used


def signflip_p(perm: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided sign-flip p-values ``(1 + #{|d_perm| >= |d|}) / (R + 1)`` (S,) from (R, S) flipped differences,
    and the flips used (S,): a flip whose difference is undefined (NaN) is left out."""
    tol = 1e-9 * np.maximum(1.0, np.abs(observed))
    used = np.isfinite(perm).sum(0)
    extreme = (np.abs(np.where(np.isfinite(perm), perm, 0.0)) >= np.abs(observed) - tol).sum(0)
    return np.where(np.isfinite(observed), (1.0 + extreme) / (used + 1.0), np.nan), used


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


def min_detectable(se: np.ndarray, t_reps: np.ndarray, confidence: float, power: float = 0.8,
                   symmetric: bool = True) -> np.ndarray:
    """(S,) smallest true difference the studentised test at level ``1 - confidence`` detects with ``power``.

    A true difference ``delta`` shifts the statistic to about ``t* + delta / se``; the test rejects when
    that passes its critical value ``c`` (the one :func:`studentised_p` uses: the ``j``-th largest ``|t*|``,
    or the upper ``t*`` critical value when equal-tailed), so ``delta = (c - t*_{1 - power}) se`` with
    ``t*_{1 - power}`` the ``1 - power`` quantile of the replicates (about ``-z_power``). The far tail is
    ignored (its rejections add under ``(1 - confidence) / 2``).

    Args:
        se: (S,) standard errors of the differences on the full sample (the test's).
        t_reps: (R, S) studentised replicates.
    """
    used = (~np.isnan(t_reps)).sum(0)
    alpha = 1.0 - confidence
    if symmetric:
        crit = order_statistic(np.abs(t_reps), critical_rank(used, alpha), largest=True)
    else:
        crit = order_statistic(t_reps, critical_rank(used, alpha / 2.0), largest=True)
    low = np.full(t_reps.shape[1], np.nan)
    some = used > 0
    if some.any():
        low[some] = np.nanquantile(t_reps[:, some], 1.0 - power, axis=0)
    with np.errstate(invalid="ignore"):
        return (crit - low) * np.asarray(se, dtype=np.float64)
