"""Speed benchmark of the fast path against the plain baseline: ``python -m eval.bench`` (``make bench``).

Every stage of the pipeline is timed twice in the same run, on the same
synthetic COCO-Stuff-27 images (JPEGs written to a temporary folder and read
through the real ``CocoStuff27`` + ``build_loader`` path):

========================  =========================================  ==========================================
stage                     fast path                                   baseline
========================  =========================================  ==========================================
decode+preprocess         loader with workers, batched                ``num_workers=0``, one image at a time
VAE encode                fp16 on CUDA (fp32 on CPU), batched         fp32, batch 1
UNet+capture              fused capture, fp16 on CUDA, batched        reference capture, fp32, batch 1
aggregation               ``aggregate_attention``, batched            ``eval.naive.naive_aggregate``
DiffSeg float16/float32   ``DiffSeg``, batched                        ``naive_merge`` + NMS per image
K-Means-C / K-Means-S     ``KMeansSegmenter``, batched                the same, one image per call
matching                  batched histograms + Hungarian              ``match_image`` per image
end to end                all of the above, from files to metrics     the baseline chain
========================  =========================================  ==========================================

The model is the full SD 1.x architecture with random weights (speed does not
depend on weight values; no download) or, with ``--tiny``, the tiny test model.
A separate headline section times the post-processing alone (aggregation +
DiffSeg float16 + NMS, one image, SD 1.x-sized attention 64/32/16/8) against
the naive port and, when TensorFlow is importable and
``DIFFSEG_OFFICIAL_SEGMENTOR`` names a copy of the official
``diffseg/segmentor.py``, against the official segmentor itself.

Output: a table on stdout, ``<out>/bench_<cuda|cpu>.md`` and ``.json``.
Times are wall-clock seconds with ``torch.cuda.synchronize()`` around timed
regions; each timed function is warmed up once first. On CPU the warm-ups use
small inputs (a full warm-up of the baseline would double a long run).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffseg import DiffSeg, KMeansSegmenter, aggregate_attention
from diffseg.backbone import StableDiffusionBackbone
from diffseg.capture import capture_self_attention, capture_self_attention_reference
from diffseg.devices import resolve_device
from eval.atomic import write_json_atomic, write_text_atomic
from eval.data.coco_stuff import CocoStuff27
from eval.data.loader import build_loader
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.methods import ground_truth_class_counts
from eval.metrics import NUM_CLASSES, confusion_histograms, match_image, match_stats
from eval.naive import naive_aggregate, naive_merge, naive_nms, naive_segment
from eval.run import versions

__all__ = ["STAGES", "main", "realistic_attention", "run_bench"]

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
OFFICIAL_ENV = "DIFFSEG_OFFICIAL_SEGMENTOR"
TIMESTEP = 300
KMEANS_C = 6


# ------------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Run ``fn()`` once; returns its result and the wall-clock seconds (CUDA synchronised)."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float]:
    """Median seconds of ``repeats`` runs of ``fn`` (and the last result)."""
    times = []
    out = None
    for _ in range(repeats):
        out, seconds = timed(fn, device)
        times.append(seconds)
    return out, statistics.median(times)


# -------------------------------------------------------------------------------------------- device info
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(device: torch.device) -> dict[str, Any]:
    """Kind (``cuda``/``cpu``), a readable name, core count and torch threads."""
    info: dict[str, Any] = {
        "kind": device.type,
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["name"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    else:
        info["name"] = f"{info['cpu']} ({info['cpu_cores']} cores, {info['torch_threads']} torch threads)"
    return info

# ------------------------------------------------------------------------------------------------- inputs
def realistic_attention(
    seed: int = 0, sides: tuple[int, ...] = (64, 32, 16, 8), device: torch.device | str = "cpu"
) -> dict[int, torch.Tensor]:
    """SD-like self-attention of one image: ``{s: Tensor(s*s, s*s)}`` float32, rows sum to 1.

    Softmax of structured logits: queries attend to keys of their own region
    (an 8 x 8 layout of 6 regions, a region-specific gap), with a locality
    term, Gaussian noise and 2% very peaked rows (whose small entries round
    to 0 in float16, as with real attention). Not uniform noise.
    """
    gen = torch.Generator().manual_seed(seed)
    layout = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 1, 1],
            [0, 0, 0, 1, 1, 1, 1, 1],
            [0, 0, 2, 2, 1, 1, 3, 3],
            [4, 4, 2, 2, 2, 3, 3, 3],
            [4, 4, 2, 2, 2, 3, 3, 3],
            [4, 4, 4, 5, 5, 5, 3, 3],
            [4, 4, 4, 5, 5, 5, 5, 3],
            [4, 4, 4, 5, 5, 5, 5, 5],
        ]
    )
    gaps = torch.tensor([6.0, 8.0, 5.0, 7.0, 9.0, 6.5], dtype=torch.float64)
    maps = {}
    for s in sides:
        idx = torch.arange(s) * layout.shape[0] // s
        region = layout[idx][:, idx].reshape(-1)  # (s*s,)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1).double() / s  # (s*s, 2)
        same = (region[:, None] == region[None, :]).double()
        logits = same * gaps[region][:, None] - 4.0 * torch.cdist(pos, pos) ** 2
        logits += torch.randn(logits.shape, generator=gen, dtype=torch.float64)
        peaked = torch.rand(s * s, generator=gen) < 0.02
        logits[peaked] *= 6.0
        maps[s] = torch.softmax(logits, dim=-1).float().to(device)
    return maps


def _small_maps(device: torch.device) -> dict[int, torch.Tensor]:
    """Tiny attention (sides 16/8/4/2) for cheap warm-ups on CPU: ``{s: (1, s*s, s*s)}``."""
    return {s: m[None] for s, m in realistic_attention(1, (16, 8, 4, 2), device).items()}


# ----------------------------------------------------------------------------------------------- backbone
def build_backbones(
    tiny: bool, device: torch.device, need_baseline: bool
) -> tuple[StableDiffusionBackbone, StableDiffusionBackbone | None]:
    """The fast backbone (fp16 on CUDA, fp32 on CPU) and the fp32 baseline one (the same object on CPU)."""
    fast_dtype = torch.float16 if device.type == "cuda" else torch.float32

    def make(dtype: torch.dtype) -> StableDiffusionBackbone:
        if tiny:
            from diffseg.tiny import tiny_backbone

            return tiny_backbone(dtype=dtype, device=device)
        from diffseg.tiny import build_sd1_components

        parts = build_sd1_components(seed=0, dtype=dtype, device=device)
        return StableDiffusionBackbone.from_components(*parts, dtype=dtype, device=device, name="sd1-random")

    fast = make(fast_dtype)
    if not need_baseline:
        return fast, None
    baseline = fast if fast_dtype == torch.float32 else make(torch.float32)
    return fast, baseline


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

    def __init__(self, threshold: float, num_points: int, kmeans_n_init: int = 5):
        self.threshold = threshold
        self.num_points = num_points
        self.diffseg = {
            p: DiffSeg(kl_threshold=threshold, num_points=num_points, kl_precision=p) for p in ("float16", "float32")
        }
        self.kmeans = KMeansSegmenter(num_clusters=KMEANS_C, seed=0, n_init=kmeans_n_init)

    def naive(self, attn: torch.Tensor, precision: str, output_size: int = 512) -> torch.Tensor:
        """Baseline DiffSeg of one image: ``(S, S, S, S)`` -> ``LongTensor(output_size, output_size)``."""
        return naive_nms(naive_merge(attn, [self.threshold] * 3, self.num_points, precision), output_size)

    def kmeans_s(self, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """K-Means-S masks ``(B, 512, 512)`` for ``(B, S, S, S, S)`` attention and ``(B, H, W)`` labels."""
        return self.kmeans(attention, num_clusters=ground_truth_class_counts(labels, NUM_CLASSES))


def fast_match(masks: torch.Tensor, labels: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batched confusion histograms (one bincount on the device), then Hungarian matching per image."""
    hists = confusion_histograms(masks, labels, NUM_CLASSES, num_pred=int(masks.max()) + 1).cpu().numpy()
    return [match_stats(h) for h in hists]


