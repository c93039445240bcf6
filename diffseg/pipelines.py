"""The diffusers pipeline classes, imported without transformers' torchvision notice.

Importing ``StableDiffusionPipeline`` makes diffusers import ``CLIPImageProcessor`` (and
``SiglipImageProcessor``) from transformers, which, without torchvision, prints
"``CLIPImageProcessor`` requires torchvision (not installed); falling back to ..." on every
command. The harness never uses an image processor (the pipelines are only a loading
format here: ``feature_extractor``/``safety_checker`` are None), so that one notice is
silenced for the duration of this import; every other message, and every import error,
passes as usual.
"""

from __future__ import annotations

import logging

__all__ = ["StableDiffusionPipeline", "StableDiffusionXLPipeline"]


class _NoTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


_logger = logging.getLogger("transformers.utils.import_utils")
_filter = _NoTorchvisionNotice()
_logger.addFilter(_filter)
try:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
finally:
    _logger.removeFilter(_filter)
