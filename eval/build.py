"""``hydra.utils.instantiate`` for the runner's nodes, with the target's own error kept."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

__all__ = ["build"]


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate ``node``; re-raise the target's own error, not Hydra's wrapper.

    The dataset's missing-root error names the path and the ``make`` target; the
    backbone's load error names the model and what could not be fetched. Hydra's
    ``InstantiationException`` would bury both.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (OSError, ValueError, RuntimeError)):
            raise cause from None
        raise