# ---------------------------------------------------------------------------------------------- the bench
class Stage:
    """Timings of one stage: total seconds and image counts of both paths."""

    def __init__(self, name: str, fast: str, baseline: str, note: str = ""):
        self.name, self.fast, self.baseline, self.note = name, fast, baseline, note
        self.fast_s: float | None = None
        self.fast_images = 0
        self.baseline_s: float | None = None
        self.baseline_images = 0

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
            "fast_images": self.fast_images,
            "baseline_images": self.baseline_images,
            "fast_s_per_image": fast_per,
            "fast_images_per_s": 1.0 / fast_per if fast_per else None,
            "baseline_s_per_image": base_per,
            "baseline_images_per_s": 1.0 / base_per if base_per else None,
            "ratio": base_per / fast_per if fast_per and base_per else None,
            "note": self.note,
        }


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage and the post-processing headline; returns the JSON-ready report."""
    device = resolve_device("auto")
    cuda = device.type == "cuda"
    images = args.images if args.images is not None else (64 if cuda else 2)
    batch_size = args.batch_size if args.batch_size is not None else (8 if cuda else 2)
    batch_size = max(1, min(batch_size, images))
    base_images = args.baseline_images if args.baseline_images is not None else (images if cuda else 1)
    base_images = max(1, min(base_images, images))
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    measure_e2e_baseline = cuda or args.measure_e2e_baseline
    info = device_info(device)
    _log(f"device: {info['name']}")
    methods = Methods(args.threshold, args.num_points, args.kmeans_n_init)
    small = _small_maps(device) if not cuda else None
    stages = {
        name: Stage(name, fast, base, note)
        for name, fast, base, note in [
            ("decode+preprocess", f"loader, {workers} workers, batch {batch_size}", "num_workers=0, batch 1",
             "worker start-up is included: with few images it outweighs the parallel decode"),
            ("VAE encode", "fp16, batched" if cuda else "fp32, batched", "fp32, batch 1", ""),
            ("UNet+capture", "fused capture, " + ("fp16" if cuda else "fp32") + ", batched",
             "reference capture (eager, all layers kept), fp32, batch 1", ""),
            ("aggregation", "aggregate_attention, batched", "naive_aggregate (float64), per image", ""),
            ("DiffSeg float16", "DiffSeg, batched", "naive_merge + NMS, per image", ""),
            ("DiffSeg float32", "DiffSeg, batched", "naive_merge + NMS, per image", ""),
            ("K-Means-C", "KMeansSegmenter K=6, batched", "the same, one image per call",
             "no other baseline: the same code called per image (on every image)"),
            ("K-Means-S", "KMeansSegmenter K=#GT classes, batched", "the same, one image per call",
             "no other baseline: the same code called per image (on every image)"),
            ("matching", "batched histograms + Hungarian (4 methods)", "match_image per image (4 methods)", ""),
            ("end to end", "files -> masks of 4 methods -> matching", "the baseline chain", ""),
        ]
    }
    report: dict[str, Any] = {
        "device": info,
        "versions": versions(),
        "config": {
            "model": "tiny-random" if args.tiny else "sd1-random (full SD 1.x architecture, random weights)",
            "images": images,
            "baseline_images": base_images,
            "batch_size": batch_size,
            "workers": workers,
            "num_points": args.num_points,
            "kl_threshold": args.threshold,
            "kmeans_n_init": args.kmeans_n_init,
            "image_size": 512,
            "baseline_backbone": not args.skip_baseline_backbone,
            "e2e_baseline": "measured" if measure_e2e_baseline else "sum of the baseline stages",
        },
    }

    with tempfile.TemporaryDirectory(prefix="diffseg-bench-") as tmp:
        write_synthetic_coco_stuff(tmp, num_images=images, seed=0, size_range=(400, 640))
        dataset = CocoStuff27(tmp, size=512)
        base_dataset = CocoStuff27(tmp, size=512, limit=base_images)

        # ---- decode + pre-process
        _log("decode+preprocess")
        stage = stages["decode+preprocess"]
        fast_loader = lambda: list(build_loader(dataset, batch_size=batch_size, num_workers=workers))  # noqa: E731
        base_loader = lambda: list(build_loader(base_dataset, batch_size=1, num_workers=0))  # noqa: E731
        base_loader()  # warm-up (also fills the page cache)
        fast_loader()
        batches, stage.fast_s = timed(fast_loader, device)
        base_batches, stage.baseline_s = timed(base_loader, device)
        stage.fast_images, stage.baseline_images = images, base_images
        labels = [b.labels.to(device) for b in batches]
        base_labels = [b.labels.to(device) for b in base_batches]

        # ---- backbones
        _log("building the backbone(s)")
        fast_bb, base_bb = build_backbones(args.tiny, device, not args.skip_baseline_backbone)
        fast_inputs = [b.images.to(device=device, dtype=fast_bb.dtype) for b in batches]
        base_inputs = [b.images.to(device) for b in base_batches]
        warm_image = fast_inputs[0][:1] if cuda else torch.zeros(1, 3, 128, 128, device=device)

        # ---- VAE encode
        _log("VAE encode")
        stage = stages["VAE encode"]
        fast_bb.encode(fast_inputs[0] if cuda else warm_image)
        latents, stage.fast_s = timed(lambda: [fast_bb.encode(x) for x in fast_inputs], device)
        stage.fast_images = images
        if base_bb is not None:
            base_bb.encode(warm_image.float())
            base_latents, stage.baseline_s = timed(lambda: [base_bb.encode(x) for x in base_inputs], device)
            stage.baseline_images = base_images

        # ---- UNet + capture
        _log("UNet+capture")
        stage = stages["UNet+capture"]
        unet_capture(fast_bb, latents[0] if cuda else fast_bb.encode(warm_image), reference=False)
        fast_maps, stage.fast_s = timed(lambda: [unet_capture(fast_bb, z, False) for z in latents], device)
        stage.fast_images = images
        if base_bb is not None:
            unet_capture(base_bb, base_latents[0] if cuda else base_bb.encode(warm_image.float()), reference=True)
            base_maps, stage.baseline_s = timed(lambda: [unet_capture(base_bb, z, True) for z in base_latents], device)
            stage.baseline_images = base_images
            base_maps = [{s: m[0] for s, m in maps.items()} for maps in base_maps]
        else:
            stage.note = "baseline skipped (--skip-baseline-backbone); baseline stages below use the fast maps"
            base_maps = [{s: m[i] for s, m in maps.items()} for maps in fast_maps for i in range(len(maps[max(maps)]))]
            base_maps = base_maps[:base_images]
        latents = base_latents = None  # free memory

        # ---- aggregation
        _log("aggregation")
        stage = stages["aggregation"]
        aggregate_attention(fast_maps[0] if cuda else small)
        naive_aggregate(base_maps[0] if cuda else {s: m[0] for s, m in small.items()})
        attention, stage.fast_s = timed(lambda: [aggregate_attention(m) for m in fast_maps], device)
        base_attention, stage.baseline_s = timed(lambda: [naive_aggregate(m) for m in base_maps], device)
        stage.fast_images, stage.baseline_images = images, base_images
        fast_maps = base_maps = None  # free memory
        warm_attention = attention[0][:1] if cuda else aggregate_attention(small)
        warm_naive = base_attention[0] if cuda else warm_attention[0].double()

        # ---- DiffSeg
        masks: dict[str, list[torch.Tensor]] = {}
        base_masks: dict[str, list[torch.Tensor]] = {}
        for precision in ("float16", "float32"):
            name = f"DiffSeg {precision}"
            _log(name)
            stage = stages[name]
            segmenter = methods.diffseg[precision]
            segmenter(warm_attention)
            methods.naive(warm_naive, precision)
            masks[name], stage.fast_s = timed(lambda seg=segmenter: [seg(a) for a in attention], device)
            base_masks[name], stage.baseline_s = timed(
                lambda p=precision: [methods.naive(a, p) for a in base_attention], device
            )
            stage.fast_images, stage.baseline_images = images, base_images
            fast_flat = torch.cat(masks[name])[:base_images]
            agree = (fast_flat == torch.stack(base_masks[name])).double().mean().item()
            stage.note = f"fast vs baseline masks: {100 * agree:.3f}% identical pixels"

        # ---- K-means: the baseline is the same code called one image at a time, on every image: its
        # cost depends on the image (Lloyd iterations), and it is no dearer than the fast path.
        per_image = [(a[i : i + 1], lab[i : i + 1]) for a, lab in zip(attention, labels, strict=True)
                     for i in range(a.shape[0])]
        warm_labels = labels[0][:1] if cuda else torch.zeros(1, 16, 16, dtype=torch.long, device=device)
        for name, fn in (("K-Means-C", lambda a, lab: methods.kmeans(a)), ("K-Means-S", methods.kmeans_s)):
            _log(name)
            stage = stages[name]
            fn(warm_attention, warm_labels)
            masks[name], stage.fast_s = timed(
                lambda f=fn: [f(a, lab) for a, lab in zip(attention, labels, strict=True)], device
            )
            base_masks[name], stage.baseline_s = timed(lambda f=fn: [f(a, lab)[0] for a, lab in per_image], device)
            stage.fast_images, stage.baseline_images = images, images
            base_masks[name] = base_masks[name][:base_images]  # matching: the baseline images
        attention = base_attention = per_image = None  # free memory

        # ---- matching
        _log("matching")
        stage = stages["matching"]
        fast_match(masks["DiffSeg float16"][0], labels[0])
        match_image(base_masks["DiffSeg float16"][0].cpu(), base_labels[0][0].cpu())

        def fast_matching() -> list:
            return [fast_match(m[b], labels[b]) for m in masks.values() for b in range(len(labels))]

        def base_matching() -> list:
            return [
                match_image(m[i].cpu(), base_labels[i][0].cpu())
                for m in base_masks.values()
                for i in range(base_images)
            ]

        _, stage.fast_s = timed(fast_matching, device)
        _, stage.baseline_s = timed(base_matching, device)
        stage.fast_images, stage.baseline_images = images, base_images
        masks = base_masks = None  # free memory

        # ---- end to end
        _log("end to end")
        stage = stages["end to end"]

        def fast_e2e(loader_images: CocoStuff27 = dataset, batch: int = batch_size) -> int:
            count = 0
            for b in build_loader(loader_images, batch_size=batch, num_workers=workers):
                x = b.images.to(device, non_blocking=True)
                lab = b.labels.to(device, non_blocking=True)
                with torch.inference_mode():
                    att = aggregate_attention(fast_bb.attention_maps(x, timestep=TIMESTEP))
                    outs = [methods.diffseg["float16"](att), methods.diffseg["float32"](att), methods.kmeans(att),
                            methods.kmeans_s(att, lab)]
                for m in outs:
                    fast_match(m, lab)
                count += len(b)
            return count

        def base_e2e() -> int:
            count = 0
            for b in build_loader(base_dataset, batch_size=1, num_workers=0):
                x = b.images.to(device)
                lab = b.labels.to(device)
                maps = base_bb.attention_maps(x, timestep=TIMESTEP, reference=True)
                att = naive_aggregate({s: m[0] for s, m in maps.items()})
                outs = [methods.naive(att, "float16"), methods.naive(att, "float32")]
                att32 = att.float()[None]
                outs += [methods.kmeans(att32)[0], methods.kmeans_s(att32, lab)[0]]
                for m in outs:
                    match_image(m.cpu(), lab[0].cpu())
                count += 1
            return count

        if cuda:
            fast_e2e(CocoStuff27(tmp, size=512, limit=batch_size))
        count, stage.fast_s = timed(fast_e2e, device)
        stage.fast_images = count
        if base_bb is None:
            stage.note = "no baseline (--skip-baseline-backbone)"
        elif measure_e2e_baseline:
            count, stage.baseline_s = timed(base_e2e, device)
            stage.baseline_images = count
        else:
            rows = [stages[n].row() for n in STAGES[:-1]]
            stage.baseline_s = base_images * sum(r["baseline_s_per_image"] for r in rows)
            stage.baseline_images = base_images
            stage.note = "baseline = sum of its stage times (it is sequential); --measure-e2e-baseline to run it"

        # ---- peak GPU memory
        if cuda:
            _log("peak GPU memory")
            weights = torch.cuda.memory_allocated(device)
            peaks = {}
            for b in sorted({1, batch_size}):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                fast_e2e(CocoStuff27(tmp, size=512, limit=b), b)
                peaks[f"batch_{b}_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            report["peak_gpu_memory"] = {"resident_before_gib": round(weights / 2**30, 2), **peaks}

    report["stages"] = [stages[name].row() for name in STAGES]
    fast_bb = base_bb = None  # free memory before the headline
    report["postprocessing"] = postprocessing_headline(args, device)
    return report


# ------------------------------------------------------------------------------------------- the headline
def _load_official(path: str):
    """The ``DiffSeg`` class of a copy of the official ``diffseg/segmentor.py`` (imports TensorFlow)."""
    spec = importlib.util.spec_from_file_location("official_diffseg_segmentor", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DiffSeg


def postprocessing_headline(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Post-processing alone (aggregation + DiffSeg float16 merge + NMS, one image, no refinement).

    Ours (``aggregate_attention`` + ``DiffSeg``) vs the naive port (``naive_segment``) and, when
    available, the official TensorFlow segmentor fed the same maps as ``(B=1, heads=1, s*s, s*s)``
    arrays (``segment(weight_64, weight_32, weight_16, weight_8)`` averages axis 1 over heads).
    """
    _log("post-processing headline")
    cuda = device.type == "cuda"
    maps = realistic_attention(seed=args.seed, device=device)
    thresholds = [args.threshold] * 3
    segmenter = DiffSeg(kl_threshold=args.threshold, num_points=args.num_points, kl_precision="float16", refine=False)

    def ours() -> torch.Tensor:
        return segmenter(aggregate_attention({s: m[None] for s, m in maps.items()}))[0]

    def naive() -> torch.Tensor:
        return naive_segment(maps, thresholds, args.num_points, "float16")

    repeats = 3
    naive_repeats = 3 if cuda else 1
    ours()  # warm-up at full size (cheap)
    if cuda:
        naive()
    else:
        naive_segment({s: m[0] for s, m in _small_maps(device).items()}, thresholds, args.num_points, "float16", 128)
    mask, ours_s = _median_time(ours, device, repeats)
    naive_mask, naive_s = _median_time(naive, device, naive_repeats)
    result: dict[str, Any] = {
        "what": "aggregation + DiffSeg float16 merge + NMS to 512x512, one image, sides 64/32/16/8, no refinement",
        "input": "realistic_attention(): softmax of region + locality logits with noise and 2% very peaked rows",
        "num_points": args.num_points,
        "segments": int(mask.unique().numel()),
        "ours_s": ours_s,
        "ours_repeats": repeats,
        "naive_s": naive_s,
        "naive_repeats": naive_repeats,
        "ratio_vs_naive": naive_s / ours_s,
        "agreement_vs_naive": (mask == naive_mask).double().mean().item(),
        "official_s": None,
        "ratio_vs_official": None,
    }
    path = os.environ.get(OFFICIAL_ENV)
    if importlib.util.find_spec("tensorflow") is None or not path:
        missing = [] if importlib.util.find_spec("tensorflow") is not None else ["tensorflow is not importable"]
        if not path:
            missing.append(f"{OFFICIAL_ENV} is not set")
        result["official_note"] = "official segmentor skipped: " + "; ".join(missing)
        return result
    if not Path(path).is_file():
        result["official_note"] = f"official segmentor skipped: {OFFICIAL_ENV}={path} is not a file"
        return result
    import tensorflow as tf

    official = _load_official(path)(thresholds, False, args.num_points)
    weights = [maps[s].cpu().numpy()[None, None] for s in (64, 32, 16, 8)]  # (B=1, heads=1, s*s, s*s)
    official.segment(*weights)  # warm-up
    official_mask, result["official_s"] = _median_time(lambda: official.segment(*weights)[0], device, naive_repeats)
    result["official_repeats"] = naive_repeats
    result["ratio_vs_official"] = result["official_s"] / ours_s
    result["agreement_vs_official"] = float((official_mask == mask.cpu().numpy()).mean())
    result["official_note"] = (
        f"official diffseg/segmentor.py from {path}, tensorflow {tf.__version__} "
        f"({'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}), warmed up, median of {naive_repeats}"
    )
    return result


