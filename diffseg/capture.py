"""Self-attention capture for diffusers UNets (DiffSeg step 4).

For every self-attention layer (``attn1``) of a ``UNet2DConditionModel`` the probabilities
softmax(Q K^T * scale) of shape (B, heads, N, N), N = s*s query/key locations of an s x s feature
map, are averaged over heads and then over the layers of the same resolution s. The result per
resolution is a float32 tensor A_s of shape (B, s*s, s*s) whose rows sum to 1.

Two implementations:

- :func:`capture_self_attention` (fast): a processor on the ``attn1`` layers only that computes the
  probabilities once, adds their head mean to one running float32 sum per resolution and reuses
  them for the layer output. Head chunking bounds memory: a fixed number of heads per chunk, or
  (with a ``memory_budget``) the most heads whose probabilities fit the budget, chosen per layer by
  :func:`choose_head_chunk`. Every other layer keeps its processor (fused SDPA).
- :func:`capture_self_attention_reference` (slow, for tests and as the benchmark baseline):
  diffusers' eager ``AttnProcessor`` on every layer; the self-attention probabilities returned by
  ``Attention.get_attention_scores`` (computed in float32) are all kept per layer and per head and
  only averaged in :meth:`ReferenceAttentionStore.maps`.

Any number of transformer layers per block and any set of square resolutions is handled: the
store keys its running sums by the side of each layer's token grid (SD 1.x at 512 px: 64, 32, 16,
8; SD 2.x at 768 px: 96, 48, 24, 12; SDXL at 1024 px: 64 and 32 only).

Both stores hold whatever batch the UNet receives: with classifier-free guidance the UNet sees the
doubled batch [uncond, cond] and the maps have that doubled batch dimension (slice it yourself).
Both context managers restore the previous processors on exit, also when an exception is raised.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

__all__ = [
    "AttentionStore",
    "ReferenceAttentionStore",
    "SelfAttentionCaptureProcessor",
    "attention_peak_bytes",
    "available_memory",
    "capture_self_attention",
    "capture_self_attention_reference",
    "choose_head_chunk",
    "self_attention_layer_names",
    "spatial_side",
]

logger = logging.getLogger(__name__)

_SELF_ATTENTION_SUFFIX = "attn1.processor"
MEMORY_HEADROOM = 0.9  # share of the free memory the automatic head chunk may plan to use


def spatial_side(sequence_length: int) -> int:
    """Side s of the square feature map with s*s = ``sequence_length`` tokens (ValueError otherwise)."""
    side = math.isqrt(sequence_length)
    if side * side != sequence_length:
        raise ValueError(
            f"self-attention over {sequence_length} tokens is not a square feature map; "
            "DiffSeg needs square latents (square images)"
        )
    return side


def self_attention_layer_names(unet: torch.nn.Module) -> list[str]:
    """Keys of ``unet.attn_processors`` that belong to self-attention layers (ending in ``attn1.processor``)."""
    return [name for name in unet.attn_processors if name.endswith(_SELF_ATTENTION_SUFFIX)]


# ---------------------------------------------------------------------------------------------- memory
def attention_peak_bytes(batch: int, tokens: int, chunk: int, score_bytes: int = 4, value_bytes: int = 4) -> int:
    """Peak extra memory (bytes) of one capture layer that computes ``chunk`` heads at once.

    Per head, B * N^2 elements are alive at the worst moment: during the softmax the scores
    (``score_bytes``: the model dtype, or 4 with ``upcast_attention``), a float32 copy of them when
    they are not float32 already, and the float32 probabilities; later the probabilities and their
    cast to the value dtype (none for float32). On top of the chunk, two float32 (B, N, N) tensors:
    the head sum of the chunk and the running sum of this resolution in the store.

        peak = B * N^2 * (chunk * max(s + u + 4, 4 + c) + 8),
        u = 4 if s != 4 else 0,  c = value_bytes if value_bytes != 4 else 0.

    float32 (s = 4, c = 0): 8 bytes per head element; float16/bfloat16: 10.
    """
    upcast_copy = 4 if score_bytes != 4 else 0
    cast = value_bytes if value_bytes != 4 else 0
    per_head = max(score_bytes + upcast_copy + 4, 4 + cast)
    return batch * tokens * tokens * (chunk * per_head + 8)


def choose_head_chunk(
    batch: int,
    tokens: int,
    heads: int,
    free_bytes: int,
    score_bytes: int = 4,
    value_bytes: int = 4,
    headroom: float = MEMORY_HEADROOM,
) -> int:
    """The most heads per chunk (1..heads) whose :func:`attention_peak_bytes` fits ``headroom * free_bytes``.

    Returns 1 when not even one head fits (the pass may then run out of memory: lower the batch
    size). Example: SD 2.x at 768 px has 5 heads over 96x96 = 9216 tokens; at batch 1 in float32 one
    head costs 9216^2 * 8 bytes = 0.68 GB (+ 0.68 GB fixed), so all 5 heads need 4.1 GB, which fits
    in the ~17 GB a 24 GB card has left after the weights (about 5.2 GB in float32) and the CUDA context.
    """
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads}")
    usable = headroom * free_bytes
    fixed = attention_peak_bytes(batch, tokens, 0, score_bytes, value_bytes)
    per_head = attention_peak_bytes(batch, tokens, 1, score_bytes, value_bytes) - fixed
    return max(1, min(heads, int((usable - fixed) // per_head)))


def available_memory(device: torch.device | str) -> int | None:
    """Bytes a new allocation on ``device`` can use, or None where no limit is applied (CPU, MPS).

    CUDA: the driver's free memory (``torch.cuda.mem_get_info``) plus what PyTorch's caching
    allocator holds reserved but unallocated (reusable without asking the driver).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free) + max(0, int(cached))


