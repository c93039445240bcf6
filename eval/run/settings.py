"""Validation of a composed run config, before the run folder is created.

:func:`validate` checks every setting whose wrong value would otherwise run (and give a
wrong number), fail only after the folder exists, or fail after hours of work. Each
problem names the key, the allowed range and the value given; all problems are reported
at once as one :class:`SettingError` (``python -m eval.run`` exits 2 with it).

The segmenters and aggregation weights are checked by the library's own constructors and
checks (:mod:`diffseg`), so the ranges live in one place; this module adds the key.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from diffseg.aggregation import check_weights
from diffseg.backbone import SD_SCHEDULER_CONFIG
from diffseg.devices import DTYPES
from eval.data.loader import parse_shard

__all__ = ["SettingError", "validate"]

NUM_TRAIN_TIMESTEPS = int(SD_SCHEDULER_CONFIG["num_train_timesteps"])
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class SettingError(ValueError):
    """One or more settings are outside their allowed range (the message names each key)."""


def _value(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _integer(cfg: DictConfig, key: str, low: int, high: int | None = None, *, optional: bool = False) -> str | None:
    """A problem message unless ``cfg[key]`` is an integer in ``[low, high)`` (None allowed when ``optional``)."""
    value = _value(cfg, key)
    if value is None and optional:
        return None
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"
    if optional:
        allowed += " or null"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
        return f"{key}: expected {allowed}, got {value!r}"
    return None


def _fraction(cfg: DictConfig, key: str, *, optional: bool = False) -> str | None:
    """A problem message unless ``cfg[key]`` is a number in [0, 1] (None allowed when ``optional``)."""
    value = _value(cfg, key)
    if value is None and optional:
        return None
    allowed = "a fraction in [0, 1]" + (" or null (off)" if optional else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        return f"{key}: expected {allowed}, got {value!r}"
    return None


def _weights(node: Any, key: str) -> str | None:
    if node is None:
        return None
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(data, dict):
        return f"{key}: expected {{side: weight}} or null, got {data!r}"
    try:
        check_weights(data, key)
    except ValueError as exc:
        return str(exc)
    return None


def _device(cfg: DictConfig) -> str | None:
    value = str(_value(cfg, "device"))
    if not _DEVICE.match(value):
        return f"device: expected auto, cpu or cuda[:N], got {value!r}"
    if value.startswith("cuda") and not torch.cuda.is_available():
        return f"device: {value} asked for, but CUDA is not available on this machine (use device=cpu or auto)"
    return None


def _segmenter(node: DictConfig, key: str) -> str | None:
    """Build the method's segmenter: its constructor checks its own parameters."""
    try:
        instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        return f"{key}: {cause}"
    except (ValueError, TypeError) as exc:
        return f"{key}: {exc}"
    return None


def _dataset(cfg: DictConfig) -> list[str]:
    """The dataset class's own checks of its settings (a class with ``setting_problems(dict) -> [message]``)."""
    target = _value(cfg, "dataset._target_")
    check = getattr(get_class(str(target)), "setting_problems", None) if target else None
    return list(check(OmegaConf.to_container(cfg.dataset, resolve=True))) if check else []


def _problems(cfg: DictConfig) -> list[str]:
    problems = [
        _integer(cfg, "batch_size", 1),
        _integer(cfg, "num_workers", 0),
        _integer(cfg, "grid_images", 0),
        _fraction(cfg, "max_skipped", optional=True),
        _fraction(cfg, "max_unknown_label_fraction"),
        _integer(cfg, "dataset.size", 1),
        _integer(cfg, "dataset.limit", 0, optional=True),
        _integer(cfg, "model.timestep", 0, NUM_TRAIN_TIMESTEPS),
        _integer(cfg, "model.size", 1, optional=True),
        _integer(cfg, "model.noise_seed", 0, optional=True),
        _integer(cfg, "model.head_chunk", 1, optional=True),
        _weights(_value(cfg, "aggregation.weights"), "aggregation.weights"),
        _device(cfg),
        *_dataset(cfg),
    ]
    dtype = _value(cfg, "model.dtype")
    if dtype is not None and str(dtype) not in DTYPES:
        problems.append(f"model.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    shard = _value(cfg, "dataset.shard")
    try:
        parse_shard(shard)
    except (ValueError, TypeError) as exc:
        problems.append(f"dataset.shard: {exc}")
    for name, node in (cfg.get("methods") or {}).items():
        if node is None:
            continue
        key = f"methods.{name}"
        problems.append(_weights(node.get("aggregation"), f"{key}.aggregation"))
        if node.get("features") is not None:
            problems.append(_integer(cfg, f"{key}.features.timestep", 0, NUM_TRAIN_TIMESTEPS, optional=True))
            problems.append(_integer(cfg, f"{key}.features.noise_seed", 0, optional=True))
        if node.get("segmenter") is not None:
            problems.append(_segmenter(node.segmenter, f"{key}.segmenter"))
    return [p for p in problems if p]


def validate(cfg: DictConfig) -> None:
    """Raise :class:`SettingError` listing every setting of ``cfg`` outside its allowed range.

    Called by :func:`eval.run.evaluate` before anything is written.
    """
    problems = _problems(cfg)
    if problems:
        lines = "\n  ".join(problems)
        raise SettingError(f"{len(problems)} setting(s) outside the allowed range (nothing was written):\n  {lines}")

