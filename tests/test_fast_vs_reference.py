"""The fast path against the reference path on the tiny model (issue 5); the bench is tested in test_bench.py.

Fast path: batched capture (``attention_maps``), batched ``aggregate_attention``,
batched ``DiffSeg`` (float16 and float32), batched confusion histograms.
Reference path: ``attention_maps(reference=True)`` one image at a time,
``eval.bench.baselines.naive_diffseg`` (the plain port of the official segmentor), ``match_image``.

Two comparisons:

* **post-processing** (the same captured maps, the reference capture's, go
  into both, batched on one side and one image at a time on the other, so masks are compared
  up to their segment ids): the same segments for float32, >= 99.9% of the pixels in matched
  segments for float16, metrics equal within 1e-6. Identity is a property of this fixture
  as much as of the code: the fast KL (entropies + a matmul cross term) and
  the plain broadcast KL differ by up to ~1e-5 in float32, so a distance that
  close to the threshold would flip one membership (on these images the
  closest is a few 1e-6 away and both paths still decide alike);
* **end to end** (fast capture vs reference capture too): the two captures
  differ by float32 rounding (the fast one fuses the head mean and reuses
  the probabilities), which moves a few pixels where two upsampled proposals
  tie to ~1e-7; so >= 99.9% identical pixels, the same segment counts, and
  metrics within a small tolerance.

The tiny model's random weights give nearly uniform attention (one segment at
tau = 1.1), so its self-attention query/key weights are scaled up: that makes
the attention structured and peaked (several segments, and float16 rounding
that drops anchors, as with real SD attention). 512 px images give attention
sides 64/32/16/8; an 8 x 8 anchor grid keeps the plain port's broadcast KL
(64 x 4096 x 4096 elements per image) within the time budget.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from diffseg import DiffSeg, aggregate_attention, anchor_grid
from diffseg.testing.tiny import tiny_backbone
from eval.bench.baselines.naive_diffseg import naive_aggregate, naive_segment
from eval.data.coco_stuff import CocoStuff27
from eval.data.loader import build_loader
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.metrics import HungarianSegmentationMetric, match_image, metric_json, scores

NUM_IMAGES = 2
THRESHOLD = 1.1
NUM_POINTS = 8
SHARPEN = 6.0  # scale of the tiny model's attn1 query/key weights
PRECISIONS = ("float16", "float32")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Captures, aggregated attention and masks of both paths for the synthetic images.

    Masks are ``LongTensor(B, 512, 512)`` per precision: ``fast`` (fast capture +
    fast post-processing), ``post`` (reference capture + fast post-processing),
    ``ref`` (reference capture + eval.bench.baselines.naive_diffseg).
    """
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=NUM_IMAGES, seed=0)
    batch = next(iter(build_loader(CocoStuff27(root, size=512), batch_size=NUM_IMAGES, num_workers=0)))
    assert len(batch) == NUM_IMAGES and batch.images.shape == (NUM_IMAGES, 3, 512, 512)
    backbone = tiny_backbone(attention_scale=SHARPEN)
    fast_maps = backbone.attention_maps(batch.images)  # {s: (B, s*s, s*s)}
    ref_maps = [backbone.attention_maps(batch.images[i : i + 1], reference=True) for i in range(NUM_IMAGES)]
    ref_stacked = {s: torch.cat([m[s] for m in ref_maps]) for s in fast_maps}
    fast_attention = aggregate_attention(fast_maps)
    post_attention = aggregate_attention(ref_stacked)
    masks = {"fast": {}, "post": {}, "ref": {}}
    for precision in PRECISIONS:
        segmenter = DiffSeg(kl_threshold=THRESHOLD, num_points=NUM_POINTS, kl_precision=precision)
        masks["fast"][precision] = segmenter(fast_attention)
        masks["post"][precision] = segmenter(post_attention)
        masks["ref"][precision] = torch.stack(
            [
                naive_segment({s: m[s][0] for s in m}, THRESHOLD, NUM_POINTS, precision, output_size=512)
                for m in ref_maps
            ]
        )
    return SimpleNamespace(
        labels=batch.labels,
        fast_maps=fast_maps,
        ref_maps=ref_maps,
        post_attention=post_attention,
        masks=masks,
    )


def _fast_metrics(masks: torch.Tensor, labels: torch.Tensor) -> dict:
    """Fast metric path: one batched bincount, then per-image Hungarian matching."""
    metric = HungarianSegmentationMetric()
    metric.update(masks, labels)
    return metric_json(metric.compute())


