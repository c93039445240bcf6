"""What every benchmark report records about what produced it: the code, the libraries, the machine.

:func:`run_provenance` is taken when a benchmark starts (the load average is the one at the start);
:func:`eval.bench.report.header_lines` renders it at the top of every report, on stdout and in the
Markdown, so a number is never shown without the code version that measured it.
"""

from __future__ import annotations

from typing import Any

import torch

from eval.bench.timing import device_info
from eval.run.identity import code_version, versions

__all__ = ["run_provenance"]


def run_provenance(device: torch.device) -> dict[str, Any]:
    """``{"code": ..., "versions": ..., "device": ...}`` for a report on ``device``, taken now.

    ``code`` is :func:`eval.run.identity.code_version` (its ``id``: the commit, a hash of any uncommitted
    diff, the torch/diffusers/transformers versions), ``versions`` :func:`eval.run.identity.versions`,
    ``device`` :func:`eval.bench.timing.device_info` (name, cores, torch threads, 1-minute load average now).
    """
    return {"code": code_version(), "versions": versions(), "device": device_info(device)}
