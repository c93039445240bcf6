"""Joint-attention capture for MM-DiT transformers (SD3, SD3.5, Flux).

An MM-DiT block attends over one joint sequence of image and text tokens: every query (image or
text) takes a softmax over *all* keys (image and text). :func:`capture_joint_attention` installs
:class:`JointAttentionCaptureProcessor` on the named attention modules of a diffusers
``SD3Transformer2DModel`` or ``FluxTransformer2DModel`` and records, per module, the head mean of
those joint-softmax probabilities for the image queries, split by key type:

* ``store.image_to_image()``: ``{name: (B, N, N)}`` - image queries over image keys,
* ``store.image_to_text()``: ``{name: (B, N, T)}`` - image queries over text keys,

N image tokens (e.g. 4096 for a 64 x 64 token grid), T text tokens (154 for SD3 with CLIP + T5
padding). Both are slices of the one softmax over N + T keys, **not renormalised**: a row of
``image_to_image`` plus the same row of ``image_to_text`` sums to 1. Everything is accumulated in
float32; several passes inside one ``with`` block are averaged per module.

Token orders follow diffusers: SD3 / SD3.5 joint blocks concatenate (image, text); Flux's joint
blocks (``transformer_blocks``) and single blocks (``single_transformer_blocks``, one sequence
already concatenated, ``encoder_hidden_states`` absent) use (text, image) with rotary embeddings on
the whole sequence. The query/key path is the diffusers processors' own: projections, per-head
RMS norms where the module has them (SD3.5's ``qk_norm="rms_norm"``, Flux), added-context norms,
rotary embeddings (Flux), scale ``head_dim ** -0.5``. SD3.5's dual-attention layers have a second,
image-only self-attention (``attn2``); it is not a joint attention and keeps its processor.

The transformer's output is unchanged: the capture processor computes the probabilities on the
side and hands the call to the processor that was installed before (same inputs, same kernel).
Memory is bounded by computing the probabilities in chunks of ``query_chunk`` image queries: one
chunk holds ``B * heads * query_chunk * (N + T)`` float32 scores plus the same again for the
softmax, see :func:`joint_capture_peak_bytes` and diffseg/MMDIT.md for a measurement at SD3's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DEFAULT_QUERY_CHUNK",
    "JointAttentionCaptureProcessor",
    "JointAttentionStore",
    "capture_joint_attention",
    "joint_attention_module_names",
    "joint_capture_peak_bytes",
    "joint_probabilities",
]

DEFAULT_QUERY_CHUNK = 256  # image queries per chunk: ~0.2 GB of float32 scores+probabilities at SD3's size


# ------------------------------------------------------------------------------------------------ store
class JointAttentionStore:
    """Running float32 sums of head-averaged joint-softmax probabilities, per attention module name.

    Per module: ``(B, N, N)`` image->image and ``(B, N, T)`` image->text sums and a pass count.
    """

    def __init__(self) -> None:
        self._i2i: dict[str, torch.Tensor] = {}
        self._i2t: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._i2i.clear()
        self._i2t.clear()
        self._counts.clear()

    def add(self, name: str, image_to_image: torch.Tensor, image_to_text: torch.Tensor) -> None:
        """Add one pass of module ``name``: (B, N, N) and (B, N, T) float32 head means."""
        if name not in self._i2i:
            self._i2i[name] = image_to_image.float().clone()
            self._i2t[name] = image_to_text.float().clone()
            self._counts[name] = 1
            return
        if self._i2i[name].shape != image_to_image.shape or self._i2t[name].shape != image_to_text.shape:
            raise ValueError(
                f"{name}: shapes changed inside one capture ({tuple(self._i2i[name].shape)} vs "
                f"{tuple(image_to_image.shape)}); call store.reset() between passes of different sizes"
            )
        self._i2i[name].add_(image_to_image)
        self._i2t[name].add_(image_to_text)
        self._counts[name] += 1

    @property
    def names(self) -> list[str]:
        """Module names recorded so far, in the order they first ran."""
        return list(self._counts)

    @property
    def counts(self) -> dict[str, int]:
        """Passes recorded per module name."""
        return dict(self._counts)

    def image_to_image(self) -> dict[str, torch.Tensor]:
        """{module name: (B, N, N) float32}: image queries over image keys, mean over heads and passes."""
        return {name: total / self._counts[name] for name, total in self._i2i.items()}

    def image_to_text(self) -> dict[str, torch.Tensor]:
        """{module name: (B, N, T) float32}: image queries over text keys, mean over heads and passes."""
        return {name: total / self._counts[name] for name, total in self._i2t.items()}


# ------------------------------------------------------------------------------------------ probabilities
def joint_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    image: slice,
    text: slice,
    query_chunk: int | None = DEFAULT_QUERY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-mean joint-softmax probabilities of the image queries, split into image and text keys.

    Args:
        query, key: (B, heads, L, D) after norms and rotary embeddings, L = N + T tokens in the
            module's order; any float dtype (computed in float32).
        image, text: where the N image and T text tokens sit in the sequence.
        query_chunk: image queries per chunk (None: all at once).

    Returns:
        ``(image_to_image (B, N, N), image_to_text (B, N, T))`` float32, head means of
        ``softmax(q k^T / sqrt(D))`` over all L keys, not renormalised.
    """
    if query_chunk is not None and (isinstance(query_chunk, bool) or int(query_chunk) < 1):
        raise ValueError(f"query_chunk: expected a positive int or None, got {query_chunk!r}")
    batch, heads, _length, head_dim = query.shape
    scale = head_dim ** -0.5
    image_queries = query[:, :, image]
    keys_t = key.float().transpose(-1, -2)  # (B, h, D, L)
    n = image_queries.shape[2]
    n_text = len(range(*text.indices(key.shape[2])))
    i2i = torch.empty(batch, n, n, dtype=torch.float32, device=query.device)
    i2t = torch.empty(batch, n, n_text, dtype=torch.float32, device=query.device)
    step = n if query_chunk is None else int(query_chunk)
    for start in range(0, n, step):
        stop = min(start + step, n)
        scores = torch.matmul(image_queries[:, :, start:stop].float() * scale, keys_t)  # (B, h, c, L)
        probs = torch.softmax(scores, dim=-1)
        del scores
        mean = probs.mean(dim=1)  # (B, c, L)
        del probs
        i2i[:, start:stop] = mean[..., image]
        i2t[:, start:stop] = mean[..., text]
    return i2i, i2t


