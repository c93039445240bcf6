"""eval.stats: the bootstrap-t interval and its SE, the paired tests, refusals, Holm, seeds, calibration, import time.

The calibration populations (:mod:`eval.stats.calibration`) have 27 classes with image and
class quality effects and closed-form population scores. Everything is seeded; the ``slow``
variants run the full sizes of the acceptance criteria (``pytest -m slow``), the figures
``python -m eval.stats.calibration`` prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.metrics.summed_scores import scores
from eval.stats import calibration as sp
from eval.stats.analysis import ImageStats, _design, analyse
from eval.stats.comparison import compare_runs
from eval.stats.intervals import bca_bounds, bootstrap_t_bounds
from eval.stats.significance import holm, min_detectable, studentised_p

ROOT = Path(__file__).resolve().parents[1]


def test_interval_coverage_fast():
    """A small version of the calibration (the full one is slow): the mechanics and a rough level."""
    at_200 = sp.coverage(200, 40, resamples=300)
    assert at_200["refused"] == 0.0 and at_200["miou"] >= 0.85 and at_200["acc"] >= 0.85, at_200
    long_tail = sp.coverage(50, 10, long_tail=True, resamples=100)
    assert long_tail["refused"] >= 0.9, long_tail  # most classes in < 5 of 50 images: refused


@pytest.mark.slow
def test_interval_coverage_300_samples():
    """The acceptance figures (``python -m eval.stats.calibration --only coverage``)."""
    assert sp.coverage(50, 300)["miou"] >= 0.93
    assert sp.coverage(200, 300)["miou"] >= 0.94
    long_tail = sp.coverage(50, 300, long_tail=True)
    assert long_tail["refused"] == 1.0 or long_tail["miou"] >= 0.90, long_tail


def test_paired_test_level_fast():
    equal = sp.rejections(200, 30, "equal-iou", draws=200)
    assert equal["miou"] <= 0.1, equal
    assert equal["acc"] >= 0.9, equal  # their ACCs differ (the aggressive one recovers more pixels): found
    same = sp.rejections(80, 30, "exchangeable", draws=200)
    assert same["miou"] <= 0.1 and same["acc"] <= 0.1 and same["signflip_miou"] <= 0.1, same


@pytest.mark.slow
def test_paired_test_level_300_samples():
    """The acceptance figures (``python -m eval.stats.calibration --only level``): equal-IoU pair 0.057 at 50
    images (seed 0; seed 1: 0.043, seed 2: 0.023, 600 samples of seed 1: 0.052), 0.033 at 1000; exchangeable
    0.047 and 0.043."""
    for images in (50, 1000):
        assert sp.rejections(images, 300, "equal-iou")["miou"] <= 0.07
        assert sp.rejections(images, 300, "exchangeable")["miou"] <= 0.07
    assert sp.rejections(50, 300, "equal-iou", seed=1)["miou"] <= 0.07


def _influence_variance(design, weights: np.ndarray, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """``n^-2 sum_i w_i l_i^2`` with the empirical influence values ``l_i`` taken by finite differences of the
    statistics at the resample's distribution (independent of the moment algebra)."""
    n = design.num_images
    matrix = design.matrix.astype(np.float64)
    base = design.statistics((weights @ matrix)[None])
    sq = {k: np.zeros_like(v[0]) for k, v in base.items()}
    for i in range(n):
        moved = (1 - eps) * weights + eps * n * np.eye(n)[i]  # mix in a point mass at image i, same total
        stats = design.statistics((moved @ matrix)[None])
        for k in sq:
            sq[k] += weights[i] * ((stats[k][0] - base[k][0]) / eps) ** 2
    return {k: v / n**2 for k, v in sq.items()}