# ------------------------------------------------------------------------------------------------- output
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}" if value < 0.001 else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: setup, the stage table, the post-processing headline, memory."""
    cfg, dev, ver = report["config"], report["device"], report["versions"]
    lines = [
        f"# DiffSeg speed benchmark ({dev['kind']})",
        "",
        f"- device: {dev['name']}" + (f" ({dev.get('gpu_memory_gib')} GiB)" if dev["kind"] == "cuda" else ""),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()),
    ]
    if report["stages"]:
        lines += [
            f"- model: {cfg['model']}; images: {cfg['images']} (baseline: the first {cfg['baseline_images']}); "
            f"batch size: {cfg['batch_size']}; loader workers: {cfg['workers']}; 512 px; "
            f"anchors {cfg['num_points']}x{cfg['num_points']}; tau {cfg['kl_threshold']}; "
            f"K-means inits {cfg['kmeans_n_init']}",
            "- ratio = baseline s/image / fast s/image (higher = fast path faster); both measured in this run",
            "",
            "| stage | fast path | baseline | fast s/img | fast img/s | baseline s/img | baseline img/s | ratio |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
    for r in report["stages"]:
        lines.append(
            f"| {r['stage']} | {r['fast']} | {r['baseline']} | {_fmt(r['fast_s_per_image'])} | "
            f"{_fmt(r['fast_images_per_s'])} | {_fmt(r['baseline_s_per_image'])} | "
            f"{_fmt(r['baseline_images_per_s'])} | {_fmt(r['ratio'], 2)}x |"
        )
    notes = [f"- {r['stage']}: {r['note']}" for r in report["stages"] if r["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    post = report["postprocessing"]
    lines += [
        "",
        "## Post-processing only (issue 3)",
        "",
        f"{post['what']}; input: {post['input']}; {post['segments']} segments.",
        "",
        "| implementation | seconds/image | ratio vs ours |",
        "|---|---:|---:|",
        f"| ours (aggregate_attention + DiffSeg float16) | {_fmt(post['ours_s'])} | 1.00x |",
        f"| naive port (eval.naive, per image) | {_fmt(post['naive_s'])} | {_fmt(post['ratio_vs_naive'], 2)}x |",
    ]
    if post["official_s"] is not None:
        lines.append(
            f"| official TensorFlow segmentor | {_fmt(post['official_s'])} | {_fmt(post['ratio_vs_official'], 2)}x |"
        )
    lines += ["", f"- masks identical to the naive port: {100 * post['agreement_vs_naive']:.3f}% of pixels"]
    if "agreement_vs_official" in post:
        share = 100 * post["agreement_vs_official"]
        lines.append(f"- masks identical to the official segmentor: {share:.3f}% of pixels")
    lines.append(f"- {post['official_note']}")
    if "peak_gpu_memory" in report:
        mem = report["peak_gpu_memory"]
        lines += ["", "## Peak GPU memory (fast end to end, torch.cuda.max_memory_allocated)", ""]
        lines += [f"- {k}: {v} GiB" for k, v in mem.items()]
    return "\n".join(lines) + "\n"


def render_table(report: dict[str, Any]) -> str:
    """A plain-text table for stdout."""
    head = f"{'stage':<18} {'fast s/img':>11} {'fast img/s':>11} {'base s/img':>11} {'base img/s':>11} {'ratio':>8}"
    lines = [f"device: {report['device']['name']}"]
    if report["stages"]:
        lines += [head, "-" * len(head)]
    for r in report["stages"]:
        lines.append(
            f"{r['stage']:<18} {_fmt(r['fast_s_per_image']):>11} {_fmt(r['fast_images_per_s']):>11} "
            f"{_fmt(r['baseline_s_per_image']):>11} {_fmt(r['baseline_images_per_s']):>11} "
            f"{_fmt(r['ratio'], 2) + 'x':>8}"
        )
    post = report["postprocessing"]
    lines.append("")
    lines.append(
        f"post-processing only (1 image, 64/32/16/8, float16): ours {_fmt(post['ours_s'])} s, "
        f"naive {_fmt(post['naive_s'])} s -> {_fmt(post['ratio_vs_naive'], 2)}x"
    )
    if post["official_s"] is not None:
        lines.append(f"  official TF segmentor {_fmt(post['official_s'])} s -> {_fmt(post['ratio_vs_official'], 2)}x")
    lines.append(f"  {post['official_note']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="images to time (default: 64 on CUDA, 2 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="fast-path batch size (default: 8 / 2)")
    parser.add_argument("--baseline-images", type=int, default=None,
                        help="images the baseline path runs on (default: all on CUDA, 1 on CPU)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers of the fast path (default 4)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the SD 1.x architecture")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder")
    parser.add_argument("--skip-baseline-backbone", action="store_true",
                        help="do not time the fp32 batch-1 VAE/UNet baseline (slow on CPU)")
    parser.add_argument("--measure-e2e-baseline", action="store_true",
                        help="run the baseline end to end on CPU too (default there: sum of its stages)")
    parser.add_argument("--num-points", type=int, default=16, help="anchor grid side M (default 16)")
    parser.add_argument("--threshold", type=float, default=1.1, help="KL threshold (default 1.1)")
    parser.add_argument("--kmeans-n-init", type=int, default=5, help="K-means inits (default 5, as the configs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the headline's attention")
    parser.add_argument("--postprocessing-only", action="store_true",
                        help=f"only the post-processing headline (with the official segmentor when {OFFICIAL_ENV} "
                        "is set and tensorflow importable)")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "baseline_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run_postprocessing_only(args: argparse.Namespace) -> dict[str, Any]:
    """Only the post-processing headline (no model, no images)."""
    device = resolve_device("auto")
    info = device_info(device)
    _log(f"device: {info['name']}")
    report: dict[str, Any] = {
        "device": info,
        "versions": versions(),
        "config": {"num_points": args.num_points, "kl_threshold": args.threshold, "postprocessing_only": True},
        "stages": [],
    }
    report["postprocessing"] = postprocessing_headline(args, device)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print the table, write ``<out>/bench_<kind>.md`` and ``.json``.

    With ``--postprocessing-only`` the files are ``bench_<kind>_postprocessing.md`` / ``.json``.
    """
    args = parse_args(argv)
    report = run_postprocessing_only(args) if args.postprocessing_only else run_bench(args)
    stem = f"bench_{report['device']['kind']}" + ("_postprocessing" if args.postprocessing_only else "")
    write_json_atomic(args.out / f"{stem}.json", report)
    write_text_atomic(args.out / f"{stem}.md", render_markdown(report))
    print(render_table(report))
    print(f"\nwrote {args.out / f'{stem}.md'} and {args.out / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
