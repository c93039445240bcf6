"""The runner and its run bookkeeping, in the order a run uses them.

:mod:`eval.spec` (the run spec; building it validates the settings) -> ``run_folder`` (lock,
writability) -> ``identity`` (fingerprint, ``run.json``) -> ``passes`` / ``cache`` (backbone passes,
attention cache) -> ``methods`` -> ``sinks`` (what each batch feeds: metric, masks, records, ...) ->
``records`` (``per_image.jsonl``, ``metrics.json``; ``totals`` scores them) -> ``provenance`` (what numbers
rest on); ``mask_files`` / ``coco_results`` (saved masks) and ``qualitative`` (``qualitative.png``);
``merge`` joins shard folders, ``distributed`` and ``interrupt`` handle ranks and signals.
:mod:`eval.run.runner` holds :func:`evaluate`; ``python -m eval.run`` runs it.

The runner's names are imported on first use (PEP 562), so importing a light submodule
such as :mod:`eval.run.provenance` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_RUNNER = ("NoImagesError", "evaluate", "hydra_quote", "main", "run_cli", "versions")
__all__ = list(_RUNNER)


def __getattr__(name: str) -> Any:
    if name not in _RUNNER:
        raise AttributeError(f"module 'eval.run' has no attribute {name!r}")
    value = getattr(importlib.import_module("eval.run.runner"), name)
    globals()[name] = value
    return value