def joint_capture_peak_bytes(batch: int, image_tokens: int, text_tokens: int, heads: int,
                             query_chunk: int | None = DEFAULT_QUERY_CHUNK, head_dim: int = 64) -> int:
    """Computed bound of the extra memory (bytes) one captured layer needs at once, float32.

    Scores and probabilities of one chunk (2 x B*heads*c*(N+T)), the chunk's head mean
    (B*c*(N+T)), the layer's result (B*N*(N+T)), a contiguous float32 copy of the transposed keys
    (B*heads*(N+T)*D) and the chunk's scaled queries (B*heads*c*D) are all alive at the peak; the
    store's running sums (another B*N*(N+T) per captured module) come on top.
    """
    c = image_tokens if query_chunk is None else min(int(query_chunk), image_tokens)
    length = image_tokens + text_tokens
    floats = (2 * batch * heads * c * length + batch * c * length + batch * image_tokens * length
              + batch * heads * (length + c) * head_dim)
    return 4 * floats


# ------------------------------------------------------------------------------------------- processor
def _heads(tensor: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, L, heads*D) -> (B, L, heads, D)."""
    return tensor.unflatten(-1, (-1, head_dim))


@dataclass(eq=False)
class JointAttentionCaptureProcessor:
    """Records one module's joint-attention probabilities, then runs the module's previous processor.

    Args:
        store: where the head means go.
        name: the module's name in the transformer (``transformer_blocks.9.attn``).
        previous: the processor installed before; it computes the module output, unchanged.
        layout: ``"sd3"`` (image, text), ``"flux"`` (text, image; joint block) or ``"flux_single"``
            (text, image in one sequence; the text length comes from ``text_length()``).
        query_chunk: image queries per chunk of the probability computation.
        text_length: for ``"flux_single"``, a callable giving the text token count of the current pass.
    """

    store: JointAttentionStore
    name: str
    previous: Any
    layout: str
    query_chunk: int | None = DEFAULT_QUERY_CHUNK
    text_length: Any = None

    def __post_init__(self) -> None:
        if self.layout not in ("sd3", "flux", "flux_single"):
            raise ValueError(f"layout: expected 'sd3', 'flux' or 'flux_single', got {self.layout!r}")

    def query_key(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        image_rotary_emb: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, slice, slice]:
        """(query, key) (B, heads, L, D) as the module's processor forms them, and the image / text slices."""
        if getattr(attn, "fused_projections", False):
            raise ValueError(f"{self.name}: fused QKV projections are not supported by the capture; unfuse them "
                             "(transformer.unfuse_qkv_projections()) first")
        head_dim = attn.to_k.out_features // attn.heads
        query = _heads(attn.to_q(hidden_states), head_dim)  # (B, L, h, D)
        key = _heads(attn.to_k(hidden_states), head_dim)
        if self.layout == "sd3":
            query, key = query.transpose(1, 2), key.transpose(1, 2)  # diffusers' SD3 norms act on (B, h, L, D)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        n_image = hidden_states.shape[1]
        n_text = 0
        if encoder_hidden_states is not None:
            if getattr(attn, "add_k_proj", None) is None:
                raise ValueError(f"{self.name}: got encoder_hidden_states but the module has no add_k_proj")
            context_query = _heads(attn.add_q_proj(encoder_hidden_states), head_dim)
            context_key = _heads(attn.add_k_proj(encoder_hidden_states), head_dim)
            if self.layout == "sd3":
                context_query, context_key = context_query.transpose(1, 2), context_key.transpose(1, 2)
            if getattr(attn, "norm_added_q", None) is not None:
                context_query = attn.norm_added_q(context_query)
            if getattr(attn, "norm_added_k", None) is not None:
                context_key = attn.norm_added_k(context_key)
            n_text = encoder_hidden_states.shape[1]
            seq_dim = 2 if self.layout == "sd3" else 1
            if self.layout == "sd3":
                query = torch.cat([query, context_query], dim=seq_dim)
                key = torch.cat([key, context_key], dim=seq_dim)
            else:
                query = torch.cat([context_query, query], dim=seq_dim)
                key = torch.cat([context_key, key], dim=seq_dim)
        if self.layout == "flux_single":
            if encoder_hidden_states is not None:
                raise ValueError(f"{self.name}: a Flux single block gets one concatenated sequence")
            n_text = int(self.text_length())
            n_image = hidden_states.shape[1] - n_text
        if self.layout != "sd3":
            if image_rotary_emb is not None:
                from diffusers.models.embeddings import apply_rotary_emb

                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
            query, key = query.transpose(1, 2), key.transpose(1, 2)
        if self.layout == "sd3":
            image, text = slice(0, n_image), slice(n_image, n_image + n_text)
        else:
            image, text = slice(n_text, n_text + n_image), slice(0, n_text)
        return query, key, image, text

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Record (B, N, N) / (B, N, T) head means, then return the previous processor's output."""
        if attention_mask is not None:
            raise ValueError(f"{self.name}: attention masks are not supported by the joint-attention capture")
        with torch.no_grad():
            query, key, image, text = self.query_key(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
            i2i, i2t = joint_probabilities(query, key, image, text, self.query_chunk)
            del query, key
            self.store.add(self.name, i2i, i2t)
            del i2i, i2t
        extra = dict(kwargs)
        if image_rotary_emb is not None:
            extra["image_rotary_emb"] = image_rotary_emb
        return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, **extra)


