"""What every benchmark dataset shares: items ``(image, label, image_id)`` of a folder of images
with per-pixel label files, the label look-up tables and the id lists.

A dataset module (``eval/data/<dataset>.py``) holds one subclass of :class:`LabelledImages` that
states, as mmsegmentation's dataset classes do, its config ``name``, ``title``, ``classes``,
``background``, the ``make`` target that prepares a root, where images and labels live
(``image_dir``/``image_suffix``, ``label_dir``/``label_suffix``), how it finds its ids
(:meth:`~LabelledImages.find_ids`) and how raw label values map to classes
(:meth:`~LabelledImages.label_lut`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from diffseg.preprocess import load_image, load_label
from eval.data.geometry import CentreCropGeometry, Geometry
from eval.data.loader import DatasetNotFoundError, UnreadableItemError, select_ids

__all__ = ["IGNORE_INDEX", "UNKNOWN_LABEL", "LabelledImages", "StandardList", "contiguous_lut", "ids_sha256",
           "make_hint", "read_id_list"]

IGNORE_INDEX = -1


def contiguous_lut(count: int, first: int = 0) -> np.ndarray:
    """Length-256 int64 array: label file values ``first .. first+count-1`` -> classes ``0 .. count-1``,
    every other value -> -1 (ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[first : first + count] = np.arange(count)
    return lut


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Ids of a list file, in file order: one per line, whitespace stripped, blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def make_hint(target: str, root: str | os.PathLike, action: str = "download and prepare it") -> str:
    """How to get a missing root: ``run `make <target>` (or `make <target> ROOT=<root>`) to <action>``."""
    return f"run `make {target}` (or `make {target} ROOT={root}`) to {action}"

def ids_sha256(ids: Iterable[str]) -> str:
    """sha256 (hex) of the sorted ids joined by newlines: the same for a list in any order."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StandardList:
    """A benchmark's own image list: what a run on it may be set beside the paper's numbers as.

    Attributes:
        name: how tables and notes name it (e.g. ``"Coco164kFull_Stuff_Coarse_7.txt (DiffSeg's curated list)"``).
        count: its number of images.
        sha256: :func:`ids_sha256` of its ids; None where the ids are not known without the download
            (then a list of ``count`` ids counts as standard).
        options: the dataset settings it belongs to (e.g. ``{"split": "val"}``): other values are another list.
    """

    name: str
    count: int
    sha256: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def matches(self, ids: Sequence[str]) -> bool:
        """True when ``ids`` are this list (by hash, or by count where the hash is unknown)."""
        return ids_sha256(ids) == self.sha256 if self.sha256 else len(ids) == self.count


UNKNOWN_LABEL = -2
"""Label value of a pixel whose file value is neither a class nor an ignore value of the dataset.

Scored as ignored (like -1), but counted: the runner reports it per image and fails a run
above ``max_unknown_label_fraction``.
"""


class LabelledImages(Dataset):
    """Items ``(image, label, image_id)`` of a folder of images with per-pixel label files.

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear),
      the backbone's input size (``image_size``; None = ``size``);
    * label: int64 (size, size), class ids, -1 = ignore, -2 = unknown value (centre crop +
      nearest-exact), at the evaluation resolution ``size`` whatever the backbone's input size;
    * image_id: as :meth:`find_ids` lists them.

    Image and label are cut as above by default (:class:`~eval.data.geometry.CentreCropGeometry`,
    DiffSeg's); a protocol with another geometry gives it when the dataset is built (``geometry``).

    Args:
        root: dataset root (layout in the dataset module's docstring).
        size: side of the labels (the evaluation resolution), and of the images unless ``image_size``.
        limit: keep only the first ``limit`` ids (applied before sharding).
        shard: ``"i/n"`` or ``(i, n)``: keep list positions k with ``k % n == i``.
        image_size: side of the images given to the backbone (its input size); None = ``size``.
        geometry: how images and labels are cut and resized (:class:`~eval.data.geometry.Geometry`, given by
            the run's protocol); None = :class:`~eval.data.geometry.CentreCropGeometry` at ``image_size``/``size``.
        **options: the subclass's own settings (its :attr:`options`, e.g. ``split``), set as attributes.

    ``ignore_values`` are the file values the dataset defines as "not labelled" (255 unless a
    subclass says otherwise); any other value the LUT does not map to a class is *unknown* (a
    recoded or corrupt label) and becomes :data:`UNKNOWN_LABEL`. ``colour_map`` (``{(r, g, b): value}``)
    is set by a dataset whose labels are colour images; without one a colour label is refused
    (:func:`diffseg.preprocess.load_label`).
    """

    # Stated by each dataset class.
    name: ClassVar[str]                      # its config, conf/dataset/<name>.yaml
    title: ClassVar[str]                     # in tables and messages
    classes: ClassVar[tuple[str, ...]]       # class names in id order
    num_classes: ClassVar[int]               # len(classes), set for each subclass
    background: ClassVar[int | None] = None  # class id of the background class, None when there is none
    first_label_value: ClassVar[int] = 0     # the default label_lut: file values from this one -> 0, 1, ...
    make_target: ClassVar[str]               # the `make` target that prepares a root (`make data-<command>`)
    prepare_action: ClassVar[str] = "download and prepare it"
    options: ClassVar[dict[str, Any]] = {}   # keyword settings of the class and their defaults
    described_keys: ClassVar[tuple[str, ...]] = ()  # config keys such as num_classes that the class takes as options
    ignore_values: tuple[int, ...] = (255,)
    colour_map: dict[tuple[int, int, int], int] | None = None
    standard_list: ClassVar[StandardList | None] = None  # the benchmark's image list (None: the dataset has none)
    image_dir: str = ""
    image_suffix: str = ".jpg"
    label_dir: str = ""
    label_suffix: str = ".png"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "classes" in cls.__dict__:
            cls.num_classes = len(cls.classes)

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 512,
        limit: int | None = None,
        shard: str | tuple[int, int] | None = None,
        image_size: int | None = None,
        geometry: Geometry | None = None,
        **options: Any,
    ):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown settings {unknown}; it takes {sorted(self.options)}")
        for key, default in self.options.items():
            setattr(self, key, options.get(key, default))
        self.root = Path(root)
        self.size = int(size)
        self.image_size = int(image_size) if image_size else None
        self.geometry = geometry if geometry is not None else CentreCropGeometry(self.input_size, self.size)
        self._hint = self.prepare_hint()
        self._require(self.root, f"{self.title} root")
        self.all_ids = list(self.find_ids())
        # an id listed twice is refused (eval.data.loader.DuplicateIdsError, naming the list file)
        source = getattr(self, "list_path", None) or self.root
        self.ids = select_ids(self.all_ids, limit=limit, shard=shard, source=source)
        self._lut = torch.from_numpy(self.label_lut())
        known = self._lut >= 0
        known[list(self.ignore_values)] = True
        self._known = known

    def prepare_hint(self) -> str:
        """How to prepare a missing root (named in every not-found error)."""
        return make_hint(self.make_target, self.root, self.prepare_action)

    def find_ids(self) -> Sequence[str]:
        """Every id of the split, in evaluation order (before ``limit``/``shard``)."""
        raise NotImplementedError

    def label_lut(self) -> np.ndarray:
        """Length-256 int64 array: raw label file value -> class id, -1 = ignore (by default
        :func:`contiguous_lut` of the classes from ``first_label_value``)."""
        return contiguous_lut(self.num_classes, self.first_label_value)

    def standard_image_list(self) -> StandardList | None:
        """The benchmark list for this dataset's settings: :attr:`standard_list` when its ``options`` are
        the dataset's, else None (e.g. another split)."""
        std = self.standard_list
        if std is None or any(getattr(self, k, None) != v for k, v in std.options.items()):
            return None
        return std

    def image_list(self) -> dict[str, Any]:
        """What the run's image list is: ``{"standard": bool, "name": str, "count": int, "sha256": hex}``.

        ``count`` and ``sha256`` (:func:`ids_sha256`) are of every listed id (before ``limit`` and
        ``shard``); ``standard`` says whether they are the benchmark's own list
        (:meth:`standard_image_list`); ``name`` is that list's name, else the list file's or the image folder's.
        """
        ids = [str(i) for i in self.all_ids]
        std = self.standard_image_list()
        standard = bool(std is not None and std.matches(ids))
        if standard:
            name = std.name
        elif getattr(self, "list_path", None):
            name = Path(self.list_path).name
        else:
            name = f"the images under {self.root / self.image_dir}"
        return {"standard": standard, "name": name, "count": len(ids), "sha256": ids_sha256(ids)}

    def _require(self, path: Path, what: str) -> Path:
        """``path`` when it exists; else :class:`DatasetNotFoundError` naming it and how to prepare it."""
        if not path.exists():
            raise DatasetNotFoundError(f"{what} not found: {path}; {self._hint}")
        return path

    def _listed_ids(self, list_path: Path, what: str) -> list[str]:
        """The ids of a list file (kept as ``list_path``), which must exist."""
        self.list_path = self._require(list_path, what)
        return read_id_list(self.list_path)

    def _glob_ids(self, folder: Path, pattern: str, what: str) -> list[Path]:
        """The files of ``folder`` matching ``pattern``, sorted; a missing folder or none found is an error."""
        self._require(folder, what)
        found = sorted(folder.glob(pattern))
        if not found:
            raise DatasetNotFoundError(f"no {pattern.split('/')[-1]} images under {folder}; {self._hint}")
        return found

    @property
    def input_size(self) -> int:
        """Side of the pre-processed images: ``image_size``, or ``size`` when that is not set."""
        return int(self.image_size) if self.image_size else int(self.size)

    def image_path(self, image_id: str) -> Path:
        """``<root>/<image_dir>/<id><image_suffix>``."""
        return self.root / self.image_dir / f"{image_id}{self.image_suffix}"

    def label_path(self, image_id: str) -> Path:
        """``<root>/<label_dir>/<id><label_suffix>``."""
        return self.root / self.label_dir / f"{image_id}{self.label_suffix}"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        image_id = self.ids[index]
        image = load_image(self.image_path(image_id))
        raw = self.read_label(image_id)
        if raw.shape != image.shape[-2:]:
            raise UnreadableItemError(
                f"label {self.label_path(image_id)} is {tuple(raw.shape)} but image "
                f"{self.image_path(image_id)} is {tuple(image.shape[-2:])}"
            )
        return self.geometry.image(image), self._classes(self.geometry.label(raw)), image_id

    def read_label(self, image_id: str) -> torch.Tensor:
        """The label file of one image as stored, int64 (H, W) file values (a dataset may check them here)."""
        return load_label(self.label_path(image_id), self.colour_map)

    def label(self, image_id: str) -> torch.Tensor:
        """The evaluation label of one image, int64 (size, size) under the default geometry, without decoding
        the image."""
        return self._classes(self.geometry.label(self.read_label(image_id)))

    def _classes(self, resized: torch.Tensor) -> torch.Tensor:
        """File values (already cropped and resized) -> class ids, -1 = ignore, :data:`UNKNOWN_LABEL` = unknown."""
        label = self._lut[resized]
        known = getattr(self, "_known", None)
        return label if known is None else torch.where(known[resized], label, UNKNOWN_LABEL)
