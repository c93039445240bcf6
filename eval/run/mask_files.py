"""The runner's saved masks (``save_masks``): which format, and the writer of each batch.

The files (``masks/<method>/<id>.png``, or ``masks/<method>.json`` built from the per-rank part
files ``masks/<method>[.rank<k>].coco.jsonl``) are named, written and read back by
:mod:`eval.folder.masks` (format and resume rules there). For COCO, each segment's
``category_id`` is the class the run's protocol matched it to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from eval.folder.coco_results import mask_to_records
from eval.folder.layout import MASK_DIR, method_stem
from eval.folder.masks import (
    append_coco_part,
    gather_coco_parts,
    load_saved_masks,
    mask_format,
    prune_mask_parts,
    read_saved_mask,
    saved_mask_format,
    write_png_mask,
)
from eval.metrics import diffcut_match

__all__ = ["MASK_DIR", "MaskWriter", "load_saved_masks", "mask_format", "method_stem", "prune_mask_parts",
           "read_saved_mask", "saved_mask_format"]

class MaskWriter:
    """Writes the masks of every batch in the run's format (:mod:`eval.folder.masks`).

    Args:
        out_dir: the run folder.
        fmt: None, ``"png"`` or ``"coco"`` (:func:`mask_format`).
        num_classes, background, protocol: how ``category_id`` is matched (COCO only).
        rank: this process's rank in a data-parallel run (its own COCO part files), None for one process.
    """

    def __init__(self, out_dir: str | os.PathLike, fmt: str | None, num_classes: int,
                 background: int | None = None, protocol: str = "diffseg", rank: int | None = None):
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.num_classes = num_classes
        self.background = background if protocol == "diffcut" else None
        self.rank = rank

    def add(self, masks: dict[str, torch.Tensor], labels: torch.Tensor, ids: list[str]) -> None:
        """Save ``(B, H, W)`` masks of each method for images ``ids``; ``labels`` (B, H, W) as scored."""
        if self.fmt is None:
            return
        labels_np = labels.cpu().numpy()
        for name, batch_masks in masks.items():
            arrays = batch_masks.cpu().numpy()
            if self.fmt == "png":
                for mask, image_id in zip(arrays, ids, strict=True):
                    write_png_mask(self.out_dir, name, image_id, mask)
                continue
            lines = []
            for mask, label, image_id in zip(arrays, labels_np, ids, strict=True):
                categories = diffcut_match(mask, label, self.num_classes, self.background).categories
                lines.append({"image_id": image_id, "records": mask_to_records(mask, image_id, categories)})
            append_coco_part(self.out_dir, name, lines, self.rank)

    def finish(self, methods: Iterable[str], image_ids: Iterable[str]) -> list[Path]:
        """COCO only: write ``masks/<method>.json`` for exactly ``image_ids`` from every part file."""
        if self.fmt != "coco":
            return []
        keep = list(image_ids)
        return [gather_coco_parts(self.out_dir, name, keep) for name in methods]
