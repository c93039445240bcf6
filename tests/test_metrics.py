"""Tests of the PiCIE-style matching metric (eval.metrics)."""

from __future__ import annotations

import datetime
import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.optimize import linear_sum_assignment

from eval.metrics import (
    HungarianSegmentationMetric,
    confusion_histogram,
    confusion_histograms,
    hungarian_match,
    image_stats,
    match_image,
    match_stats,
    metric_json,
    scores,
)

# 4 classes, class 3 absent; last pixel ignored. Unique optimum: c0->0, c2->1.
LABEL = np.array([[0, 0, 1, 1], [2, 2, 2, -1]])
PRED = np.array([[0, 0, 0, 1], [1, 1, 1, 1]])


def test_hand_computed_example():
    hist = confusion_histogram(PRED, LABEL, num_classes=4)
    assert hist.dtype == np.int64
    assert hist.tolist() == [[2, 0, 0, 0], [1, 1, 0, 0], [0, 3, 0, 0], [0, 0, 0, 0]]
    tp, fp, fn, valid = match_image(PRED, LABEL, num_classes=4)
    assert tp.tolist() == [2, 0, 3, 0]
    assert fn.tolist() == [0, 2, 0, 0]
    assert fp.tolist() == [1, 0, 1, 0]
    assert valid == 7
    out = scores(tp, fp, fn, valid)
    assert out["acc"] == pytest.approx(100 * 5 / 7)
    assert out["iou"][0] == pytest.approx(100 * 2 / 3)
    assert out["iou"][1] == 0.0
    assert out["iou"][2] == pytest.approx(75.0)
    assert out["iou"][3] is None
    assert out["miou"] == pytest.approx((200 / 3 + 0 + 75) / 3)


def test_histogram_shape_and_columns():
    assert confusion_histogram(PRED, LABEL, num_classes=4).shape == (4, 4)
    assert confusion_histogram(PRED, LABEL, num_classes=4, num_pred=9).shape == (4, 9)
    assert confusion_histogram(np.full((2, 2), 30), np.zeros((2, 2)), num_classes=27).shape == (27, 31)
    with pytest.raises(ValueError):
        confusion_histogram(-PRED - 1, LABEL, num_classes=4)
    with pytest.raises(ValueError):
        confusion_histogram(PRED[:, :2], LABEL, num_classes=4)