def _reference_metrics(masks: torch.Tensor, labels: torch.Tensor) -> dict:
    """Reference metric path: ``match_image`` one image at a time."""
    tp = fp = fn = 0
    valid = 0
    for mask, label in zip(masks, labels, strict=True):
        t, f, n, v = match_image(mask.numpy(), label.numpy())
        tp, fp, fn, valid = tp + t, fp + f, fn + n, valid + v
    return scores(tp, fp, fn, valid)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two ``(H, W)`` id maps cut the pixels into the same segments, whatever their ids."""
    pairs = torch.unique(torch.stack([a.flatten(), b.flatten()]), dim=1).shape[1]
    return pairs == a.unique().numel() == b.unique().numel()


def matched_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the pixels of ``(B, H, W)`` id maps on which ``a`` and ``b`` agree once each image's segments of
    ``a`` are renamed one-to-one to the segments of ``b`` they overlap most (Hungarian matching of the overlaps)."""
    agreed = 0
    for x, y in zip(a, b, strict=True):
        xs, x_idx = x.flatten().unique(return_inverse=True)
        ys, y_idx = y.flatten().unique(return_inverse=True)
        overlap = torch.zeros(len(xs), len(ys), dtype=torch.int64).index_put_((x_idx, y_idx), torch.tensor(1),
                                                                               accumulate=True)
        rows, cols = linear_sum_assignment(overlap.numpy(), maximize=True)
        agreed += int(overlap[rows, cols].sum())
    return agreed / a.numel()


def test_matched_agreement_ignores_ids_only():
    a = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]])
    assert matched_agreement(a, 5 - a) == 1.0 and same_partition(a[0], 5 - a[0])
    b = a.clone()
    b[0, 0, 0] = 1  # one pixel moves to another segment
    assert matched_agreement(a, b) == 7 / 8 and not same_partition(a[0], b[0])
    merged = torch.where(a == 2, 1, a)  # two segments become one
    assert matched_agreement(a, merged) == 6 / 8 and not same_partition(a[0], merged[0])


def test_fixture_is_not_degenerate(run):
    """Several segments in both precisions, and float16 rounding empties some anchors (as with SD)."""
    for precision in PRECISIONS:
        for mask in run.masks["ref"][precision]:
            assert mask.unique().numel() >= 3, precision
    grid = anchor_grid(NUM_POINTS, 64)
    anchors = grid[:, 0] * 64 + grid[:, 1]
    for image in range(NUM_IMAGES):
        attn = run.post_attention[image].reshape(4096, 4096)
        assert bool((attn[anchors].half() == 0).any()), "float16 rounding should empty some anchors"


def test_captures_agree(run):
    for s, fast in run.fast_maps.items():
        ref = torch.cat([m[s] for m in run.ref_maps])
        torch.testing.assert_close(fast, ref, rtol=1e-2, atol=1e-4)
        assert (fast - ref).abs().mean() < 1e-4 * ref.abs().mean()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_post_processing_matches_reference(run, precision):
    """Same captured maps: fast batched aggregation + DiffSeg vs the plain per-image port."""
    fast, ref = run.masks["post"][precision], run.masks["ref"][precision]
    assert fast.shape == ref.shape == (NUM_IMAGES, 512, 512)
    # Batched (B = NUM_IMAGES) vs one image at a time: segments compared up to their ids.
    agreement = matched_agreement(fast, ref)
    if precision == "float32":
        assert all(same_partition(f, r) for f, r in zip(fast, ref, strict=True))
    else:
        assert agreement >= 0.999
    fast_scores = _fast_metrics(fast, run.labels)
    ref_scores = _reference_metrics(ref, run.labels)
    assert fast_scores["acc"] == pytest.approx(ref_scores["acc"], abs=1e-6)
    assert fast_scores["miou"] == pytest.approx(ref_scores["miou"], abs=1e-6)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_end_to_end_matches_reference(run, precision):
    """Fast capture + fast post-processing vs reference capture + plain port."""
    fast, ref = run.masks["fast"][precision], run.masks["ref"][precision]
    assert (fast == ref).double().mean().item() >= 0.999
    for f, r in zip(fast, ref, strict=True):
        assert f.unique().numel() == r.unique().numel()
    fast_scores = _fast_metrics(fast, run.labels)
    ref_scores = _reference_metrics(ref, run.labels)
    assert fast_scores["acc"] == pytest.approx(ref_scores["acc"], abs=0.05)
    assert fast_scores["miou"] == pytest.approx(ref_scores["miou"], abs=0.05)


def test_naive_aggregate_matches_fast(run):
    fast = run.post_attention[0].double()
    naive = naive_aggregate({s: m[0] for s, m in run.ref_maps[0].items()})
    assert naive.dtype == torch.float64 and naive.shape == (64, 64, 64, 64)
    torch.testing.assert_close(naive, fast, rtol=1e-5, atol=1e-9)
