"""eval.stats by simulation: interval coverage, the paired test's null, refusals, Holm, seeds, import time.

The populations (tests/stat_populations.py) have 27 classes with image and class quality
effects and closed-form population scores. Everything is seeded; the ``slow`` variants run
the full sizes of the acceptance criteria (``pytest -m slow``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stat_populations as sp

from eval.compare import ImageStats, analyse, compare_runs
from eval.stats.intervals import bca_bounds
from eval.stats.significance import holm

ROOT = Path(__file__).resolve().parents[1]


def _coverage(images: int, samples: int, long_tail: bool = False, resamples: int = 500) -> dict[str, float]:
    """Share of samples whose mIoU / ACC interval covers the population value, and the share refused."""
    freq, size = sp.classes(long_tail)
    method = sp.method(0)
    truth = method.population(freq, size)
    data = sp.draw(np.random.default_rng(images), samples, images, [method], long_tail)
    hits = {"acc": 0, "miou": 0, "refused": 0}
    for s in range(samples):
        out = analyse({"m": data[s][0]}, resamples=resamples, seed=s)["methods"]["m"]
        if out["miou"][1] is None:
            hits["refused"] += 1
            continue
        for metric in ("acc", "miou"):
            hits[metric] += out[metric][1] <= truth[metric] <= out[metric][2]
    reported = max(samples - hits["refused"], 1)
    return {"acc": hits["acc"] / reported, "miou": hits["miou"] / reported, "refused": hits["refused"] / samples}


def test_miou_interval_covers_at_200_and_50_images():
    at_200 = _coverage(200, 150)
    at_50 = _coverage(50, 150)
    assert at_200["miou"] >= 0.92 and at_200["acc"] >= 0.92, at_200
    assert at_50["refused"] == 1.0 or at_50["miou"] >= 0.90, at_50


@pytest.mark.slow
def test_miou_interval_covers_at_200_and_50_images_300_samples():
    at_200 = _coverage(200, 300, resamples=1000)
    at_50 = _coverage(50, 300, resamples=1000)
    assert at_200["miou"] >= 0.92, at_200
    assert at_50["refused"] == 1.0 or at_50["miou"] >= 0.90, at_50


def _rejections(images: int, samples: int, methods: list[sp.Method], draws: int) -> dict[str, float]:
    data = sp.draw(np.random.default_rng(7), samples, images, methods)
    counts = {"acc": 0, "miou": 0, "signflip_miou": 0}
    for s in range(samples):
        pair = analyse({"a": data[s][0], "b": data[s][1]}, resamples=20, permutations=draws, seed=s)["pairs"]["a vs b"]
        counts["acc"] += pair["acc"][3] <= 0.05
        counts["miou"] += pair["miou"][3] <= 0.05
        counts["signflip_miou"] += pair["signflip"]["miou"]["p"] <= 0.05
    return {k: v / samples for k, v in counts.items()}


def test_paired_test_holds_its_level_under_equal_miou_and_for_exchangeable_methods():
    conservative, aggressive = sp.equal_iou_pair()
    equal = _rejections(500, 100, [conservative, aggressive], draws=200)
    assert equal["miou"] <= 0.07, equal
    assert equal["acc"] >= 0.9, equal  # their ACCs differ (the aggressive one recovers more pixels): found
    same = sp.method(0)
    exchangeable = _rejections(150, 120, [same, same], draws=200)
    assert 0.01 <= exchangeable["miou"] <= 0.10 and 0.01 <= exchangeable["acc"] <= 0.10, exchangeable


@pytest.mark.slow
def test_paired_test_level_at_1000_images_300_samples():
    conservative, aggressive = sp.equal_iou_pair()
    assert _rejections(1000, 300, [conservative, aggressive], draws=500)["miou"] <= 0.07
    same = sp.method(0)
    assert 0.02 <= _rejections(1000, 300, [same, same], draws=500)["miou"] <= 0.08


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
    low, high = bca_bounds(reps, np.asarray([x.mean()]), jack, 0.95, floor=False)
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
    result = compare_runs(folders, tmp_path / "cmp", resamples=50, permutations=50, min_images=1, min_class_images=1)
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
