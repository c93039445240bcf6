"""DiffCut: clustering against a plain float64 reference, guard, PAMR refinement, feature capture, noisy latents."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from diffusers import UNet2DConditionModel
from reference_diffcut import reference_affinity, reference_cuts, reference_diffcut, reference_ids, reference_pamr
from scipy.optimize import linear_sum_assignment

from diffseg import DiffCut
from diffseg.backbone import SD_SCHEDULER_CONFIG
from diffseg.capture import capture_self_attention
from diffseg.diffcut import (
    assemble_clusters,
    best_bipartition,
    capture_diffcut_features,
    diffcut_affinity,
    diffcut_feature_layer,
    diffcut_noisy_latents,
    fiedler_vector,
    ncut_lower_bound,
    recursive_ncut,
)
from diffseg.pamr import median_filter_3x3, neighbour_offsets, pamr, refine_masks
from diffseg.testing.features import clustered_features
from diffseg.testing.tiny import tiny_text_config, tiny_unet_config
from eval.bench.baselines.naive_diffcut import naive_diffcut


@pytest.fixture(autouse=True)
def one_thread():
    """Run these tests on one torch thread: on this shared 2-core machine, with other processes busy, a
    2-thread tiny-UNet forward measured 1.5-2.5 s against 0.03 s on one thread (threads wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def matched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bool map: where a's label, mapped by the best one-to-one matching of a's labels to b's, equals b."""
    a, b = a.reshape(-1).long(), b.reshape(-1).long()
    hist = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    hist.index_put_((a, b), torch.ones_like(a, dtype=torch.float64), accumulate=True)
    rows, cols = linear_sum_assignment(hist.numpy(), maximize=True)
    mapping = torch.full((hist.shape[0],), -1, dtype=torch.long)
    mapping[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return mapping[a] == b


def matched_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pixels with equal labels after the best one-to-one matching of a's labels to b's."""
    return float(matched(a, b).double().mean())


# ------------------------------------------------------------------------------------ against reference
@pytest.fixture(scope="module")
def clustered_cases():
    """Three 16x16 maps with 8 clusters (1280 channels) and one 24x24 map with 6 clusters (256 channels)."""
    cases = [clustered_features(side=16, clusters=8, channels=1280, seed=s) for s in range(3)]
    cases.append(clustered_features(side=24, clusters=6, channels=256, seed=7))
    return cases


@pytest.fixture(scope="module")
def reference_results(clustered_cases):
    return [reference_diffcut(features[0], mask_size=64) for features, _ in clustered_cases]


def test_clusters_match_float64_reference(clustered_cases, reference_results):
    diffcut = DiffCut(mask_size=64)
    for (features, labels), (ref_masks, ref_ids) in zip(clustered_cases, reference_results, strict=True):
        unit, ids = diffcut.cluster(features)
        # the synthetic regions are found, by both; only locations that leave the recursion after the
        # first cut (zero affinity entries, as in the release) may land elsewhere
        assert ids.max().item() + 1 == labels.max().item() + 1 == ref_ids.max().item() + 1
        dropped = (diffcut_affinity(features)[1][0] == 0).any(dim=1)
        assert matched(ids[0], labels)[~dropped].all()
        # same low-resolution ids, numbered as the release numbers them
        assert torch.equal(ids[0], ref_ids)
        masks = diffcut(features)[0]
        assert masks.shape == (64, 64) and masks.dtype == torch.long
        assert masks.unique().numel() == ref_masks.unique().numel()
        assert matched_agreement(masks, ref_masks) >= 0.999
        assert (masks == ref_masks).float().mean() >= 0.999  # the numbering agrees too


def test_batch_dtype_and_eigensolver_do_not_change_masks(clustered_cases):
    features = torch.cat([clustered_cases[0][0], clustered_cases[1][0]])
    single = torch.cat([DiffCut(mask_size=32)(f[None]) for f in features])
    assert torch.equal(DiffCut(mask_size=32)(features), single)
    assert torch.equal(DiffCut(mask_size=32, eigensolver="dense")(features), single)
    half = features.half()
    assert torch.equal(DiffCut(mask_size=32)(half), DiffCut(mask_size=32)(half.float()))


def test_release_style_baseline_gives_identical_masks(clustered_cases):
    features, _ = clustered_cases[0]
    assert torch.equal(DiffCut(mask_size=48)(features)[0], naive_diffcut(features[0], mask_size=48))


def test_locations_with_zero_affinity_leave_the_recursion_after_the_first_cut(clustered_cases):
    features, _ = clustered_cases[3]
    _, affinity = diffcut_affinity(features)
    dropped = (affinity[0] == 0).any(dim=1)
    assert dropped.sum() >= 2  # at least the minimum pair of the min-max normalisation
    cuts, _ = recursive_ncut(affinity[0])
    assert len(cuts) >= 3
    assert not any(bool(cut[dropped].any()) for cut in cuts[1:])
    expected = reference_cuts(reference_affinity(features[0])[1])
    assert len(cuts) == len(expected) and all(torch.equal(a.double(), b) for a, b in zip(cuts, expected, strict=True))


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_identical_features_give_one_segment(value):
    features = torch.full((2, 256, 64), value, dtype=torch.float16)
    diffcut = DiffCut(mask_size=32)
    masks = diffcut(features)
    assert torch.equal(masks, torch.zeros(2, 32, 32, dtype=torch.long))
    assert diffcut.last_num_clusters.tolist() == [1, 1]
    unit, affinity = diffcut_affinity(features)
    assert torch.isfinite(affinity).all() and torch.isfinite(unit).all()
    ref_masks, ref_ids = reference_diffcut(features[0].float(), mask_size=32)
    assert int(ref_ids.max()) == 0 and int(ref_masks.max()) == 0


# ---------------------------------------------------------------------------------------------- pieces
def _blocks_affinity(seed: int, side: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """(affinity (side^2, side^2) float64, labels (side^2,)) of a 4-cluster map."""
    features, labels = clustered_features(side=side, clusters=4, channels=64, seed=seed)
    return diffcut_affinity(features)[1][0].double(), labels.reshape(-1)


def test_bipartition_scores_every_threshold_like_the_loop():
    for seed in range(3):
        affinity, _ = _blocks_affinity(seed)
        degree = affinity.sum(dim=1)
        y = torch.randn(affinity.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        side, ncut = best_bipartition(y, affinity, degree)
        low, high = 0.99 * float(y.min()), 0.99 * float(y.max())
        best_value, best_side = math.inf, None
        laplacian = torch.diag(degree) - affinity
        for k in range(100):
            x = (y > low + (high - low) * k / 99).double()
            share = float(degree @ x / degree.sum())
            z = (1 + (2 * x - 1)) - share / (1 - share) * (1 - (2 * x - 1))
            value = float(z @ laplacian @ z / (z @ torch.diag(degree) @ z))
            if value < best_value:
                best_value, best_side = value, x.bool()
        assert float(ncut) == pytest.approx(best_value, rel=1e-9)
        assert torch.equal(side, best_side)


def test_lanczos_fiedler_vector_equals_dense_and_bounds_hold():
    for seed in range(3):
        affinity, labels = _blocks_affinity(seed, side=14)
        degree = affinity.sum(dim=1)
        lanczos = fiedler_vector(affinity, degree)
        dense = fiedler_vector(affinity, degree, eigensolver="dense")
        assert torch.allclose(lanczos / lanczos.norm(), dense / dense.norm(), atol=1e-8)
        assert dense[dense.abs().argmax()] > 0
        inv_sqrt = torch.diag(degree.rsqrt())
        lambda_2 = float(torch.linalg.eigvalsh(inv_sqrt @ (torch.diag(degree) - affinity) @ inv_sqrt)[1])
        assert ncut_lower_bound(affinity, degree) <= lambda_2 + 1e-12
        assert float(best_bipartition(dense, affinity, degree)[1]) >= lambda_2 - 1e-12
        region = labels == labels[0]
        leaf = affinity[region][:, region]  # one cluster: no cut can go below tau, the bound knows it
        assert ncut_lower_bound(leaf, leaf.sum(dim=1)) > 0.5


def test_assembly_numbers_clusters_like_the_release_sums():
    n = 6
    cuts = [torch.tensor([1, 1, 1, 0, 0, 0]), torch.tensor([1, 0, 0, 0, 0, 0]), torch.tensor([0, 0, 0, 1, 1, 0])]
    ids = assemble_clusters([c.bool() for c in cuts], n)
    assert torch.equal(ids, reference_ids([c.double() for c in cuts], n))
    # weights 1, 2 (= max 1 + 1), 4 (= max 3 + 1): sums [3, 1, 1, 4, 4, 0] -> ranks
    assert ids.tolist() == [2, 1, 1, 3, 3, 0]
    assert assemble_clusters([], 4).tolist() == [0, 0, 0, 0]


# ----------------------------------------------------------------------------------------------- guard
def test_guard_binds_on_noise_and_is_reported():
    noise = torch.randn(1, 256, 64, generator=torch.Generator().manual_seed(3))
    diffcut = DiffCut(mask_size=32, max_segments=6)
    with pytest.warns(RuntimeWarning, match="guard bound"):
        diffcut(noise)
    assert diffcut.guard_hits == 1 and diffcut.last_guard_bound.tolist() == [True]
    assert 2 <= int(diffcut.last_num_clusters[0]) <= 6
    # the guard truncates the release's order: the first cuts are those of a looser guard
    _, affinity = diffcut_affinity(noise)
    short, hit_short = recursive_ncut(affinity[0], max_segments=6)
    longer, hit_longer = recursive_ncut(affinity[0], max_segments=12)
    assert hit_short and hit_longer and len(short) == 5 and len(longer) == 11
    assert all(torch.equal(a, b) for a, b in zip(short, longer[:5], strict=False))
    shallow, hit_depth = recursive_ncut(affinity[0], max_depth=2)
    assert hit_depth and 1 <= len(shallow) <= 3 and torch.equal(shallow[0], short[0])  # levels 0 and 1 only


def test_guard_stays_silent_on_clustered_features(clustered_cases):
    diffcut = DiffCut(mask_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diffcut(torch.cat([features for features, _ in clustered_cases[:3]]))
    assert diffcut.guard_hits == 0 and diffcut.last_guard_bound.tolist() == [False] * 3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="square"):
        DiffCut()(torch.randn(1, 250, 8))
    with pytest.raises(ValueError, match=r"\(B, h\*w, C\)"):
        DiffCut()(torch.randn(250, 8))
    with pytest.raises(ValueError, match="needs the images"):
        DiffCut(refine=True)(torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match="eigensolver"):
        DiffCut(eigensolver="arpack")


# ------------------------------------------------------------------------------------------ refinement
def test_pamr_step_on_a_flat_image_spreads_a_delta_to_its_32_neighbours():
    image = torch.zeros(1, 3, 21, 21)
    mask = torch.zeros(1, 1, 21, 21)
    mask[0, 0, 10, 10] = 1
    out = pamr(image, mask, num_iter=1)[0, 0]
    expected = torch.zeros(21, 21)
    for dy, dx in neighbour_offsets((1, 2, 4, 8)):
        expected[10 - dy, 10 - dx] = 1 / 32
    assert torch.allclose(out, expected, atol=1e-7)
    assert len(set(neighbour_offsets((1, 2, 4, 8)))) == 32


def test_pamr_matches_the_convolution_reference_and_is_per_channel():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 24, 24, generator=g)
    masks = torch.rand(2, 4, 24, 24, generator=g)
    out = pamr(image, masks)
    assert torch.allclose(out.double(), reference_pamr(image, masks), atol=1e-5)
    assert torch.allclose(out[:, 1:2], pamr(image, masks[:, 1:2]))


def test_median_filter_removes_isolated_pixels_and_keeps_edges():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 2
    noisy = labels.clone()
    noisy[0, 1, 1] = 5
    noisy[0, 0, 5] = 7  # a corner: its replicated 3x3 window holds 4 copies of it and 5 of label 2
    assert torch.equal(median_filter_3x3(noisy), labels)
    spot = torch.zeros(1, 5, 5, dtype=torch.long)
    spot[0, 1:4, 1:4] = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert int(median_filter_3x3(spot)[0, 2, 2]) == 5


def test_refinement_snaps_labels_to_image_edges():
    image = -torch.ones(1, 3, 64, 64)
    image[..., 32:] = 1  # left half black, right half white, in [-1, 1]
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    truth[..., 16:] = 3
    noisy = truth.clone()
    noisy[..., 14:16] = 3  # boundary two columns too far left
    noisy[0, 5, 5] = 3  # and a speck
    assert torch.equal(refine_masks(noisy, image), truth)
    features = clustered_features(16, 2, 64, seed=1)[0]
    refined = DiffCut(mask_size=32, refine=True)(features, image)
    assert torch.equal(refined, refine_masks(DiffCut(mask_size=32)(features), image))


# ------------------------------------------------------------------------------------- feature capture
def _tiny_sdxl_unet() -> UNet2DConditionModel:
    """SDXL-shaped UNet: attention in the last two down blocks, 3 transformer blocks in the last, text_time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(16, 32, 64),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 3),
            attention_head_dim=(2, 4, 8),
            cross_attention_dim=32,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
            use_linear_projection=True,
            norm_num_groups=8,
        )
    return unet.eval()


