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
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from eval.atomic import write_bytes_atomic, write_text_atomic
from eval.metrics import confusion_histogram, hungarian_match

__all__ = [
    "CocoResults",
    "mask_to_records",
    "matched_categories",
    "records_to_mask",
    "segment_categories",
    "write_pngs",
]


def mask_to_records(
    mask: Any, image_id: str, categories: Mapping[int, int | None] | None = None
) -> list[dict[str, Any]]:
    """One COCO results record per segment id present in ``mask``, in increasing id order.

    Args:
        mask: integer segment ids, shape (H, W), non-negative (numpy or torch).
        image_id: the dataset's id of the image.
        categories: ``{segment_id: class or None}``; segments not in it get ``None``.

    Raises:
        ValueError: ``mask`` is not 2-D or holds negative ids.
    """
    mask = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
    if mask.ndim != 2:
        raise ValueError(f"mask of image {image_id} must be (H, W), got shape {mask.shape}")
    if mask.size and int(mask.min()) < 0:
        raise ValueError(f"mask of image {image_id} has negative segment ids")
    segments = np.unique(mask).tolist()
    if not segments:
        return []
    stack = np.asfortranarray(np.stack([mask == s for s in segments], axis=2).astype(np.uint8))
    rles = mask_utils.encode(stack)
    categories = categories or {}
    records = []
    for segment, rle in zip(segments, rles, strict=True):
        category = categories.get(int(segment))
        records.append({
            "image_id": str(image_id),
            "segment_id": int(segment),
            "category_id": None if category is None else int(category),
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })  # fmt: skip
    return records


def records_to_mask(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The int64 segment-id mask (H, W) of one image's records.

    Raises:
        ValueError: no records, records of several images or sizes, overlapping
            segments, or pixels no segment covers (the message names the image).
    """
    if not records:
        raise ValueError("no records to decode")
    image_ids = {str(r["image_id"]) for r in records}
    if len(image_ids) != 1:
        raise ValueError(f"records of several images: {sorted(image_ids)[:3]}")
    image_id = image_ids.pop()
    sizes = {tuple(r["segmentation"]["size"]) for r in records}
    if len(sizes) != 1:
        raise ValueError(f"image {image_id}: records of different sizes {sorted(sizes)}")
    rles = [{"size": list(r["segmentation"]["size"]), "counts": r["segmentation"]["counts"]} for r in records]
    binary = mask_utils.decode(rles).astype(bool)  # (H, W, N)
    coverage = binary.sum(axis=2)
    if (coverage > 1).any():
        raise ValueError(f"image {image_id}: segments overlap on {int((coverage > 1).sum())} pixels")
    if (coverage == 0).any():
        raise ValueError(f"image {image_id}: {int((coverage == 0).sum())} pixels belong to no segment")
    ids = np.array([int(r["segment_id"]) for r in records], dtype=np.int64)
    return ids[binary.argmax(axis=2)]


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


class CocoResults:
    """The records of one method, keyed by image (adding an image again replaces it)."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()):
        self._by_image: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            self._by_image.setdefault(str(record["image_id"]), []).append(dict(record))

    def __len__(self) -> int:
        return len(self._by_image)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in the order they were added."""
        return list(self._by_image)

    def add(self, image_id: str, mask: Any, categories: Mapping[int, int | None] | None = None) -> None:
        """Encode a (H, W) mask (see :func:`mask_to_records`)."""
        self._by_image[str(image_id)] = mask_to_records(mask, image_id, categories)

    def records(self) -> list[dict[str, Any]]:
        """All records, image by image, segments in increasing id order."""
        return [r for recs in self._by_image.values() for r in recs]

    def mask(self, image_id: str) -> np.ndarray:
        """The decoded (H, W) int64 mask of one image (``KeyError`` when absent)."""
        return records_to_mask(self._by_image[str(image_id)])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON list (compact, atomic)."""
        return write_text_atomic(path, json.dumps(self.records(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CocoResults:
        """Read a results JSON written by :meth:`save` (or any list of such records)."""
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, list):
            raise ValueError(f"{path} is not a COCO results file (a JSON list of records)")
        for key in ("image_id", "segment_id", "segmentation"):
            if data and key not in data[0]:
                raise ValueError(f"{path}: records lack {key!r}")
        return cls(data)


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