def test_resample_variance_is_the_delta_method_variance_of_that_resample():
    rng = np.random.default_rng(3)
    a1, a2, b = _small(25, rng), _small(25, rng), _small(25, rng)
    design = _design({"a": [a1, a2], "b": b})  # a seeded method: its blocks average; the pair differences
    weights = np.bincount(rng.integers(0, 25, 25), minlength=25).astype(np.float64)
    sums = (weights @ design.matrix)[None].astype(np.int64)
    got = design.variances(weights[None], sums)
    expected = _influence_variance(design, weights)
    for key in ("acc", "miou", "iou", "d_acc", "d_miou", "d_iou"):
        np.testing.assert_allclose(got[key][0], expected[key], rtol=2e-4, err_msg=key)
        assert (got[key][0] > 0).all(), key


def test_bootstrap_t_bounds_and_p_by_hand():
    t = np.asarray([-3.0, -1.0, 0.5, 2.0, 4.0, -0.2, 1.5, -2.5, 0.1, 3.5, -5.0, 0.0, 1.0, -1.5, 2.5, -0.5, 0.3,
                    -4.0, 6.0])[:, None]  # 19 replicates: alpha (R + 1) = 1, so j = 0 at 95% (no interval)
    low, high = bootstrap_t_bounds(t, np.asarray([10.0]), np.asarray([2.0]), 0.95)
    assert np.isnan(low[0]) and np.isnan(high[0])
    # at 80%: j = ceil(0.2 * 20) - 1 = 3, the 3rd largest |t*| is 4.0: 10 +- 2 * 4
    low, high = bootstrap_t_bounds(t, np.asarray([10.0]), np.asarray([2.0]), 0.80)
    assert (low[0], high[0]) == (2.0, 18.0)
    # equal-tailed at 80%: j = ceil(0.1 * 20) - 1 = 1: the largest (6.0) and smallest (-5.0) t*
    low, high = bootstrap_t_bounds(t, np.asarray([10.0]), np.asarray([2.0]), 0.80, symmetric=False)
    assert (low[0], high[0]) == (10.0 - 2 * 6.0, 10.0 + 2 * 5.0)
    # p of t = 10 / 2 = 5: |t*| >= 5 twice: (1 + 2) / 20; equal-tailed: t* >= 5 once: 2 (1 + 1) / 20
    assert studentised_p(np.asarray([5.0]), t)[0][0] == pytest.approx(3 / 20)
    assert studentised_p(np.asarray([5.0]), t, symmetric=False)[0][0] == pytest.approx(4 / 20)
    # a NaN replicate is left out: 18 used
    p, used = studentised_p(np.asarray([5.0]), np.vstack([t[:-1], [[np.nan]]]))
    assert used[0] == 18 and p[0] == pytest.approx(2 / 19)
    # power: (critical value 4.0 - the 20% quantile of t*) * se
    assert min_detectable(np.asarray([2.0]), t, 0.80)[0] == pytest.approx((4.0 - np.quantile(t[:, 0], 0.2)) * 2.0)


