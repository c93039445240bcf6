"""Saved masks of a run folder (``save_masks``): PNG files or one COCO results JSON per method.

* ``save_masks=true`` or ``png``: ``masks/<method>/<image id>.png`` (8-bit, 16-bit above 255 ids),
  one file per image, so ranks and resumed runs never collide.
* ``save_masks=coco``: ``masks/<method>.json``, a COCO results list (:mod:`eval.folder.coco_results`).
  Each batch is appended to ``masks/<method>[.rank<k>].coco.jsonl``, one line per image
  (``{"image_id": ..., "records": [...]}``, fsynced) before its records are appended, and the JSON
  is rebuilt from those parts when the run finishes (:func:`gather_coco_parts`), holding exactly
  the images ``metrics.json`` lists. A run stopped between the two appends leaves mask lines of
  images without a record; a resumed run first drops them (:func:`prune_mask_parts`).

The writer that turns a batch of tensors into these files is :class:`eval.run.mask_files.MaskWriter`;
everything here reads and writes the files themselves (numpy arrays, no torch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffseg.masks import read_mask_png, write_mask_png
from eval.atomic import write_text_atomic
from eval.folder.coco_results import CocoResults
from eval.folder.layout import (
    coco_json_path,
    coco_part_glob,
    coco_part_path,
    is_coco_mask_file,
    is_coco_part_of,
    mask_dir,
    mask_png_name,
    mask_png_path,
)

__all__ = ["append_coco_part", "gather_coco_parts", "load_saved_masks", "mask_format", "prune_mask_parts",
           "read_saved_mask", "saved_mask_format", "write_png_mask"]

_FORMATS = {False: None, None: None, "none": None, "false": None, True: "png", "true": "png", "png": "png",
            "coco": "coco"}


def mask_format(value: Any) -> str | None:
    """``cfg.save_masks`` as None (no masks), ``"png"`` or ``"coco"``; anything else raises ValueError."""
    key = value.lower() if isinstance(value, str) else value
    if key not in _FORMATS:
        raise ValueError(f"save_masks must be false, true/png or coco, got {value!r}")
    return _FORMATS[key]



def saved_mask_format(run_dir: str | os.PathLike) -> str | None:
    """The format of the masks a run folder holds (``"coco"``, ``"png"``), or None when it holds none."""
    folder = mask_dir(run_dir)
    if not folder.is_dir():
        return None
    entries = list(folder.iterdir())
    if any(p.is_file() and is_coco_mask_file(p.name) for p in entries):
        return "coco"
    return "png" if any(p.is_dir() for p in entries) else None


def write_png_mask(run_dir: str | os.PathLike, method: str, image_id: str, mask: np.ndarray) -> Path:
    """Write one ``(H, W)`` mask as ``masks/<method>/<image id>.png`` (atomic)."""
    path = mask_png_path(run_dir, method, image_id)
    write_mask_png(path, mask)
    return path


def append_coco_part(run_dir: str | os.PathLike, method: str, lines: list[dict[str, Any]],
                     rank: int | None = None) -> Path:
    """Append ``{"image_id", "records"}`` lines to this process's COCO part file (one write, fsynced)."""
    path = coco_part_path(run_dir, method, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
    return path


def gather_coco_parts(run_dir: str | os.PathLike, method: str, image_ids: list[str]) -> Path:
    """Write ``masks/<method>.json`` for exactly ``image_ids`` from every part file of ``method`` (all ranks).

    A later line for an image wins; a torn last line (a killed run) is skipped. Raises RuntimeError
    when an image has no line in any part.
    """
    by_image: dict[str, list[dict[str, Any]]] = {}
    for part in sorted(mask_dir(run_dir).glob(coco_part_glob(method))):
        if not is_coco_part_of(part.name, method):
            continue  # another method whose name starts with this one
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run: that batch is evaluated again
            by_image[str(entry["image_id"])] = entry["records"]
    missing = [i for i in image_ids if i not in by_image]
    if missing:
        raise RuntimeError(f"{mask_dir(run_dir)}: no COCO masks of {method} for {len(missing)} evaluated "
                           f"image(s), first {missing[0]}")
    return CocoResults(r for i in image_ids for r in by_image[i]).save(coco_json_path(run_dir, method))


def prune_mask_parts(run_dir: str | os.PathLike, records: dict[str, dict[str, Any]]) -> list[Path]:
    """Drop the COCO part lines of images without an evaluated record (and torn lines); returns the files rewritten.

    Called when a run claims its folder, before any rank appends: a line of an image the
    records do not hold was written by a run stopped before its records were appended, and
    the image is evaluated again.
    """
    rewritten = []
    for part in sorted(mask_dir(run_dir).glob(coco_part_glob())):
        text = part.read_text(encoding="utf-8")
        kept = []
        for line in text.splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if line.endswith("\n") and "methods" in records.get(str(entry.get("image_id")), {}):
                kept.append(line)
        if "".join(kept) != text:
            write_text_atomic(part, "".join(kept))
            rewritten.append(part)
    return rewritten


def load_saved_masks(run_dir: str | os.PathLike, method: str) -> tuple[str, Any]:
    """Where a run keeps one method's masks: ``("coco", CocoResults)`` or ``("png", folder)``.

    Raises:
        FileNotFoundError: the run saved no masks of ``method`` (it ran without ``save_masks``).
    """
    coco = coco_json_path(run_dir, method)
    if coco.is_file():
        return "coco", CocoResults.load(coco)
    png = mask_dir(run_dir, method)
    if png.is_dir():
        return "png", png
    raise FileNotFoundError(f"{run_dir}: no saved masks of {method} ({coco} or {png}/); "
                            "re-run it with save_masks=png or save_masks=coco")


def read_saved_mask(kind: str, source: Any, image_id: str) -> np.ndarray:
    """The (H, W) int64 mask of one image from :func:`load_saved_masks`' result."""
    if kind == "coco":
        return source.mask(image_id)
    return read_mask_png(Path(source) / mask_png_name(image_id)).astype(np.int64)