# -------------------------------------------------------------------------------------- context manager
def _transformer_kind(transformer: torch.nn.Module) -> str:
    """``"sd3"`` or ``"flux"`` from the transformer's class (SD3Transformer2DModel / FluxTransformer2DModel)."""
    names = {cls.__name__ for cls in type(transformer).__mro__}
    if "SD3Transformer2DModel" in names:
        return "sd3"
    if "FluxTransformer2DModel" in names:
        return "flux"
    raise TypeError(f"capture_joint_attention: expected a diffusers SD3Transformer2DModel or FluxTransformer2DModel, "
                    f"got {type(transformer).__name__}")


def joint_attention_module_names(transformer: torch.nn.Module, layers: Iterable[int | str] | None = None) -> list[str]:
    """Names of the attention modules ``layers`` selects, e.g. ``["transformer_blocks.9.attn"]``.

    ``layers``: None = every joint block's ``transformer_blocks.<i>.attn``; ints = those joint block
    indices; strings = ``transformer_blocks.<i>`` or ``single_transformer_blocks.<i>`` (Flux), with
    or without the trailing ``.attn``. Unknown or out-of-range entries raise ValueError.
    """
    kind = _transformer_kind(transformer)
    joint = len(transformer.transformer_blocks)
    single = len(getattr(transformer, "single_transformer_blocks", ()) or ())
    if layers is None:
        return [f"transformer_blocks.{i}.attn" for i in range(joint)]
    if isinstance(layers, (int, str)):
        layers = [layers]
    names: list[str] = []
    for entry in layers:
        if isinstance(entry, bool):
            raise ValueError(f"layers: expected block indices or names, got {entry!r}")
        if isinstance(entry, int):
            group, index = "transformer_blocks", entry
        else:
            parts = str(entry).removesuffix(".attn").split(".")
            if len(parts) != 2 or parts[0] not in ("transformer_blocks", "single_transformer_blocks") \
                    or not parts[1].isdigit():
                raise ValueError(f"layers: {entry!r} is no block index, 'transformer_blocks.<i>' or "
                                 "'single_transformer_blocks.<i>'")
            group, index = parts[0], int(parts[1])
        count = joint if group == "transformer_blocks" else single
        if group == "single_transformer_blocks" and kind != "flux":
            raise ValueError(f"layers: {entry!r}: only Flux has single_transformer_blocks")
        if not 0 <= index < count:
            raise ValueError(f"layers: {entry!r} is out of range ({count} {group})")
        name = f"{group}.{index}.attn"
        if name not in names:
            names.append(name)
    return names


