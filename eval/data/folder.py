"""A folder of your own images and label PNGs (``dataset=folder dataset.root=DIR dataset.num_classes=N``).

Layout of a root (the folder names and suffixes are settings)::

    <root>/images/<name>.jpg     RGB images (``image_dir``, ``image_suffix``)
    <root>/labels/<name>.png     one class index per pixel, 0 .. num_classes-1, ``ignore_index`` (255) = not
                                 labelled (``label_dir``, ``label_suffix``): single-channel, palette, or grey
                                 stored as RGB(A)/LA

Images and labels are paired by name (the file name without its suffix); the ids are the sorted names.
Refused, with one line naming the files or values: an image without a label or a label without an image,
a label value that is neither a class nor the ignore index, and settings that contradict each other.
Class names default to ``class_<i>``. There is nothing to download: ``make data-folder ROOT=DIR``
(``datasets/prepare.py folder``) only checks a root, and a missing root is refused with the layout above.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from diffseg.preprocess import LabelFormatError
from eval.data.base import LabelledImages, contiguous_lut
from eval.data.geometry import Geometry
from eval.data.loader import DatasetNotFoundError
from eval.data.preparation import Preparation, PrepareError, option

__all__ = ["PINNED", "PREPARATION", "FolderDataset", "UnpairedFilesError", "folder_setting_problems", "prepare_folder"]

PINNED: dict = {}  # nothing to download (eval.data.download.PINNED_FILES merges every module's)
_SHOWN = 5  # file names or values a refusal names before "and N more"


class UnpairedFilesError(DatasetNotFoundError):
    """An image without its label file, or a label file without its image (the message names them)."""


def _shown(items: Sequence[Any]) -> str:
    text = ", ".join(str(i) for i in items[:_SHOWN])
    return text + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def folder_setting_problems(settings: dict[str, Any]) -> list[str]:
    """What is wrong with a folder dataset's settings (``num_classes``, ``ignore_index``, ``class_names``,
    ``background``, folders and suffixes), one message per problem naming the ``dataset.<key>``; [] when none."""
    problems = []
    n = settings.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 255:
        problems.append(f"dataset.num_classes: the folder dataset needs the number of classes, an integer in "
                        f"[1, 255] (label values 0 .. num_classes-1), got {n!r}")
        n = None
    ignore = settings.get("ignore_index", 255)
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255):
        problems.append(f"dataset.ignore_index: expected a label value in [0, 255] or null, got {ignore!r}")
    elif ignore is not None and n is not None and ignore < n:
        problems.append(f"dataset.ignore_index: {ignore} is class {ignore} of the {n} classes; "
                        f"choose a value >= {n} (e.g. 255) or null")
    names = settings.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or (n is not None and len(names) != n)):
        problems.append(f"dataset.class_names: expected a list of num_classes={n} names or null, got {names!r}")
    background = settings.get("background")
    if background is not None and (n is None or isinstance(background, bool) or not isinstance(background, int)
                                   or not 0 <= background < n):
        problems.append(f"dataset.background: expected a class id in [0, {n}) or null, got {background!r}")
    dirs = (settings.get("image_dir", "images"), settings.get("image_suffix", ".jpg"))
    if dirs == (settings.get("label_dir", "labels"), settings.get("label_suffix", ".png")):
        problems.append(f"dataset.label_dir/label_suffix: the same as image_dir/image_suffix {dirs}: labels and "
                        "images must differ by folder or suffix")
    return problems


class FolderDataset(LabelledImages):
    """A folder of images with label PNGs: items ``(image, label, image_id)`` (module docstring for the layout).

    * image: float32 (3, image_size, image_size) in [-1, 1] (centre crop + half-pixel bilinear);
    * label: int64 (size, size), class 0 .. num_classes-1, -1 = ignore (``ignore_index``);
    * image_id: the file name without ``image_suffix``, sorted.

    Arguments as in :class:`~eval.data.base.LabelledImages`, and ``num_classes``, ``background`` (a class id
    or None), ``ignore_index`` (a label value >= num_classes, or None), ``class_names`` (None:
    ``class_<i>``), ``image_dir``, ``label_dir``, ``image_suffix``, ``label_suffix``.

    Raises:
        ValueError: settings that :func:`folder_setting_problems` refuses.
        DatasetNotFoundError: a missing root or image folder, or no image in it (naming the layout).
        UnpairedFilesError: images without labels or labels without images (naming them).
    """

    name = "folder"
    title = "Own folder"
    classes: ClassVar[tuple[str, ...]] = ()  # per instance: class_names, or class_<i>
    make_target = "data-folder"
    described_keys = ("num_classes", "background")  # keys build_dataset passes to the constructor
    options = {"num_classes": None, "background": None, "ignore_index": 255, "class_names": None,
               "image_dir": "images", "label_dir": "labels", "image_suffix": ".jpg", "label_suffix": ".png"}
    standard_list = None  # your own images are never a benchmark's list
    setting_problems = staticmethod(folder_setting_problems)  # eval.spec.build_spec reports them before a run

    def __init__(self, root: str | os.PathLike, size: int = 512, limit: int | None = None,
                 shard: str | tuple[int, int] | None = None, image_size: int | None = None,
                 geometry: Geometry | None = None, **options: Any):
        settings = {**self.options, **options}
        for key in ("class_names",):  # a Hydra list arrives as a list already; keep a tuple
            if isinstance(settings.get(key), tuple):
                settings[key] = list(settings[key])
        problems = folder_setting_problems(settings)
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(root, size=size, limit=limit, shard=shard, image_size=image_size, geometry=geometry,
                         **options)
        self.num_classes = int(self.num_classes)
        self.classes = tuple(str(c) for c in self.class_names) if self.class_names is not None else tuple(
            f"class_{i}" for i in range(self.num_classes))

    @property
    def ignore_values(self) -> tuple[int, ...]:
        """The label value of "not labelled" pixels: ``(ignore_index,)``, or none."""
        return () if self.ignore_index is None else (int(self.ignore_index),)

    def prepare_hint(self) -> str:
        return (f"a folder dataset needs its images as {self.root / self.image_dir}/<name>{self.image_suffix} and "
                f"their label PNGs as {self.root / self.label_dir}/<name>{self.label_suffix} (one class index per "
                "pixel); set dataset.root (and dataset.image_dir/label_dir/image_suffix/label_suffix) to match "
                "(datasets/README.md, \"Your own data\")")

    def find_ids(self) -> Sequence[str]:
        images = self._names(self.root / self.image_dir, self.image_suffix, "folder dataset image folder")
        labels = self._names(self.root / self.label_dir, self.label_suffix, "folder dataset label folder")
        if self.image_dir == self.label_dir:  # one folder: a label is not an image (e.g. .png and _mask.png)
            images = {k: v for k, v in images.items() if not v.endswith(self.label_suffix) or k in labels}
            labels = {k: v for k, v in labels.items() if not v.endswith(self.image_suffix) or k in images}
        if not images:
            raise DatasetNotFoundError(f"no *{self.image_suffix} images in {self.root / self.image_dir}; {self._hint}")
        unlabelled = sorted(images.keys() - labels.keys())
        orphans = sorted(labels.keys() - images.keys())
        if unlabelled or orphans:
            parts = []
            if unlabelled:
                parts.append(f"{len(unlabelled)} image(s) without a label in {self.root / self.label_dir}: "
                             + _shown([images[i] for i in unlabelled]))
            if orphans:
                parts.append(f"{len(orphans)} label(s) without an image in {self.root / self.image_dir}: "
                             + _shown([labels[i] for i in orphans]))
            raise UnpairedFilesError(f"folder dataset {self.root}: " + "; ".join(parts) + " (images and labels "
                                     f"are paired by name: <name>{self.image_suffix} with <name>{self.label_suffix})")
        return sorted(images)

    def _names(self, folder: Path, suffix: str, what: str) -> dict[str, str]:
        """``{name: file name}`` of the files ``<folder>/<name><suffix>``."""
        self._require(folder, what)
        return {p.name[: -len(suffix)]: p.name for p in folder.iterdir()
                if p.name.endswith(suffix) and len(p.name) > len(suffix) and p.is_file()}

    def label_lut(self) -> np.ndarray:
        return contiguous_lut(int(self.num_classes))

    def read_label(self, image_id: str) -> torch.Tensor:
        """The label file's values, int64 (H, W); a value that is neither a class nor the ignore index is refused.

        Raises:
            LabelFormatError: naming the file, the values and the settings that would accept them.
        """
        raw = super().read_label(image_id)
        bad = raw >= int(self.num_classes)
        if self.ignore_index is not None:
            bad &= raw != int(self.ignore_index)
        if bool(bad.any()):
            values = torch.unique(raw[bad]).tolist()
            ignore = f"ignore index {self.ignore_index}" if self.ignore_index is not None else "no ignore index"
            raise LabelFormatError(
                f"label {self.label_path(image_id)} holds value(s) {_shown(values)} ({int(bad.sum())} pixels), but "
                f"the folder dataset has classes 0..{int(self.num_classes) - 1} and {ignore}: set "
                "dataset.num_classes or dataset.ignore_index, or fix the label")
        return raw


# --------------------------------------------------------------------------- preparation (make data-folder)


def prepare_folder(root: Path, downloads: Path, progress: bool = True, num_classes: int | None = None,
                   ignore_index: int | None = 255, image_dir: str = "images", label_dir: str = "labels",
                   image_suffix: str = ".jpg", label_suffix: str = ".png") -> None:
    """Check a folder dataset's root (nothing is downloaded; ``downloads`` is not used).

    Pairs images and labels by name; with ``num_classes``, reads every label and checks its values.

    Raises:
        PrepareError: a missing root (naming the expected layout), unpaired files, refused settings or label values.
    """
    layout = (f"{root}/{image_dir}/<name>{image_suffix} and {root}/{label_dir}/<name>{label_suffix} (one class "
              "index per pixel)")
    if not Path(root).is_dir():
        raise PrepareError(f"the folder dataset has nothing to download: {root} does not exist; put your images "
                           f"and label PNGs there as {layout}, or name your folder with ROOT=<folder> "
                           "(datasets/README.md, \"Your own data\")")
    settings = {"image_dir": image_dir, "label_dir": label_dir, "image_suffix": image_suffix,
                "label_suffix": label_suffix, "ignore_index": ignore_index}
    checked = num_classes is not None
    try:
        data = FolderDataset(root, num_classes=num_classes if checked else 255, **{**settings, "ignore_index": (
            ignore_index if checked else None)})
        if checked:
            for image_id in tqdm(data.ids, desc="labels", unit="img", disable=not progress):
                data.read_label(image_id)
    except (ValueError, OSError) as exc:
        raise PrepareError(str(exc)) from None
    what = f"labels within {num_classes} classes" if checked else "labels not checked: pass --num-classes N"
    print(f"ready: {root} ({len(data.ids)} images paired with labels; {what})")


PREPARATION = Preparation(
    "folder", prepare_folder, "your own folder of images and label PNGs (no download: checks the layout)",
    options=(
        option("--num-classes", type=int, default=None, help="check every label's values against N classes"),
        option("--ignore-index", type=int, default=255, help="label value of unlabelled pixels (default 255)"),
        option("--image-dir", default="images", help="image folder under the root (default images)"),
        option("--label-dir", default="labels", help="label folder under the root (default labels)"),
        option("--image-suffix", default=".jpg", help="image file suffix (default .jpg)"),
        option("--label-suffix", default=".png", help="label file suffix (default .png)"),
    ),
)
