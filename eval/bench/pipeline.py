"""Speed benchmark of the fast path against the plain baseline: ``python -m eval.bench`` (``make bench``).

Every stage of the pipeline is timed twice in the same run, on the same
synthetic COCO-Stuff-27 images (JPEGs written to a temporary folder and read
through the real ``CocoStuff27`` + ``build_loader`` path):

========================  =========================================  ==========================================
stage                     fast path                                   baseline
========================  =========================================  ==========================================
decode+preprocess         loader with workers, batched                ``num_workers=0``, one image at a time
VAE encode                ``--dtype`` (default float32), batched      float32, batch 1
UNet+capture              fused capture, ``--dtype``, batched         reference capture, float32, batch 1
aggregation               ``aggregate_attention``, batched            ``naive_aggregate`` (``baselines.naive_diffseg``)
DiffSeg float16/float32   ``DiffSeg``, batched                        ``naive_merge`` + NMS per image
K-Means-C / K-Means-S     ``KMeansSegmenter``, batched                the same, one image per call
matching                  batched histograms + Hungarian              ``match_image`` per image
end to end                all of the above, from files to metrics     the baseline chain, or the sum of its
                                                                      stage times (see below)
========================  =========================================  ==========================================

float32 means float32 with TF32 off (``diffseg.devices.resolve_dtype``), the project default.
The end-to-end baseline is run end to end on CUDA (and with ``--measure-e2e-baseline``); on
CPU it is by default the sum of the baseline's stage times, and every output says which.

The model is the full SD 1.x architecture with random weights (speed does not
depend on weight values; no download) or, with ``--tiny``, the tiny test model.

Two more sections:

* **Backbone precision.** DiffSeg masks of the same images from the backbone in
  float32 and in the fast variant (``--fast-dtype``, default float16; bfloat16 is
  the quicker choice on CPU with a full-size model), compared by
  :func:`matched_pixel_changes`: the share of mask pixels whose segment changes
  after one-to-one matching of segment ids. The model is ``--precision-weights``
  (a pretrained checkpoint) when given, else the tiny model with sharpened
  self-attention (random SD 1.x weights give one segment per image, which would
  make the comparison empty); a random-weight result is marked as such.
* **Post-processing only.** Aggregation + DiffSeg float16 + NMS, one image,
  SD 1.x-sized attention 64/32/16/8, against the naive port and, when TensorFlow
  is importable and ``DIFFSEG_OFFICIAL_SEGMENTOR`` names a copy of the official
  ``diffseg/segmentor.py``, against the official segmentor itself.

``--postprocessing-only`` and ``--precision-only`` run one of these sections alone.

Output: a table on stdout and a ``.md`` + ``.json`` pair. Without ``--out`` the
pair is new: ``outputs/bench/bench_<cuda|cpu>[_postprocessing|_precision]_<UTC time>``
(a suffix is added if that name exists), so no run ever overwrites another's
evidence. ``--out PATH`` writes ``PATH.md`` and ``PATH.json`` (e.g. ``--out
results/bench/bench_cpu`` to publish); it refuses to replace a report that has
rows the new one lacks (e.g. the official-segmentor row) unless ``--force``.

The pieces: ``eval.bench.timing`` (timers, device description), ``eval.bench.postprocessing``
(the headline), ``eval.bench.precision`` (the mask comparison), ``eval.bench.report`` (file names,
Markdown); this module holds the stages and the command line.

Times are seconds measured by :class:`torch.utils.benchmark.Timer` (:func:`eval.bench.timing.timed`:
the accelerator synchronised, the caller's thread count), each after one untimed warm-up run of
the same work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffseg import DiffSeg, KMeansSegmenter, aggregate_attention
from diffseg.backbone import StableDiffusionBackbone
from diffseg.capture import capture_self_attention, capture_self_attention_reference
from diffseg.devices import resolve_device, resolve_dtype
from eval.bench.baselines.naive_diffseg import naive_aggregate, naive_merge, naive_nms
from eval.bench.postprocessing import OFFICIAL_ENV, postprocessing_headline, realistic_attention
from eval.bench.precision import matched_pixel_changes, summarise_changes
from eval.bench.provenance import run_provenance
from eval.bench.report import (
    E2E_SUM,
    MEASURED,
    dropped_rows,
    new_output_stem,
    output_stem,
    render_table,
    report_paths,
    write_report,
)
from eval.bench.timing import load_average, log, timed
from eval.data.coco_stuff import CocoStuff27
from eval.data.loader import Batch, build_loader
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.metrics import NUM_CLASSES, confusion_histograms, match_image, match_stats
from eval.run.methods import ground_truth_class_counts

__all__ = ["STAGES", "main", "precision_check", "realistic_attention", "run_bench"]

STAGES = (
    "decode+preprocess",
    "VAE encode",
    "UNet+capture",
    "aggregation",
    "DiffSeg float16",
    "DiffSeg float32",
    "K-Means-C",
    "K-Means-S",
    "matching",
    "end to end",
)
TIMESTEP = 300
KMEANS_C = 6
PRECISION_SHARPEN = 6.0  # attn1 query/key scale of the tiny model in the precision check


# ----------------------------------------------------------------------------------------------- backbone
def make_backbone(tiny: bool, dtype: torch.dtype, device: torch.device, attention_scale: float = 1.0
                  ) -> StableDiffusionBackbone:
    """The random-weight timing model (SD 1.x architecture, or the tiny one) in ``dtype``.

    Weights are drawn in float32 from seed 0 and then cast, so every precision holds the same
    weights up to rounding.
    """
    if tiny:
        from diffseg.testing.tiny import tiny_backbone

        return tiny_backbone(seed=0, dtype=dtype, device=device, attention_scale=attention_scale)
    from diffseg.testing.tiny import build_sd1_components

    parts = build_sd1_components(seed=0, dtype=torch.float32, device=device)
    return StableDiffusionBackbone.from_components(*parts, dtype=dtype, device=device, name="sd1-random")


@torch.inference_mode()
def unet_capture(backbone: StableDiffusionBackbone, latents: torch.Tensor, reference: bool) -> dict[int, torch.Tensor]:
    """One UNet pass at t=300 on ``latents`` (B, 4, h, w) with the self-attention captured.

    What ``StableDiffusionBackbone.attention_maps`` does after the VAE encode.

    Returns:
        ``{s: Tensor(B, s*s, s*s)}`` float32.
    """
    batch = latents.shape[0]
    context = backbone.empty_context.expand(batch, -1, -1)
    timesteps = torch.full((batch,), TIMESTEP, dtype=torch.long, device=backbone.device)
    capture = capture_self_attention_reference if reference else capture_self_attention
    with capture(backbone.unet) as store:
        backbone.unet(latents, timesteps, encoder_hidden_states=context, return_dict=False)
    return store.maps()


# ------------------------------------------------------------------------------------------------ methods
class Methods:
    """The four methods of a run, fast (batched) or baseline (per image)."""

    def __init__(self, threshold: float, num_points: int, kmeans_n_init: int = 5, output_size: int = 512):
        self.threshold = threshold
        self.num_points = num_points
        self.output_size = output_size
        self.diffseg = {
            p: DiffSeg(kl_threshold=threshold, num_points=num_points, kl_precision=p, output_size=output_size)
            for p in ("float16", "float32")
        }
        self.kmeans = KMeansSegmenter(num_clusters=KMEANS_C, seed=0, n_init=kmeans_n_init, output_size=output_size)

    def naive(self, attn: torch.Tensor, precision: str) -> torch.Tensor:
        """Baseline DiffSeg of one image: ``(S, S, S, S)`` -> ``LongTensor(output_size, output_size)``."""
        return naive_nms(naive_merge(attn, [self.threshold] * 3, self.num_points, precision), self.output_size)

    def kmeans_c(self, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """K-Means-C masks ``(B, size, size)`` for ``(B, S, S, S, S)`` attention (labels unused)."""
        return self.kmeans(attention)

    def kmeans_s(self, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """K-Means-S masks ``(B, size, size)`` for ``(B, S, S, S, S)`` attention and ``(B, H, W)`` labels."""
        return self.kmeans(attention, num_clusters=ground_truth_class_counts(labels, NUM_CLASSES))


def fast_match(masks: torch.Tensor, labels: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batched confusion histograms (one bincount on the device), then Hungarian matching per image."""
    hists = confusion_histograms(masks, labels, NUM_CLASSES, num_pred=int(masks.max()) + 1).cpu().numpy()
    return [match_stats(h) for h in hists]


