"""eval.compare: bootstrap intervals, paired differences, p-values, run folder checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.compare import main
from eval.data.coco_stuff import COCO_STUFF27_CLASSES
from eval.metrics import scores
from eval.run.records import RunRecords, write_metrics
from eval.run.totals import accumulate, method_scores
from eval.stats.analysis import ImageStats, analyse
from eval.stats.comparison import compare_runs, load_intervals

C = 5  # classes of the synthetic runs


def _draw(rng: np.random.Generator, n: int, num_classes: int = C, quality: float = 0.6) -> ImageStats:
    """Synthetic per-image stats: class pixel counts, tp ~ Binomial(count, p_image), fp ~ Poisson."""
    present = rng.random((n, num_classes)) < 0.5
    count = rng.poisson(400, (n, num_classes)) * present
    p = rng.beta(8 * quality, 8 * (1 - quality), (n, num_classes))
    tp = rng.binomial(count, p)
    fp = rng.poisson(60, (n, num_classes))
    return ImageStats(tp.astype(np.int64), fp.astype(np.int64), (count - tp).astype(np.int64),
                      count.sum(1).astype(np.int64))


def _write_run(folder: Path, methods: dict[str, ImageStats], ids: list[str], provenance=None,
               dataset: str = "coco_stuff27", demo: bool = False, skipped: tuple[str, ...] = ()) -> Path:
    """A run folder as the runner writes it: per_image.jsonl, then metrics.json from the same records."""
    records = []
    for i, image_id in enumerate(ids):
        records.append({"id": image_id, "fingerprint": "abc", "methods": {
            name: {"tp": s.tp[i].tolist(), "fp": s.fp[i].tolist(), "fn": s.fn[i].tolist(),
                   "valid": int(s.valid[i]), "segments": 5} for name, s in methods.items()}})
    records += [{"id": image_id, "skipped": "OSError: broken file"} for image_id in skipped]
    RunRecords(folder).append(records)
    extra = {"provenance": provenance} if provenance is not None else {}
    run = {"name": folder.name, "dataset": dataset, "model": "sd14", "demo": demo}
    num_classes = next(iter(methods.values())).num_classes
    scores = method_scores(accumulate(records, num_classes), dict.fromkeys(methods))
    write_metrics(folder, scores, records, run=run, config={"dataset": {"num_classes": C}}, **extra)
    return folder


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:012d}" for i in range(start, start + n)]


def _true_scores(num_classes: int = C, quality: float = 0.6) -> tuple[float, float]:
    """Dataset-level ACC and mIoU of the population of :func:`_draw` (ratios of expectations)."""
    tp = 0.5 * 400 * quality
    pixels = 0.5 * 400
    acc = 100.0 * tp / pixels
    miou = 100.0 * tp / (pixels + 60)
    return acc, miou


def test_interval_covers_true_value_about_95_percent():
    true_acc, true_miou = _true_scores()
    draws, hits_acc, hits_miou = 300, 0, 0
    for seed in range(draws):
        stats = _draw(np.random.default_rng(100_000 + seed), 120)
        out = analyse({"m": stats}, resamples=400, seed=seed)["methods"]["m"]
        hits_acc += out["acc"][1] <= true_acc <= out["acc"][2]
        hits_miou += out["miou"][1] <= true_miou <= out["miou"][2]
    # binomial sd at 300 draws is 1.3 points (over 1500 draws this model measured 0.947 / 0.949)
    assert 0.90 <= hits_acc / draws <= 0.99, hits_acc
    assert 0.90 <= hits_miou / draws <= 0.99, hits_miou


def test_interval_width_shrinks_with_images():
    small = analyse({"m": _draw(np.random.default_rng(0), 50)}, resamples=400)["methods"]["m"]["miou"]
    large = analyse({"m": _draw(np.random.default_rng(0), 800)}, resamples=400)["methods"]["m"]["miou"]
    assert (large[2] - large[1]) < 0.5 * (small[2] - small[1])


def test_vectorised_bootstrap_equals_a_loop():
    stats = _draw(np.random.default_rng(3), 40)
    other = _draw(np.random.default_rng(4), 40, quality=0.5)
    out = analyse({"a": stats, "b": other}, resamples=300, seed=7, interval="percentile")
    boot_seq, flip_seq = np.random.SeedSequence(7).spawn(2)
    idx = np.random.default_rng(boot_seq).integers(0, 40, size=(300, 40))
    acc_a, miou_a, diff = [], [], []
    for rows in idx:
        sa = scores(stats.tp[rows].sum(0), stats.fp[rows].sum(0), stats.fn[rows].sum(0), stats.valid[rows].sum())
        sb = scores(other.tp[rows].sum(0), other.fp[rows].sum(0), other.fn[rows].sum(0), other.valid[rows].sum())
        acc_a.append(sa["acc"])
        miou_a.append(sa["miou"])
        diff.append(sa["miou"] - sb["miou"])
    np.testing.assert_allclose(out["methods"]["a"]["acc"][1:], np.percentile(acc_a, [2.5, 97.5]), rtol=1e-12)
    np.testing.assert_allclose(out["methods"]["a"]["miou"][1:], np.percentile(miou_a, [2.5, 97.5]), rtol=1e-12)
    np.testing.assert_allclose(out["pairs"]["a vs b"]["miou"][1:3], np.percentile(diff, [2.5, 97.5]), rtol=1e-12)
    # sign flips: swap the two methods' stats on the images drawn as 1
    signs = np.random.default_rng(flip_seq).integers(0, 2, size=(300, 40)).astype(bool)
    observed = out["pairs"]["a vs b"]["miou"][0]
    extreme = 0
    for flip in signs:
        sa = ImageStats(*(np.where(flip[:, None] if x.ndim == 2 else flip, y, x) for x, y in
                          zip((stats.tp, stats.fp, stats.fn, stats.valid),
                              (other.tp, other.fp, other.fn, other.valid), strict=True)))
        sb = ImageStats(*(np.where(flip[:, None] if x.ndim == 2 else flip, x, y) for x, y in
                          zip((stats.tp, stats.fp, stats.fn, stats.valid),
                              (other.tp, other.fp, other.fn, other.valid), strict=True)))
        extreme += abs(sa.totals()["miou"] - sb.totals()["miou"]) >= abs(observed) - 1e-9
    assert out["pairs"]["a vs b"]["signflip"]["miou"]["p"] == pytest.approx((1 + extreme) / 301, abs=1e-12)


def test_identical_methods_difference_zero_and_p_one():
    stats = _draw(np.random.default_rng(5), 60)
    pair = analyse({"a": stats, "b": stats}, resamples=500)["pairs"]["a vs b"]
    for metric in ("acc", "miou"):
        diff, low, high, p = pair[metric]
        assert diff == 0.0 and low <= 0.0 <= high
        assert p >= 0.99


def test_better_on_every_image_gives_small_p():
    base = _draw(np.random.default_rng(6), 40, quality=0.5)
    gain = np.minimum(base.fn, 30)  # move up to 30 missed pixels per class to tp
    better = ImageStats(base.tp + gain, base.fp, base.fn - gain, base.valid)
    assert (better.tp.sum(1) > base.tp.sum(1)).all()
    pair = analyse({"better": better, "base": base}, resamples=2000, seed=1)["pairs"]["better vs base"]
    assert pair["acc"][0] > 0 and pair["acc"][1] > 0
    assert pair["acc"][3] < 0.01 and pair["miou"][3] < 0.01


def test_point_estimate_equals_metrics_json(tmp_path):
    rng = np.random.default_rng(8)
    ids = _ids(30)
    methods = {"DiffSeg": _draw(rng, 30, num_classes=27), "K-Means-S": _draw(rng, 30, num_classes=27, quality=0.4)}
    run = _write_run(tmp_path / "run", methods, ids, skipped=("999999999999",))
    result = compare_runs([run], tmp_path / "cmp", resamples=200)
    metrics = json.loads((run / "metrics.json").read_text())
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    for name in ("DiffSeg", "K-Means-S"):
        for metric in ("acc", "miou"):
            assert saved["methods"][name][metric][0] == metrics["methods"][name][metric]
            assert result["methods"][name][metric][0] == metrics["methods"][name][metric]
            low, high = saved["methods"][name][metric][1:]
            assert low < metrics["methods"][name][metric] < high
        assert saved["methods"][name]["images"] == 30
        ious = [None if e is None else e[0] for e in saved["methods"][name]["iou"]]
        assert ious == metrics["methods"][name]["iou"]
    assert saved["resamples"] == 200 and saved["seed"] == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    acc = saved["methods"]["DiffSeg"]["acc"]
    assert f"| DiffSeg | {acc[0]:.1f} [{acc[1]:.1f}, {acc[2]:.1f}] |" in md
    assert f"| {COCO_STUFF27_CLASSES[26]} |" in md  # class names in the per-class table
    for name in ("DiffSeg", "K-Means-S"):
        worst_id = saved["extremes"][name]["worst"][0][0]
        assert f"`{worst_id}`" in md
    for name in ("compare.json", "methods.csv", "pairs.csv", "per_class_iou.csv", "per_class_iou.png",
                 "per_image_miou.png", "extremes_DiffSeg.png", "extremes_K-Means-S.png"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert load_intervals(tmp_path / "cmp", run_dir=run)["DiffSeg"]["miou"] == tuple(
        saved["methods"]["DiffSeg"]["miou"][1:])


def test_different_image_sets_refused_and_intersect(tmp_path, capsys):
    rng = np.random.default_rng(9)
    a = _write_run(tmp_path / "a", {"DiffSeg": _draw(rng, 20)}, _ids(20))
    b = _write_run(tmp_path / "b", {"DiffSeg": _draw(rng, 20)}, _ids(20, start=3))
    assert main([str(a), str(b), "--out", str(tmp_path / "no"), "--resamples", "50"]) == 2
    err = capsys.readouterr().err
    assert "3 image(s) only in" in err and "000000000000" in err and "000000000020" in err
    assert not (tmp_path / "no" / "compare.json").exists()

    assert main([str(a), str(b), "--out", str(tmp_path / "yes"), "--resamples", "50", "--intersect"]) == 0
    saved = json.loads((tmp_path / "yes" / "compare.json").read_text())
    assert saved["intersect"]["used"] and saved["images"] == 17
    assert set(saved["methods"]) == {"DiffSeg [a]", "DiffSeg [b]"}
    assert saved["methods"]["DiffSeg [a]"]["images"] == 17
    assert "common to all runs (--intersect)" in (tmp_path / "yes" / "compare.md").read_text()
    # intervals over 17 of a run's 20 images are not offered for that run's table
    assert load_intervals(tmp_path / "yes", run_dir=a) == {}
    assert set(load_intervals(tmp_path / "yes")) == {"DiffSeg [a]", "DiffSeg [b]"}


def test_different_datasets_refused(tmp_path, capsys):
    rng = np.random.default_rng(10)
    a = _write_run(tmp_path / "a", {"DiffSeg": _draw(rng, 5)}, _ids(5))
    b = _write_run(tmp_path / "b", {"DiffSeg": _draw(rng, 5)}, _ids(5), dataset="cityscapes")
    assert main([str(a), str(b), "--out", str(tmp_path / "o"), "--intersect"]) == 2
    assert "different datasets" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_provenance_marks_labels(tmp_path):
    rng = np.random.default_rng(11)
    prov = {"fingerprint": "f00d", "random_weights": True, "synthetic_data": False, "partial": True,
            "notes": ["random-weight backbone", "partial: 8 of 2175 images"],
            "images": {"evaluated": 8, "skipped": 0, "selected": 2175}}
    a = _write_run(tmp_path / "a", {"DiffSeg": _draw(rng, 8)}, _ids(8), provenance=prov)
    b = _write_run(tmp_path / "b", {"K-Means-C": _draw(rng, 8)}, _ids(8), demo=True)  # older file, no provenance
    saved = compare_runs([a, b], tmp_path / "o", resamples=50)
    assert saved["methods"]["DiffSeg"]["label"] == "DiffSeg (random weights, partial)"
    assert saved["methods"]["K-Means-C"]["label"] == "K-Means-C (random weights, synthetic data)"
    assert saved["runs"][0]["provenance"] == prov
    md = (tmp_path / "o" / "compare.md").read_text()
    assert md.startswith("**Not a result about DiffSeg on real data: random-weight backbone; partial: 8 of 2175")
    assert "f00d" in md
    for name in ("methods.csv", "pairs.csv", "per_class_iou.csv"):  # plain read_csv, the banner on every row
        frame = pd.read_csv(tmp_path / "o" / name)
        assert frame.columns[0] == "banner" and len(frame) >= 1
        assert set(frame["banner"]) == {md.splitlines()[0].strip("*")}
    assert list(pd.read_csv(tmp_path / "o" / "methods.csv")["method"]) == \
        [saved["methods"][k]["label"] for k in saved["methods"]]


def test_same_seed_same_bytes(tmp_path):
    rng = np.random.default_rng(12)
    run = _write_run(tmp_path / "run", {"a": _draw(rng, 25), "b": _draw(rng, 25)}, _ids(25))
    for out, seed in (("x", 3), ("y", 3), ("z", 4)):
        compare_runs([run], tmp_path / out, resamples=100, seed=seed)
    files = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "y").iterdir())
    for name in files:
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes(), name
    assert (tmp_path / "x" / "compare.json").read_bytes() != (tmp_path / "z" / "compare.json").read_bytes()


def test_extremes_grid_from_saved_masks(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(13)
    ids = _ids(4)
    run = _write_run(tmp_path / "run", {"DiffSeg": _draw(rng, 4)}, ids)
    folder = run / "masks" / "DiffSeg"
    folder.mkdir(parents=True)
    for image_id in ids:
        Image.fromarray(rng.integers(0, 6, (16, 16), dtype=np.uint8)).save(folder / f"{image_id}.png")
    compare_runs([run], tmp_path / "o", resamples=20)
    saved = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert saved["extremes"]["DiffSeg"]["masks"] is True
    assert len(saved["extremes"]["DiffSeg"]["worst"]) == 2
    assert (tmp_path / "o" / "extremes_DiffSeg.png").stat().st_size > 0
    (folder / f"{ids[0]}.png").unlink()
    saved = compare_runs([run], tmp_path / "o", resamples=20)
    assert saved["extremes"]["DiffSeg"]["masks"] is False


def test_compare_md_names_the_interval_and_rare_class_refusals(tmp_path):
    """compare.md says which interval its brackets are; a mIoU refused for rare classes reads `n/a (k of K classes
    rare)` in the methods and pairs tables, while ACC keeps its interval."""
    rng = np.random.default_rng(14)
    common = _draw(rng, 40, num_classes=8)
    tp, fp, fn = common.tp.copy(), common.fp.copy(), common.fn.copy()
    tp[:, 3:], fn[:, 3:] = 0, 0
    for c in range(3, 8):  # five of eight classes in ground truth of two images each
        tp[[c, c + 10], c], fn[[c, c + 10], c] = 50, 20
    rare = ImageStats(tp, fp, fn, tp.sum(1) + fn.sum(1))
    other = ImageStats(tp, fp + 1, fn, rare.valid)
    run = _write_run(tmp_path / "run", {"a": rare, "b": other}, _ids(40))
    saved = compare_runs([run], tmp_path / "cmp", resamples=100)
    assert saved["interval"] == "bootstrap-t"
    on_disk = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert on_disk["interval_name"].startswith("symmetric bootstrap-t (studentised by the delta-method")
    entry = saved["methods"]["a"]
    assert entry["miou"][1:] == [None, None] and entry["acc"][1] is not None
    assert entry["refused"]["miou"]["rare_classes"] == 5 and entry["refused"]["miou"]["classes"] == 8
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "95% interval over images, symmetric bootstrap-t (studentised by the delta-method standard error" in md
    assert f"| a | {entry['acc'][0]:.1f} [{entry['acc'][1]:.1f}, {entry['acc'][2]:.1f}] | " \
           f"{entry['miou'][0]:.1f} [n/a (5 of 8 classes rare)] |" in md
    pair = saved["pairs"]["a vs b"]
    assert pair["miou"][1:] == [None, None, None] and pair["acc"][3] is not None
    assert f"{pair['miou'][0]:+.1f} [n/a (5 of 8 classes rare)]" in md
    percentile = compare_runs([run], tmp_path / "pct", resamples=100, interval="percentile")
    assert percentile["interval"] == "percentile"
    assert "95% interval over images, percentile bootstrap (" in (tmp_path / "pct" / "compare.md").read_text()
