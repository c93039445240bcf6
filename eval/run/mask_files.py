"""The runner's saved masks (``save_masks``): PNG files or one COCO results JSON per method.

* ``save_masks=true`` or ``png``: ``masks/<method>/<image id>.png`` (8-bit, 16-bit above 255 ids),
  one file per image, so ranks and resumed runs never collide.
* ``save_masks=coco``: ``masks/<method>.json``, a COCO results list (:mod:`eval.run.coco_results`:
  one pycocotools RLE per segment, ``category_id`` = the class the run's protocol matched it
  to). Each batch is appended to ``masks/<method>[.rank<k>].coco.jsonl``, one line per image
  (fsynced) before its records are appended, and the JSON is rebuilt from those parts when the
  run finishes, holding exactly the images ``metrics.json`` lists. Decoding it gives the PNG
  masks exactly. A run stopped between the two appends leaves mask lines of images without a
  record; a resumed run first drops them (:func:`prune_mask_parts`), so every part line it
  reads belongs to the evaluation its image's record holds, whichever rank file it is in.

Both are read back by :func:`load_saved_masks` (:mod:`eval.rescore`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffseg.masks import read_mask_png, write_mask_png
from eval.atomic import write_text_atomic
from eval.metrics import diffcut_match
from eval.run.coco_results import CocoResults, mask_to_records

__all__ = ["MASK_DIR", "MaskWriter", "load_saved_masks", "mask_format", "method_stem", "prune_mask_parts",
           "saved_mask_format"]

MASK_DIR = "masks"
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
    folder = Path(run_dir) / MASK_DIR
    if not folder.is_dir():
        return None
    entries = list(folder.iterdir())
    if any(p.is_file() and p.name.endswith((".coco.jsonl", ".json")) for p in entries):
        return "coco"
    return "png" if any(p.is_dir() for p in entries) else None


def method_stem(name: str) -> str:
    """File-system name of a method (``/`` replaced)."""
    return name.replace("/", "_")


class MaskWriter:
    """Writes the masks of every batch in the run's format (module docstring).

    Args:
        out_dir: the run folder.
        fmt: None, ``"png"`` or ``"coco"`` (:func:`mask_format`).
        num_classes, background, protocol: how ``category_id`` is matched (COCO only).
        part: suffix of this process's COCO part files (``""`` or ``".rank1"``).
    """

    def __init__(self, out_dir: str | os.PathLike, fmt: str | None, num_classes: int,
                 background: int | None = None, protocol: str = "diffseg", part: str = ""):
        self.folder = Path(out_dir) / MASK_DIR
        self.fmt = fmt
        self.num_classes = num_classes
        self.background = background if protocol == "diffcut" else None
        self.part = part

    def add(self, masks: dict[str, torch.Tensor], labels: torch.Tensor, ids: list[str]) -> None:
        """Save ``(B, H, W)`` masks of each method for images ``ids``; ``labels`` (B, H, W) as scored."""
        if self.fmt is None:
            return
        labels_np = labels.cpu().numpy()
        for name, batch_masks in masks.items():
            arrays = batch_masks.cpu().numpy()
            if self.fmt == "png":
                for mask, image_id in zip(arrays, ids, strict=True):
                    write_mask_png(self.folder / method_stem(name) / f"{image_id.replace('/', '_')}.png", mask)
                continue
            lines = []
            for mask, label, image_id in zip(arrays, labels_np, ids, strict=True):
                categories = diffcut_match(mask, label, self.num_classes, self.background).categories
                lines.append({"image_id": image_id, "records": mask_to_records(mask, image_id, categories)})
            self._append(self.folder / f"{method_stem(name)}{self.part}.coco.jsonl", lines)

    @staticmethod
    def _append(path: Path, lines: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def finish(self, methods: Iterable[str], image_ids: Iterable[str]) -> list[Path]:
        """COCO only: write ``masks/<method>.json`` for exactly ``image_ids`` from every part file."""
        if self.fmt != "coco":
            return []
        keep = list(image_ids)
        written = []
        for name in methods:
            by_image: dict[str, list[dict[str, Any]]] = {}
            for part in sorted(self.folder.glob(f"{method_stem(name)}*.coco.jsonl")):
                if not part.name[len(method_stem(name)):].startswith((".rank", ".coco")):
                    continue  # another method whose name starts with this one
                for line in part.read_text(encoding="utf-8").splitlines():
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line of a killed run: that batch is evaluated again
                    by_image[str(entry["image_id"])] = entry["records"]  # a later line for an image wins
            missing = [i for i in keep if i not in by_image]
            if missing:
                raise RuntimeError(f"{self.folder}: no COCO masks of {name} for {len(missing)} evaluated "
                                   f"image(s), first {missing[0]}")
            results = CocoResults(r for i in keep for r in by_image[i])
            written.append(results.save(self.folder / f"{method_stem(name)}.json"))
        return written


def prune_mask_parts(run_dir: str | os.PathLike, records: dict[str, dict[str, Any]]) -> list[Path]:
    """Drop the COCO part lines of images without an evaluated record (and torn lines); returns the files rewritten.

    Called when a run claims its folder, before any rank appends: a line of an image the
    records do not hold was written by a run stopped before its records were appended, and
    the image is evaluated again.
    """
    rewritten = []
    for part in sorted((Path(run_dir) / MASK_DIR).glob("*.coco.jsonl")):
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
    folder = Path(run_dir) / MASK_DIR
    coco = folder / f"{method_stem(method)}.json"
    if coco.is_file():
        return "coco", CocoResults.load(coco)
    png = folder / method_stem(method)
    if png.is_dir():
        return "png", png
    raise FileNotFoundError(f"{run_dir}: no saved masks of {method} ({coco} or {png}/); "
                            "re-run it with save_masks=png or save_masks=coco")


def read_saved_mask(kind: str, source: Any, image_id: str) -> np.ndarray:
    """The (H, W) int64 mask of one image from :func:`load_saved_masks`' result."""
    if kind == "coco":
        return source.mask(image_id)
    return read_mask_png(Path(source) / f"{image_id.replace('/', '_')}.png").astype(np.int64)
