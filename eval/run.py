"""The evaluation runner: ``python -m eval.run experiment=coco_stuff27``.

:func:`evaluate` is a plain function of a composed config (tests call it
directly); :func:`main` is the thin Hydra entry point. Data flow per batch:

    loader (workers: decode + pre-process) -> backbone (one UNet pass, attention
    captured; or the attention cache) -> aggregation, once per distinct weight
    setting -> every configured method -> per-image matching stats appended to
    ``per_image.jsonl`` -> totals -> ``metrics.json`` (atomic).

A run started again in the same output folder skips the images already in
``per_image.jsonl``; totals are recomputed from it, so they equal an
uninterrupted run's.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from diffseg import aggregate_attention
from diffseg.backbone import BackboneLoadError
from diffseg.devices import resolve_device, resolve_dtype
from eval.atomic import write_bytes_atomic, write_json_atomic
from eval.cache import AttentionCache
from eval.data.loader import build_loader
from eval.methods import Method, build_methods, weights_key
from eval.metrics import MatchAccumulator, confusion_histograms, match_stats
from eval.records import RunRecords, accumulate

__all__ = ["evaluate", "main"]

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises the target's own error, not Hydra's wrapper.

    The dataset's missing-root error names the path and the ``make`` target; the
    backbone's load error names the model and what could not be fetched.
    Hydra's ``InstantiationException`` would bury both.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (OSError, ValueError, RuntimeError)):
            raise cause from None
        raise


def versions() -> dict[str, str]:
    """Versions of the packages that can change results."""
    import diffusers
    import scipy
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _save_masks(folder: Path, masks: dict[str, torch.Tensor], ids: list[str]) -> None:
    """Write ``folder/<method>/<image id>.png`` for ``(B, H, W)`` masks (8-bit, or 16-bit past 255 ids)."""
    for name, batch_masks in masks.items():
        for mask, image_id in zip(batch_masks.cpu().numpy(), ids, strict=True):
            img = Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16))
            buf = BytesIO()
            img.save(buf, format="PNG")
            write_bytes_atomic(folder / name.replace("/", "_") / f"{image_id.replace('/', '_')}.png", buf.getvalue())


class _GridSamples:
    """The first ``count`` images of a run with their labels and masks, for ``qualitative.png``."""

    def __init__(self, count: int, methods: list[str]):
        self.count = count
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.masks: dict[str, list[np.ndarray]] = {m: [] for m in methods}

    def add(self, images: torch.Tensor, labels: torch.Tensor, masks: dict[str, torch.Tensor]) -> None:
        """Keep images ``(B, 3, H, W)`` in [-1, 1], labels ``(B, H, W)`` and masks until ``count`` are held."""
        for b in range(min(self.count - len(self.images), images.shape[0])):
            self.images.append(_to_uint8_image(images[b]))
            self.labels.append(labels[b].cpu().numpy())
            for name, mask in masks.items():
                self.masks[name].append(mask[b].cpu().numpy())

    def write(self, path: Path, class_names: list[str], demo: bool) -> None:
        """The grid (image | ground truth | each method), when any image was kept."""
        if not self.images:
            return
        from eval.figures import qualitative_grid
        from eval.tables import DEMO_BANNER

        qualitative_grid(self.images, self.labels, self.masks, path, class_names=class_names or None,
                         banner=DEMO_BANNER if demo else None)


class _AttentionSource:
    """Per-batch attention maps from the cache or from the backbone."""

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.dtype = resolve_dtype(str(cfg.model.dtype))
        self.backbone = None
        setting = {
            "model": str(cfg.model.name),
            "dtype": str(self.dtype),
            "timestep": int(cfg.model.timestep),
            "noise": bool(cfg.model.noise),
            "noise_seed": int(cfg.model.noise_seed),
            "size": int(cfg.dataset.size),
            "backbone": OmegaConf.to_container(cfg.model.backbone, resolve=True),
        }
        self.cache = AttentionCache(str(cfg.cache.mode), setting, float(cfg.cache.max_gb), cfg.cache.get("dir"))

    def _backbone(self):
        if self.backbone is None:
            self.backbone = build(self.cfg.model.backbone, dtype=self.dtype, device=self.device)
        return self.backbone

    def maps(self, images: torch.Tensor, ids: list[str]) -> dict[int, torch.Tensor]:
        """``{s: Tensor(B, s*s, s*s)}`` float32 on the run device."""
        cached = [self.cache.get(i) for i in ids]
        if all(c is not None for c in cached):
            return {s: torch.stack([c[s] for c in cached]).to(self.device) for s in cached[0]}
        maps = self._backbone().attention_maps(
            images.to(self.device, non_blocking=True),
            timestep=int(self.cfg.model.timestep),
            noise=bool(self.cfg.model.noise),
            seed=int(self.cfg.model.noise_seed),
            head_chunk=self.cfg.model.get("head_chunk"),
        )
        for b, image_id in enumerate(ids):
            self.cache.put(image_id, {s: m[b] for s, m in maps.items()})
        return maps


def _segment_batch(
    methods: list[Method], maps: dict[int, torch.Tensor], labels: torch.Tensor, num_classes: int
) -> dict[str, torch.Tensor]:
    """Masks ``(B, H, W)`` of every method; aggregation computed once per weight setting."""
    masks: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list[Method]] = {}
    for method in methods:
        groups.setdefault(weights_key(method.weights), []).append(method)
    for group in groups.values():
        attention = aggregate_attention(maps, group[0].weights)
        for method in group:
            masks[method.name] = method(attention, labels, num_classes)
        del attention
    return masks


def _image_stats(mask: torch.Tensor, hist: np.ndarray) -> dict[str, Any]:
    """Matching stats of one image from its ``(C, ncols)`` histogram (rows = ground truth)."""
    tp, fp, fn = match_stats(hist)
    return {
        "tp": tp.tolist(),
        "fp": fp.tolist(),
        "fn": fn.tolist(),
        "valid": int(hist.sum()),
        "segments": int(torch.unique(mask).numel()),
    }


def _batch_records(
    masks: dict[str, torch.Tensor], labels: torch.Tensor, ids: list[str], num_classes: int
) -> list[dict[str, Any]]:
    """One record per image with every method's matching stats."""
    records = [{"id": i, "methods": {}} for i in ids]
    for name, mask in masks.items():
        num_pred = int(mask.max()) + 1 if mask.numel() else 1
        hists = confusion_histograms(mask, labels, num_classes, num_pred=num_pred).cpu().numpy()
        for b, record in enumerate(records):
            record["methods"][name] = _image_stats(mask[b], hists[b])
    return records