# ---------------------------------------------------------------------------------------------- the stages
class Stage:
    """Timings of one stage: total seconds and image counts of both paths.

    ``baseline_how`` says what the baseline figure is: ``"measured"``, a sum of other stages'
    times (:data:`E2E_SUM`) or why it was not run.
    """

    def __init__(self, name: str, fast: str, baseline: str, note: str = ""):
        self.name, self.fast, self.baseline, self.note = name, fast, baseline, note
        self.fast_s: float | None = None
        self.fast_images = 0
        self.baseline_s: float | None = None
        self.baseline_images = 0
        self.baseline_how = MEASURED

    def row(self) -> dict[str, Any]:
        """JSON row: seconds/image, images/s and the ratio baseline/fast (None where not measured)."""
        fast_per = self.fast_s / self.fast_images if self.fast_s is not None and self.fast_images else None
        base_per = (
            self.baseline_s / self.baseline_images if self.baseline_s is not None and self.baseline_images else None
        )
        return {
            "stage": self.name,
            "fast": self.fast,
            "baseline": self.baseline,
            "baseline_how": "not run" if base_per is None and self.baseline_how == MEASURED else self.baseline_how,
            "fast_images": self.fast_images,
            "baseline_images": self.baseline_images,
            "fast_s_per_image": fast_per,
            "fast_images_per_s": 1.0 / fast_per if fast_per else None,
            "baseline_s_per_image": base_per,
            "baseline_images_per_s": 1.0 / base_per if base_per else None,
            "ratio": base_per / fast_per if fast_per and base_per else None,
            "note": self.note,
        }