def test_interval_is_a_hand_computed_bootstrap_t():
    """analyse's mIoU / ACC interval equals a loop: resample images, score, subtract the delta-method bias of the
    resample, its delta-method SE from its influence values written out by hand, t*, and the j-th largest |t*|
    about the bias-corrected estimate."""
    stats = _small(30, np.random.default_rng(11))
    resamples = 199
    out = analyse({"m": stats}, resamples=resamples, seed=5)["methods"]["m"]
    boot_seq = np.random.SeedSequence(5).spawn(2)[0]
    idx = np.random.default_rng(boot_seq).integers(0, 30, size=(resamples, 30))

    def score_and_se(rows: np.ndarray) -> dict[str, tuple[float, float]]:
        tp, fp, fn, valid = stats.tp[rows], stats.fp[rows], stats.fn[rows], stats.valid[rows]
        union = tp + fp + fn
        n = len(rows)
        iou = tp.sum(0) / union.sum(0)
        infl_iou = (tp - iou * union) / union.mean(0)  # (n, C) l_i of each class IoU
        acc = tp.sum() / valid.sum()
        infl_acc = (tp.sum(1) - acc * valid) / valid.mean()
        got = scores(tp.sum(0), fp.sum(0), fn.sum(0), valid.sum())
        # quadratic delta-method bias of a ratio: (r sum u^2 - sum t u) / U^2; the mIoU's: the mean of its classes'
        bias_iou = (iou * (union**2).sum(0) - (tp * union).sum(0)) / union.sum(0) ** 2
        bias_acc = (acc * (valid**2).sum() - (tp.sum(1) * valid).sum()) / valid.sum() ** 2
        return {"miou": (got["miou"] - 100 * bias_iou.mean(), 100 * np.sqrt((infl_iou.mean(1) ** 2).sum()) / n),
                "acc": (got["acc"] - 100 * bias_acc, 100 * np.sqrt((infl_acc**2).sum()) / n)}

    full = score_and_se(np.arange(30))
    reps = [score_and_se(rows) for rows in idx]
    j = int(np.ceil(0.05 * (resamples + 1))) - 1  # 9
    for metric in ("miou", "acc"):
        centre, se = full[metric]  # the bias-corrected estimate
        t = np.sort([abs(r[metric][0] - centre) / r[metric][1] for r in reps])
        q = t[-j]
        assert out[metric][0] == pytest.approx(stats.totals()[metric], abs=1e-12)  # the point is the metric's
        assert 0 < abs(out[metric][0] - centre) < 0.5 * se  # the correction is small, not nothing
        np.testing.assert_allclose(out[metric][1:], [centre - q * se, centre + q * se], rtol=1e-9)


def test_p_value_is_the_inversion_of_the_pair_interval():
    """With resamples == permutations, 0 lies in the 95% interval of a difference iff its p >= 0.05 (ACC, mIoU
    and every class), over pairs with small true differences so that both outcomes occur."""
    agree = {True: 0, False: 0}
    for s in range(12):
        rng = np.random.default_rng(100 + s)
        base = _small(40, rng)
        count = base.tp + base.fn
        tp = np.clip(base.tp + rng.integers(-20, 21, count.shape) + s % 4, 0, count)  # noise, a small bias
        other = ImageStats(tp, base.fp + rng.integers(-5, 6, count.shape).clip(-base.fp), count - tp, base.valid)
        pair = analyse({"a": other, "b": base}, resamples=199, permutations=199, seed=s)["pairs"]["a vs b"]
        cells = [pair["acc"], pair["miou"], *[row for row in pair["iou"] if row is not None]]
        for _, low, high, p, *_ in cells:
            inside = low <= 0.0 <= high
            assert inside == (p >= 0.05), (low, high, p)
            agree[inside] += 1
    assert agree[True] >= 5 and agree[False] >= 5, agree


def test_signflip_scores_the_fixed_class_sets_of_the_observed_difference():
    """Class 3 has no ground truth; A predicts it (false positives) on two images, B never. The observed
    difference averages A over classes 0-3 (IoU 0 for class 3) and B over 0-2; every flip is scored with those
    same sets, and a flip that leaves A's side without class 3 is undefined and left out."""
    rng = np.random.default_rng(21)
    b = _small(40, rng)
    tp, fp, fn = b.tp.copy(), b.fp.copy(), b.fn.copy()
    tp[:, 3] = fn[:, 3] = fp[:, 3] = 0
    b = ImageStats(tp, fp, fn, tp.sum(1) + fn.sum(1))
    gain = np.minimum(b.fn, 5)
    fp_a = b.fp.copy()
    fp_a[[4, 9], 3] = 30
    a = ImageStats(b.tp + gain, fp_a, b.fn - gain, b.valid)
    draws = 300
    out = analyse({"a": a, "b": b}, resamples=50, permutations=draws, seed=2)["pairs"]["a vs b"]
    observed = out["miou"][0]
    assert a.totals()["iou"][3] == 0.0 and b.totals()["iou"][3] is None
    assert observed == pytest.approx(a.totals()["miou"] - b.totals()["miou"])
    keep_a, keep_b = np.asarray([True] * 4), np.asarray([True, True, True, False])
    flip_seq = np.random.SeedSequence(2).spawn(2)[1]
    signs = np.random.default_rng(flip_seq).integers(0, 2, size=(draws, 40)).astype(bool)
    extreme, used = 0, 0
    for flip in signs:
        sides = [ImageStats(*(np.where(flip[:, None] if x.ndim == 2 else flip, y, x) if first else
                              np.where(flip[:, None] if x.ndim == 2 else flip, x, y)
                              for x, y in zip((a.tp, a.fp, a.fn, a.valid), (b.tp, b.fp, b.fn, b.valid), strict=True)))
                 for first in (True, False)]
        union_a = (sides[0].tp + sides[0].fp + sides[0].fn).sum(0)
        if union_a[3] == 0:
            continue  # A's side lacks class 3: undefined
        iou = [np.asarray([v if v is not None else np.nan for v in s.totals()["iou"]]) for s in sides]
        diff = iou[0][keep_a].mean() - iou[1][keep_b].mean()
        used += 1
        extreme += abs(diff) >= abs(observed) - 1e-9
    assert 0 < used < draws  # about a quarter of the flips move both images of class 3 to B
    assert out["signflip"]["miou"]["draws"] == used
    assert out["signflip"]["miou"]["p"] == pytest.approx((1 + extreme) / (used + 1), abs=1e-12)