def _sdxl_inputs(batch: int):
    g = torch.Generator().manual_seed(1)
    cond = {"text_embeds": torch.randn(batch, 32, generator=g), "time_ids": torch.randn(batch, 6, generator=g)}
    return torch.randn(batch, 4, 16, 16, generator=g), torch.randn(batch, 77, 32, generator=g), cond


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_capture_hooks_the_last_self_attention_of_the_encoder(family):
    if family == "sd1":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = UNet2DConditionModel(**tiny_unet_config()).eval()
        g = torch.Generator().manual_seed(1)
        latents = torch.randn(2, 4, 32, 32, generator=g)
        context = torch.randn(2, 77, tiny_text_config().hidden_size, generator=g)
        kwargs = {}
        expected = unet.down_blocks[-2].attentions[-1].transformer_blocks[-1].attn1
        name, tokens, channels = "down_blocks.2.attentions.1.transformer_blocks.0.attn1", 8 * 8, 64
    else:
        unet = _tiny_sdxl_unet()
        latents, context, cond = _sdxl_inputs(2)
        kwargs = {"added_cond_kwargs": cond}
        expected = unet.down_blocks[-1].attentions[-1].transformer_blocks[-1].attn1
        name, tokens, channels = "down_blocks.2.attentions.1.transformer_blocks.2.attn1", 4 * 4, 64
    assert diffcut_feature_layer(unet) == (name, expected)

    seen = {}

    def grab_input(module, args, kw):
        seen["args"], seen["kwargs"] = args, kw

    with torch.no_grad():
        plain = unet(latents, 50, encoder_hidden_states=context, **kwargs).sample
        handle = expected.register_forward_pre_hook(grab_input, with_kwargs=True)
        try:
            with capture_diffcut_features(unet) as store:
                captured = unet(latents, 50, encoder_hidden_states=context, **kwargs).sample
        finally:
            handle.remove()
        recomputed = expected(*seen["args"], **seen["kwargs"])
    assert torch.equal(captured, plain)
    assert store.layer == name and store.features.shape == (2, tokens, channels)
    assert torch.allclose(store.features, recomputed, atol=1e-6, rtol=0)
    assert not expected._forward_hooks

    # shares a pass with DiffSeg's self-attention capture (processors swapped, hook on the module)
    with torch.no_grad(), capture_self_attention(unet) as maps, capture_diffcut_features(unet) as shared:
        unet(latents, 50, encoder_hidden_states=context, **kwargs)
    assert maps.layer_counts and torch.allclose(shared.features, store.features, atol=1e-5)

    with pytest.raises(KeyError), capture_diffcut_features(unet) as store:
        raise KeyError("boom")
    assert not expected._forward_hooks
    with pytest.raises(RuntimeError, match="no DiffCut features"):
        _ = store.features


