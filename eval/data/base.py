"""Shared item logic of the segmentation datasets (COCO-Stuff-27, Cityscapes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from diffseg.preprocess import load_image, load_label, preprocess_image, preprocess_label
from eval.data.loader import DatasetNotFoundError, UnreadableItemError, select_ids

__all__ = ["UNKNOWN_LABEL", "LabelledImages"]

UNKNOWN_LABEL = -2
"""Label value of a pixel whose file value is neither a class nor an ignore value of the dataset.

Scored as ignored (like -1), but counted: the runner reports it per image and fails a run
above ``max_unknown_label_fraction``.
"""


class LabelledImages(Dataset):
    """Items ``(image, label, image_id)`` of a folder of images with per-pixel label files.

    Subclasses set ``root``, ``size``, ``ids`` (the ids to evaluate, in order), ``_lut``
    (an int64 tensor mapping raw label values 0..255 to class ids, -1 = ignore), optionally
    ``image_size``, and implement ``image_path(id)`` / ``label_path(id)``. ``ignore_values``
    are the file values the dataset defines as "not labelled" (255 unless a subclass says
    otherwise); any other value the LUT does not map to a class is *unknown* (a recoded or
    corrupt label) and becomes :data:`UNKNOWN_LABEL`. ``colour_map`` (``{(r, g, b): value}``)
    is set by a dataset whose labels are colour images; without one a colour label is refused
    (:func:`diffseg.preprocess.load_label`).

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear),
      the backbone's input size (``image_size``; None = ``size``);
    * label: int64 (size, size), class ids, -1 = ignore, -2 = unknown value (centre crop +
      nearest-exact), at the evaluation resolution ``size`` whatever the backbone's input size.
    """

    root: Path
    size: int
    ids: list[str]
    _lut: torch.Tensor
    image_size: int | None = None
    geometry: Any = None  # another protocol's crop and resize (eval.protocols.apply_protocol); None = the above
    ignore_values: tuple[int, ...] = (255,)
    colour_map: dict[tuple[int, int, int], int] | None = None

    def _open_root(self, root: str | os.PathLike, size: int, image_size: int | None, title: str, hint: str) -> None:
        """Set ``root``, ``size`` and ``image_size``; a missing root names its path and ``hint`` (how to get it)."""
        self.root = Path(root)
        self.size = int(size)
        self.image_size = int(image_size) if image_size else None
        self._hint = hint
        self._require(self.root, f"{title} root")

    def _require(self, path: Path, what: str) -> Path:
        """``path`` when it exists; else :class:`DatasetNotFoundError` naming it and how to prepare it."""
        if not path.exists():
            raise DatasetNotFoundError(f"{what} not found: {path}; {self._hint}")
        return path

    def _select(self, all_ids: Sequence[str], limit: int | None, shard, lut) -> None:
        """Keep the full id list, the ids to evaluate (limit, then shard) and the label map (a numpy LUT).

        An id listed twice is refused (:class:`eval.data.loader.DuplicateIdsError`, naming the list file).
        """
        self.all_ids = list(all_ids)
        source = getattr(self, "list_path", None) or self.root
        self.ids = select_ids(self.all_ids, limit=limit, shard=shard, source=source)
        self._lut = torch.from_numpy(lut)
        known = self._lut >= 0
        known[list(self.ignore_values)] = True
        self._known = known

    @property
    def input_size(self) -> int:
        """Side of the pre-processed images: ``image_size``, or ``size`` when that is not set."""
        return int(self.image_size) if self.image_size else int(self.size)

    def image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def label_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        image_id = self.ids[index]
        image = load_image(self.image_path(image_id))
        raw = load_label(self.label_path(image_id), self.colour_map)
        if raw.shape != image.shape[-2:]:
            raise UnreadableItemError(
                f"label {self.label_path(image_id)} is {tuple(raw.shape)} but image "
                f"{self.image_path(image_id)} is {tuple(image.shape[-2:])}"
            )
        if self.geometry is not None:
            return self.geometry.image(image), self._classes(self.geometry.label(raw)), image_id
        label = self._classes(preprocess_label(raw, self.size))
        return preprocess_image(image, self.input_size), label, image_id

    def label(self, image_id: str) -> torch.Tensor:
        """The evaluation label of one image, int64 (size, size), without decoding the image."""
        raw = load_label(self.label_path(image_id), self.colour_map)
        if self.geometry is not None:
            return self._classes(self.geometry.label(raw))
        return self._classes(preprocess_label(raw, self.size))

    def _classes(self, resized: torch.Tensor) -> torch.Tensor:
        """File values (already cropped and resized) -> class ids, -1 = ignore, :data:`UNKNOWN_LABEL` = unknown."""
        label = self._lut[resized]
        known = getattr(self, "_known", None)
        return label if known is None else torch.where(known[resized], label, UNKNOWN_LABEL)