def test_most_classes_rare_refuses_the_miou_interval_and_test():
    data = sp.draw(np.random.default_rng(4), 1, 50, [sp.method(0), sp.method(1)], long_tail=True)[0]
    out = analyse({"a": data[0], "b": data[1]}, resamples=100)
    entry = out["methods"]["a"]
    counts = data[0].class_images()
    keep = ((data[0].tp + data[0].fp + data[0].fn).sum(0) > 0) & (counts > 0)  # classes with ground truth
    rare = int((counts[keep] < 5).sum())
    assert rare * 2 > keep.sum()
    assert entry["miou"][0] is not None and entry["miou"][1:] == [None, None]
    assert entry["refused"]["miou"]["rare_classes"] == rare and entry["refused"]["miou"]["classes"] == keep.sum()
    assert "--min-class-images 5" in entry["refused"]["miou"]["reason"]
    assert entry["acc"][1] is not None  # the ACC interval does not depend on rare classes
    pair = out["pairs"]["a vs b"]
    assert pair["miou"][1:] == [None, None, None] and pair["test"]["miou"]["holm"] is None
    assert pair["acc"][3] is not None and pair["refused_metrics"]["miou"]["rare_classes"] == rare
    # with --min-class-images 1 nothing is rare: the interval is given
    assert analyse({"a": data[0]}, resamples=100, min_class_images=1)["methods"]["a"]["miou"][1] is not None


def _small(images: int, rng: np.random.Generator) -> ImageStats:
    count = rng.poisson(300, (images, 4)) * (rng.random((images, 4)) < 0.8)
    tp = rng.binomial(count, 0.7)
    return ImageStats(tp, rng.poisson(40, (images, 4)), count - tp, count.sum(1))


def test_one_image_gives_null_bounds_with_a_reason():
    one = _small(1, np.random.default_rng(0))
    out = analyse({"a": one, "b": _small(1, np.random.default_rng(1))}, resamples=100)
    entry = out["methods"]["a"]
    assert entry["miou"][0] == one.totals()["miou"] and entry["miou"][1:] == [None, None]
    assert entry["acc"][1:] == [None, None]
    assert entry["refused"]["miou"]["images"] == 1 and "--min-images 30" in entry["refused"]["miou"]["reason"]
    pair = out["pairs"]["a vs b"]
    assert pair["miou"][1:] == [None, None, None] and pair["test"]["miou"]["holm"] is None
    assert all(row is None or row[1:3] == [None, None] for row in entry["iou"])


