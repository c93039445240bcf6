"""The official per-image Hungarian metric: pure functions (:mod:`.functional`), the torchmetrics
``Metric`` over them (:mod:`.metric`) and the protocols' geometry (:mod:`.protocols`)."""

from eval.metrics.functional import (
    NUM_CLASSES,
    PROTOCOLS,
    DiffCutMatch,
    confusion_histogram,
    confusion_histograms,
    diffcut_match,
    hungarian_match,
    image_stats,
    match_image,
    match_stats,
    scores,
)
from eval.metrics.metric import HungarianSegmentationMetric, metric_json

__all__ = [
    "DiffCutMatch",
    "NUM_CLASSES",
    "PROTOCOLS",
    "confusion_histogram",
    "confusion_histograms",
    "diffcut_match",
    "hungarian_match",
    "image_stats",
    "match_image",
    "match_stats",
    "scores",
    "HungarianSegmentationMetric",
    "metric_json",
]
