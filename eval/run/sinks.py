"""What a run does with each batch: one sink per concern, all fed by one loop.

:func:`inference_on_dataset` is the runner's loop, shaped as detectron2's
``inference_on_dataset(model, data_loader, evaluator)``: for every batch of the loader the
methods' masks are predicted, the :class:`MetricSink` scores them (each method's
:meth:`~eval.metrics.HungarianSegmentationMetric.update` returns the images' stats), and every
sink, in order, gets ``process(batch, predictions, stats)``. When the loader is done each sink
is closed (every rank). Rank 0 then asks each sink for its ``summary(records)`` over the
records of every rank (sections of ``metrics.json``; a sink refuses the run by raising) and,
once ``metrics.json`` is written, calls ``finish(result)`` (files made from the result).

The sinks of a run, in order: :class:`MaskSink` (``masks/``), :class:`SamplesSink`
(``qualitative.png``), :class:`UnknownLabelSink` (label values outside the dataset's classes),
:class:`RecordsSink` (``per_image.jsonl``) and :class:`ProgressSink` (the progress bar).
The order keeps a folder resumable: a batch's records are appended after its masks were
written, so an image with a record has its masks, and an error in a sink before the records
leaves the batch unrecorded, to be evaluated again by the next run in the folder (one
after them finds the batch recorded). Sinks take plain values, never a config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from eval.data.loader import Batch
from eval.metrics import HungarianSegmentationMetric, metric_json, scores
from eval.run.mask_files import MaskWriter
from eval.run.records import RunRecords
from eval.run.unknown_labels import count_unknown, label_fields, log_unknown, unknown_summary

__all__ = ["MaskSink", "MetricSink", "PerImageStats", "Predictions", "ProgressSink", "RecordsSink", "SamplesSink",
           "Sink", "UnknownLabelSink", "inference_on_dataset"]

log = logging.getLogger(__name__)

PerImageStats = dict[str, list[dict[str, Any]]]
"""Each method's per-image stats (:func:`eval.metrics.image_stats`), in the batch's image order."""


@dataclass(frozen=True)
class Predictions:
    """Every method's masks of one batch, and the labels they are scored against.

    Attributes:
        masks: method name -> (B, H, W) int64 segment ids (at the labels' size; DiffCut's
            protocol: at its label side).
        labels: (B, H, W) int64 labels as scored, on the masks' device.
    """

    masks: dict[str, torch.Tensor]
    labels: torch.Tensor


class Sink:
    """One consumer of a run's batches. Every hook does nothing unless a sink overrides it."""

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        """One batch: ``predictions`` and ``stats`` are None and ``{}`` when every item was skipped."""

    def close(self) -> None:
        """The loader is done (every rank)."""

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank 0, before ``metrics.json`` is written: its sections from this sink, given the records of
        every image the numbers rest on. Raises to refuse the run (nothing is written then)."""
        return {}

    def finish(self, result: dict[str, Any]) -> None:
        """Rank 0, once ``metrics.json`` (``result``) is written."""


class MetricSink:
    """The run's scores: one :class:`HungarianSegmentationMetric` per method, fed each batch by :meth:`score`.

    Args:
        metrics: method name -> its metric, in table order.
        tags: method name -> its ablation tag (or None), copied into the totals.
    """

    def __init__(self, metrics: dict[str, HungarianSegmentationMetric], tags: Mapping[str, Any]):
        self.metrics = metrics
        self.tags = dict(tags)

    def replay(self, records: Iterable[dict[str, Any]]) -> None:
        """Add the stored stats of images already done (a resumed run)."""
        records = list(records)
        for name, metric in self.metrics.items():
            metric.add_stats(r["methods"][name] for r in records)

    def score(self, predictions: Predictions | None) -> PerImageStats:
        """Match and add one batch; returns each method's per-image stats (``{}`` for no image)."""
        if predictions is None:
            return {}
        return {name: metric.update(predictions.masks[name], predictions.labels)
                for name, metric in self.metrics.items()}

    def running(self) -> dict[str, Any] | None:
        """The first method's name and ``acc``/``miou`` over this rank's images so far (None before any)."""
        name, metric = next(iter(self.metrics.items()))
        if not int(metric.images):
            return None
        return {"name": name, **scores(metric.tp, metric.fp, metric.fn, int(metric.valid))}

    def totals(self, sync: bool) -> dict[str, dict[str, Any]]:
        """Every method's scores (summed over all ranks when ``sync``), in table order, with its ablation tag."""
        out = {}
        for name, metric in self.metrics.items():
            with metric.sync_context(should_sync=sync):
                out[name] = metric_json(metric.compute())
            if self.tags.get(name) is not None:
                out[name]["ablation"] = self.tags[name]
        return out