def test_a_class_in_one_image_gets_no_per_class_interval(tmp_path):
    rng = np.random.default_rng(2)
    stats = _small(100, rng)
    tp, fp, fn = stats.tp.copy(), stats.fp.copy(), stats.fn.copy()
    tp[:, 3], fn[:, 3], fp[:, 3] = 0, 0, 0
    tp[17, 3], fn[17, 3], fp[17, 3] = 50, 20, 10  # class 3 in image 17 only
    rare = ImageStats(tp, fp, fn, tp.sum(1) + fn.sum(1))
    out = analyse({"m": rare}, resamples=300)["methods"]["m"]
    assert out["iou"][3][0] == pytest.approx(100 * 50 / 80) and out["iou"][3][1:] == [None, None]
    assert out["refused"]["iou"]["3"]["images"] == 1
    assert "--min-class-images 5" in out["refused"]["iou"]["3"]["reason"]
    assert all(out["iou"][c][1] is not None for c in range(3))
    assert 0.2 < out["lacking_class_share"] < 0.5  # about (1 - 1/100)^100 of the resamples lack class 3


def test_holm_equals_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.5, 0.0001, 0.049, 0.02]
    expected = multipletests(p, alpha=0.05, method="holm")[1]
    np.testing.assert_allclose(holm(p), expected, rtol=0, atol=1e-15)
    assert holm([0.02, None, 0.01]) == [0.02, None, 0.02]


def test_bca_agrees_with_scipy_on_a_mean():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(4)
    x = rng.exponential(1.0, 60)  # skewed: BCa moves both bounds up from the percentile ones
    idx = np.random.default_rng(5).integers(0, 60, size=(20000, 60))
    reps = x[idx].mean(1)[:, None]
    jack = ((x.sum() - x) / 59)[:, None]
    low, high = bca_bounds(reps, np.asarray([x.mean()]), jack, 0.95)
    ref = bootstrap((x,), np.mean, n_resamples=20000, method="BCa", random_state=6).confidence_interval
    assert low[0] == pytest.approx(ref.low, abs=0.02) and high[0] == pytest.approx(ref.high, abs=0.03)


def test_power_and_holm_marks_in_the_output():
    rng = np.random.default_rng(9)
    base = _small(200, rng)
    gain = np.minimum(base.fn, 20)
    better = ImageStats(base.tp + gain, base.fp, base.fn - gain, base.valid)
    pair = analyse({"better": better, "base": base}, resamples=400, permutations=400)["pairs"]["better vs base"]
    assert pair["test"]["miou"]["significant"] and pair["test"]["miou"]["holm"] <= 0.05
    power = pair["power"]["miou"]
    assert 0 < power["mdd"] < 5
    assert power["images_for_1_point"] == int(np.ceil(200 * power["mdd"] ** 2))
    assert pair["test"]["miou"]["mc_se"] == pytest.approx(np.sqrt(pair["miou"][3] * (1 - pair["miou"][3]) / 400))