# ---------------------------------------------------------------------------------------------- stores
class AttentionStore:
    """Running per-resolution means of head-averaged self-attention probabilities.

    Holds one float32 sum of shape (B, s*s, s*s) per spatial side s and a layer count; per-layer and
    per-head maps are never kept. The batch B is whatever the UNet received (a classifier-free
    guidance batch is stored as it is, doubled).
    """

    def __init__(self) -> None:
        self._sums: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._sums.clear()
        self._counts.clear()

    def add_heads(self, side: int, probs: torch.Tensor, num_heads: int) -> None:
        """Add ``probs.sum(heads) / num_heads`` to the running sum of resolution ``side``.

        probs: (B, h, s*s, s*s) float32, h <= num_heads (a chunk of one layer's heads). A layer
        adds all its chunks, then calls :meth:`end_layer` once.
        """
        if probs.dtype != torch.float32:
            raise TypeError(f"attention probabilities must be float32, got {probs.dtype}")
        head_sum = probs[:, 0] if probs.shape[1] == 1 else probs.sum(dim=1)
        total = self._sums.get(side)
        if total is None:
            self._sums[side] = head_sum / num_heads  # a new tensor, never a view of probs
            return
        if total.shape != head_sum.shape:
            raise ValueError(
                f"batch changed inside one capture ({tuple(total.shape)} vs {tuple(head_sum.shape)}); "
                "call store.reset() between UNet passes with different batch sizes"
            )
        total.add_(head_sum, alpha=1.0 / num_heads)

    @property
    def nbytes(self) -> int:
        """Memory held by the running sums."""
        return sum(t.numel() * t.element_size() for t in self._sums.values())

    def end_layer(self, side: int) -> None:
        """Count one finished layer of resolution ``side``."""
        self._counts[side] = self._counts.get(side, 0) + 1

    @property
    def layer_counts(self) -> dict[int, int]:
        """Number of layers accumulated per side, e.g. {64: 5, 32: 5, 16: 5, 8: 1} for SD 1.x."""
        return dict(sorted(self._counts.items(), reverse=True))

    def maps(self) -> dict[int, torch.Tensor]:
        """{s: (B, s*s, s*s) float32} = mean over layers of the head means, sides in decreasing order."""
        return {side: self._sums[side] / count for side, count in self.layer_counts.items()}


