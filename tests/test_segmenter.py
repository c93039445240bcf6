"""DiffSeg core (aggregation, merging, NMS, K-means) against slow float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import reference_impl as ref
import torch

from diffseg import DiffSeg, KMeansSegmenter, aggregate_attention, anchor_grid, nms_mask
from diffseg.kmeans import kmeans, lloyd
from diffseg.merging import first_merge, merge_proposals


def region_attention(
    side: int, regions: np.ndarray, sharpness: float | list[float], noise: float, seed: int
) -> torch.Tensor:
    """(side*side, side*side) attention: queries attend to keys of their own region.

    ``regions`` is an integer (R, R) layout resized (nearest) to ``side``;
    ``sharpness`` is one logit gap or one per region (of the query).
    """
    gen = torch.Generator().manual_seed(seed)
    idx = np.arange(side) * regions.shape[0] // side
    lay = torch.from_numpy(regions[idx][:, idx]).reshape(-1)
    gap = torch.as_tensor(sharpness, dtype=torch.float64).reshape(-1)
    gap = gap[lay] if gap.numel() > 1 else gap
    logits = (lay[:, None] == lay[None, :]).double() * gap.reshape(-1, 1)
    logits = logits + noise * torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    return torch.softmax(logits, dim=-1).float()


LAYOUT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def pyramid(sides, sharpness=6.0, noise=1.0, seed=0, layout=LAYOUT, batch=1):
    return {
        s: torch.stack([region_attention(s, layout, sharpness, noise, seed + 10 * s + b) for b in range(batch)])
        for s in sides
    }


# ---------------------------------------------------------------- anchors


@pytest.mark.parametrize(
    "m, coords",
    [(16, list(range(1, 62, 4))), (4, [0, 21, 42, 63]), (8, list(range(0, 64, 9))), (32, list(range(0, 63, 2)))],
)
def test_anchor_grid_matches_official_layout(m, coords):
    grid = anchor_grid(m, 64)
    assert grid.shape == (m * m, 2)
    expected = [(i, j) for i in coords for j in coords]  # row-major, ij indexing
    assert [tuple(p) for p in grid.tolist()] == expected


# ---------------------------------------------------------------- aggregation


def test_aggregation_matches_slow_reference():
    maps = pyramid((16, 8, 4, 2), seed=1)
    out = aggregate_attention(maps)
    assert out.shape == (1, 16, 16, 16, 16) and out.dtype == torch.float32
    expected = ref.aggregate({s: m[0].double().numpy() for s, m in maps.items()})
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out.sum(dim=(-1, -2)).numpy(), 1.0, rtol=1e-5)


def test_aggregation_one_hot_weights_select_one_resolution():
    maps = pyramid((16, 8, 4), seed=2)
    out = aggregate_attention(maps, weights={8: 1.0})
    expected = ref.aggregate({s: m[0].double().numpy() for s, m in maps.items()}, {8: 1.0})
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=1e-5, atol=1e-8)
    # The proportional default is not one-hot: results differ.
    assert not torch.allclose(out, aggregate_attention(maps))


def test_aggregation_batch_is_per_image():
    maps = pyramid((8, 4), seed=3, batch=2)
    both = aggregate_attention(maps)
    for b in range(2):
        single = aggregate_attention({s: m[b : b + 1] for s, m in maps.items()})
        torch.testing.assert_close(both[b : b + 1], single)


@pytest.mark.parametrize(
    "maps, match",
    [
        ({8: torch.rand(1, 64, 60)}, "maps\\[8\\]"),
        ({8: torch.rand(1, 63, 63)}, "perfect-square"),
        ({8: torch.rand(64, 64)}, "\\(B, s\\*s, s\\*s\\)"),
        ({4: torch.rand(1, 64, 64)}, "maps\\[4\\]"),
        ({}, "maps"),
    ],
)
def test_aggregation_rejects_bad_shapes(maps, match):
    with pytest.raises(ValueError, match=match):
        aggregate_attention(maps)


# ---------------------------------------------------------------- merging


def peaked_attention(side: int, seed: int) -> torch.Tensor:
    """Aggregated-like (S, S, S, S) tensor with very small entries, some below float16's range."""
    maps = pyramid((side, side // 2), sharpness=[16.0, 16.0, 3.0, 4.0], noise=2.0, seed=seed)
    return aggregate_attention(maps)[0]


@pytest.mark.parametrize("precision", ["float16", "float32"])
@pytest.mark.parametrize("seed", [0, 1])
def test_merging_matches_official_semantics(precision, seed):
    attn = peaked_attention(16, seed)
    thresholds = [1.1, 1.1, 1.1]
    got = merge_proposals(attn, thresholds, num_points=4, precision=precision)
    want = ref.merge(attn.double().numpy(), thresholds, 4, fp16=precision == "float16")
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-9)


def test_float16_rounding_changes_groups():
    """The fixture has entries that round to 0 in float16: some anchors must be dropped."""
    attn = peaked_attention(16, 0)
    flat = attn.reshape(256, 256)
    rounded_zero_rows = (flat.half() == 0).any(dim=1)
    assert 0 < int(rounded_zero_rows.sum()) < 256
    anchors = anchor_grid(4, 16)
    idx = anchors[:, 0] * 16 + anchors[:, 1]
    p16 = first_merge(flat, idx, 1.1, "float16")
    p32 = first_merge(flat, idx, 1.1, "float32")
    assert p16.shape[0] == int((~rounded_zero_rows[idx]).sum())  # empty groups dropped
    assert p32.shape[0] == 16
    assert torch.isfinite(p16).all() and torch.isfinite(p32).all()


@pytest.mark.parametrize("thresholds", [[0.5, 0.5, 0.5], [0.9, 1.0, 1.1], [1.3, 1.3]])
def test_merging_thresholds(thresholds):
    attn = peaked_attention(16, 3)
    got = merge_proposals(attn, thresholds, num_points=8, precision="float16")
    want = ref.merge(attn.double().numpy(), thresholds, 8, fp16=True)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- NMS


def test_nms_matches_reference_and_breaks_ties_low():
    gen = torch.Generator().manual_seed(0)
    props = torch.rand(5, 64, generator=gen, dtype=torch.float64)
    got = nms_mask(props, output_size=24, chunk=2)
    want = ref.nms(props.numpy(), 24)
    assert (got.numpy() == want).mean() == 1.0
    tie = torch.ones(3, 16)
    assert nms_mask(tie, 8).eq(0).all()
    assert nms_mask(torch.zeros(0, 16), 8).shape == (8, 8)


# ---------------------------------------------------------------- DiffSeg end to end


def test_diffseg_recovers_four_regions():
    maps = pyramid((64, 32, 16, 8), sharpness=8.0, noise=0.5, seed=4)
    attn = aggregate_attention(maps)
    for precision in ("float16", "float32"):
        mask = DiffSeg(kl_precision=precision, output_size=64)(attn)[0]
        assert mask.shape == (64, 64) and mask.dtype == torch.long
        truth = torch.from_numpy(np.kron(LAYOUT, np.ones((16, 16), dtype=np.int64)))
        assert mask.unique().numel() == 4
        # Each true region maps to one predicted label, one-to-one.
        pairs = {(int(t), int(p)) for t, p in zip(truth.reshape(-1), mask.reshape(-1), strict=True)}
        assert len(pairs) == 4


def test_diffseg_equals_reference_pipeline_with_nms():
    attn = peaked_attention(16, 5)
    seg = DiffSeg(kl_threshold=1.1, num_points=4, output_size=32)
    mask = seg(attn)[0].numpy()
    want = ref.nms(ref.merge(attn.double().numpy(), [1.1] * 3, 4, fp16=True), 32)
    assert (mask == want).mean() == 1.0


def test_diffseg_never_nan_on_degenerate_attention():
    # One-hot attention: every map has zeros, so every anchor group is empty.
    eye = torch.eye(64 * 64).reshape(64, 64, 64, 64)
    for precision in ("float16", "float32"):
        mask = DiffSeg(kl_precision=precision, output_size=32)(eye)
        assert mask.shape == (1, 32, 32) and mask.eq(0).all()
    mask = DiffSeg(refine=True, output_size=32)(eye)
    assert mask.shape == (1, 32, 32)


def test_diffseg_refinement_matches_reference_lloyd():
    attn = peaked_attention(16, 6)
    seg = DiffSeg(num_points=4, refine=True, output_size=16)
    proposals = merge_proposals(attn, [1.1] * 3, 4, "float16")
    points = attn.reshape(256, 256).double().numpy()
    labels, _ = ref.lloyd(points, proposals.numpy())
    want = np.stack([points[labels == k].mean(0) for k in range(proposals.shape[0]) if (labels == k).any()])
    np.testing.assert_allclose(seg.proposals(attn).numpy(), want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"kl_threshold": 0.0}, "kl_threshold"),
        ({"kl_threshold": -1.0}, "kl_threshold"),
        ({"kl_threshold": [1.0, 1.0]}, "kl_threshold"),
        ({"num_points": 1}, "num_points"),
        ({"kl_precision": "bfloat16"}, "kl_precision"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_diffseg_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DiffSeg(**kwargs)


def test_diffseg_rejects_bad_tensor():
    with pytest.raises(ValueError, match="attention"):
        DiffSeg()(torch.rand(4, 4, 4, 8))
    with pytest.raises(ValueError, match="num_points"):
        DiffSeg(num_points=32)(torch.rand(1, 16, 16, 16, 16))


# ---------------------------------------------------------------- K-means


def blobs(seed=0, n=60, centers=3, dim=5):
    gen = np.random.default_rng(seed)
    c = gen.normal(scale=10.0, size=(centers, dim))
    labels = np.arange(n) % centers
    return torch.from_numpy(c[labels] + gen.normal(size=(n, dim))), labels


def test_lloyd_matches_reference():
    x, _ = blobs(1, n=90, centers=4)
    init = x[[0, 1, 2, 3]].clone()
    got = lloyd(x, init)
    labels, centers = ref.lloyd(x.numpy(), init.numpy())
    assert np.array_equal(got.labels.numpy(), labels)
    np.testing.assert_allclose(got.centers.numpy(), centers, rtol=1e-10)


def test_kmeans_recovers_blobs_and_is_seeded():
    x, truth = blobs(2)
    a = kmeans(x, 3, n_init=3, seed=7)
    b = kmeans(x, 3, n_init=3, seed=7)
    assert torch.equal(a.labels, b.labels)
    pairs = {(int(t), int(p)) for t, p in zip(truth, a.labels, strict=True)}
    assert len(pairs) == 3  # a one-to-one relabelling of the truth


def test_kmeans_batched_equals_single():
    xs = torch.stack([blobs(s)[0] for s in (3, 4)]).float()
    both = kmeans(xs, 3, n_init=2, seed=1)
    assert both.labels.shape == (2, 60)
    for b in range(2):
        single = kmeans(xs[b : b + 1], 3, n_init=2, seed=1)
        assert torch.equal(both.labels[b], single.labels[0])  # per-problem seeding
        torch.testing.assert_close(both.centers[b], single.centers[0])


def test_kmeans_segmenter_k_per_image():
    maps = pyramid((16, 8), sharpness=8.0, noise=0.5, seed=8, batch=2)
    attn = aggregate_attention(maps)
    seg = KMeansSegmenter(num_clusters=6, seed=0, n_init=2, output_size=16)
    masks = seg(attn, num_clusters=[4, 2])
    assert masks.shape == (2, 16, 16)
    assert masks[0].unique().numel() == 4
    assert masks[1].unique().numel() == 2
    assert seg(attn).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="num_clusters"):
        seg(attn, num_clusters=[3])
    with pytest.raises(ValueError, match="num_clusters"):
        KMeansSegmenter(num_clusters=0)


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_decisions_right_at_the_threshold_follow_float64(precision):
    """Thresholds 5e-8 either side of an exact pair distance: float32 rounding must not decide."""
    attn = peaked_attention(16, 7)
    flat = attn.reshape(256, 256)
    cast = flat.double().numpy()
    if precision == "float16":
        cast = cast.astype(np.float16).astype(np.float64)
    anchors = anchor_grid(4, 16)
    idx = (anchors[:, 0] * 16 + anchors[:, 1]).tolist()
    # The valid anchor/map pair whose float64 distance is closest to 1.0.
    pairs = [(abs(ref.sym_kl(cast[a], cast[m]) - 1.0), a, m) for a in idx for m in range(256)]
    _, a, m = min(p for p in pairs if np.isfinite(p[0]))
    exact = ref.sym_kl(cast[a], cast[m])
    for threshold, member in ((exact + 5e-8, True), (exact - 5e-8, False)):
        got = first_merge(flat, torch.tensor([a]), threshold, precision)
        members = [j for j in range(256) if ref.sym_kl(cast[a], cast[j]) < threshold]
        assert (m in members) == member
        np.testing.assert_allclose(got[0].numpy(), flat.double().numpy()[members].mean(0), rtol=1e-6)


def test_kmeans_draws_come_from_cpu_generators(monkeypatch):
    """Seeds live on the CPU, so K-means gives the same clusters on any device."""
    seen = []
    original = torch.rand

    def spy(*args, generator=None, **kwargs):
        seen.append((generator.device.type if generator is not None else None, kwargs.get("device")))
        return original(*args, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "rand", spy)
    x = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(0))
    first = kmeans(x, 3, n_init=2, seed=7)
    assert seen and all(dev == "cpu" and where is None for dev, where in seen)
    again = kmeans(x, 3, n_init=2, seed=7)
    assert torch.equal(first.labels, again.labels)
