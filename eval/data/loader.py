"""Batching with corrupt-file tolerance, plus the id selection shared by the datasets.

A dataset item is ``(image float32 (3, S, S), label int64 (S, S), image_id str)``.
:class:`SkipCorrupt` turns an item whose image or label file cannot be read or decoded
into a :class:`Skipped` record instead of an exception, so one bad JPEG does not kill a
2175-image run (any other error, e.g. a bug in pre-processing, stops the run);
:func:`collate_skipping` separates the two kinds into a :class:`Batch`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "Batch",
    "DatasetNotFoundError",
    "DuplicateIdsError",
    "SkipCorrupt",
    "UnreadableItemError",
    "Skipped",
    "build_loader",
    "collate_skipping",
    "parse_shard",
    "refuse_duplicate_ids",
    "select_ids",
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset root, list file or split folder is missing (the message says how to get it)."""


class DuplicateIdsError(ValueError):
    """An id list names an image more than once (it would be counted twice)."""


def refuse_duplicate_ids(ids: Sequence[str], source: object = None) -> None:
    """Raise :class:`DuplicateIdsError` naming every id that ``ids`` lists more than once (and ``source``)."""
    seen: dict[str, int] = {}
    for image_id in ids:
        seen[str(image_id)] = seen.get(str(image_id), 0) + 1
    twice = [f"{i} (x{n})" for i, n in seen.items() if n > 1]
    if twice:
        shown = ", ".join(twice[:10]) + (f" and {len(twice) - 10} more" if len(twice) > 10 else "")
        where = f" in {source}" if source is not None else ""
        raise DuplicateIdsError(f"duplicate image ids{where}: {shown}; every image must be listed once "
                                "(it would be counted twice): remove the repeated lines")


class UnreadableItemError(OSError):
    """An image or label file was read but cannot form an item (e.g. the label's size differs from the image's).

    An ``OSError``: :class:`SkipCorrupt` skips the image, as for a file that cannot be decoded.
    """


def parse_shard(shard: str | tuple[int, int] | Sequence[int] | None) -> tuple[int, int] | None:
    """Parse ``"i/n"`` or ``(i, n)`` (0-based shard i of n) into ``(i, n)``; None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        parts = shard.strip().split("/")
        if len(parts) != 2:
            raise ValueError(f"shard must look like 'i/n' (0-based i < n), got {shard!r}")
        try:
            index, count = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' with integers, got {shard!r}") from None
    else:
        if len(shard) != 2:
            raise ValueError(f"shard must be (i, n), got {shard!r}")
        index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= i < n, got {index}/{count}")
    return index, count


def select_ids(ids: Sequence[str], limit: int | None = None, shard=None, source: object = None) -> list[str]:
    """Keep the first ``limit`` ids (in order), then the items k with ``k % n == i`` of shard i/n.

    The limit is applied first, so the shards of a limited run partition that run. An id
    listed twice raises :class:`DuplicateIdsError` (naming the ids and ``source``, the list
    they came from) before any selection.
    """
    ids = list(ids)
    refuse_duplicate_ids(ids, source)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        ids = ids[:limit]
    parsed = parse_shard(shard)
    if parsed is not None:
        index, count = parsed
        ids = ids[index::count]
    return ids


@dataclass(frozen=True)
class Skipped:
    """An item that could not be loaded: its id and the error message (naming the file)."""

    image_id: str
    message: str


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: float32 (B, 3, S, S) in [-1, 1].
        labels: int64 (B, S, S), -1 = ignore.
        ids: the B image ids, in batch order.
        skipped: ``(image_id, message)`` of the items of this batch that failed to load.
    B may be 0 when every item of the batch was skipped.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.ids, self.skipped)

    def to(self, device, non_blocking: bool = False) -> Batch:
        """Move the tensors to ``device``."""
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.ids,
            self.skipped,
        )


class SkipCorrupt(Dataset):
    """Wrap a dataset so that items whose files cannot be read become :class:`Skipped`.

    Only the reading or decoding of an image or label file may skip an image: ``OSError``,
    which covers ``FileNotFoundError``, :class:`diffseg.preprocess.ImageDecodeError` and
    :class:`UnreadableItemError`. Every other error (a ``ValueError`` raised in
    pre-processing, a ``TypeError``, ...) is a bug and stops the run. The id of a failed
    item is ``dataset.ids[index]`` when the dataset has an ``ids`` list, else the index as
    a string.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str):
        # Delegate attributes such as ``ids`` and ``size``; guard against recursion
        # while unpickling (``dataset`` not yet set) in worker processes.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except OSError as exc:
            ids = getattr(self.dataset, "ids", None)
            image_id = str(ids[index]) if ids is not None and 0 <= index < len(ids) else str(index)
            return Skipped(image_id, f"{type(exc).__name__}: {exc}")


def collate_skipping(batch: Sequence, size: int | None = None) -> Batch:
    """Collate ``(image, label, id)`` items and :class:`Skipped` records into a :class:`Batch`.

    Args:
        batch: items from a (wrapped) dataset.
        size: output side S, only used to shape an empty batch (every item skipped):
            images (0, 3, S, S), labels (0, S, S); 0 when unknown.
    """
    images, labels, ids, skipped = [], [], [], []
    for item in batch:
        if isinstance(item, Skipped):
            skipped.append((item.image_id, item.message))
            continue
        image, label, image_id = item
        images.append(image)
        labels.append(label)
        ids.append(str(image_id))
    if images:
        return Batch(torch.stack(images), torch.stack(labels), ids, skipped)
    side = size or 0
    return Batch(
        torch.empty((0, 3, side, side), dtype=torch.float32),
        torch.empty((0, side, side), dtype=torch.int64),
        ids,
        skipped,
    )


def build_loader(
    dataset: Dataset,
    batch_size: int = 8,
    num_workers: int = 2,
    pin_memory: bool | None = None,
    prefetch_factor: int = 4,
    persistent_workers: bool = False,
) -> DataLoader:
    """A deterministic (unshuffled) DataLoader yielding :class:`Batch` objects.

    The dataset is wrapped in :class:`SkipCorrupt` unless it already is.
    ``pin_memory`` defaults to ``torch.cuda.is_available()``; ``prefetch_factor`` and
    ``persistent_workers`` only apply when ``num_workers > 0``.
    """
    if not isinstance(dataset, SkipCorrupt):
        dataset = SkipCorrupt(dataset)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    collate = functools.partial(collate_skipping, size=getattr(dataset, "size", None))
    kwargs = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor
        kwargs["persistent_workers"] = persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kwargs,
    )
