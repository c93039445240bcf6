"""DiffCut (Couairon et al., NeurIPS 2024): recursive normalized cut on diffusion UNet features.

Reimplemented from the paper and its public release (PaulCouairon/DiffCut,
``diffcut/recursive_normalized_cut.py``, ``tools/ldm.py``, ``eval_diffcut.py``).

Features. One UNet pass on the noisy latent (:func:`diffcut_noisy_latents`: one seeded noise
tensor shared by the batch, DDIM ``add_noise`` at t = 50) with the empty prompt; the output of the
``attn1`` layer of the last transformer block of the last down block that has attention
(:func:`capture_diffcut_features`), shape (B, h*w, C), h = w = image size / 32 for SDXL-family UNets.

Clustering (:class:`DiffCut`), per image, for features f_i (N = h*w locations):

1. f_i <- f_i / ||f_i||; W_ij = ((c_ij - min c) / (max c - min c)) ** alpha with c_ij = f_i . f_j
   (computed in float32 as the release, because which entries are exactly 0 matters in step 3).
2. Two-way normalized cut of a node with affinity A (principal submatrix of W) and degrees d:
   y = D^-1/2 v with v the eigenvector of the second-smallest eigenvalue of
   D^-1/2 (D - A) D^-1/2, sign fixed so that the entry of largest magnitude is positive;
   100 thresholds t_k evenly spaced from 0.99 min(y) to 0.99 max(y); partition x_k = [y > t_k];
   Ncut(x) = cut(x) / assoc(x) + cut(x) / assoc(not x); the first k of smallest Ncut is kept.
3. Recursion (depth first, the "y > t" side first): a cut is accepted when its Ncut < tau, then
   both sides are cut again. Below the first level the release removes every location whose row
   of W contains an exact zero; with the release's masking of explored areas this leaves, for a
   child, exactly its side of the parent's cut minus the locations Z = {i : W_ij = 0 for some j}
   (the minimum pair of the min-max normalisation, plus pairs whose value underflows float32 in
   ``** alpha``). Locations in Z take part in the first cut only.
4. Cluster ids: each location's set of accepted cuts containing it, ordered as the release's
   assembly orders them (a later cut is more significant), numbered 0..n-1.
5. Cluster embeddings = mean normalised feature of the cluster; each pixel of the bilinearly
   upsampled (mask_size x mask_size) normalised feature map takes the cluster of largest dot
   product. Bilinear upsampling is linear, so the dot products are computed at feature resolution
   and upsampled (n channels instead of C); equal up to float rounding.

Speed. The release thresholds in a Python loop (a matrix product per threshold), copies the full
N x N affinity at every node and runs a full eigendecomposition per node. Here every node works
on its own principal submatrix (float64), the distinct threshold cuts are scored by one
(n x n) @ (n x m) product, m <= 100, and the Fiedler vector comes from a float64 Lanczos iteration
with full reorthogonalisation on D^-1/2 A D^-1/2 with its known top eigenvector D^1/2 1 deflated,
stopped at Ritz residual 1e-10 (nodes under 96 locations, or no convergence in 320 steps: dense
float64 ``torch.linalg.eigh``; ``eigensolver="dense"`` uses it everywhere). Nodes whose Ncut
cannot go below tau (every cut has Ncut >= lambda_2, bounded from the Frobenius norm or the
eigensolver) are rejected without thresholding, which is exact. Matrices stay on the features'
device; the accept/stop decisions and the small Lanczos tridiagonal problems go to the host.

Guard. On noise-like features every cut has a tiny Ncut and the recursion goes down to single
locations. ``max_segments`` and ``max_depth`` stop it: a cut that would be accepted beyond them is
refused, a warning names the image and :attr:`DiffCut.guard_hits` counts such images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from scipy.linalg import eigh_tridiagonal

from diffseg.pamr import refine_masks

__all__ = [
    "DIFFCUT_NOISE_SEED",
    "DIFFCUT_TIMESTEP",
    "DiffCut",
    "DiffCutFeatureStore",
    "assemble_clusters",
    "best_bipartition",
    "capture_diffcut_features",
    "diffcut_affinity",
    "diffcut_feature_layer",
    "diffcut_noisy_latents",
    "fiedler_vector",
    "ncut_lower_bound",
    "recursive_ncut",
]

DIFFCUT_TIMESTEP = 50
DIFFCUT_NOISE_SEED = 42
NUM_THRESHOLDS = 100
_LANCZOS_TOL = 1e-10
_LANCZOS_CHECK_EVERY = 8
_LANCZOS_MAX_STEPS = 320
_DENSE_BELOW = 96  # nodes smaller than this use the dense eigensolver (cheaper than Lanczos there)
_FLAT_RANGE = 1e-6  # a cosine range this small is float32 rounding of identical features
_NCUT_MARGIN = 1e-6  # exact rejections keep this margin above tau (the release's Ncut values are float32)


# ------------------------------------------------------------------------------------------- affinity
def diffcut_affinity(features: torch.Tensor, alpha: float = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features and min-max normalised cosine affinity raised to ``alpha``.

    Args:
        features: (B, N, C) any float dtype.

    Returns:
        ``(unit, affinity)``: unit (B, N, C) float32 L2-normalised features; affinity (B, N, N)
        float32 in [0, 1]. Images whose cosine similarities span less than 1e-6 (identical
        features up to rounding, where the release divides 0 by 0) get an all-ones affinity.
    """
    if features.ndim != 3:
        raise ValueError(f"DiffCut features must be (B, h*w, C), got shape {tuple(features.shape)}")
    # The release normalises twice (in generate_masks and again in recursive_ncut); the second pass
    # only changes rounding, kept so that the affinity's exact zeros match.
    unit = F.normalize(features.float(), dim=-1)
    twice = F.normalize(unit, dim=-1)
    cosine = torch.bmm(twice, twice.transpose(1, 2))
    low = cosine.amin(dim=(1, 2), keepdim=True)
    high = cosine.amax(dim=(1, 2), keepdim=True)
    span = high - low
    flat = span <= _FLAT_RANGE
    affinity = ((cosine - low) / torch.where(flat, torch.ones_like(span), span)) ** alpha
    affinity = torch.where(flat, torch.ones_like(affinity), affinity)
    return unit, affinity