@contextmanager
def capture_joint_attention(
    transformer: torch.nn.Module,
    layers: Iterable[int | str] | None = None,
    query_chunk: int | None = DEFAULT_QUERY_CHUNK,
) -> Iterator[JointAttentionStore]:
    """Record the joint attention of the named modules for every pass run inside the ``with`` block.

    Args:
        transformer: a diffusers ``SD3Transformer2DModel`` or ``FluxTransformer2DModel``.
        layers: which modules, see :func:`joint_attention_module_names` (None: all joint blocks).
        query_chunk: image queries per chunk of the probability computation (None: all at once).

    Yields the :class:`JointAttentionStore`. The previous processors are restored on exit, also when
    an exception is raised; the transformer's output is unchanged.
    """
    kind = _transformer_kind(transformer)
    names = joint_attention_module_names(transformer, layers)
    store = JointAttentionStore()
    modules = dict(transformer.named_modules())
    previous = {name: modules[name].processor for name in names}
    text_tokens: list[int] = []
    hooks = []

    def remember_text_length(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        text_tokens[:] = [int(context.shape[1])]

    def text_length() -> int:
        if not text_tokens:
            raise RuntimeError("the text length of this pass is unknown (the Flux single block ran outside the "
                               "transformer's forward)")
        return text_tokens[0]

    try:
        for name in names:
            if name.startswith("single_transformer_blocks."):
                block = modules[name.removesuffix(".attn")]
                hooks.append(block.register_forward_pre_hook(remember_text_length, with_kwargs=True))
                layout = "flux_single"
            else:
                layout = kind
            processor = JointAttentionCaptureProcessor(store, name, previous[name], layout, query_chunk, text_length)
            modules[name].set_processor(processor)
        yield store
    finally:
        for hook in hooks:
            hook.remove()
        for name, processor in previous.items():
            modules[name].set_processor(processor)


# ------------------------------------------------------------------------------------------ measurement
def measure_capture_peak(image_tokens: int = 4096, text_tokens: int = 154, heads: int = 24, head_dim: int = 64,
                         query_chunk: int | None = DEFAULT_QUERY_CHUNK, seed: int = 0) -> dict[str, float]:
    """Measured peak of :func:`joint_probabilities` on the CPU for one image with random q/k (float32).

    The process's resident-set high-water mark (``ru_maxrss``) is read after q/k exist and again after
    the call; the difference is the extra memory the layer needed at its peak (run it in a fresh process:
    an earlier, higher peak would hide it). Returns MiB: measured, the computed bound
    (:func:`joint_capture_peak_bytes`) and the full probability tensor for comparison.
    """
    import resource

    generator = torch.Generator().manual_seed(seed)
    length = image_tokens + text_tokens
    query = torch.randn(1, heads, length, head_dim, generator=generator)
    key = torch.randn(1, heads, length, head_dim, generator=generator)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    i2i, i2t = joint_probabilities(query, key, slice(0, image_tokens), slice(image_tokens, length), query_chunk)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert i2i.shape == (1, image_tokens, image_tokens) and i2t.shape == (1, image_tokens, text_tokens)
    mib = 2.0 ** 20
    bound = joint_capture_peak_bytes(1, image_tokens, text_tokens, heads, query_chunk, head_dim)
    return {
        "measured_peak_mib": (after - before) * 1024 / mib,
        "computed_bound_mib": bound / mib,
        "full_probabilities_mib": 4 * heads * image_tokens * length / mib,
    }


if __name__ == "__main__":  # python -m diffseg.joint_attention [query_chunk]
    import sys

    chunk_arg = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_QUERY_CHUNK)
    chunk_value = None if chunk_arg == "none" else int(chunk_arg)
    torch.set_num_threads(1)
    result = measure_capture_peak(query_chunk=chunk_value)
    print(f"query_chunk={chunk_value} SD3 size (4096 image + 154 text tokens, 24 heads of 64, batch 1, float32): "
          + ", ".join(f"{k}={v:.1f}" for k, v in result.items()))
