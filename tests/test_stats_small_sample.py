"""eval.stats at small samples: the rare-class rule of the mIoU interval, and the studentised paired test's pieces
(the observed and resampled standard errors are one estimator; the replicates are centred on the observed
difference)."""

from __future__ import annotations

import numpy as np
import pytest

from eval.stats.analysis import ImageStats, _bootstrap, _design, analyse
from eval.stats.resample import bootstrap_weights
from eval.stats.significance import ratio_bias


def _with_predicted_only(images: int, seen: list[int], rng: np.random.Generator, classes: int = 8) -> ImageStats:
    """Classes ``0 .. len(seen) - 1`` in the ground truth of the first ``seen[c]`` images; every other class only
    predicted (false positives on every image, no ground truth), as absent classes matched to leftover segments."""
    count = np.zeros((images, classes), dtype=np.int64)
    for c, k in enumerate(seen):
        count[:k, c] = rng.poisson(400, k) + 1
    tp = rng.binomial(count, 0.7)
    fp = rng.poisson(30, (images, classes)) + 1
    return ImageStats(tp, fp, count - tp, count.sum(1) + 1)


def test_predicted_only_classes_are_not_rare():
    """2 classes with ground truth in all 40 images and 6 classes only predicted: all 8 are in the mIoU (IoU 0 for
    the 6), but none is rare, so --min-class-images 1 (and 5) give the interval; the old rule counted the 6 as
    rare (6 of 8) and refused it."""
    stats = _with_predicted_only(40, [40, 40], np.random.default_rng(0))
    totals = stats.totals()
    assert sum(v is not None for v in totals["iou"]) == 8 and totals["iou"][2:] == [0.0] * 6
    for limit in (1, 5):
        entry = analyse({"a": stats}, resamples=200, min_class_images=limit)["methods"]["a"]
        assert "miou" not in entry["refused"], entry["refused"]
        low, high = entry["miou"][1:]
        assert low < entry["miou"][0] < high


def test_rare_classes_with_ground_truth_still_refuse():
    """Twin: 3 classes with ground truth, 2 of them in 2 images each (rare at 5), 5 only predicted: refused as
    2 of 3, the predicted-only ones counted in neither figure; at --min-class-images 2 none is rare."""
    stats = _with_predicted_only(40, [40, 2, 2], np.random.default_rng(1))
    out = analyse({"a": stats, "b": stats}, resamples=200)
    refused = out["methods"]["a"]["refused"]["miou"]
    assert (refused["rare_classes"], refused["classes"]) == (2, 3)
    assert "2 of the mIoU's 3 classes with ground truth" in refused["reason"]
    assert out["methods"]["a"]["miou"][1:] == [None, None]
    assert out["pairs"]["a vs b"]["refused_metrics"]["miou"]["rare_classes"] == 2
    assert "miou" not in analyse({"a": stats}, resamples=200, min_class_images=2)["methods"]["a"]["refused"]


def _pair(images: int, shift: int, rng: np.random.Generator) -> tuple[ImageStats, ImageStats]:
    """Two methods on the same images; B recovers ``shift`` fewer pixels of every class on every image."""
    count = rng.poisson(300, (images, 4)) + 50
    tp = rng.binomial(count, 0.7)
    fp = rng.poisson(40, (images, 4))
    low = np.clip(tp - shift - rng.integers(0, 5, tp.shape), 0, None)
    return ImageStats(tp, fp, count - tp, count.sum(1)), ImageStats(low, fp, count - low, count.sum(1))


def test_studentised_replicates_are_centred_on_the_observed_difference_over_the_same_se():
    """A large true difference (t above 10): the replicates ``(d* - b* - (d - b)) / se*`` (``b``: the delta-method
    bias) stay near 0 (median |t*| under 1), so p is the smallest possible, 1 / (R + 1); replicates centred on 0
    instead (``d* / se*``) would sit near t and give p about 1/2. The observed se is the resampled one's
    formula at weights 1: a resample that draws every image once gives exactly the observed se and t* = 0."""
    a, b = _pair(40, 60, np.random.default_rng(5))
    design = _design({"a": a, "b": b})
    total = design.matrix.sum(0, keepdims=True)
    point = design.statistics(total)
    se = np.sqrt(design.variances(np.ones((1, 40)), total)["d_miou"][0, 0])
    centre = {k: v - design.biases(np.ones((1, 40)), total)[k] for k, v in point.items()}
    t_obs = centre["d_miou"][0, 0] / se
    assert t_obs > 10
    reps, t_reps = _bootstrap(design, centre, 400, np.random.default_rng(0))
    t = t_reps["d_miou"][:, 0]
    assert np.median(np.abs(t)) < 1.0 and abs(t.mean()) < 0.5
    resampled = _resampled(design, 400)
    np.testing.assert_allclose(t, (reps["d_miou"][:, 0] - design.biases(*resampled)["d_miou"][:, 0]
                                   - centre["d_miou"][0, 0]) / np.sqrt(design.variances(*resampled)["d_miou"][:, 0]),
                               rtol=1e-9)
    out = analyse({"a": a, "b": b}, resamples=400)["pairs"]["a vs b"]
    assert out["miou"][3] == pytest.approx(1 / 401) and out["miou"][1] > 0
    # the identity resample: same sums, same se, t* = 0
    same = design.variances(np.ones((1, 40)), (np.ones((1, 40)) @ design.matrix).astype(np.int64))["d_miou"][0, 0]
    assert same == se**2


def _resampled(design, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights and sums of ``_bootstrap``'s first ``draws`` resamples at generator seed 0."""
    weights = np.concatenate(list(bootstrap_weights(design.num_images, draws, np.random.default_rng(0))))
    return weights, (weights @ design.matrix).astype(np.int64)


def test_ratio_bias_is_the_second_order_bias_of_a_ratio():
    """The delta-method bias of T / U matches the exact mean of the ratio over many samples of 50 images from a
    population with known E[t] / E[u] (t and u correlated, skewed) to within 20% of its size, and it is
    ``(r sum u^2 - sum t u) / U^2`` of the sums it is given (weights count images)."""
    rng = np.random.default_rng(0)
    n, samples = 50, 100_000
    u = rng.gamma(2.0, 1.0, (samples, n))
    t = 0.5 * u + 0.4 * u**2 + rng.normal(0.0, 0.3, (samples, n))  # E[t] = 0.5 * 2 + 0.4 * 6 = 3.4, E[u] = 2
    truth = np.mean(t.sum(1) / u.sum(1)) - 3.4 / 2.0
    est = ratio_bias(t.sum(1), u.sum(1), (t * u).sum(1), (u * u).sum(1))
    assert abs(truth) > 0.01 and np.mean(est) == pytest.approx(truth, rel=0.2)
    w = np.asarray([2.0, 0.0, 1.0])
    tt, uu = np.asarray([1.0, 5.0, 3.0]), np.asarray([2.0, 7.0, 1.0])
    T, U = w @ tt, w @ uu
    assert ratio_bias(T, U, w @ (tt * uu), w @ (uu * uu)) == pytest.approx((T / U * 9.0 - 7.0) / 25.0)
    assert np.isnan(ratio_bias(np.asarray(1.0), np.asarray(0.0), np.asarray(0.0), np.asarray(0.0)))