@dataclass
class Setup:
    """What every stage needs: device, sizes, the fast path's backbone dtype and the methods."""

    device: torch.device
    images: int
    batch_size: int
    base_images: int
    workers: int
    image_size: int
    dtype: torch.dtype
    methods: Methods

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def make_stages(setup: Setup) -> dict[str, Stage]:
    """One :class:`Stage` per name of :data:`STAGES`, with what each path does."""
    fast_dtype = _dtype_name(setup.dtype)
    kmeans_note = "no other baseline: the same code called per image (on every image)"
    rows = [
        ("decode+preprocess", f"loader, {setup.workers} workers, batch {setup.batch_size}", "num_workers=0, batch 1",
         "worker start-up is included: with few images it outweighs the parallel decode"),
        ("VAE encode", f"{fast_dtype}, batched", "float32, batch 1", ""),
        ("UNet+capture", f"fused capture, {fast_dtype}, batched",
         "reference capture (eager, all layers kept), float32, batch 1", ""),
        ("aggregation", "aggregate_attention, batched", "naive_aggregate (float64), per image", ""),
        ("DiffSeg float16", "DiffSeg, batched", "naive_merge + NMS, per image", ""),
        ("DiffSeg float32", "DiffSeg, batched", "naive_merge + NMS, per image", ""),
        ("K-Means-C", "KMeansSegmenter K=6, batched", "the same, one image per call", kmeans_note),
        ("K-Means-S", "KMeansSegmenter K=#GT classes, batched", "the same, one image per call", kmeans_note),
        ("matching", "batched histograms + Hungarian (4 methods)", "match_image per image (4 methods)", ""),
        ("end to end", "files -> masks of 4 methods -> matching (measured)", "the baseline chain", ""),
    ]
    return {name: Stage(name, fast, base, note) for name, fast, base, note in rows}


def bench_decode(setup: Setup, stage: Stage, dataset: CocoStuff27, base_dataset: CocoStuff27
                 ) -> tuple[list[Batch], list[Batch]]:
    """Decode + pre-process every image (fast: workers, batched; baseline: no workers, batch 1)."""
    def fast() -> list[Batch]:
        return list(build_loader(dataset, batch_size=setup.batch_size, num_workers=setup.workers))

    def base() -> list[Batch]:
        return list(build_loader(base_dataset, batch_size=1, num_workers=0))

    batches, stage.fast_s = timed(fast)
    base_batches, stage.baseline_s = timed(base)
    stage.fast_images, stage.baseline_images = setup.images, setup.base_images
    return batches, base_batches