def test_accepts_torch_and_uint8_labels():
    label = np.where(LABEL < 0, 255, LABEL).astype(np.uint8)
    expected = match_image(PRED, LABEL, num_classes=4)
    got = match_image(torch.from_numpy(PRED), torch.from_numpy(label), num_classes=4)
    for a, b in zip(expected[:3], got[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert expected[3] == got[3]


def _noisy_prediction(rng, label, num_segments, noise=0.1):
    """A prediction that mostly follows ``label`` (diagonal dominant: unique optimum)."""
    pred = label.copy() % num_segments
    flip = rng.random(label.shape) < noise
    pred[flip] = rng.integers(0, num_segments, flip.sum())
    return pred


def test_relabelled_segments_give_same_stats():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (32, 32))
    pred = _noisy_prediction(rng, label, 5)  # every segment matched to a present class
    perm = rng.permutation(40)
    base = match_image(pred, label, num_classes=27)
    relabelled = match_image(perm[pred], label, num_classes=27)
    for a, b in zip(base, relabelled, strict=True):
        np.testing.assert_array_equal(a, b)


def test_leftover_segment_goes_to_an_absent_class_as_official():
    # 2 present classes, 3 segments: the leftover segment is matched to some absent class
    # (a tie among the empty rows), which gets its pixels as fp, like the official code.
    label = np.array([[0, 0, 0, 1, 1, 1]])
    pred = np.array([[0, 0, 2, 1, 1, 1]])
    tp, fp, fn, valid = match_image(pred, label, num_classes=4)
    assert tp.tolist()[:2] == [2, 3] and fn.tolist() == [1, 0, 0, 0]
    assert fp[:2].tolist() == [0, 0] and fp[2:].sum() == 1
    relabelled = match_image(np.array([5, 7, 0])[pred], label, num_classes=4)
    assert relabelled[0].sum() == tp.sum() and relabelled[2].tolist() == fn.tolist()


def test_ignore_pixels_are_excluded():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (16, 16))
    ignore = rng.random(label.shape) < 0.3
    label[ignore] = -1
    label[0, 0] = 255
    ignore[0, 0] = True
    pred = _noisy_prediction(rng, np.where(label < 0, 0, label), 4)
    base = match_image(pred, label, num_classes=27)
    pred2 = pred.copy()
    pred2[ignore] = 50  # anything at ignored pixels must not matter
    changed = match_image(pred2, label, num_classes=27)
    for a, b in zip(base[:3], changed[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert base[3] == changed[3] == int((~ignore).sum())


def test_unmatched_segments_count_only_in_fn():
    label = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    pred = np.array([[0, 0, 0, 1, 2, 2, 3, 3]])  # 4 segments, 2 classes
    tp, fp, fn, valid = match_image(pred, label, num_classes=2)
    # class 0 -> seg 0 (3 px), class 1 -> seg 2 or 3 (2 px); the rest is missed, not false positive
    assert tp.tolist() == [3, 2]
    assert fn.tolist() == [1, 2]
    assert fp.tolist() == [0, 0]
    assert valid == 8
    assert scores(tp, fp, fn, valid)["acc"] == pytest.approx(62.5)


def _brute_force(pred, label, num_classes):
    """Every optimal assignment's (tp, fp, fn), by trying all injective class->column maps."""
    hist = confusion_histogram(pred, label, num_classes=num_classes)
    rows = np.arange(num_classes)
    best, results = -1, []
    for cols in itertools.permutations(range(hist.shape[1]), num_classes):
        cols = np.asarray(cols)
        total = int(hist[rows, cols].sum())
        tp = hist[rows, cols]
        stats = (tuple(tp), tuple(hist.sum(1) - tp), tuple(hist.sum(0)[cols] - tp))
        if total > best:
            best, results = total, [stats]
        elif total == best:
            results.append(stats)
    return results


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(-1, 4, (6, 7))  # -1 = ignore
    pred = rng.integers(0, 3 + seed % 4, (6, 7))
    tp, fp, fn, _ = match_image(pred, label, num_classes=4)
    assert (tuple(tp), tuple(fn), tuple(fp)) in _brute_force(pred, label, 4)


def test_hungarian_match_every_row_gets_a_column():
    hist = np.array([[0, 5, 0, 0, 0], [0, 0, 0, 0, 0], [7, 6, 0, 0, 0]])
    match = hungarian_match(hist)
    assert match.shape == (3,)
    assert len(set(match.tolist())) == 3
    assert match[0] == 1 and match[2] == 0
    with pytest.raises(ValueError):
        hungarian_match(hist.T)


def test_batched_histograms_match_per_image():
    rng = np.random.default_rng(2)
    preds = torch.from_numpy(rng.integers(0, 30, (3, 9, 11)))
    labels = torch.from_numpy(rng.integers(-1, 28, (3, 9, 11)))
    labels[labels == 27] = 255
    batched = confusion_histograms(preds, labels, num_classes=27, num_pred=30)
    assert batched.shape == (3, 27, 30) and batched.dtype == torch.int64
    for i in range(3):
        single = confusion_histogram(preds[i], labels[i], num_classes=27, num_pred=30)
        np.testing.assert_array_equal(batched[i].numpy(), single)
    default = confusion_histograms(preds, labels)
    assert default.shape[2] == int(preds.max()) + 1
    with pytest.raises(ValueError):
        confusion_histograms(preds + 40, labels, num_pred=30)


def test_match_stats_from_batched_histogram():
    preds = torch.from_numpy(PRED)[None]
    labels = torch.from_numpy(LABEL)[None]
    tp, fp, fn = match_stats(confusion_histograms(preds, labels, num_classes=4)[0])
    assert tp.tolist() == [2, 0, 3, 0] and fp.tolist() == [1, 0, 1, 0] and fn.tolist() == [0, 2, 0, 0]


def _images(seed, n=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = rng.integers(-1, 27, (12, 12))
        out.append((_noisy_prediction(rng, np.maximum(label, 0), 7, noise=0.3), label))
    return out


def test_metric_sums_equal_the_protocol_on_plain_functions():
    images = _images(3, n=6)
    metric = HungarianSegmentationMetric()
    for pred, label in images:
        metric.update(torch.as_tensor(pred)[None], torch.as_tensor(label)[None])
    tp = fp = fn = 0
    for pred, label in images:
        t, f, n, _ = match_image(pred, label)
        tp, fp, fn = tp + t, fp + f, fn + n
    out = metric_json(metric.compute())
    assert out["tp"] == tp.tolist() and out["fp"] == fp.tolist() and out["fn"] == fn.tolist()
    assert out["images"] == 6
    assert out["valid"] == sum(int(((lab >= 0) & (lab < 27)).sum()) for _, lab in images)
    assert out["mean_segments"] == pytest.approx(np.mean([np.unique(p).size for p, _ in images]))
    assert out == {**scores(tp, fp, fn, out["valid"]), "tp": tp.tolist(), "fp": fp.tolist(), "fn": fn.tolist(),
                   "valid": out["valid"], "images": 6, "mean_segments": out["mean_segments"]}
    assert confusion_histogram(*images[0]).sum() == int(((images[0][1] >= 0) & (images[0][1] < 27)).sum())


# ---------------------------------------------------------------------------------------------
# image_stats and HungarianSegmentationMetric


def _random_batch(seed, batch=6, height=5, width=6, num_classes=4, max_id=11):
    """Random ids (many above num_classes) and labels with ignore values -1, 255 and >= num_classes."""
    gen = torch.Generator().manual_seed(seed)
    preds = torch.randint(0, max_id, (batch, height, width), generator=gen)
    labels = torch.randint(-1, num_classes + 2, (batch, height, width), generator=gen)
    labels[torch.rand((batch, height, width), generator=gen) < 0.1] = 255
    return preds, labels


def _reference_protocol(preds, labels, num_classes):
    """Brute-force float64 recomputation of the protocol with plain loops.

    Per image: a float64 histogram built pixel by pixel (rows = ground truth), every optimal
    injective class -> column map found by trying all of them, and the assignment scipy picks
    on the float64 histogram. Returns per-image optimal stat sets, chosen stats, and the
    dataset scores (acc, miou, iou) from the chosen stats.
    """
    optimal_sets, chosen = [], []
    tp_sum = np.zeros(num_classes)
    fp_sum = np.zeros(num_classes)
    fn_sum = np.zeros(num_classes)
    valid = 0.0
    for pred, label in zip(preds.tolist(), labels.tolist(), strict=True):
        ids = [v for row in pred for v in row]
        ncols = max(num_classes, max(ids) + 1)
        hist = np.zeros((num_classes, ncols), dtype=np.float64)
        for prow, lrow in zip(pred, label, strict=True):
            for p, lab in zip(prow, lrow, strict=True):
                if 0 <= lab < num_classes:
                    hist[lab, p] += 1.0
        best, optimal = -1.0, set()
        for cols in itertools.permutations(range(ncols), num_classes):
            tp = [hist[c, cols[c]] for c in range(num_classes)]
            fp = [hist[:, cols[c]].sum() - tp[c] for c in range(num_classes)]
            fn = [hist[c, :].sum() - tp[c] for c in range(num_classes)]
            stats = (tuple(tp), tuple(fp), tuple(fn))
            if sum(tp) > best:
                best, optimal = sum(tp), {stats}
            elif sum(tp) == best:
                optimal.add(stats)
        optimal_sets.append(optimal)
        rows, cols = linear_sum_assignment(hist, maximize=True)
        tp = np.array([hist[r, c] for r, c in zip(rows, cols, strict=True)])
        fp = np.array([hist[:, c].sum() for c in cols]) - tp
        fn = hist.sum(axis=1) - tp
        chosen.append((tuple(tp), tuple(fp), tuple(fn)))
        tp_sum += tp
        fp_sum += fp
        fn_sum += fn
        valid += hist.sum()
    union = tp_sum + fp_sum + fn_sum
    iou = [100.0 * t / u if u > 0 else math.nan for t, u in zip(tp_sum, union, strict=True)]
    present = [v for v in iou if not math.isnan(v)]
    return {
        "optimal": optimal_sets,
        "chosen": chosen,
        "acc": 100.0 * tp_sum.sum() / valid if valid else math.nan,
        "miou": sum(present) / len(present) if present else math.nan,
        "iou": iou,
        "tp": tp_sum, "fp": fp_sum, "fn": fn_sum, "valid": valid,
    }


@pytest.mark.parametrize("seed", range(4))
def test_metric_agrees_with_brute_force_float64(seed):
    preds, labels = _random_batch(seed, max_id=4 + 2 * seed)
    ref = _reference_protocol(preds, labels, 4)
    stats = image_stats(preds, labels, num_classes=4)
    for got, optimal, chosen in zip(stats, ref["optimal"], ref["chosen"], strict=True):
        key = (tuple(map(float, got["tp"])), tuple(map(float, got["fp"])), tuple(map(float, got["fn"])))
        assert key in optimal  # an optimal matching
        assert key == chosen  # and the one scipy picks, as the official code
    metric = HungarianSegmentationMetric(num_classes=4)
    metric.update(preds, labels)
    out = metric.compute()
    np.testing.assert_array_equal(np.array(out["tp"], dtype=np.float64), ref["tp"])
    np.testing.assert_array_equal(np.array(out["fp"], dtype=np.float64), ref["fp"])
    np.testing.assert_array_equal(np.array(out["fn"], dtype=np.float64), ref["fn"])
    assert out["valid"] == ref["valid"] == int(((labels >= 0) & (labels < 4)).sum())
    assert out["acc"] == pytest.approx(ref["acc"], rel=1e-12)
    assert out["miou"] == pytest.approx(ref["miou"], rel=1e-12)
    assert out["iou"].dtype == torch.float64 and out["iou"].shape == (4,)
    np.testing.assert_allclose(out["iou"].numpy(), ref["iou"], rtol=1e-12)  # NaN where undefined, both sides
    assert out["images"] == 6
    assert out["mean_segments"] == pytest.approx(np.mean([len(set(p.ravel().tolist())) for p in preds]))


def test_metric_iou_nan_for_absent_classes_and_miou_over_present():
    # classes 0 and 2 present, 1 and 3 never seen nor predicted-into
    labels = torch.tensor([[[0, 0, 2, 2]]])
    preds = torch.tensor([[[0, 0, 1, 1]]])
    metric = HungarianSegmentationMetric(num_classes=4)
    metric.update(preds, labels)
    out = metric.compute()
    assert out["iou"][0].item() == 100.0 and out["iou"][2].item() == 100.0
    assert math.isnan(out["iou"][1].item()) and math.isnan(out["iou"][3].item())
    assert out["miou"] == 100.0 and out["acc"] == 100.0
    assert metric_json(out)["iou"] == [100.0, None, 100.0, None]


def _old_runner_records(mask, labels, num_classes):
    """The per-image records eval/run/runner.py wrote before this metric (_batch_records/_image_stats)."""
    num_pred = int(mask.max()) + 1 if mask.numel() else 1
    hists = confusion_histograms(mask, labels, num_classes, num_pred=num_pred).cpu().numpy()
    out = []
    for b in range(mask.shape[0]):
        tp, fp, fn = match_stats(hists[b])
        out.append({"tp": tp.tolist(), "fp": fp.tolist(), "fn": fn.tolist(), "valid": int(hists[b].sum()),
                    "segments": int(torch.unique(mask[b]).numel())})
    return out


def test_image_stats_equals_old_runner_records():
    preds, labels = _random_batch(7, batch=5, height=9, width=8, num_classes=27, max_id=40)
    labels_u8 = torch.where(labels < 0, 255, labels).to(torch.uint8)
    for lab in (labels, labels_u8):
        got = image_stats(preds, lab, num_classes=27)
        assert got == _old_runner_records(preds, lab, 27)
        assert all(type(v) is int for s in got for k in ("tp", "fp", "fn") for v in s[k])
        assert all(type(s["valid"]) is int and type(s["segments"]) is int for s in got)
    assert json.loads(json.dumps(got)) == got
    few = torch.zeros((2, 3, 3), dtype=torch.long)
    few[1, 0, 0] = 30  # one image with 2 ids, one with 1
    assert [s["segments"] for s in image_stats(few, torch.zeros_like(few))] == [1, 2]
    assert image_stats(torch.zeros((0, 4, 4), dtype=torch.long), torch.zeros((0, 4, 4), dtype=torch.long)) == []
    empty = torch.zeros((2, 0, 0), dtype=torch.long)
    assert image_stats(empty, empty, 3) == _old_runner_records(empty, empty, 3)


def test_image_stats_rejects_bad_input():
    preds, labels = _random_batch(0)
    with pytest.raises(ValueError, match="integer"):
        image_stats(preds.float(), labels, 4)
    with pytest.raises(ValueError, match="integer"):
        image_stats(preds, labels.float(), 4)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        image_stats(preds[0], labels[0], 4)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        image_stats(preds, labels[:, :2], 4)
    with pytest.raises(ValueError):
        image_stats(preds - 1, labels, 4)


def test_update_add_stats_and_returned_stats_are_one_accumulation():
    preds, labels = _random_batch(11, batch=5, num_classes=27, max_id=35)
    by_update = HungarianSegmentationMetric()
    assert by_update.update(preds[:3], labels[:3]) == image_stats(preds[:3], labels[:3], 27)
    assert by_update.update(preds[3:], labels[3:]) == image_stats(preds[3:], labels[3:], 27)
    replayed = HungarianSegmentationMetric()
    replayed.add_stats(json.loads(json.dumps(image_stats(preds, labels, 27))))  # as stored on disk
    assert metric_json(replayed.compute()) == metric_json(by_update.compute())
    assert not hasattr(replayed, "last_stats")  # no side channel: update returns the stats
    assert replayed.compute()["segments"] == by_update.compute()["segments"] > 0
    by_update.reset()
    assert by_update.compute()["images"] == 0


def test_forward_returns_batch_scores_and_accumulates():
    preds, labels = _random_batch(12, num_classes=27, max_id=30)
    metric = HungarianSegmentationMetric()
    first = metric(preds[:2], labels[:2])
    assert first["images"] == 2
    second = metric(preds[2:], labels[2:])
    alone = HungarianSegmentationMetric()
    alone.update(preds[2:], labels[2:])
    assert metric_json(second) == metric_json(alone.compute())
    full = HungarianSegmentationMetric()
    full.update(preds, labels)
    assert metric_json(metric.compute()) == metric_json(full.compute())


def test_halves_merged_equal_one_pass():
    preds, labels = _random_batch(13, batch=8, num_classes=27, max_id=33)
    full = HungarianSegmentationMetric()
    full.update(preds, labels)
    first, second = HungarianSegmentationMetric(), HungarianSegmentationMetric()
    first.update(preds[:4], labels[:4])
    second.update(preds[4:], labels[4:])
    first.compute()  # a cached result must not survive the merge
    first.merge_state(second)
    assert metric_json(first.compute()) == metric_json(full.compute())
    assert first.compute()["images"] == 8
    # plain state sums (what the distributed "sum" reduction does) give the same
    summed = HungarianSegmentationMetric()
    summed.merge_state({k: getattr(first, k) * 0 + getattr(second, k) for k in first.metric_state})
    other = HungarianSegmentationMetric()
    other.update(preds[:4], labels[:4])
    summed.merge_state(other)
    assert metric_json(summed.compute()) == metric_json(full.compute())


def test_states_are_int64_sums_and_bad_stats_are_refused():
    metric = HungarianSegmentationMetric(num_classes=3)
    assert all(v.dtype == torch.int64 for v in metric.metric_state.values())
    assert metric.tp.shape == (3,) and metric.valid.shape == ()
    big = {"tp": [2**31, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 0], "valid": 2**31, "segments": 1}
    metric.add_stats([big, big])
    out = metric.compute()
    assert out["tp"] == [2**32, 0, 0] and out["valid"] == 2**32 and out["acc"] == 100.0
    with pytest.raises(ValueError, match="segments"):
        metric.add_stats([{"tp": [0] * 3, "fp": [0] * 3, "fn": [0] * 3, "valid": 0}])
    with pytest.raises(ValueError, match="num_classes"):
        metric.add_stats([{**big, "fp": [0] * 4}])
    with pytest.raises(ValueError):
        metric.update()
    with pytest.raises(ValueError):
        metric.update(torch.zeros((1, 2, 2), dtype=torch.long), torch.zeros((1, 2, 2), dtype=torch.long), stats=[big])
    with pytest.raises(ValueError, match="num_classes"):
        HungarianSegmentationMetric(num_classes=0)
    assert metric.compute()["images"] == 2  # refused input left the sums alone


def test_empty_metric_computes_nan_without_warning():
    metric = HungarianSegmentationMetric()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metric.compute()
        metric.add_stats([])  # an empty replay adds nothing
        out_after_empty_replay = metric.compute()
    assert math.isnan(out["acc"]) and math.isnan(out["miou"]) and math.isnan(out["mean_segments"])
    assert torch.isnan(out["iou"]).all() and out["iou"].shape == (27,)
    assert metric_json(out) == metric_json(out_after_empty_replay)
    assert metric_json(out) == {"acc": None, "miou": None, "iou": [None] * 27, "tp": [0] * 27, "fp": [0] * 27,
                                "fn": [0] * 27, "valid": 0, "images": 0, "mean_segments": None}
    assert json.loads(json.dumps(metric_json(out))) == metric_json(out)


def test_metric_json_single_class():
    metric = HungarianSegmentationMetric(num_classes=1)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    assert metric_json(metric.compute())["iou"] == [50.0]  # torchmetrics squeezes the (1,) tensor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_preds_and_cuda_metric_give_the_cpu_values():
    preds, labels = _random_batch(14, num_classes=27, max_id=40)
    cpu = HungarianSegmentationMetric()
    cpu.update(preds, labels)
    on_cpu_metric = HungarianSegmentationMetric()
    on_cpu_metric.update(preds.cuda(), labels.cuda())
    on_cuda_metric = HungarianSegmentationMetric().to("cuda")
    on_cuda_metric.update(preds.cuda(), labels)
    assert on_cuda_metric.tp.device.type == "cuda"
    expected = metric_json(cpu.compute())
    assert metric_json(on_cpu_metric.compute()) == expected == metric_json(on_cuda_metric.compute())
    assert image_stats(preds.cuda(), labels.cuda(), 27) == image_stats(preds, labels, 27)


def _distributed_worker(rank, world_size, init_file, out_dir, preds, labels):
    """One rank: half the images (every other one); rank 0 alone for the lopsided metric."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        half = HungarianSegmentationMetric()
        half.update(preds[rank::world_size], labels[rank::world_size])
        lopsided = HungarianSegmentationMetric()  # rank 1 gets no image at all
        if rank == 0:
            lopsided.add_stats(image_stats(preds, labels, 27))
        result = {
            "half": metric_json(half.compute()),
            "lopsided": metric_json(lopsided.compute()),
            "local_images_after_sync": int(half.images),  # compute restores the local sums
        }
    finally:
        dist.destroy_process_group()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(result, f)


def test_distributed_sync_equals_single_process(tmp_path):
    preds, labels = _random_batch(15, batch=5, height=6, width=7, num_classes=27, max_id=31)
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path), preds, labels), nprocs=2)
    single = HungarianSegmentationMetric()
    single.update(preds, labels)
    expected = metric_json(single.compute())
    assert expected["images"] == 5
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["half"] == expected
        assert result["lopsided"] == expected
        assert result["local_images_after_sync"] == (3 if rank == 0 else 2)