class ReferenceAttentionStore:
    """Keeps every self-attention layer's full per-head probabilities; averages only in :meth:`maps`."""

    def __init__(self) -> None:
        self.layers: list[tuple[int, torch.Tensor]] = []

    def reset(self) -> None:
        """Forget all stored layers."""
        self.layers.clear()

    def append(self, probs: torch.Tensor, num_heads: int) -> None:
        """Store one layer's probabilities, given as (B*heads, N, N) (diffusers' batch-major layout)."""
        batch = probs.shape[0] // num_heads
        n = probs.shape[-1]
        self.layers.append((spatial_side(n), probs.reshape(batch, num_heads, n, n)))

    @property
    def layer_counts(self) -> dict[int, int]:
        """Number of stored layers per side, sides in decreasing order."""
        counts: dict[int, int] = {}
        for side, _ in self.layers:
            counts[side] = counts.get(side, 0) + 1
        return dict(sorted(counts.items(), reverse=True))

    def maps(self) -> dict[int, torch.Tensor]:
        """{s: (B, s*s, s*s) float32}: per layer the mean over heads, then the mean over layers of side s."""
        out = {}
        for side in self.layer_counts:
            head_means = [p.float().mean(dim=1) for s, p in self.layers if s == side]
            out[side] = torch.stack(head_means).mean(dim=0)
        return out