def _run_info(cfg: DictConfig) -> dict[str, Any]:
    ablation = cfg.get("ablation")
    return {
        "name": str(cfg.run_name),
        "dataset": str(cfg.dataset.name),
        "model": str(cfg.model.name),
        "demo": bool(cfg.get("demo", False)),
        "ablation": OmegaConf.to_container(ablation, resolve=True) if ablation is not None else None,
        "shard": cfg.dataset.get("shard"),
    }


def write_metrics(
    out_dir: Path, records: dict[str, dict[str, Any]], method_tags: dict[str, dict[str, Any] | None],
    cfg: dict[str, Any], run: dict[str, Any], num_classes: int, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Totals of the per-image records -> ``metrics.json`` (atomic). Returns what was written.

    ``method_tags`` maps each method name, in table order, to its ablation tag (or None).
    """
    done = [r for r in records.values() if "methods" in r]
    skipped = [[r["id"], r["skipped"]] for r in records.values() if "skipped" in r]
    accs = accumulate(done, num_classes)
    out_methods = {}
    for name, tag in method_tags.items():
        acc = accs.get(name)
        scores = acc.compute() if acc is not None else {"images": 0}
        if tag is not None:
            scores["ablation"] = tag
        out_methods[name] = scores
    result = {
        "methods": out_methods,
        "run": run,
        "skipped": skipped,
        "config": cfg,
        "versions": versions(),
        **(extra or {}),
    }
    write_json_atomic(out_dir / METRICS_FILE, result)
    return result


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run every configured method on a dataset and write the run folder.

    Writes ``per_image.jsonl`` (appended as it goes), ``metrics.json``,
    optionally ``masks/<method>/<id>.png``, and ``qualitative.png``.

    Returns:
        The ``metrics.json`` content.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(cfg.device))
    num_classes = int(cfg.dataset.num_classes)
    methods = build_methods(cfg)
    dataset = build(cfg.dataset.dataset)
    records_file = RunRecords(out_dir)
    records = records_file.load()
    total = len(dataset.ids)
    dataset.ids = [i for i in dataset.ids if i not in records]
    if records:
        log.info("resuming %s: %d of %d images already done", out_dir, total - len(dataset.ids), total)
    loader = build_loader(
        dataset,
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        pin_memory=device.type == "cuda",
    )
    source = _AttentionSource(cfg, device)
    if source.cache.mode == "none" and dataset.ids:
        source._backbone()  # load (or fail on missing weights) before the loader starts
    samples = _GridSamples(int(cfg.grid_images), [m.name for m in methods])
    progress = tqdm(total=total, initial=total - len(dataset.ids), unit="img", disable=not cfg.progress,
                    desc=str(cfg.run_name))
    running = accumulate((r for r in records.values() if "methods" in r), num_classes)
    start = time.perf_counter()
    for batch in loader:
        new = [{"id": i, "skipped": msg} for i, msg in batch.skipped]
        for image_id, msg in batch.skipped:
            log.warning("skipped %s: %s", image_id, msg)
        if len(batch):
            labels = batch.labels.to(device, non_blocking=True)
            with torch.inference_mode():
                maps = source.maps(batch.images, batch.ids)
                masks = _segment_batch(methods, maps, labels, num_classes)
            image_records = _batch_records(masks, labels, batch.ids, num_classes)
            new += image_records
            for record in image_records:
                for name, s in record["methods"].items():
                    running.setdefault(name, MatchAccumulator(num_classes)).add(
                        s["tp"], s["fp"], s["fn"], s["valid"], s["segments"]
                    )
            if cfg.save_masks:
                _save_masks(out_dir / "masks", masks, batch.ids)
            samples.add(batch.images, batch.labels, masks)
        records_file.append(new)
        for record in new:
            records[record["id"]] = record
        progress.update(len(batch) + len(batch.skipped))
        first = methods[0].name
        if first in running:
            s = running[first].compute()
            progress.set_postfix_str(f"{first} ACC {s['acc'] or 0:.1f} mIoU {s['miou'] or 0:.1f}")
    progress.close()
    elapsed = time.perf_counter() - start
    resolved = OmegaConf.to_container(cfg, resolve=True)
    extra = {"timing": {"seconds": round(elapsed, 3), "images_this_invocation": len(dataset.ids)}}
    if source.cache.mode != "none":
        extra["cache"] = {"mode": source.cache.mode, "hits": source.cache.hits, "misses": source.cache.misses}
    tags = {m.name: m.ablation for m in methods}
    result = write_metrics(out_dir, records, tags, resolved, _run_info(cfg), num_classes, extra)
    samples.write(out_dir / "qualitative.png", list(getattr(dataset, "classes", []) or []), bool(cfg.get("demo")))
    if result["skipped"]:
        log.warning("%d image(s) could not be read and were skipped (listed in metrics.json)", len(result["skipped"]))
    for name, s in result["methods"].items():
        log.info("%-14s ACC %5.1f  mIoU %5.1f  segments/img %.2f  images %d", name, s.get("acc") or 0.0,
                 s.get("miou") or 0.0, s.get("mean_segments") or 0.0, s.get("images", 0))
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; all work is in :func:`evaluate`.

    Missing data, missing weights or no network end the run with one clear line
    on stderr and exit status 2, not a traceback.
    """
    try:
        evaluate(cfg)
    except (FileNotFoundError, BackboneLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
