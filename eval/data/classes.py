"""Every benchmark by its config name (``dataset.name``): its dataset class, title and class names.

Each dataset module owns its classes, label mapping, layout and ``make`` target (its
:class:`~eval.data.base.LabelledImages` subclass); this module only lists them, for the tables and
the comparison, which know a run by its dataset's name. The dataset modules (and so torch) are
imported on first use: the analysis commands (``eval.tables``, ``eval.compare``) start without them.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

__all__ = ["dataset_classes", "dataset_title"]  # DATASETS, DATASET_CLASSES, DATASET_TITLES: module attributes

# config name -> module and class that own the dataset
_OWNERS = {
    "coco_stuff27": ("eval.data.coco_stuff", "CocoStuff27"),
    "cityscapes": ("eval.data.cityscapes", "Cityscapes27"),
    "voc21": ("eval.data.voc", "Voc21"),
    "context60": ("eval.data.context", "Context60"),
    "coco_object81": ("eval.data.coco_object", "CocoObject81"),
    "ade20k150": ("eval.data.ade20k", "Ade20k150"),
}


@cache
def _datasets() -> dict[str, Any]:
    found = {}
    for name, (module, cls_name) in _OWNERS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        if cls.name != name:
            raise RuntimeError(f"{module}.{cls_name}.name is {cls.name!r}, listed here as {name!r}")
        found[name] = cls
    return found


def dataset_title(name: str) -> str:
    """The title of dataset ``name`` (its config name); ``name`` itself for an unknown dataset."""
    return _datasets()[name].title if name in _OWNERS else name


def dataset_classes(name: str) -> tuple[str, ...] | None:
    """The class names of dataset ``name`` in id order; None for an unknown dataset."""
    return _datasets()[name].classes if name in _OWNERS else None


def __getattr__(attr: str) -> Any:
    if attr == "DATASETS":
        return dict(_datasets())
    if attr == "DATASET_TITLES":
        return {name: cls.title for name, cls in _datasets().items()}
    if attr == "DATASET_CLASSES":
        return {name: cls.classes for name, cls in _datasets().items()}
    raise AttributeError(f"module 'eval.data.classes' has no attribute {attr!r}")