# ------------------------------------------------------------------------------------------ processors
class SelfAttentionCaptureProcessor:
    """Self-attention processor that records head-averaged probabilities into an :class:`AttentionStore`.

    Same structure as diffusers' ``AttnProcessor2_0`` (spatial/group norm, 4-D input, mask, q/k
    norms, residual, rescale), but attention is computed explicitly per chunk of heads:
    scores = (Q * scale) K^T with a matmul in the model dtype (float32 when the layer has
    ``upcast_attention``), probs = softmax(scores) in float32, the head mean of probs goes to the
    store, and the output is probs.to(V.dtype) @ V. Scaling Q before the matmul is the same product
    as scaling the scores (up to one rounding) and cannot overflow float16 where Q K^T would.

    head_chunk: number of heads per chunk; None = all heads at once, or, with ``memory_budget``
    (bytes free when the pass started), per layer the most heads that fit the budget minus what
    the store already holds (:func:`choose_head_chunk`). Peak extra memory per layer:
    :func:`attention_peak_bytes`. Chunking changes float32 rounding of the head sum only.
    """

    def __init__(self, store: AttentionStore, head_chunk: int | None = None, memory_budget: int | None = None) -> None:
        positive_int = isinstance(head_chunk, int) and not isinstance(head_chunk, bool) and head_chunk >= 1
        if head_chunk is not None and not positive_int:
            raise ValueError(f"head_chunk must be a positive int or None (chosen from free memory), got {head_chunk!r}")
        self.store = store
        self.head_chunk = head_chunk
        self.memory_budget = memory_budget
        self._warned = False

    def _chunk(self, batch: int, tokens: int, heads: int, score_bytes: int, value_bytes: int) -> int:
        """Heads per chunk for one layer."""
        if self.head_chunk is not None:
            return min(self.head_chunk, heads)
        if self.memory_budget is None:
            return heads
        free = self.memory_budget - self.store.nbytes
        chunk = choose_head_chunk(batch, tokens, heads, free, score_bytes, value_bytes)
        if chunk == 1 and attention_peak_bytes(batch, tokens, 1, score_bytes, value_bytes) > free and not self._warned:
            self._warned = True
            need = attention_peak_bytes(batch, tokens, 1, score_bytes, value_bytes) / 2**30
            logger.warning("self-attention over %d tokens at batch %d needs %.1f GiB per head but %.1f GiB are free: "
                           "the pass may run out of memory (lower the batch size)", tokens, batch, need, free / 2**30)
        return chunk

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        """hidden_states (B, N, C) or (B, C, s, s) -> same shape; records (B, N, N) head means."""
        if encoder_hidden_states is not None:
            raise ValueError(
                "SelfAttentionCaptureProcessor got encoder_hidden_states: this attn1 layer is a "
                "cross-attention layer (only_cross_attention models are not supported)"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = hidden_states.shape
        side = spatial_side(sequence_length)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)

        heads = attn.heads
        head_dim = key.shape[-1] // heads
        # (B, heads, N, head_dim)
        query = query.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if attn.upcast_attention:
            query, key = query.float(), key.float()

        chunk = self._chunk(batch_size, sequence_length, heads, query.element_size(), value.element_size())
        out = torch.empty_like(value)
        for h0 in range(0, heads, chunk):
            h1 = min(h0 + chunk, heads)
            scores = torch.matmul(query[:, h0:h1] * attn.scale, key[:, h0:h1].transpose(-1, -2))
            if attention_mask is not None:
                scores = scores + attention_mask[:, h0:h1]
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            del scores
            self.store.add_heads(side, probs, heads)
            out[:, h0:h1] = torch.matmul(probs.to(value.dtype), value[:, h0:h1])
            del probs
        self.store.end_layer(side)

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class _ReferenceSelfAttnProcessor(AttnProcessor):
    """diffusers' eager ``AttnProcessor`` whose ``attn.get_attention_scores`` call is recorded.

    During the call, ``attn.get_attention_scores`` is shadowed (instance attribute, removed again in
    ``finally``) by a wrapper that calls the library's method on float32 query/key, appends the
    float32 probabilities (B*heads, N, N) to the store and hands them back in the model dtype.
    """

    def __init__(self, store: ReferenceAttentionStore) -> None:
        super().__init__()
        self.store = store

    # Takes AttnProcessor.__call__'s arguments and shows its signature (``__wrapped__``): diffusers'
    # Attention.forward passes a processor only the keyword arguments its signature names.
    @functools.wraps(AttnProcessor.__call__, assigned=(), updated=())
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Run ``AttnProcessor.__call__`` unchanged while recording the probabilities."""
        library_scores = attn.get_attention_scores
        store = self.store

        def recording_scores(query, key, attention_mask=None):
            probs = library_scores(query.float(), key.float(), attention_mask)
            store.append(probs, attn.heads)
            return probs.to(query.dtype)

        attn.get_attention_scores = recording_scores
        try:
            return super().__call__(attn, hidden_states, *args, **kwargs)
        finally:
            del attn.get_attention_scores


# ----------------------------------------------------------------------------------- context managers
@contextmanager
def _processors_installed(unet: torch.nn.Module, replace: dict[str, object]) -> Iterator[None]:
    """Set the processors named in ``replace`` (others unchanged); restore all of them on exit."""
    previous = dict(unet.attn_processors)
    unknown = set(replace) - set(previous)
    if unknown:
        raise KeyError(f"not attention processors of this model: {sorted(unknown)}")
    unet.set_attn_processor({**previous, **replace})  # set_attn_processor pops from the dict it gets
    try:
        yield
    finally:
        unet.set_attn_processor(dict(previous))


@contextmanager
def capture_self_attention(
    unet: torch.nn.Module, head_chunk: int | None = None, memory_budget: int | None = None
) -> Iterator[AttentionStore]:
    """Record self-attention maps of every UNet pass run inside the ``with`` block.

    Installs one :class:`SelfAttentionCaptureProcessor` on each ``attn1`` layer (by name, via
    ``unet.set_attn_processor``), leaves every other layer's processor as it is, and restores the
    previous processors on exit (also on exceptions). The UNet output is unchanged (up to float
    rounding). Yields the :class:`AttentionStore`; ``store.maps()`` gives {s: (B, s*s, s*s) float32},
    for SD 1.x at 64x64 latents s in (64, 32, 16, 8). Several passes in one block accumulate (mean over
    all of them) unless ``store.reset()`` is called in between. ``head_chunk`` / ``memory_budget``: see
    :class:`SelfAttentionCaptureProcessor`.
    """
    names = self_attention_layer_names(unet)
    if not names:
        raise ValueError(f"{type(unet).__name__} has no self-attention layers (*.{_SELF_ATTENTION_SUFFIX})")
    store = AttentionStore()
    processor = SelfAttentionCaptureProcessor(store, head_chunk, memory_budget)
    with _processors_installed(unet, dict.fromkeys(names, processor)):
        yield store


@contextmanager
def capture_self_attention_reference(unet: torch.nn.Module) -> Iterator[ReferenceAttentionStore]:
    """Slow reference capture: diffusers' eager ``AttnProcessor`` on every attention layer.

    Self-attention layers record their full float32 per-head probabilities (a list, one
    (B, heads, N, N) tensor per layer); averaging happens only in ``store.maps()``. Cross-attention
    layers run the plain eager ``AttnProcessor``. Previous processors are restored on exit.
    """
    names = self_attention_layer_names(unet)
    if not names:
        raise ValueError(f"{type(unet).__name__} has no self-attention layers (*.{_SELF_ATTENTION_SUFFIX})")
    store = ReferenceAttentionStore()
    recording = _ReferenceSelfAttnProcessor(store)
    eager = AttnProcessor()
    replace = {name: (recording if name in names else eager) for name in unet.attn_processors}
    with _processors_installed(unet, replace):
        yield store