def bench_vae(
    setup: Setup,
    stage: Stage,
    fast_bb: StableDiffusionBackbone,
    base_bb: StableDiffusionBackbone | None,
    fast_inputs: list[torch.Tensor],
    base_inputs: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """VAE encode of every batch (fast) and every image (baseline); returns both latent lists."""
    latents, stage.fast_s = timed(lambda: [fast_bb.encode(x) for x in fast_inputs])
    stage.fast_images = setup.images
    if base_bb is None:
        stage.baseline_how = "not run (--skip-baseline-backbone)"
        return latents, None
    base_latents, stage.baseline_s = timed(lambda: [base_bb.encode(x) for x in base_inputs])
    stage.baseline_images = setup.base_images
    return latents, base_latents


def bench_unet(
    setup: Setup,
    stage: Stage,
    fast_bb: StableDiffusionBackbone,
    base_bb: StableDiffusionBackbone | None,
    latents: list[torch.Tensor],
    base_latents: list[torch.Tensor] | None,
) -> tuple[list[dict[int, torch.Tensor]], list[dict[int, torch.Tensor]]]:
    """UNet + capture (fast: fused, batched; baseline: reference capture, batch 1).

    Returns the fast maps ``[{s: (B, s*s, s*s)}]`` per batch and the baseline maps ``[{s: (s*s, s*s)}]``
    per image (taken from the fast maps when the baseline backbone is skipped).
    """
    fast_maps, stage.fast_s = timed(lambda: [unet_capture(fast_bb, z, False) for z in latents])
    stage.fast_images = setup.images
    if base_bb is None or base_latents is None:
        stage.baseline_how = "not run (--skip-baseline-backbone)"
        stage.note = "baseline skipped (--skip-baseline-backbone); baseline stages below use the fast maps"
        per_image = [{s: m[i] for s, m in maps.items()} for maps in fast_maps for i in range(len(maps[max(maps)]))]
        return fast_maps, per_image[: setup.base_images]
    base_maps, stage.baseline_s = timed(lambda: [unet_capture(base_bb, z, True) for z in base_latents])
    stage.baseline_images = setup.base_images
    return fast_maps, [{s: m[0] for s, m in maps.items()} for maps in base_maps]


def bench_aggregation(
    setup: Setup, stage: Stage, fast_maps: list[dict[int, torch.Tensor]], base_maps: list[dict[int, torch.Tensor]]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Aggregation: batched ``(B, S, S, S, S)`` float32 per batch vs ``naive_aggregate`` float64 per image."""
    attention, stage.fast_s = timed(lambda: [aggregate_attention(m) for m in fast_maps])
    base_attention, stage.baseline_s = timed(lambda: [naive_aggregate(m) for m in base_maps])
    stage.fast_images, stage.baseline_images = setup.images, setup.base_images
    return attention, base_attention


def bench_diffseg(
    setup: Setup, stage: Stage, precision: str, attention: list[torch.Tensor], base_attention: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """DiffSeg at one KL precision: batched masks ``(B, size, size)`` vs the naive port per image."""
    segmenter = setup.methods.diffseg[precision]
    masks, stage.fast_s = timed(lambda: [segmenter(a) for a in attention])
    base_masks, stage.baseline_s = timed(lambda: [setup.methods.naive(a, precision) for a in base_attention])
    stage.fast_images, stage.baseline_images = setup.images, setup.base_images
    agree = (torch.cat(masks)[: setup.base_images] == torch.stack(base_masks)).double().mean().item()
    stage.note = f"fast vs baseline masks: {100 * agree:.3f}% identical pixels"
    return masks, base_masks


def bench_kmeans(
    setup: Setup,
    stage: Stage,
    method: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    attention: list[torch.Tensor],
    labels: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One K-means method, batched vs one image per call (on every image: its cost depends on the
    image, through the Lloyd iterations). Returns the batched masks and the first ``base_images``
    per-image masks (for the matching stage)."""
    per_image = [(a[i : i + 1], lab[i : i + 1]) for a, lab in zip(attention, labels, strict=True)
                 for i in range(a.shape[0])]
    masks, stage.fast_s = timed(lambda: [method(a, lab) for a, lab in zip(attention, labels, strict=True)])
    base_masks, stage.baseline_s = timed(lambda: [method(a, lab)[0] for a, lab in per_image])
    stage.fast_images, stage.baseline_images = setup.images, setup.images
    agree = (torch.cat(masks) == torch.stack(base_masks)).double().mean().item()
    stage.note = f"{stage.note}; batched vs per-image masks: {100 * agree:.3f}% identical pixels"
    return masks, base_masks[: setup.base_images]


def bench_matching(
    setup: Setup,
    stage: Stage,
    masks: dict[str, list[torch.Tensor]],
    base_masks: dict[str, list[torch.Tensor]],
    labels: list[torch.Tensor],
    base_labels: list[torch.Tensor],
) -> None:
    """Hungarian matching of every method's masks: batched histograms vs ``match_image`` per image."""
    def fast() -> list:
        return [fast_match(m[b], labels[b]) for m in masks.values() for b in range(len(labels))]

    def base() -> list:
        return [match_image(m[i].cpu(), base_labels[i][0].cpu()) for m in base_masks.values()
                for i in range(setup.base_images)]

    _, stage.fast_s = timed(fast)
    _, stage.baseline_s = timed(base)
    stage.fast_images, stage.baseline_images = setup.images, setup.base_images


def fast_chain(setup: Setup, backbone: StableDiffusionBackbone, dataset: CocoStuff27, batch_size: int) -> int:
    """The fast path from files to matched masks of the 4 methods; returns the number of images."""
    count = 0
    methods = setup.methods
    for b in build_loader(dataset, batch_size=batch_size, num_workers=setup.workers):
        x = b.images.to(setup.device, non_blocking=True)
        lab = b.labels.to(setup.device, non_blocking=True)
        with torch.inference_mode():
            att = aggregate_attention(backbone.attention_maps(x, timestep=TIMESTEP))
            outs = [methods.diffseg["float16"](att), methods.diffseg["float32"](att), methods.kmeans(att),
                    methods.kmeans_s(att, lab)]
        for m in outs:
            fast_match(m, lab)
        count += len(b)
    return count


def baseline_chain(setup: Setup, backbone: StableDiffusionBackbone, dataset: CocoStuff27) -> int:
    """The baseline from files to matched masks of the 4 methods, one image at a time; returns the count."""
    count = 0
    methods = setup.methods
    for b in build_loader(dataset, batch_size=1, num_workers=0):
        x = b.images.to(setup.device)
        lab = b.labels.to(setup.device)
        maps = backbone.attention_maps(x, timestep=TIMESTEP, reference=True)
        att = naive_aggregate({s: m[0] for s, m in maps.items()})
        outs = [methods.naive(att, "float16"), methods.naive(att, "float32")]
        att32 = att.float()[None]
        outs += [methods.kmeans(att32)[0], methods.kmeans_s(att32, lab)[0]]
        for m in outs:
            match_image(m.cpu(), lab[0].cpu())
        count += 1
    return count


def bench_end_to_end(
    setup: Setup,
    stages: dict[str, Stage],
    fast_bb: StableDiffusionBackbone,
    base_bb: StableDiffusionBackbone | None,
    dataset: CocoStuff27,
    base_dataset: CocoStuff27,
    measure_baseline: bool,
) -> None:
    """The fast chain, measured; the baseline chain measured when asked, else the sum of its stages.

    The sum (``baseline_how`` = :data:`E2E_SUM`) adds the baseline's s/image of every other stage;
    the chain is sequential, so it is what running it would cost up to loop overhead.
    """
    stage = stages["end to end"]
    stage.fast_images, stage.fast_s = timed(lambda: fast_chain(setup, fast_bb, dataset, setup.batch_size))
    if base_bb is None:
        stage.baseline_how = "not run (--skip-baseline-backbone)"
        stage.note = "no baseline (--skip-baseline-backbone)"
        return
    if measure_baseline:
        stage.baseline = "the baseline chain, one image at a time (measured)"
        stage.baseline_images, stage.baseline_s = timed(lambda: baseline_chain(setup, base_bb, base_dataset))
        return
    label_as_sum(stages, setup.base_images)


def label_as_sum(stages: dict[str, Stage], images: int) -> None:
    """Set the end-to-end baseline to the sum of the other stages' baseline s/image (times ``images``),
    labelled as such (``baseline_how`` = :data:`E2E_SUM`, in the description and the note)."""
    stage = stages["end to end"]
    rows = [stages[name].row() for name in STAGES if name != "end to end"]
    stage.baseline = "sum of the baseline stage times"
    stage.baseline_how = E2E_SUM
    stage.baseline_images = images
    stage.baseline_s = images * sum(r["baseline_s_per_image"] for r in rows)
    stage.note = f"baseline = {E2E_SUM}; --measure-e2e-baseline runs it"


def peak_gpu_memory(setup: Setup, fast_bb: StableDiffusionBackbone, root: str) -> dict[str, float]:
    """Peak ``torch.cuda.max_memory_allocated`` of the fast chain at batch 1 and at the batch size (GiB)."""
    resident = torch.cuda.memory_allocated(setup.device)
    peaks = {}
    for batch in sorted({1, setup.batch_size}):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(setup.device)
        fast_chain(setup, fast_bb, CocoStuff27(root, size=setup.image_size, limit=batch), batch)
        peaks[f"batch_{batch}_gib"] = round(torch.cuda.max_memory_allocated(setup.device) / 2**30, 2)
    return {"resident_before_gib": round(resident / 2**30, 2), **peaks}


# ------------------------------------------------------------------------------------- backbone precision
def _precision_backbone(args: argparse.Namespace, dtype: torch.dtype, device: torch.device
                        ) -> StableDiffusionBackbone:
    if args.precision_weights:
        return StableDiffusionBackbone.from_pretrained(args.precision_weights, dtype=dtype, device=device)
    return make_backbone(True, dtype, device, attention_scale=PRECISION_SHARPEN)


def precision_check(args: argparse.Namespace, setup: Setup, batches: list[Batch]) -> dict[str, Any]:
    """DiffSeg masks of the same images from the backbone in float32 and in ``--fast-dtype``.

    Each precision gets its own backbone (the same weights: drawn in float32, then cast); both run
    ``attention_maps`` on the same decoded images, and DiffSeg at both KL precisions segments the
    result. Reports :func:`summarise_changes` per KL precision and the backbone seconds/image of both.
    """
    fast_name = args.fast_dtype or "float16"
    fast_dtype = resolve_dtype(fast_name)
    limit = args.precision_images if args.precision_images is not None else setup.images
    inputs, taken = [], 0
    for b in batches:
        if taken >= limit:
            break
        inputs.append(b.images[: limit - taken])
        taken += len(inputs[-1])
    masks: dict[str, dict[str, list[torch.Tensor]]] = {}
    seconds: dict[str, float] = {}
    model = ""
    for name in ("float32", fast_name):
        dtype = resolve_dtype(name)
        log(f"backbone precision: {name}")
        backbone = _precision_backbone(args, dtype, setup.device)
        model = backbone.name

        def attention(bb: StableDiffusionBackbone = backbone) -> list[torch.Tensor]:
            return [aggregate_attention(bb.attention_maps(x.to(setup.device))) for x in inputs]

        attn, seconds[name] = timed(attention)
        masks[name] = {p: torch.cat([seg(a) for a in attn]).cpu() for p, seg in setup.methods.diffseg.items()}
        del backbone, attn
        if setup.cuda:
            torch.cuda.empty_cache()
    random_weights = not args.precision_weights
    result: dict[str, Any] = {
        "fast_dtype": _dtype_name(fast_dtype),
        "fast_dtype_reason": "the default: the fast variant of model.dtype the paper experiments used on CUDA"
                             if args.fast_dtype is None else "chosen with --fast-dtype",
        "model": model if not random_weights else f"{model}, self-attention sharpened x{PRECISION_SHARPEN:g}",
        "random_weights": random_weights,
        "images": taken,
        "image_size": setup.image_size,
        "kl_threshold": setup.methods.threshold,
        "num_points": setup.methods.num_points,
        "measure": "share of mask pixels in another segment after one-to-one matching of segment ids "
                   "(Hungarian on overlap counts; unmatched segments count as changed), float32 mask as reference",
        "backbone_s_per_image": {name: s / taken for name, s in seconds.items()},
        "diffseg": {},
    }
    for precision in setup.methods.diffseg:
        pairs = zip(masks["float32"][precision], masks[fast_name][precision], strict=True)
        result["diffseg"][precision] = summarise_changes([matched_pixel_changes(a, b) for a, b in pairs])
    if all(r["segments_float32"] == 1 and r["segments_fast"] == 1 for r in result["diffseg"].values()):
        result["note"] = "every mask has one segment: the comparison says nothing"
    return result


# ---------------------------------------------------------------------------------------------- the bench
def make_setup(args: argparse.Namespace, device: torch.device) -> Setup:
    """Sizes from the arguments, with the device-dependent defaults."""
    cuda = device.type == "cuda"
    images = args.images if args.images is not None else (64 if cuda else 2)
    batch_size = args.batch_size if args.batch_size is not None else (8 if cuda else 2)
    base_images = args.baseline_images if args.baseline_images is not None else (images if cuda else 1)
    return Setup(
        device=device,
        images=images,
        batch_size=max(1, min(batch_size, images)),
        base_images=max(1, min(base_images, images)),
        workers=args.workers if args.workers is not None else min(4, os.cpu_count() or 1),
        image_size=args.image_size,
        dtype=resolve_dtype(args.dtype),
        methods=Methods(args.threshold, args.num_points, args.kmeans_n_init, args.image_size),
    )


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage, the precision check and the post-processing headline; returns the JSON-ready report."""
    device = resolve_device("auto")
    setup = make_setup(args, device)
    measure_e2e = setup.cuda or args.measure_e2e_baseline
    provenance = run_provenance(device)
    log(f"device: {provenance['device']['name']}")
    stages = make_stages(setup)
    report: dict[str, Any] = {
        **provenance,
        "config": {
            "model": "tiny-random" if args.tiny else "sd1-random (full SD 1.x architecture, random weights)",
            "dtype": _dtype_name(setup.dtype),
            "baseline_dtype": "float32",
            "images": setup.images,
            "baseline_images": setup.base_images,
            "batch_size": setup.batch_size,
            "workers": setup.workers,
            "num_points": args.num_points,
            "kl_threshold": args.threshold,
            "kmeans_n_init": args.kmeans_n_init,
            "image_size": setup.image_size,
            "baseline_backbone": not args.skip_baseline_backbone,
            "e2e_baseline": MEASURED if measure_e2e else E2E_SUM,
        },
    }
    size = setup.image_size
    with tempfile.TemporaryDirectory(prefix="diffseg-bench-") as tmp:
        write_synthetic_coco_stuff(tmp, num_images=setup.images, seed=0, size_range=(size * 25 // 32, size * 5 // 4))
        dataset = CocoStuff27(tmp, size=size)
        base_dataset = CocoStuff27(tmp, size=size, limit=setup.base_images)
        log("decode+preprocess")
        batches, base_batches = bench_decode(setup, stages["decode+preprocess"], dataset, base_dataset)
        labels = [b.labels.to(device) for b in batches]
        base_labels = [b.labels.to(device) for b in base_batches]

        log("building the backbone(s)")
        fast_bb = make_backbone(args.tiny, setup.dtype, device)
        base_bb = None
        if not args.skip_baseline_backbone:
            base_bb = fast_bb if setup.dtype == torch.float32 else make_backbone(args.tiny, torch.float32, device)
        log("VAE encode")
        latents, base_latents = bench_vae(
            setup, stages["VAE encode"], fast_bb, base_bb,
            [b.images.to(device) for b in batches], [b.images.to(device) for b in base_batches],
        )
        log("UNet+capture")
        fast_maps, base_maps = bench_unet(setup, stages["UNet+capture"], fast_bb, base_bb, latents, base_latents)
        del latents, base_latents
        log("aggregation")
        attention, base_attention = bench_aggregation(setup, stages["aggregation"], fast_maps, base_maps)
        del fast_maps, base_maps
        masks: dict[str, list[torch.Tensor]] = {}
        base_masks: dict[str, list[torch.Tensor]] = {}
        for precision in ("float16", "float32"):
            name = f"DiffSeg {precision}"
            log(name)
            masks[name], base_masks[name] = bench_diffseg(setup, stages[name], precision, attention, base_attention)
        for name, method in (("K-Means-C", setup.methods.kmeans_c), ("K-Means-S", setup.methods.kmeans_s)):
            log(name)
            masks[name], base_masks[name] = bench_kmeans(setup, stages[name], method, attention, labels)
        del attention, base_attention
        log("matching")
        bench_matching(setup, stages["matching"], masks, base_masks, labels, base_labels)
        del masks, base_masks
        log("end to end")
        bench_end_to_end(setup, stages, fast_bb, base_bb, dataset, base_dataset, measure_e2e)
        if setup.cuda:
            log("peak GPU memory")
            report["peak_gpu_memory"] = peak_gpu_memory(setup, fast_bb, tmp)
        del fast_bb, base_bb  # free memory before the precision check and the headline
        if not args.skip_precision:
            report["precision"] = precision_check(args, setup, batches)
    report["stages"] = [stages[name].row() for name in STAGES]
    report["postprocessing"] = postprocessing_headline(device, args.threshold, args.num_points, args.seed)
    return report


def run_postprocessing_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only the post-processing headline (no model, no images)."""
    device = resolve_device("auto")
    provenance = run_provenance(device)
    log(f"device: {provenance['device']['name']}")
    report: dict[str, Any] = {
        **provenance,
        "config": {"num_points": args.num_points, "kl_threshold": args.threshold, "postprocessing_only": True},
        "stages": [],
    }
    report["postprocessing"] = postprocessing_headline(device, args.threshold, args.num_points, args.seed)
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="images to time (default: 64 on CUDA, 2 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="fast-path batch size (default: 8 / 2)")
    parser.add_argument("--baseline-images", type=int, default=None,
                        help="images the baseline path runs on (default: all on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers of the fast path (default 4)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the SD 1.x architecture")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="backbone precision of the fast path (default float32 with TF32 off, the project "
                        "default; the baseline is always float32)")
    parser.add_argument("--image-size", type=int, default=512,
                        help="image side in px (default 512, as DiffSeg; smaller only for quick checks)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report to OUT.json and OUT.md, replacing them (e.g. results/bench/bench_cpu "
                        "to publish); default: a new outputs/bench/bench_<device>_<UTC time>.{json,md}")
    parser.add_argument("--force", action="store_true",
                        help="let --out replace a report that has rows the new one lacks (e.g. the official "
                        "segmentor's)")
    parser.add_argument("--skip-baseline-backbone", action="store_true",
                        help="do not time the float32 batch-1 VAE/UNet baseline (slow on CPU)")
    parser.add_argument("--measure-e2e-baseline", action="store_true",
                        help="run the baseline chain end to end on CPU too (default there: the sum of its stage "
                        "times, labelled as such)")
    parser.add_argument("--num-points", type=int, default=16, help="anchor grid side M (default 16)")
    parser.add_argument("--threshold", type=float, default=1.1, help="KL threshold (default 1.1)")
    parser.add_argument("--kmeans-n-init", type=int, default=5, help="K-means inits (default 5, as the configs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the headline's attention")
    parser.add_argument("--fast-dtype", default=None, choices=("float16", "bfloat16"),
                        help="backbone precision compared with float32 (default float16; on CPU float16 convolutions "
                        "are slow: bfloat16 is the quick choice with a full-size model)")
    parser.add_argument("--precision-weights", default=None, metavar="MODEL",
                        help="pretrained SD checkpoint (hub id or local diffusers folder) for the precision check; "
                        "default: the tiny model with sharpened attention (random weights, marked as such)")
    parser.add_argument("--precision-images", type=int, default=None,
                        help="images of the precision check (default: all the bench's images)")
    parser.add_argument("--skip-precision", action="store_true", help="skip the backbone precision check")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--postprocessing-only", action="store_true",
                       help=f"only the post-processing headline (with the official segmentor when {OFFICIAL_ENV} "
                       "is set and tensorflow importable); default file bench_<device>_postprocessing_<time>")
    modes.add_argument("--precision-only", action="store_true",
                       help="only the backbone precision check; default file bench_<device>_precision_<time>")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "baseline_images", "precision_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.precision_only and args.skip_precision:
        parser.error("--precision-only and --skip-precision leave nothing to run")
    if args.image_size < 64 or args.image_size % 64:
        parser.error(f"--image-size must be a multiple of 64 (the smallest attention map is 1/64 of it), "
                     f"got {args.image_size}")
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; --out names the files (e.g. {args.out / 'bench_cpu'} writes "
                     "bench_cpu.json and bench_cpu.md there)")
    return args


