"""The official per-image Hungarian metric: pure functions (:mod:`.functional`), the protocols
(:mod:`.protocols`: geometry and scoring rules) and the torchmetrics ``Metric`` over them (:mod:`.metric`)."""

from eval.metrics.functional import (
    NUM_CLASSES,
    DiffCutMatch,
    confusion_histogram,
    confusion_histograms,
    diffcut_match,
    hungarian_match,
    match_image,
    match_stats,
    scores,
)
from eval.metrics.metric import HungarianSegmentationMetric, metric_json
from eval.metrics.protocols import PROTOCOLS, Protocol, get_protocol, image_stats

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
    "Protocol",
    "get_protocol",
    "metric_json",
]
