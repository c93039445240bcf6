"""Validation of a composed run config, before the run folder is created.

:func:`validate` checks every setting whose wrong value would otherwise run (and give a
wrong number), fail only after the folder exists, or fail after hours of work. Each
problem names the key, the allowed range and the value given; all problems are reported
at once, on one line, as one :class:`SettingError` (``python -m eval.run`` exits 2 with it, before
Hydra creates the run folder: :class:`eval.run.run_folder.CheckRunFolder`).

The segmenters and aggregation weights are checked by the library's own constructors and
checks (:mod:`diffseg`), so the ranges live in one place; this module adds the key.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from diffseg.aggregation import check_weights
from diffseg.backbone import SD_SCHEDULER_CONFIG
from diffseg.devices import DTYPES
from diffseg.families import self_attention_layout
from eval.data.loader import parse_shard
from eval.run.mask_files import mask_format

__all__ = ["SettingError", "validate"]

NUM_TRAIN_TIMESTEPS = int(SD_SCHEDULER_CONFIG["num_train_timesteps"])
_ABSENT = object()
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


def _positive(cfg: DictConfig, key: str) -> str | None:
    """A problem message unless ``cfg[key]`` is a finite number > 0 (an absent key is fine)."""
    if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
        return None
    value = _value(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) < math.inf):
        return f"{key}: expected a positive number, got {value!r}"
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


def _partial_method(key: str, node: Any) -> str:
    """The problem of a method entry without ``segmenter._target_``: keys set for a method not in the run."""
    given = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    return (f"{key}: no segmenter._target_ (got {given!r}): keys set for a method the chosen methods= group does "
            f"not hold; drop them with {key}=null or add the method with +method@{key}=<conf/method name>")


def _dataset(cfg: DictConfig) -> list[str]:
    """The dataset class's own checks of its settings (a class with ``setting_problems(dict) -> [message]``)."""
    target = _value(cfg, "dataset._target_")
    check = getattr(get_class(str(target)), "setting_problems", None) if target else None
    return list(check(OmegaConf.to_container(cfg.dataset, resolve=True))) if check else []


def _tiny_unet_config(family: str) -> dict[str, Any] | None:
    from diffseg.testing import tiny

    configs = {"sd1": tiny.tiny_unet_config, "sd2-base": tiny.tiny_sd2_unet_config,
               "sd2-v": lambda: tiny.tiny_sd2_unet_config(v_prediction=True), "sdxl": tiny.tiny_sdxl_unet_config}
    return configs[family]() if family in configs else None


def _pretrained_unet_config(backbone: DictConfig) -> dict[str, Any] | None:
    """The UNet config of a ``from_pretrained`` backbone when it is on this machine already (no download)."""
    model_id = str(backbone.get("model_id") or "")
    path: Any = Path(model_id) / "unet" / "config.json"
    if not model_id or model_id.endswith(".safetensors"):
        return None
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            path = try_to_load_from_cache(model_id, "unet/config.json", revision=backbone.get("revision"))
        except ValueError:  # not a hub id
            return None
        if not isinstance(path, str):
            return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _unet_config(cfg: DictConfig) -> dict[str, Any] | None:
    """The configured backbone's UNet config, when it is known without loading weights or downloading."""
    backbone = _value(cfg, "model.backbone")
    target = str((backbone or {}).get("_target_", ""))
    if target.endswith("tiny_backbone"):
        return _tiny_unet_config(str(backbone.get("family") or "sd1"))
    if target.endswith(".from_pretrained"):
        return _pretrained_unet_config(backbone)
    return None


def largest_attention_side(cfg: DictConfig) -> tuple[int, str] | None:
    """The largest self-attention side the configured backbone gives at ``model.size``, and how it was found.

    The latent side is ``model.size // 8`` (the VAE of every family here halves the side three
    times); the UNet's layout (:func:`diffseg.families.self_attention_layout`) is used when its
    config is known without loading weights (the tiny backbones, a local diffusers folder, the
    Hugging Face cache), else the latent side is the bound (no family has attention above it).
    None when neither the size nor the model's native size is known.
    """
    unet = _unet_config(cfg)
    size = _value(cfg, "model.size")
    if size is None and unet is not None:
        size = int(unet.get("sample_size") or 64) * 8
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        return None
    latent = size // 8
    if unet is None:
        return latent, f"the latent side of model.size={size}"
    layout = self_attention_layout(unet, latent)
    if not layout:
        return None
    return max(layout), f"the largest attention side of {_value(cfg, 'model.name')} at model.size={size}"


def _num_points(key: str, node: DictConfig, side: tuple[int, str] | None) -> str | None:
    """DiffSeg's anchor grid must fit the attention: ``num_points`` at most the largest attention side."""
    value = node.get("num_points")
    if side is None or isinstance(value, bool) or not isinstance(value, int) or value <= side[0]:
        return None
    return f"{key}.num_points: expected an integer in [2, {side[0]}] ({side[1]}), got {value}"


def _save_masks(cfg: DictConfig) -> str | None:
    value = _value(cfg, "save_masks")
    try:
        mask_format(value)
    except ValueError:
        return f"save_masks: expected false, true/png or coco, got {value!r}"
    return None


def _problems(cfg: DictConfig) -> list[str]:
    problems = [
        _integer(cfg, "batch_size", 1),
        _integer(cfg, "num_workers", 0),
        _integer(cfg, "grid_images", 0),
        _fraction(cfg, "max_skipped", optional=True),
        _fraction(cfg, "max_unknown_label_fraction"),
        _integer(cfg, "dataset.size", 1),
        _integer(cfg, "dataset.limit", 0, optional=True),
        _integer(cfg, "model.timestep", 0, NUM_TRAIN_TIMESTEPS,  # an MM-DiT's step comes from its schedule
                 optional=_value(cfg, "model.kind") == "mmdit"),
        _integer(cfg, "model.size", 1, optional=True),
        _integer(cfg, "model.noise_seed", 0, optional=True),
        _integer(cfg, "model.head_chunk", 1, optional=True),
        _weights(_value(cfg, "aggregation.weights"), "aggregation.weights"),
        _positive(cfg, "cache.max_gb"),
        _device(cfg),
        _save_masks(cfg),
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
    side = largest_attention_side(cfg) if _value(cfg, "model.backbone") is not None else None
    for name, node in (cfg.get("methods") or {}).items():
        if node is None:
            continue
        key = f"methods.{name}"
        if not isinstance(node, DictConfig) or not isinstance(node.get("segmenter"), DictConfig) \
                or "_target_" not in node.segmenter:
            problems.append(_partial_method(key, node))
            continue
        problems.append(_weights(node.get("aggregation"), f"{key}.aggregation"))
        if node.get("features") is not None:
            problems.append(_integer(cfg, f"{key}.features.timestep", 0, NUM_TRAIN_TIMESTEPS, optional=True))
            problems.append(_integer(cfg, f"{key}.features.noise_seed", 0, optional=True))
        problems.append(_segmenter(node.segmenter, f"{key}.segmenter")
                        or (_num_points(f"{key}.segmenter", node.segmenter, side)
                            if node.get("features") is None else None))
    return [p for p in problems if p]


def validate(cfg: DictConfig) -> None:
    """Raise :class:`SettingError` listing every setting of ``cfg`` outside its allowed range.

    Called by :func:`eval.run.evaluate` before anything is written.
    """
    problems = _problems(cfg)
    if problems:
        raise SettingError(f"{len(problems)} setting(s) outside the allowed range (nothing was written): "
                           + "; ".join(problems))

