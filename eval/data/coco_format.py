"""COCO-format annotations -> per-pixel label maps, decoded with pycocotools.

Shared by the two benchmarks whose labels are built from COCO-format JSON: COCO-Object-81
(``instances_val2017.json``) and Context-60 (``trainval_merged.json`` of PASCAL in Detail,
whose API is a fork of the COCO API with the same mask encodings). A ``segmentation`` may
be a list of polygons, an uncompressed RLE (``counts`` a list) or a compressed RLE
(``counts`` a string); :meth:`pycocotools.coco.COCO.annToMask` decodes all three.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from eval.atomic import write_bytes_atomic

__all__ = ["annotation_masks", "coco_from_dataset", "write_label_png"]


def coco_from_dataset(dataset: dict[str, Any]) -> COCO:
    """A pycocotools :class:`COCO` index over an in-memory COCO-format dict.

    ``dataset`` needs ``images`` (``id``, ``height``, ``width``), ``annotations`` (``id``,
    ``image_id``, ``category_id``, ``segmentation``) and ``categories`` (``id``, ``name``).
    The index keeps each image's annotations in file order. pycocotools' progress prints
    are silenced.
    """
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def annotation_masks(coco: COCO, image_id: int) -> list[tuple[dict[str, Any], np.ndarray]]:
    """``(annotation, mask)`` of every annotation of one image, in file order.

    Each mask is a bool array (H, W) of the image's size (``annToMask``).

    Raises:
        ValueError: an RLE's ``size`` differs from the image's (the message names both).
    """
    info = coco.imgs[image_id]
    shape = (int(info["height"]), int(info["width"]))
    out = []
    for ann in coco.imgToAnns.get(image_id, []):
        mask = coco.annToMask(ann).astype(bool)
        if mask.shape != shape:
            raise ValueError(
                f"annotation {ann.get('id')} of image {image_id} decodes to {mask.shape}, "
                f"but the image is {shape}"
            )
        out.append((ann, mask))
    return out


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a uint8 label map (H, W) as a single-channel ("L") PNG, atomically."""
    label = np.asarray(label)
    if label.dtype != np.uint8:
        raise ValueError(f"label for {path} must be uint8, got {label.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())