def test_analysis_modules_import_no_model_code():
    code = ("import sys, time; t = time.perf_counter(); import eval.compare, eval.report.tables, eval.stats.analysis; "
            "print(time.perf_counter() - t); print(sorted(m for m in ('torch', 'diffusers', 'transformers', "
            "'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    seconds, loaded = out.stdout.splitlines()
    assert loaded == "[]", out.stdout


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> list[Path]:
    """`-m seed=0,1,2` as three run folders of K-Means-C on the same synthetic images (module scope, as the
    runner tests: the runner's first torch imports set process-wide defaults outside any one test)."""
    from hydra_compose import compose_eval

    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.run import evaluate

    tmp = tmp_path_factory.mktemp("seeds")
    root = tmp / "coco"
    write_synthetic_coco_stuff(root, num_images=3, seed=3)
    folders = []
    for seed in (0, 1, 2):
        folders.append(tmp / f"seed{seed}")
        evaluate(compose_eval(["experiment=coco_stuff27_kmeans_c", "model=tiny", "dataset.size=128", "batch_size=2",
                               "num_workers=0", "progress=false", "device=cpu", "methods.kmeans_c.segmenter.n_init=1",
                               f"dataset.root={root}", f"paths.output_dir={folders[-1]}", f"seed={seed}"]))
    return folders


def test_kmeans_c_seed_spread_over_three_seeds_is_reported(seed_runs, tmp_path):
    """compare groups the three seed folders into one K-Means-C with its seed spread."""
    folders = seed_runs
    settings = [json.loads((f / "run.json").read_text())["settings"]["methods"]["kmeans_c"] for f in folders]
    assert [s["segmenter"]["seed"] for s in settings] == [0, 1, 2]
    # 3 images: a resample of one image thrice has a zero SE, so the bootstrap-t is unbounded; percentile here
    result = compare_runs(folders, tmp_path / "cmp", resamples=50, permutations=50, min_images=1, min_class_images=1,
                          interval="percentile")
    assert list(result["methods"]) == ["K-Means-C"]
    entry = result["methods"]["K-Means-C"]
    spread = entry["seed_spread"]
    assert spread["runs"] == 3 and entry["seeds"] == 3
    per_seed = [json.loads((f / "metrics.json").read_text())["methods"]["K-Means-C"]["miou"] for f in folders]
    assert spread["values"]["miou"] == pytest.approx(per_seed, abs=1e-12)
    assert spread["sd"]["miou"] == pytest.approx(np.std(per_seed, ddof=1)) and spread["sd"]["miou"] > 0
    assert entry["miou"][0] == pytest.approx(np.mean(per_seed))
    low, high = spread["combined"]["miou"][1:]
    assert low <= entry["miou"][1] and high >= entry["miou"][2]  # images and seeds: at least as wide
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "K-Means-C (3 seeds" in md and f"| {spread['sd']['miou']:.2f} |" in md


@pytest.fixture(scope="module")
def diffseg_kmeans_seed_runs(tmp_path_factory) -> list[Path]:
    """`-m seed=0,1` of DiffSeg + K-Means-C (module scope, as :func:`seed_runs`)."""
    from hydra_compose import compose_eval

    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.run import evaluate

    tmp = tmp_path_factory.mktemp("diffseg_seeds")
    write_synthetic_coco_stuff(tmp / "coco", num_images=3, seed=3)
    folders = [tmp / f"seed{seed}" for seed in (0, 1)]
    for seed, folder in zip((0, 1), folders, strict=True):
        evaluate(compose_eval(["experiment=coco_stuff27_kmeans_c", "methods=diffseg_kmeans", "methods.kmeans_s=null",
                               "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0", "progress=false",
                               "device=cpu", "methods.kmeans_c.segmenter.n_init=1", f"dataset.root={tmp / 'coco'}",
                               f"paths.output_dir={folder}", f"seed={seed}"]))
    return folders


def test_a_method_the_seed_does_not_reach_is_not_counted_as_seed_runs(diffseg_kmeans_seed_runs, tmp_path):
    """K-Means-C gets two seeds; DiffSeg, whose own settings are the same in both folders, is one run
    (with a note), not two seeds with a spread of zero."""
    folders = diffseg_kmeans_seed_runs
    result = compare_runs(folders, tmp_path / "cmp", resamples=50, permutations=50, min_images=1, min_class_images=1)
    assert sorted(result["methods"]) == ["DiffSeg", "K-Means-C"]
    assert result["methods"]["K-Means-C"]["seeds"] == 2 and result["methods"]["K-Means-C"]["seed_spread"]
    diffseg = result["methods"]["DiffSeg"]
    assert diffseg["seeds"] == 1 and not diffseg.get("seed_spread") and diffseg["seed_runs"] == [str(folders[0])]
    assert diffseg["label"] == "DiffSeg (random weights, synthetic data)"
    assert len(result["seed_notes"]) == 1 and result["seed_notes"][0].startswith("DiffSeg: ")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Not seed replicates" in md and "K-Means-C (2 seeds" in md and "DiffSeg (2 seeds" not in md
    # a seeded point is a mean over seed runs, so the note must not call it "equal to each run's metrics.json"
    assert "first seed run" in md and "equal to each run's metrics.json" not in md
