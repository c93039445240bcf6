"""Every benchmark by its config name (``dataset.name``): its dataset class, title and class names.

Each dataset module owns its classes, label mapping, layout and ``make`` target (its
:class:`~eval.data.base.LabelledImages` subclass); this module only lists them, for the tables and
the comparison, which know a run by its dataset's name.
"""

from __future__ import annotations

from eval.data.ade20k import Ade20k150
from eval.data.base import LabelledImages
from eval.data.cityscapes import Cityscapes27
from eval.data.coco_object import CocoObject81
from eval.data.coco_stuff import CocoStuff27
from eval.data.context import Context60
from eval.data.voc import Voc21

__all__ = ["DATASETS", "DATASET_CLASSES", "DATASET_TITLES"]

DATASETS: dict[str, type[LabelledImages]] = {
    cls.name: cls for cls in (CocoStuff27, Cityscapes27, Voc21, Context60, CocoObject81, Ade20k150)
}
DATASET_TITLES: dict[str, str] = {name: cls.title for name, cls in DATASETS.items()}
DATASET_CLASSES: dict[str, tuple[str, ...]] = {name: cls.classes for name, cls in DATASETS.items()}
