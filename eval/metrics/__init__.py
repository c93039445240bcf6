"""The official per-image Hungarian metric: pure functions (:mod:`.functional`), the torchmetrics
``Metric`` over them (:mod:`.metric`), the scores of summed stats (:mod:`.summed_scores`, numpy only)
and the protocols (:mod:`.protocols`: one :class:`~eval.metrics.protocols.Protocol` per module).

The names below are imported on first use (PEP 562), so importing the torch-free
:mod:`eval.metrics.summed_scores` (as :mod:`eval.stats` does) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "functional": ("DiffCutMatch", "NUM_CLASSES", "confusion_histogram", "confusion_histograms",
                   "diffcut_match", "hungarian_match", "match_image", "match_stats", "scores"),
    "metric": ("HungarianSegmentationMetric", "metric_json"),
    "protocols": ("PROTOCOLS", "Protocol", "get_protocol", "image_stats"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'eval.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"eval.metrics.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
