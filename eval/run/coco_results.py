"""Predicted masks as a COCO results JSON: one RLE per segment, encoded and decoded with pycocotools.

A results file holds the masks of one method for a whole run, as a JSON list of records::

    {"image_id": "000000000139",          # the dataset's image id string
     "segment_id": 3,                     # the id the mask gives the segment
     "category_id": 12,                   # the class the segment was matched to, null if none
     "segmentation": {"size": [H, W], "counts": "..."}}   # pycocotools.mask.encode, as text

Decoding the records of an image (:func:`records_to_mask`) gives back the exact
(H, W) segment-id mask, so ``masks/<method>/<id>.png`` can be rebuilt from the JSON
(:func:`write_pngs`; the command is ``python -m eval.report.coco_results results.json --png-dir out/``).
For 2175 images and a few methods this is a few MB instead of thousands of files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eval.atomic import write_bytes_atomic
from eval.folder.coco_results import CocoResults, mask_to_records, records_to_mask
from eval.metrics import confusion_histogram, hungarian_match

__all__ = [
    "CocoResults",
    "mask_to_records",
    "matched_categories",
    "records_to_mask",
    "segment_categories",
    "write_pngs",
]


def segment_categories(match: Sequence[int], segment_ids: Iterable[int]) -> dict[int, int | None]:
    """``{segment_id: class}`` from a matching (``match[c]`` = the column class c got).

    A segment no class was matched to maps to ``None``.
    """
    by_column = {int(column): c for c, column in enumerate(match)}
    return {int(s): by_column.get(int(s)) for s in segment_ids}


def matched_categories(pred: Any, label: Any, num_classes: int) -> dict[int, int | None]:
    """The paper protocol's per-image Hungarian matching as ``{segment_id: class or None}``.

    ``pred`` (H, W) segment ids, ``label`` (H, W) classes (values outside
    ``[0, num_classes)`` ignored). A class is matched to a column even when it is absent
    from the image (see :mod:`eval.metrics`), so such a segment gets that class too.
    """
    pred_np = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred)
    match = hungarian_match(confusion_histogram(pred_np, label, num_classes=num_classes))
    return segment_categories(match, np.unique(pred_np).tolist())


def write_pngs(results: str | os.PathLike | CocoResults, out_dir: str | os.PathLike) -> list[Path]:
    """Decode every image of a results file to ``out_dir/<image id>.png``.

    8-bit PNGs, or 16-bit when a segment id exceeds 255, as the runner's ``save_masks``
    writes them.
    """
    results = results if isinstance(results, CocoResults) else CocoResults.load(results)
    out_dir = Path(out_dir)
    written = []
    for image_id in results.image_ids:
        mask = results.mask(image_id)
        buffer = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(buffer, format="PNG")
        written.append(write_bytes_atomic(out_dir / f"{image_id.replace('/', '_')}.png", buffer.getvalue()))
    return written