# ------------------------------------------------------------------------------------- eigen-solvers
def _dense_fiedler(normalized: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(v, lambda_2): eigenvector and eigenvalue of the second-smallest eigenvalue of I - normalized (dense eigh)."""
    laplacian = torch.eye(normalized.shape[0], dtype=normalized.dtype, device=normalized.device) - normalized
    values, vectors = torch.linalg.eigh(laplacian)
    return vectors[:, 1], float(values[1])


def _lanczos_fiedler(normalized: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """Largest eigenpair of ``normalized`` restricted to the complement of its unit eigenvector ``top``.

    Lanczos in float64 with full reorthogonalisation (two Gram-Schmidt passes against the basis and
    ``top``), started from a fixed pseudo-random vector; the vectors stay on the device, the small
    tridiagonal problem is solved on the host (LAPACK ``stemr`` via SciPy, top pair only). Stops when
    the Ritz residual of the largest Ritz pair is below 1e-10. Returns ``(v, lambda_2_estimate)`` with
    lambda_2_estimate = 1 - (theta + residual), or None when it does not converge within the step budget.
    """
    n = normalized.shape[0]
    steps = min(_LANCZOS_MAX_STEPS, n - 1)
    device, dtype = normalized.device, normalized.dtype
    start = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    basis = torch.empty(steps, n, dtype=dtype, device=device)
    coefficients = torch.empty(2, steps, dtype=dtype, device=device)  # diagonal, off-diagonal
    q = start - top * (top @ start)
    q = q / q.norm()
    for j in range(steps):
        basis[j] = q
        w = normalized @ q
        coefficients[0, j] = q @ w
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            w = w - top * (top @ w)
        beta = w.norm()
        coefficients[1, j] = beta
        size = j + 1
        if size % _LANCZOS_CHECK_EVERY == 0 or size == steps:
            diagonal, offdiagonal = coefficients[:, :size].cpu().numpy()
            theta, s = eigh_tridiagonal(diagonal, offdiagonal[:-1], select="i", select_range=(size - 1, size - 1))
            residual = abs(float(offdiagonal[-1]) * float(s[-1, 0]))
            if residual <= _LANCZOS_TOL:
                ritz = torch.from_numpy(s[:, 0]).to(device=device, dtype=dtype)
                return basis[:size].T @ ritz, 1.0 - float(theta[0]) - residual
        # On breakdown (beta = 0: an invariant subspace) q becomes 0 and T decouples; the top Ritz pair of
        # the first block then has residual 0 at the next check. No host sync per step.
        q = w / beta.clamp_min(torch.finfo(dtype).tiny)
    return None


def _normalized(affinity: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 for (n, n) affinity and (n,) degrees (a new tensor)."""
    inv_sqrt = degree.rsqrt()
    return (affinity * inv_sqrt[:, None]).mul_(inv_sqrt[None, :])


def _spectral_bound(normalized: torch.Tensor) -> float:
    """1 - sqrt(||N||_F^2 - 1) for N = D^-1/2 A D^-1/2: a lower bound on lambda_2 (see :func:`ncut_lower_bound`)."""
    squared = float(torch.linalg.vector_norm(normalized)) ** 2
    return 1.0 - math.sqrt(max(squared - 1.0, 0.0))


def _second_eigenpair(normalized: torch.Tensor, degree: torch.Tensor, eigensolver: str) -> tuple[torch.Tensor, float]:
    """(v, lambda_2 estimate) of I - normalized: Lanczos for nodes of >= 96 locations, else (or on failure) dense."""
    if eigensolver == "lanczos" and normalized.shape[0] >= _DENSE_BELOW:
        top = degree.sqrt()
        found = _lanczos_fiedler(normalized, top / top.norm())
        if found is not None:
            return found
    return _dense_fiedler(normalized)


def _sign_fixed(y: torch.Tensor) -> torch.Tensor:
    """y scaled so that its largest-magnitude entry (the first on ties) is positive."""
    return y * torch.sign(y[y.abs().argmax()])


def fiedler_vector(affinity: torch.Tensor, degree: torch.Tensor, eigensolver: str = "lanczos") -> torch.Tensor:
    """Release's second-smallest generalized eigenvector y = D^-1/2 v, sign-fixed.

    v is the eigenvector of the second-smallest eigenvalue lambda_2 of D^-1/2 (D - A) D^-1/2, i.e. of
    the largest eigenvalue of D^-1/2 A D^-1/2 once its top eigenvector D^1/2 1 (eigenvalue 1) is removed.

    Args:
        affinity: (n, n) float64 symmetric, positive degrees.
        degree: (n,) float64 row sums.
        eigensolver: "lanczos" (default; nodes below 96 locations use "dense") or "dense"
            (``torch.linalg.eigh``).

    Returns:
        (n,) float64, scaled so that its largest-magnitude entry (the first one on ties) is positive.
        Thresholding is scale-invariant, so only the direction matters.
    """
    v, _ = _second_eigenpair(_normalized(affinity, degree), degree, eigensolver)
    return _sign_fixed(degree.rsqrt() * v)


def ncut_lower_bound(affinity: torch.Tensor, degree: torch.Tensor) -> float:
    """A lower bound on the Ncut of every two-way partition of a node, from its affinity alone.

    Every partition's Ncut (the release's y^T (D - A) y / y^T D y with y^T D 1 = 0) is at least
    lambda_2 = 1 - mu_2, mu_2 the second-largest eigenvalue of N = D^-1/2 A D^-1/2, whose eigenvalues
    are 1 and mu_2..mu_n; so mu_2^2 <= sum_i>=2 mu_i^2 = ||N||_F^2 - 1. O(n^2); it settles most
    leaves (clusters that will not be cut) without an eigensolver.
    """
    return _spectral_bound(_normalized(affinity, degree))


def best_bipartition(
    y: torch.Tensor, affinity: torch.Tensor, degree: torch.Tensor, num_thresholds: int = NUM_THRESHOLDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of ``num_thresholds`` threshold cuts of ``y`` by normalized cut, all scored at once.

    Thresholds t_k = linspace(0.99 min y, 0.99 max y); side_k = y > t_k. Distinct sides (nested,
    identified by their size) are scored by one (n, n) @ (n, m) product, m <= num_thresholds:
    Ncut = cut / assoc(side) + cut / assoc(rest) with cut = sum_{i in side, j not in side} A_ij and
    assoc = sum of degrees, which equals the release's y^T (D - A) y / y^T D y.

    Args:
        y: (n,) float64; affinity (n, n) float64; degree (n,) float64 (its row sums).

    Returns:
        ``(side, ncut)``: side (n,) bool for the first k of smallest Ncut; ncut a 0-d float64 tensor
        (inf when every threshold leaves a side empty).
    """
    thresholds = torch.linspace(0.99 * y.min(), 0.99 * y.max(), num_thresholds, dtype=y.dtype, device=y.device)
    sides = y[:, None] > thresholds[None, :]  # (n, k), nested: sizes are non-increasing in k
    sizes = sides.sum(dim=0)
    distinct, which = torch.unique_consecutive(sizes, return_inverse=True)
    first = torch.searchsorted(-sizes, -distinct)  # first threshold of each distinct size
    x = sides[:, first].to(affinity.dtype)
    inside = degree @ x
    cut = (x * (affinity @ (1 - x))).sum(dim=0)  # a sum of positive terms: no cancellation
    ncut = cut / inside + cut / (degree.sum() - inside)
    proper = (distinct > 0) & (distinct < y.shape[0])  # the release's 0/0 for an empty side: never kept
    ncut = torch.where(proper, ncut, torch.full_like(ncut, math.inf))[which]
    best = torch.argmin(ncut)
    return sides[:, best], ncut[best]


# ------------------------------------------------------------------------------------------- recursion
def _split(affinity: torch.Tensor, tau: float, eigensolver: str) -> torch.Tensor | None:
    """The release's best two-way cut of one node, (n,) bool, when its Ncut is below tau; else None.

    Two exact shortcuts skip work that cannot give an accepted cut: every cut has Ncut >= lambda_2,
    so a node is rejected when the Frobenius bound or the eigensolver's lambda_2 already exceeds tau
    (by a margin of 1e-6 for the release's float32 Ncut values).
    """
    degree = affinity.sum(dim=1)
    normalized = _normalized(affinity, degree)
    if _spectral_bound(normalized) > tau + _NCUT_MARGIN:
        return None
    v, lambda_2 = _second_eigenpair(normalized, degree, eigensolver)
    del normalized
    if lambda_2 > tau + _NCUT_MARGIN:
        return None
    y = _sign_fixed(degree.rsqrt() * v)
    if not bool(torch.isfinite(y).all()):
        return None
    side, ncut = best_bipartition(y, affinity, degree)
    return side if float(ncut) < tau else None


def recursive_ncut(
    affinity: torch.Tensor,
    tau: float = 0.5,
    max_segments: int | None = None,
    max_depth: int | None = None,
    eigensolver: str = "lanczos",
) -> tuple[list[torch.Tensor], bool]:
    """Accepted cuts of DiffCut's recursive normalized cut on one image.

    Args:
        affinity: (N, N) float32 from :func:`diffcut_affinity` (its exact zeros decide which
            locations leave the recursion below the first level).
        tau: a cut is accepted when its Ncut is below ``tau``.
        max_segments: at most ``max_segments - 1`` cuts are accepted (None: no limit).
        max_depth: cuts are accepted at recursion levels 0..max_depth-1 only (None: no limit).

    Returns:
        ``(cuts, guard_bound)``: cuts, in the release's order, as (N,) bool masks of the "y > t"
        side; guard_bound is True when a cut that would have been accepted was refused by a limit.
    """
    n = affinity.shape[0]
    if bool(affinity.amin() == affinity.amax()):  # identical features: the release's 0/0 gives no cut
        return [], False
    dropped = (affinity == 0).any(dim=1)
    full = affinity.double()
    cuts: list[torch.Tensor] = []
    guard_bound = False
    stack: list[tuple[torch.Tensor | None, int]] = [(None, 0)]  # (kept indices or None for all, level)
    while stack:
        kept, level = stack.pop()
        size = n if kept is None else kept.numel()
        if size <= 1:
            continue
        sub = full if kept is None else full.index_select(0, kept).index_select(1, kept)
        side = _split(sub, tau, eigensolver)
        if side is None:
            continue
        if max_depth is not None and level >= max_depth:  # refused: too deep, other branches go on
            guard_bound = True
            continue
        if max_segments is not None and len(cuts) >= max_segments - 1:  # refused, and so would every later cut
            guard_bound = True
            break
        indices = torch.arange(n, device=affinity.device) if kept is None else kept
        mask = torch.zeros(n, dtype=torch.bool, device=affinity.device)
        mask[indices[side]] = True
        cuts.append(mask)
        inner, outer = indices[side], indices[~side]
        if kept is None:  # below the first level, locations with a zero affinity entry are removed
            inner, outer = inner[~dropped[inner]], outer[~dropped[outer]]
        stack.append((outer, level + 1))
        stack.append((inner, level + 1))
    return cuts, guard_bound


def assemble_clusters(cuts: list[torch.Tensor], n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N,) int64 cluster ids from accepted cuts (list of (N,) bool), numbered as the release does.

    The release sums, per location, a weight per cut containing it, each weight larger than every
    sum so far, and numbers the distinct sums in increasing order: that is the order of the
    membership bit vectors read with the last cut as the most significant bit. No cuts: all 0.
    """
    if not cuts:
        return torch.zeros(n, dtype=torch.long, device=device)
    membership = torch.stack(cuts[::-1], dim=1).to(torch.uint8)  # (N, K), last cut first
    return torch.unique(membership, dim=0, return_inverse=True)[1]


# ---------------------------------------------------------------------------------------------- method
class DiffCut:
    """DiffCut clustering of captured UNet features into (B, mask_size, mask_size) cluster ids.

    Args:
        tau: Ncut threshold of the recursion (release default 0.5).
        alpha: exponent of the affinity (release default 10).
        mask_size: side of the output maps (release: 128).
        refine: PAMR + 3x3 median refinement (:func:`diffseg.pamr.refine_masks`); needs ``images``.
        max_segments: at most this many cuts + 1 per image (recursion guard).
        max_depth: at most this many nested cuts (recursion guard).
        eigensolver: "lanczos" (default) or "dense" (float64 ``torch.linalg.eigh`` per node).

    Attributes:
        guard_hits: number of images so far whose recursion a guard stopped.
        last_guard_bound: (B,) bool of the last call.
        last_num_clusters: (B,) int64 of the last call, clusters before upsampling.
    """

    def __init__(
        self,
        tau: float = 0.5,
        alpha: float = 10,
        mask_size: int = 128,
        refine: bool = False,
        max_segments: int = 128,
        max_depth: int = 64,
        eigensolver: str = "lanczos",
    ) -> None:
        if not 0 < tau:
            raise ValueError(f"DiffCut tau must be positive, got {tau}")
        if alpha <= 0:
            raise ValueError(f"DiffCut alpha must be positive, got {alpha}")
        if mask_size < 1:
            raise ValueError(f"DiffCut mask_size must be a positive int, got {mask_size}")
        if max_segments < 1 or max_depth < 0:
            raise ValueError(f"DiffCut max_segments must be >= 1 and max_depth >= 0, got {max_segments}, {max_depth}")
        if eigensolver not in ("lanczos", "dense"):
            raise ValueError(f"DiffCut eigensolver must be 'lanczos' or 'dense', got {eigensolver!r}")
        self.tau = float(tau)
        self.alpha = alpha
        self.mask_size = int(mask_size)
        self.refine = bool(refine)
        self.max_segments = int(max_segments)
        self.max_depth = int(max_depth)
        self.eigensolver = eigensolver
        self.guard_hits = 0
        self.last_guard_bound = torch.zeros(0, dtype=torch.bool)
        self.last_num_clusters = torch.zeros(0, dtype=torch.long)

    def cluster(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-4: ``(unit, ids)`` with unit (B, N, C) float32 normalised features, ids (B, N) int64."""
        unit, affinity = diffcut_affinity(features, self.alpha)
        ids = []
        bound = []
        for b in range(features.shape[0]):
            cuts, hit = recursive_ncut(affinity[b], self.tau, self.max_segments, self.max_depth, self.eigensolver)
            ids.append(assemble_clusters(cuts, affinity.shape[1], affinity.device))
            bound.append(hit)
            if hit:
                self.guard_hits += 1
                warnings.warn(
                    f"DiffCut recursion guard bound on image {b} of the batch (max_segments={self.max_segments}, "
                    f"max_depth={self.max_depth}): its segmentation is truncated (noise-like features?)",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self.last_guard_bound = torch.tensor(bound, dtype=torch.bool)
        return unit, torch.stack(ids)

    def assign(self, unit: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Step 5: (B, N, C) unit features + (B, N) ids -> (B, mask_size, mask_size) int64 ids."""
        batch, n, _ = unit.shape
        side = _square_side(n)
        num = int(ids.max()) + 1
        onehot = F.one_hot(ids, num).to(unit.dtype)  # (B, N, K)
        counts = onehot.sum(dim=1)  # (B, K)
        embeddings = torch.bmm(onehot.transpose(1, 2), unit) / (counts[..., None] + 1e-8)  # (B, K, C)
        scores = torch.bmm(unit, embeddings.transpose(1, 2))  # (B, N, K)
        scores = torch.where(counts[:, None, :] > 0, scores, torch.full_like(scores, -1e4))  # absent ids never win
        scores = scores.transpose(1, 2).reshape(batch, num, side, side)
        up = F.interpolate(scores, size=(self.mask_size, self.mask_size), mode="bilinear", align_corners=False)
        return up.argmax(dim=1)

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, h*w, C) any float dtype [+ images (B, 3, H, W) in [-1, 1] when refine] -> (B, S, S) int64."""
        if features.ndim != 3:
            raise ValueError(f"DiffCut features must be (B, h*w, C), got shape {tuple(features.shape)}")
        _square_side(features.shape[1])
        if self.refine and images is None:
            raise ValueError("DiffCut(refine=True) needs the images: call it as diffcut(features, images)")
        unit, ids = self.cluster(features)
        self.last_num_clusters = ids.amax(dim=1).cpu() + 1
        masks = self.assign(unit, ids)
        if self.refine:
            masks = refine_masks(masks, images.to(masks.device))
        return masks


def _square_side(n: int) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"DiffCut features must cover a square map (h*w with h == w), got {n} locations")
    return side


# ------------------------------------------------------------------------------------ feature capture
def diffcut_feature_layer(unet: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """``(name, module)`` of DiffCut's feature layer in a diffusers ``UNet2DConditionModel``.

    The ``attn1`` of the last transformer block of the last attention of the last down block that
    has attentions: ``down_blocks[-1]`` for SDXL-family UNets (SDXL, SSD-1B, Vega), ``down_blocks[-2]``
    for SD 1.x/2.x.
    """
    for index in range(len(unet.down_blocks) - 1, -1, -1):
        attentions = getattr(unet.down_blocks[index], "attentions", None)
        if attentions:
            attn1 = attentions[-1].transformer_blocks[-1].attn1
            name = f"down_blocks.{index}.attentions.{len(attentions) - 1}.transformer_blocks." + (
                f"{len(attentions[-1].transformer_blocks) - 1}.attn1"
            )
            return name, attn1
    raise ValueError(f"{type(unet).__name__} has no down block with attentions: DiffCut needs a cross-attention UNet")


class DiffCutFeatureStore:
    """Holds the output of DiffCut's feature layer from the last UNet pass.

    Attributes:
        layer: the module's name in the UNet.
        features: (B, h*w, C) tensor in the model dtype (raises until a pass has run).
    """

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self._features: torch.Tensor | None = None

    @property
    def features(self) -> torch.Tensor:
        if self._features is None:
            raise RuntimeError(
                f"no DiffCut features captured yet ({self.layer}): run the UNet inside capture_diffcut_features"
            )
        return self._features

    def record(self, output: torch.Tensor) -> None:
        """Keep a detached reference to the layer output (B, h*w, C)."""
        if output.ndim != 3:
            raise ValueError(f"{self.layer} returned shape {tuple(output.shape)}, expected (B, h*w, C)")
        self._features = output.detach()


@contextmanager
def capture_diffcut_features(unet: torch.nn.Module) -> Iterator[DiffCutFeatureStore]:
    """Record the output of DiffCut's feature layer (:func:`diffcut_feature_layer`) in every UNet pass.

    A forward hook on that ``attn1`` module, removed on exit (also on exceptions); processors and
    the UNet output are untouched, so it combines with other captures in the same pass. Yields a
    :class:`DiffCutFeatureStore` whose ``features`` is (B, h*w, C) of the last pass (with
    classifier-free guidance that batch is doubled).
    """
    name, module = diffcut_feature_layer(unet)
    store = DiffCutFeatureStore(name)

    def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
        store.record(output)

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------- noisy input
def diffcut_noisy_latents(
    latents: torch.Tensor,
    scheduler_config: dict,
    timestep: int = DIFFCUT_TIMESTEP,
    seed: int = DIFFCUT_NOISE_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffCut's UNet input: the latents noised at ``timestep`` with one seeded noise for the batch.

    As the release: a ``torch.Generator`` on the latents' device seeded with ``seed`` draws one
    float32 noise tensor (1, C, h, w) (so CUDA and CPU noises differ, as they do for the release),
    broadcast over the batch and added by ``DDIMScheduler(timestep_spacing="trailing").add_noise``
    built from ``scheduler_config`` (the checkpoint's scheduler config; only its beta schedule
    matters). The DDIM ``scale_model_input`` is the identity.

    Args:
        latents: (B, C, h, w) VAE latent means times the scaling factor.

    Returns:
        ``(noisy, timesteps)``: noisy (B, C, h, w) (float32 for float16/float32 latents: the noise is
        float32 as in the release), timesteps (B,) int64 for the UNet.
    """
    from diffusers import DDIMScheduler  # deferred: the clustering itself needs only torch

    if latents.ndim != 4:
        raise ValueError(f"latents must be (B, C, h, w), got {tuple(latents.shape)}")
    scheduler = DDIMScheduler.from_config(dict(scheduler_config), timestep_spacing="trailing")
    generator = torch.Generator(device=latents.device).manual_seed(seed)
    noise = torch.randn((1, *latents.shape[1:]), generator=generator, device=latents.device, dtype=torch.float32)
    timesteps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=latents.device)
    noisy = scheduler.add_noise(latents, noise.expand(latents.shape), timesteps)
    return noisy, timesteps