def run_precision_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only the backbone precision check, on ``--images`` synthetic images (no timing of stages)."""
    device = resolve_device("auto")
    setup = make_setup(args, device)
    provenance = run_provenance(device)
    log(f"device: {provenance['device']['name']}")
    report: dict[str, Any] = {
        **provenance,
        "config": {"images": setup.images, "batch_size": setup.batch_size, "image_size": setup.image_size,
                   "num_points": args.num_points, "kl_threshold": args.threshold, "precision_only": True},
        "stages": [],
    }
    with tempfile.TemporaryDirectory(prefix="diffseg-bench-") as tmp:
        size = setup.image_size
        write_synthetic_coco_stuff(tmp, num_images=setup.images, seed=0, size_range=(size * 25 // 32, size * 5 // 4))
        batches = list(build_loader(CocoStuff27(tmp, size=size), batch_size=setup.batch_size, num_workers=0))
        report["precision"] = precision_check(args, setup, batches)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print the table, write the ``.md`` + ``.json`` pair (see the module docstring).

    Returns 0, or 2 when ``--out`` would replace a report with more rows (the report then goes to a new
    file under ``outputs/bench``).
    """
    args = parse_args(argv)
    if args.postprocessing_only:
        mode, report = "postprocessing", run_postprocessing_only(args)
    elif args.precision_only:
        mode, report = "precision", run_precision_only(args)
    else:
        mode, report = "", run_bench(args)
    report["device"]["load_average_1m_end"] = load_average()
    kind = report["device"]["kind"]
    print(render_table(report))
    stem = output_stem(args.out, kind, mode)
    dropped = [] if args.force or args.out is None else dropped_rows(stem, report)
    if dropped:
        kept = write_report(new_output_stem(kind, mode), report)
        print(f"\nnot replacing {report_paths(stem)[0]}: it has rows this run did not measure: {', '.join(dropped)}. "
              f"This run's report is in {kept[1]} and {kept[0]}; pass --force to replace it anyway.", file=sys.stderr)
        return 2
    json_path, md_path = write_report(stem, report)
    print(f"\nwrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
