"""Tests of the PiCIE-style matching metric (eval.metrics)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from eval.metrics import (
    MatchAccumulator,
    confusion_histogram,
    confusion_histograms,
    hungarian_match,
    match_image,
    match_stats,
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


def test_accumulator_merge_equals_single_pass():
    images = _images(3, n=6)
    single = MatchAccumulator()
    for pred, label in images:
        single.update(pred, label)
    first, second = MatchAccumulator(), MatchAccumulator()
    for pred, label in images[:2]:
        first.update(pred, label)
    for pred, label in images[2:]:
        second.update(pred, label)
    assert first.merge(second).compute() == single.compute()
    out = single.compute()
    assert out["images"] == 6
    assert out["valid"] == sum(int(((lab >= 0) & (lab < 27)).sum()) for _, lab in images)
    assert out["mean_segments"] == pytest.approx(np.mean([np.unique(p).size for p, _ in images]))
    assert len(out["iou"]) == 27 and len(out["tp"]) == 27


def test_accumulator_add_and_add_histogram_agree_with_update():
    images = _images(4, n=3)
    a, b, c = MatchAccumulator(), MatchAccumulator(), MatchAccumulator()
    for pred, label in images:
        a.update(pred, label, num_segments=7)
        b.add(*match_image(pred, label), num_segments=7)
        c.add_histogram(confusion_histogram(pred, label), num_segments=7)
    assert a.compute() == b.compute() == c.compute()
    assert a.compute()["mean_segments"] == 7


def test_accumulator_json_round_trip():
    acc = MatchAccumulator()
    for pred, label in _images(5, n=4):
        acc.update(pred, label)
    state = json.loads(json.dumps(acc.state_dict()))
    restored = MatchAccumulator()
    restored.load_state_dict(state)
    assert restored.compute() == acc.compute()
    assert json.loads(json.dumps(acc.compute())) == acc.compute()


def test_empty_accumulator_and_merge_mismatch():
    out = MatchAccumulator().compute()
    assert out["acc"] is None and out["miou"] is None and out["mean_segments"] is None
    assert out["images"] == 0 and out["iou"] == [None] * 27
    with pytest.raises(ValueError):
        MatchAccumulator(27).merge(MatchAccumulator(19))
