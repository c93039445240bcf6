"""A finished run folder as every reader sees it: :class:`RunFolder`.

The comparison (:class:`eval.stats.runs.Run`), the explorer (:class:`eval.explore.runs.RunFolder`),
tables, re-scoring and merging read a run folder through this class (or the file modules of
:mod:`eval.folder` it uses): its ``metrics.json``, its evaluated per-image records, its ``run.json``
and its saved masks. A reader that raises its own error type sets :attr:`RunFolder.error`.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from diffseg.masks import MaskFileError, read_mask_png
from eval.folder.coco_results import CocoResults
from eval.folder.errors import FolderError, RunMismatchError
from eval.folder.layout import (
    MASK_DIR,
    METRICS_JSON,
    RECORDS_FILE,
    RESULT_FILES,
    RUN_JSON,
    is_records_file,
    mask_dir,
    mask_png_path,
    method_stem,
)
from eval.folder.metrics_json import metrics_path, read_metrics
from eval.folder.records import load_run_records
from eval.folder.run_json import read_run_json, run_json_path

__all__ = ["RunFolder"]


class RunFolder:
    """A run folder ``RunFolder(path)``: each file is read when first asked for (and kept).

    :attr:`metrics` (``metrics.json``), :attr:`identity` (``run.json``, {} without one),
    :attr:`all_records` (every per-image record, skipped ones too, by image id), :attr:`records`
    (the evaluated ones) and the saved masks. :meth:`open` is the checked entry of the readers of a
    finished run (comparison, explorer): it raises :attr:`error` naming what is missing and what to do.
    """

    error: ClassVar[type[Exception]] = FolderError

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._coco: dict[str, CocoResults] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @classmethod
    def open(cls, path: str | os.PathLike) -> Any:
        """A finished run folder (metrics.json with methods, evaluated records), checked now."""
        run = cls(path)
        folder = run.path
        if not folder.is_dir():
            raise cls.error(f"{folder}: no such run folder; give a folder written by python -m eval.run "
                            f"(it holds {METRICS_JSON} and {RECORDS_FILE})")
        source = metrics_path(folder)
        if not source.is_file():
            raise cls.error(f"{folder}: no {METRICS_JSON}, so the run has not finished; run python -m eval.run "
                            f"again with hydra.run.dir={folder} to finish it")
        try:
            metrics = run.metrics
        except (OSError, FolderError) as exc:
            raise cls.error(f"{source}: unreadable ({exc}); run python -m eval.run again in {folder}") from exc
        if not isinstance(metrics.get("methods"), dict):
            raise cls.error(f"{source}: not a {METRICS_JSON} of python -m eval.run (no 'methods')")
        if not run.records:
            raise cls.error(f"{folder}: no per-image records ({RECORDS_FILE}) of an evaluated image; this run "
                            "cannot be compared or shown: run python -m eval.run again in this folder")
        return run

    # ------------------------------------------------------------------------------------------ files
    @cached_property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` (FileNotFoundError without one, :class:`FolderError` when it is not a JSON object)."""
        return read_metrics(metrics_path(self.path))

    @cached_property
    def identity(self) -> dict[str, Any]:
        """The folder's ``run.json`` content ({} for a folder without one)."""
        if not run_json_path(self.path).is_file():
            return {}
        try:
            return read_run_json(self.path)
        except RunMismatchError as exc:
            raise self.error(f"{self.path}: {RUN_JSON} is unreadable: {exc}") from exc

    @cached_property
    def all_records(self) -> dict[str, dict[str, Any]]:
        """Every per-image record (every rank's file; skipped images too) by image id."""
        return load_run_records(self.path)

    @cached_property
    def records(self) -> dict[str, dict[str, Any]]:
        """The records of evaluated images by image id."""
        return {i: r for i, r in self.all_records.items() if isinstance(r.get("methods"), dict)}

    def result_files(self) -> list[str]:
        """Names of the result files the folder holds (metrics.json, run.json, per-image records, masks)."""
        if not self.path.is_dir():
            return []
        return sorted({p.name for p in self.path.iterdir()
                       if p.name in RESULT_FILES or p.name == MASK_DIR or is_records_file(p.name)})

    # ------------------------------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dataset(self) -> str:
        return str((self.metrics.get("run") or {}).get("dataset", "?"))

    @cached_property
    def ids(self) -> list[str]:
        """The evaluated image ids, sorted."""
        return sorted(self.records)

    @property
    def settings(self) -> dict[str, Any] | None:
        """``{"settings", "data"}`` of the folder's ``run.json`` (what its per-image results depend on), or None."""
        identity = self.identity
        return {"settings": identity["settings"], "data": identity.get("data")} if "settings" in identity else None

    def provenance(self) -> dict[str, Any]:
        """The run's provenance record; for an older metrics.json one derived from ``run.demo``."""
        prov = self.metrics.get("provenance")
        if isinstance(prov, dict):
            return prov
        demo = bool((self.metrics.get("run") or {}).get("demo"))
        notes = ["random-weight backbone", "synthetic data"] if demo else []
        return {"fingerprint": None, "random_weights": demo, "synthetic_data": demo, "partial": None,
                "notes": notes + [f"no provenance record in {METRICS_JSON} (older run); derived from run.demo"]}

    def marks(self) -> list[str]:
        """Short marks for method labels: random weights, synthetic data, partial."""
        prov = self.provenance()
        keys = (("random_weights", "random weights"), ("synthetic_data", "synthetic data"), ("partial", "partial"))
        return [mark for key, mark in keys if prov.get(key)]

    # ------------------------------------------------------------------------------------------ masks
    def _method_names(self) -> list[str]:
        names = list(self.metrics.get("methods") or {})
        return names + sorted({m for r in self.records.values() for m in r["methods"]} - set(names))

    def coco_results(self) -> dict[str, CocoResults]:
        """COCO RLE results under ``masks/`` by method: ``masks/<method>.json`` or ``masks/<method>/*.json``."""
        if self._coco is None:
            self._coco = {}
            slugs = {method_stem(m): m for m in self._method_names()}
            for path in sorted(mask_dir(self.path).rglob("*.json")):
                method = slugs.get(path.stem) or slugs.get(path.parent.name)
                if method is None or method in self._coco:
                    continue
                try:
                    self._coco[method] = CocoResults.load(path)
                except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
                    raise self.error(f"{path}: not a readable COCO results file ({exc})") from exc
        return self._coco

    def mask_format(self) -> str | None:
        """``"PNG"``, ``"COCO RLE"`` or None when the run saved no masks."""
        if any(mask_dir(self.path, m).is_dir() and any(mask_dir(self.path, m).glob("*.png"))
               for m in self._method_names()):
            return "PNG"
        if mask_dir(self.path).is_dir() and self.coco_results():
            return "COCO RLE"
        return None

    def mask(self, method: str, image_id: str) -> np.ndarray | None:
        """The saved ``(H, W)`` segment-id mask of ``method`` on ``image_id``, or None when not saved."""
        png = mask_png_path(self.path, method, image_id)
        if png.is_file():
            try:
                return read_mask_png(png)
            except MaskFileError as exc:
                raise self.error(f"{png}: unreadable mask ({exc})") from exc
        results = self.coco_results().get(method)
        if results is not None and image_id in results.image_ids:
            try:
                return results.mask(image_id)
            except ValueError as exc:
                raise self.error(f"{mask_dir(self.path)}: the COCO RLE mask of {image_id} is broken ({exc})") from exc
        return None