class RecordsSink(Sink):
    """Appends one record per image of each batch (evaluated or skipped) to the run's records file.

    Args:
        records: the records file (:class:`~eval.run.records.RunRecords`).
        new_record: image id -> the bookkeeping part of its record (id, fingerprint, code, ...,
            ending with an empty ``"methods"``).
        fingerprint: the run's, for the records of skipped images.
        pixels_per_image: label pixels of an image scored at the dataset's size (``size ** 2``).
    """

    def __init__(self, records: RunRecords, new_record: Callable[[str], dict[str, Any]], fingerprint: str,
                 pixels_per_image: int):
        self.records = records
        self.new_record = new_record
        self.fingerprint = fingerprint
        self.pixels_per_image = int(pixels_per_image)

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        new = [{"id": i, "fp": self.fingerprint, "skipped": msg} for i, msg in batch.skipped]
        for image_id, msg in batch.skipped:
            log.warning("skipped %s: %s", image_id, msg)
        if len(batch):
            fields = label_fields(batch.labels, self.pixels_per_image)
            images = [{**self.new_record(i), **f} for i, f in zip(batch.ids, fields, strict=True)]
            for name, per_image in stats.items():
                for record, s in zip(images, per_image, strict=True):
                    record["methods"][name] = s
            new += images
        self.records.append(new)


class MaskSink(Sink):
    """Saves each batch's masks (:class:`~eval.run.mask_files.MaskWriter`); COCO: the result files at the end."""

    def __init__(self, writer: MaskWriter):
        self.writer = writer

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        if predictions is not None:
            self.writer.add(predictions.masks, predictions.labels, batch.ids)

    def finish(self, result: dict[str, Any]) -> None:
        self.writer.finish(result["methods"], result["image_ids"])


class SamplesSink(Sink):
    """Keeps the first images with their labels and masks and writes ``qualitative.png`` at the end.

    Args:
        samples: a ``QualitativeSamples`` (``add(images, labels, masks)``, ``write(path, classes, banner)``).
        path: where the grid goes.
        class_names: the dataset's class names (legend).
        banner: the result -> the line printed over the grid.
    """

    def __init__(self, samples: Any, path: Path, class_names: Sequence[str],
                 banner: Callable[[dict[str, Any]], str | None]):
        self.samples = samples
        self.path = path
        self.class_names = list(class_names)
        self.banner = banner

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        if predictions is not None:
            self.samples.add(batch.images, batch.labels, predictions.masks)  # masks shown at the labels' size

    def finish(self, result: dict[str, Any]) -> None:
        self.samples.write(self.path, self.class_names, self.banner(result))


class UnknownLabelSink(Sink):
    """Warns about each image whose label holds unknown values; bounds their fraction over the run.

    Args:
        pixels_per_image: label pixels of an image scored at the dataset's size (records without
            ``"label_pixels"`` have this many).
        max_fraction: the largest fraction of unknown label pixels a run may rest on
            (:class:`~eval.run.unknown_labels.UnknownLabelsError` above it).
        metrics_path: the run's ``metrics.json`` (named in the refusal).
    """

    def __init__(self, pixels_per_image: int, max_fraction: float, metrics_path: Path):
        self.pixels_per_image = int(pixels_per_image)
        self.max_fraction = float(max_fraction)
        self.metrics_path = metrics_path

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        if len(batch):
            log_unknown(batch.ids, count_unknown(batch.labels), int(batch.labels[0].numel()))

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"unknown_labels": unknown_summary(records, self.pixels_per_image, self.max_fraction,
                                                  self.metrics_path)}

    def finish(self, result: dict[str, Any]) -> None:
        unknown = result["unknown_labels"]
        if unknown["pixels"]:
            log.warning("unknown label values: %d pixels (%.4f%% of the label pixels) in %d image(s), scored as "
                        "ignored (max_unknown_label_fraction=%s)", unknown["pixels"], 100 * unknown["fraction"],
                        len(unknown["images"]), self.max_fraction)


class ProgressSink(Sink):
    """The progress bar (images done, with the first method's running scores on this rank).

    Args:
        bar: the ``tqdm`` bar (disabled where no bar is shown).
        metric: the run's metric sink (:meth:`MetricSink.running`).
    """

    def __init__(self, bar: tqdm, metric: MetricSink):
        self.bar = bar
        self.metric = metric

    def process(self, batch: Batch, predictions: Predictions | None, stats: PerImageStats) -> None:
        self.bar.update(len(batch) + len(batch.skipped))
        running = self.metric.running()
        if running is not None:
            self.bar.set_postfix_str(f"{running['name']} ACC {running['acc'] or 0:.1f} mIoU {running['miou'] or 0:.1f}")

    def close(self) -> None:
        self.bar.close()


def inference_on_dataset(predict: Callable[[Batch], Predictions], loader: Iterable[Batch], metric: MetricSink,
                         sinks: Sequence[Sink], after_batch: Callable[[], None] = lambda: None) -> None:
    """Feed every batch of ``loader`` to ``metric`` and each of ``sinks`` (module docstring), then close the sinks.

    Args:
        predict: batch -> every method's masks (called only for a batch with images).
        after_batch: called once every sink has the batch (the runner's graceful stop check).
    """
    for batch in loader:
        predictions = predict(batch) if len(batch) else None
        stats = metric.score(predictions)
        for sink in sinks:
            sink.process(batch, predictions, stats)
        after_batch()
    for sink in sinks:
        sink.close()