def test_capture_needs_an_attention_down_block():
    class NoAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down_blocks = torch.nn.ModuleList([torch.nn.Identity()])

    with pytest.raises(ValueError, match="no down block with attentions"), capture_diffcut_features(NoAttention()):
        pass


# -------------------------------------------------------------------------------------------- noisy input
def test_noisy_latents_share_one_seeded_noise_at_timestep_50():
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    noisy, timesteps = diffcut_noisy_latents(latents, SD_SCHEDULER_CONFIG)
    assert timesteps.tolist() == [50, 50, 50]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = float(torch.cumprod(1 - betas, dim=0)[50])
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42))
    expected = math.sqrt(alpha_bar) * latents + math.sqrt(1 - alpha_bar) * noise
    assert torch.allclose(noisy, expected, atol=1e-5)
    shared = (noisy - math.sqrt(alpha_bar) * latents) / math.sqrt(1 - alpha_bar)
    assert torch.allclose(shared, noise.expand(3, -1, -1, -1), atol=1e-4)
    again, _ = diffcut_noisy_latents(latents, SD_SCHEDULER_CONFIG, seed=42)
    other, _ = diffcut_noisy_latents(latents, SD_SCHEDULER_CONFIG, seed=0)
    assert torch.equal(again, noisy) and not torch.allclose(other, noisy)
