"""Run folders as the run explorer reads them: records, provenance, saved masks, images and labels.

A finished run folder (``python -m eval.run``) holds ``metrics.json`` (scores, ``provenance``,
the resolved ``config``) and the per-image records ``per_image*.jsonl`` (every method's
tp / fp / fn per class on every image). From them :class:`RunFolder` gives

* the image table: each method's per-image mIoU (mean IoU over the classes present in the
  image's label or prediction, :func:`eval.stats.analysis.per_image_miou`) and the classes present in
  the label (``tp + fn > 0``), sortable and filterable by class;
* the run's per-class IoU (``metrics.json``) and its provenance banner (random weights,
  synthetic data, partial data, settings other than the paper's; :mod:`eval.run.provenance`);
* an image, its label (through the run's own dataset config, cut and resized with the geometry of
  the run's protocol, :func:`eval.run.build.build_protocol`) and each method's saved mask:
  ``masks/<method>/<id>.png`` (``save_masks=true``) or COCO RLE results (a JSON list of
  :mod:`eval.run.coco_results` records under ``masks/``), coloured by the class each segment is
  matched to (the metric's Hungarian matching).

:func:`compare_runs` lists the per-image differences of two runs of one dataset, sorted, or,
for two runs with no method in common, each run's own methods per image side by side.
Every problem is a :class:`RunError` whose message names the path and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from eval import folder
from eval.folder import FolderError
from eval.folder.layout import METRICS_JSON
from eval.instantiate import build_dataset
from eval.metrics.protocols import ProtocolError
from eval.run.build import build_protocol
from eval.run.provenance import banner, images_note
from eval.run.qualitative import match_to_classes, resize_nearest
from eval.stats.analysis import ImageStats, per_image_miou
from eval.stats.runs import class_names

__all__ = ["ALL_CLASSES", "RunError", "RunFolder", "compare_runs", "matched_colours"]

ALL_CLASSES = "all classes"
IMAGE_COLUMN = "image"
CLASSES_COLUMN = "classes in the label"


class RunError(FolderError):
    """A run folder the explorer cannot show (the message says which path and what to do)."""


class RunFolder(folder.RunFolder):
    """One finished run folder as the explorer shows it (see the module docstring); open it with :meth:`open`.

    The files (metrics.json, records, saved masks) are read by :class:`eval.folder.RunFolder`."""

    error = RunError

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._dataset: Any = None

    # ----------------------------------------------------------------------------------------- facts
    @cached_property
    def methods(self) -> list[str]:
        """Methods in metrics.json order that have per-image records."""
        seen = {m for r in self.records.values() for m in r["methods"]}
        return [m for m in self.metrics["methods"] if m in seen] + sorted(seen - set(self.metrics["methods"]))

    @property
    def num_classes(self) -> int:
        first = next(iter(self.records.values()))["methods"]
        return len(next(iter(first.values()))["tp"])

    @property
    def class_names(self) -> list[str]:
        return class_names(self.dataset, self.num_classes, self.metrics)

    def banner_lines(self) -> tuple[list[str], list[str]]:
        """``(warnings, notes)`` of the run's provenance: the banner (random weights, synthetic data, unknown
        provenance) and partial data; then the other notes (settings other than the paper's, protocols)."""
        warnings = []
        text = banner([self.metrics])
        if text:
            warnings += text.split("; ")
        partial = images_note(self.metrics)
        if partial:
            warnings.append(f"PARTIAL: {partial}")
        notes = [str(n) for n in (self.metrics.get("provenance") or {}).get("notes") or []
                 if n not in ("random-weight backbone", "synthetic data") and not str(n).startswith("partial")]
        return warnings, notes

    # ----------------------------------------------------------------------------------------- table
    def stats(self, method: str, ids: Sequence[str] | None = None) -> ImageStats:
        ids = self.ids if ids is None else ids
        rows = [self.records[i]["methods"].get(method) for i in ids]
        missing = [i for i, s in zip(ids, rows, strict=True) if s is None]
        if missing:
            raise RunError(f"{self.path}: image {missing[0]} has no record of method {method!r}; "
                           "run python -m eval.run again in this folder")
        return ImageStats.from_records(rows)

    def per_image_miou(self) -> dict[str, np.ndarray]:
        """Each method's ``(N,)`` per-image mIoU (x100, NaN where undefined) over :attr:`ids`."""
        return self._per_image_miou

    @cached_property
    def _per_image_miou(self) -> dict[str, np.ndarray]:  # the records never change once opened
        return {m: per_image_miou(self.stats(m)) for m in self.methods}

    def present(self) -> np.ndarray:
        """``(N, C)`` bool: class c is in image i's label (``tp + fn > 0``, the same for every method)."""
        return self._present

    @cached_property
    def _present(self) -> np.ndarray:
        s = self.stats(self.methods[0])
        return (s.tp + s.fn) > 0

    def table(self, class_filter: str | None = None, sort_by: str | None = None,
              descending: bool = True) -> pd.DataFrame:
        """One row per evaluated image: id, classes in its label, each method's per-image mIoU (1 decimal).

        ``class_filter``: a class name (only images whose label holds it) or None / :data:`ALL_CLASSES`.
        ``sort_by``: :data:`IMAGE_COLUMN` or a method name; undefined values (NaN) last either way.
        """
        names = self.class_names
        present = self.present()
        rows = np.arange(len(self.ids))
        if class_filter not in (None, "", ALL_CLASSES):
            if class_filter not in names:
                raise RunError(f"class {class_filter!r} is not a class of {self.dataset}")
            rows = rows[present[:, names.index(class_filter)]]
        ids = self.ids
        frame = pd.DataFrame({
            IMAGE_COLUMN: [ids[i] for i in rows],
            CLASSES_COLUMN: [", ".join(n for n, p in zip(names, present[i], strict=True) if p) for i in rows],
        })
        for method, values in self.per_image_miou().items():
            frame[method] = np.round(values[rows], 1)
        if sort_by not in (None, "", IMAGE_COLUMN):
            if sort_by not in self.methods:
                raise RunError(f"cannot sort by {sort_by!r}: the run's methods are {self.methods}")
            frame = frame.sort_values([sort_by, IMAGE_COLUMN], ascending=[not descending, True], na_position="last",
                                      kind="stable")
        elif sort_by == IMAGE_COLUMN and descending:
            frame = frame.iloc[::-1]
        return frame.reset_index(drop=True)

    def per_image_miou_of(self, image_id: str) -> list[float]:
        """Each method's mIoU (x100) on one image, in :attr:`methods` order (NaN where undefined)."""
        return [float(per_image_miou(self.stats(m, [image_id]))[0]) for m in self.methods]

    def present_of(self, image_id: str) -> np.ndarray:
        """``(C,)`` bool: the classes in one image's label."""
        s = self.stats(self.methods[0], [image_id])
        return (s.tp[0] + s.fn[0]) > 0

    def per_class_iou(self) -> dict[str, list[float | None]]:
        """Each method's dataset-level per-class IoU (x100) from ``metrics.json``."""
        return {m: list(self.metrics["methods"][m].get("iou") or []) for m in self.methods
                if m in self.metrics["methods"]}

    # ---------------------------------------------------------------------------------- image and label
    @property
    def protocol(self) -> str:
        """The protocol whose geometry cut the run's images and labels (``run.geometry`` of a re-scored run)."""
        info = self.metrics.get("run") or {}
        return str(info.get("geometry") or info.get("protocol") or "diffseg")

    def dataset_object(self) -> Any:
        """The run's dataset, built from ``metrics.json["config"]`` (every id, no limit or shard), with the
        geometry of the run's protocol (as the runner gives it, :func:`eval.run.build.build_protocol`)."""
        if self._dataset is None:
            config = self.metrics.get("config") or {}
            node = config.get("dataset")
            if not isinstance(node, dict) or not ("_target_" in node or isinstance(node.get("dataset"), dict)):
                raise RunError(f"{self.path / METRICS_JSON}: no dataset config recorded, so the images cannot be "
                               "found")
            node = {**node, "limit": None, "shard": None}
            if isinstance(node.get("dataset"), dict):  # a config saved before the dataset node was flattened
                node["dataset"] = {**node["dataset"], "limit": None, "shard": None}
            try:  # the crop and resizes the run evaluated with (the source run's, for a re-scored run)
                geometry = build_protocol({**config, "dataset": node}).geometry
            except ProtocolError as exc:
                raise RunError(f"{self.path / METRICS_JSON}: the run's protocol cannot be applied ({exc})") from exc
            try:
                dataset = build_dataset(node, geometry)
            except (OSError, ValueError, RuntimeError) as exc:
                raise RunError(f"the images of {self.path} are not available: {exc} (start the explorer from "
                               "the folder the run was started in, or prepare the dataset)") from exc
            self._dataset = dataset
        return self._dataset

    def image_and_label(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 (S, S, 3) image, int64 (S, S) label)`` as the run evaluated them (-1 = ignored pixels)."""
        dataset = self.dataset_object()
        if image_id not in set(getattr(dataset, "all_ids", dataset.ids)):
            raise RunError(f"image {image_id} is not in the dataset at {getattr(dataset, 'root', '?')}")
        saved = dataset.ids
        try:
            dataset.ids = [image_id]
            image, label, _ = dataset[0]
        except (OSError, ValueError) as exc:
            raise RunError(f"image {image_id} of {getattr(dataset, 'root', '?')} cannot be read: {exc}") from exc
        finally:
            dataset.ids = saved
        label = label.numpy()
        pixels = ((image.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        if pixels.shape[:2] != label.shape:
            pixels = resize_nearest(pixels, label.shape)
        return pixels, label


def matched_colours(mask: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Segment ids relabelled for display (:func:`eval.run.qualitative.match_to_classes`: a segment the
    metric matched to a class takes its id, the others ids from ``num_classes`` up), with ``mask``
    resized (nearest) to the label's shape."""
    return match_to_classes(resize_nearest(mask, label.shape), label, num_classes)


def compare_runs(a: RunFolder, b: RunFolder) -> tuple[pd.DataFrame, str]:
    """Per-image mIoU of two runs of one dataset on the images both evaluated.

    With methods in common: those methods' per-image mIoU in A and B, sorted by B - A (columns
    image, method, A, B, B - A; the largest drops first). With none in common (a run and its
    ablation, two runs of different methods): one row per image, each run's own methods side by
    side (columns image, ``A: <method>`` ..., ``B: <method>`` ...). Returns the table and a note on
    what it covers. Raises :class:`RunError` for runs of different datasets or with no image in common.
    """
    if a.dataset != b.dataset:
        raise RunError(f"{a.path} is a {a.dataset} run and {b.path} a {b.dataset} run: per-image differences "
                       "need runs of one dataset")
    ids = sorted(set(a.ids) & set(b.ids))
    if not ids:
        raise RunError(f"{a.path} and {b.path} evaluated no image in common")
    methods = [m for m in a.methods if m in b.methods]
    if methods:
        rows = []
        for method in methods:
            va, vb = per_image_miou(a.stats(method, ids)), per_image_miou(b.stats(method, ids))
            for image_id, x, y in zip(ids, va, vb, strict=True):
                rows.append({IMAGE_COLUMN: image_id, "method": method, f"A: {a.name}": round(float(x), 1),
                             f"B: {b.name}": round(float(y), 1), "B - A": round(float(y - x), 1)})
        frame = pd.DataFrame(rows).sort_values(["B - A", "method", IMAGE_COLUMN], na_position="last",
                                               kind="stable")
        note = f"{len(ids)} images evaluated by both runs, methods {', '.join(methods)}"
    else:
        frame = pd.DataFrame({IMAGE_COLUMN: ids})
        for tag, run in (("A", a), ("B", b)):
            for method in run.methods:
                frame[f"{tag}: {method}"] = np.round(per_image_miou(run.stats(method, ids)), 1)
        note = (f"{len(ids)} images evaluated by both runs; no method in common, so each run's own methods per "
                f"image: A ({a.name}): {', '.join(a.methods)}; B ({b.name}): {', '.join(b.methods)}")
    dropped = len(set(a.ids) ^ set(b.ids))
    if dropped:
        note += f" ({dropped} images evaluated by only one run left out)"
    return frame.reset_index(drop=True), note
