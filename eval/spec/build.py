"""The run spec built from Hydra's composed config; building it is validating it.

:func:`build_spec` checks every setting whose wrong value would otherwise run (and give a wrong
number), fail only after the folder exists, or fail after hours of work. Each problem names the
key, the allowed range and the value given; all problems are reported at once, on one line, as
one :class:`SettingError` (``python -m eval.run`` exits 2 with it, before Hydra creates the run
folder: :class:`eval.run.run_folder.CheckRunFolder`).

The segmenters and aggregation weights are checked by the library's own constructors and checks
(:mod:`diffseg`), so the ranges live in one place: each segmenter is built once, here, and the
spec keeps it (:attr:`eval.spec.types.MethodSpec.segmenter`).

This module and the Hydra entry point are the only places that see Hydra's config objects; the
spec holds plain, resolved values.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diffseg.aggregation import check_weights
from diffseg.backbone import SD_SCHEDULER_CONFIG
from diffseg.devices import DTYPES
from diffseg.families import self_attention_layout
from diffseg.joint_attention import DEFAULT_QUERY_CHUNK
from eval.data.loader import parse_shard
from eval.folder import layout
from eval.folder.masks import mask_format
from eval.spec.types import (
    CacheSpec,
    DataSpec,
    FeaturePass,
    MethodSpec,
    ModelSpec,
    ProtocolSpec,
    RunOptions,
    RunSpec,
)

__all__ = ["SettingError", "as_spec", "build_spec", "largest_attention_side"]

NUM_TRAIN_TIMESTEPS = int(SD_SCHEDULER_CONFIG["num_train_timesteps"])
_ABSENT = object()
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DEFAULT_PROTOCOL = {"name": "diffseg", "geometry": None}


class SettingError(ValueError):
    """One or more settings are outside their allowed range (the message names each key)."""


# ------------------------------------------------------------------------------------------ plain config
def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _resolved(cfg: Any) -> tuple[dict[str, Any], list[str]]:
    """``cfg`` as plain, resolved dicts (Hydra's own ``hydra`` node left out), and the nodes that do not resolve.

    A ``paths`` entry that cannot be resolved yet (``paths.output_dir`` before Hydra has named the
    run folder, in :class:`~eval.run.run_folder.CheckRunFolder`) is None; a method entry that cannot
    be resolved is a problem of that entry, the run's other settings are still checked.
    """
    if not isinstance(cfg, DictConfig):
        return copy.deepcopy(dict(cfg)), []
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key in cfg:
        if key == "hydra":
            continue
        try:
            if key == "paths" and isinstance(cfg.get(key), DictConfig):
                out[key] = {name: _leaf_or_none(cfg[key], name) for name in cfg[key]}
            elif key == "methods" and isinstance(cfg.get(key), DictConfig):
                out[key] = {}
                for name in cfg[key]:
                    try:
                        out[key][name] = _plain(cfg[key][name])
                    except OmegaConfBaseException as exc:
                        problems.append(f"methods.{name}: {exc}".splitlines()[0])
            else:
                out[key] = _plain(cfg[key])
        except OmegaConfBaseException as exc:
            problems.append(f"{key}: {exc}".splitlines()[0])
    return out, problems


def _leaf_or_none(node: DictConfig, name: str) -> Any:
    try:
        return _plain(node[name])
    except OmegaConfBaseException:
        return None


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# ------------------------------------------------------------------------------------------- the checks
def _integer(config: Mapping, key: str, low: int, high: int | None = None, *, optional: bool = False) -> str | None:
    """A problem message unless ``config[key]`` is an integer in ``[low, high)`` (None allowed when ``optional``)."""
    value = _get(config, key)
    if value is None and optional:
        return None
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high})"
    if optional:
        allowed += " or null"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
        return f"{key}: expected {allowed}, got {value!r}"
    return None


def _fraction(config: Mapping, key: str, *, optional: bool = False) -> str | None:
    """A problem message unless ``config[key]`` is a number in [0, 1] (None allowed when ``optional``)."""
    value = _get(config, key)
    if value is None and optional:
        return None
    allowed = "a fraction in [0, 1]" + (" or null (off)" if optional else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        return f"{key}: expected {allowed}, got {value!r}"
    return None


def _weights(data: Any, key: str) -> str | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        return f"{key}: expected {{side: weight}} or null, got {data!r}"
    try:
        check_weights(data, key)
    except ValueError as exc:
        return str(exc)
    return None


def _positive(config: Mapping, key: str) -> str | None:
    """A problem message unless ``config[key]`` is a finite number > 0 (an absent key is fine)."""
    value = _get(config, key, _ABSENT)
    if value is _ABSENT:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) < math.inf):
        return f"{key}: expected a positive number, got {value!r}"
    return None


def _device(config: Mapping) -> str | None:
    value = str(_get(config, "device"))
    if not _DEVICE.match(value):
        return f"device: expected auto, cpu or cuda[:N], got {value!r}"
    if value.startswith("cuda") and not torch.cuda.is_available():
        return f"device: {value} asked for, but CUDA is not available on this machine (use device=cpu or auto)"
    return None


def _build_segmenter(node: dict[str, Any], key: str) -> tuple[Any, str | None]:
    """The method's segmenter, built (its constructor checks its own parameters), or the problem."""
    try:
        return instantiate(node, _convert_="all"), None
    except InstantiationException as exc:
        return None, f"{key}: {exc.__cause__ or exc}"
    except (ValueError, TypeError) as exc:
        return None, f"{key}: {exc}"


def _partial_method(key: str, node: Any) -> str:
    """The problem of a method entry without ``segmenter._target_``: keys set for a method not in the run."""
    return (f"{key}: no segmenter._target_ (got {node!r}): keys set for a method the chosen methods= group does "
            f"not hold; drop them with {key}=null or add the method with +method@{key}=<conf/method name>")


def _dataset(config: Mapping) -> list[str]:
    """The dataset class's own checks of its settings (a class with ``setting_problems(dict) -> [message]``)."""
    target = _get(config, "dataset._target_")
    check = getattr(get_class(str(target)), "setting_problems", None) if target else None
    return list(check(copy.deepcopy(config["dataset"]))) if check else []


def _tiny_unet_config(family: str) -> dict[str, Any] | None:
    from diffseg.testing import tiny

    configs = {"sd1": tiny.tiny_unet_config, "sd2-base": tiny.tiny_sd2_unet_config,
               "sd2-v": lambda: tiny.tiny_sd2_unet_config(v_prediction=True), "sdxl": tiny.tiny_sdxl_unet_config}
    return configs[family]() if family in configs else None


def _pretrained_unet_config(backbone: Mapping[str, Any]) -> dict[str, Any] | None:
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


def _unet_config(model: Mapping[str, Any]) -> dict[str, Any] | None:
    """The configured backbone's UNet config, when it is known without loading weights or downloading."""
    backbone = model.get("backbone") or {}
    target = str(backbone.get("_target_", ""))
    if target.endswith("tiny_backbone"):
        return _tiny_unet_config(str(backbone.get("family") or "sd1"))
    if target.endswith(".from_pretrained"):
        return _pretrained_unet_config(backbone)
    return None


def largest_attention_side(model: Mapping[str, Any]) -> tuple[int, str] | None:
    """The largest self-attention side the backbone of ``model`` (a resolved model node) gives at ``model.size``.

    Returns the side and how it was found. The latent side is ``model.size // 8`` (the VAE of every
    family here halves the side three times); the UNet's layout
    (:func:`diffseg.families.self_attention_layout`) is used when its config is known without
    loading weights (the tiny backbones, a local diffusers folder, the Hugging Face cache), else the
    latent side is the bound (no family has attention above it). None when neither the size nor the
    model's native size is known.
    """
    unet = _unet_config(model)
    size = model.get("size")
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
    return max(layout), f"the largest attention side of {model.get('name')} at model.size={size}"


def _num_points(key: str, node: Mapping[str, Any], side: tuple[int, str] | None) -> str | None:
    """DiffSeg's anchor grid must fit the attention: ``num_points`` at most the largest attention side."""
    value = node.get("num_points")
    if side is None or isinstance(value, bool) or not isinstance(value, int) or value <= side[0]:
        return None
    return f"{key}.num_points: expected an integer in [2, {side[0]}] ({side[1]}), got {value}"


def _save_masks(config: Mapping) -> str | None:
    value = _get(config, "save_masks")
    try:
        mask_format(value)
    except ValueError:
        return f"save_masks: expected false, true/png or coco, got {value!r}"
    return None


def _setting_problems(config: Mapping) -> list[str | None]:
    problems = [
        _integer(config, "batch_size", 1),
        _integer(config, "num_workers", 0),
        _integer(config, "grid_images", 0),
        _fraction(config, "max_skipped", optional=True),
        _fraction(config, "max_unknown_label_fraction"),
        _integer(config, "dataset.size", 1),
        _integer(config, "dataset.limit", 0, optional=True),
        _integer(config, "model.timestep", 0, NUM_TRAIN_TIMESTEPS,  # an MM-DiT's step comes from its schedule
                 optional=_get(config, "model.kind") == "mmdit"),
        _integer(config, "model.size", 1, optional=True),
        _integer(config, "model.noise_seed", 0, optional=True),
        _integer(config, "model.head_chunk", 1, optional=True),
        _weights(_get(config, "aggregation.weights"), "aggregation.weights"),
        _positive(config, "cache.max_gb"),
        _device(config),
        _save_masks(config),
        *_dataset(config),
    ]
    dtype = _get(config, "model.dtype")
    if dtype is not None and str(dtype) not in DTYPES:
        problems.append(f"model.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        parse_shard(_get(config, "dataset.shard"))
    except (ValueError, TypeError) as exc:
        problems.append(f"dataset.shard: {exc}")
    return problems


# ----------------------------------------------------------------------------------------- the methods
def _weights_of(data: Any) -> dict[int, float] | None:
    return None if data is None else {int(k): float(v) for k, v in dict(data).items()}


def _feature_pass(node: Any) -> FeaturePass | None:
    if node is None:
        return None
    timestep = node.get("timestep")
    return FeaturePass(int(timestep) if timestep is not None else None, int(node.get("noise_seed", 42)))


def _method(key: str, node: dict[str, Any], segmenter: Any, run_weights: dict[int, float] | None) -> MethodSpec:
    weights = _weights_of(node["aggregation"]) if node.get("aggregation") is not None else run_weights
    return MethodSpec(
        key=key,
        name=str(node.get("name", key)),
        node=node,
        segmenter=segmenter,
        weights=weights,
        ablation=node.get("ablation"),
        features=_feature_pass(node.get("features")),
        output_size=int(node["output_size"]) if node.get("output_size") is not None else None,
        clusters_from_labels=node.get("num_clusters") == "labels",
        text_attention=node.get("inputs") == "image_to_text",
    )


def _methods(config: Mapping, problems: list[str | None]) -> list[MethodSpec]:
    """Every non-null method entry, its segmenter built once; their problems appended to ``problems``."""
    side = largest_attention_side(config["model"]) if _get(config, "model.backbone") is not None else None
    aggregation_ok = _weights(_get(config, "aggregation.weights"), "aggregation.weights") is None
    run_weights = _weights_of(_get(config, "aggregation.weights")) if aggregation_ok else None
    methods = []
    for name, node in (config.get("methods") or {}).items():
        if node is None:
            continue
        key = f"methods.{name}"
        if not isinstance(node, dict) or not isinstance(node.get("segmenter"), dict) \
                or "_target_" not in node["segmenter"]:
            problems.append(_partial_method(key, node))
            continue
        found = [_weights(node.get("aggregation"), f"{key}.aggregation")]
        if node.get("features") is not None:
            found.append(_integer(config, f"{key}.features.timestep", 0, NUM_TRAIN_TIMESTEPS, optional=True))
            found.append(_integer(config, f"{key}.features.noise_seed", 0, optional=True))
        if node.get("protocol") is not None:
            found.append(f"{key}.protocol: a method is scored under the run's protocol; choose it with "
                         "protocol=diffcut (conf/protocol/), not per method")
        segmenter, problem = _build_segmenter(node["segmenter"], f"{key}.segmenter")
        found.append(problem or (_num_points(f"{key}.segmenter", node["segmenter"], side)
                                 if node.get("features") is None else None))
        problems.extend(found)
        if not any(found):
            methods.append(_method(str(name), node, segmenter, run_weights))
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"methods: names must be unique, got duplicates {duplicates}")
    if not any(node is not None for node in (config.get("methods") or {}).values()):
        problems.append("methods: no method configured (every entry is null)")
    return methods


# --------------------------------------------------------------------------------------------- the spec
def _model(node: dict[str, Any]) -> ModelSpec:
    def optional_int(key: str) -> int | None:
        return int(node[key]) if node.get(key) is not None else None

    return ModelSpec(
        name=str(node.get("name")), kind=str(node.get("kind") or "unet"),
        dtype=str(node["dtype"]) if node.get("dtype") is not None else None,
        timestep=optional_int("timestep"), size=optional_int("size"), noise=bool(node.get("noise", False)),
        noise_seed=optional_int("noise_seed"), head_chunk=optional_int("head_chunk"),
        joint_layers=tuple(node.get("joint_layers") or ()),
        query_chunk=node.get("query_chunk", DEFAULT_QUERY_CHUNK),
        backbone=node.get("backbone") or {}, node=node)


def _data(node: dict[str, Any]) -> DataSpec:
    return DataSpec(name=str(node.get("name")), size=int(node["size"]), num_classes=int(node["num_classes"]),
                    background=node.get("background"), limit=node.get("limit"), shard=node.get("shard"),
                    subset=node.get("subset"), node=node)


def _options(config: Mapping[str, Any]) -> RunOptions:
    cache = config.get("cache") or {}
    return RunOptions(
        output_dir=str(_get(config, "paths.output_dir")) if _get(config, "paths.output_dir") is not None else None,
        device=str(config.get("device", "auto")),
        batch_size=int(config["batch_size"]),
        num_workers=int(config.get("num_workers", 0)),
        grid_images=int(config.get("grid_images", 0)),
        progress=bool(config.get("progress", False)),
        save_masks=mask_format(config.get("save_masks")),
        max_skipped=config.get("max_skipped"),
        max_unknown_label_fraction=float(config.get("max_unknown_label_fraction", 0.001)),
        allow_code_change=bool(config.get("allow_code_change", False)),
        seed=config.get("seed"),
        cache=CacheSpec(mode=str(cache.get("mode", "none")), max_gb=float(cache.get("max_gb", 8)),
                        dir=cache.get("dir")),
    )


def _hydra_files(cfg: Any, hydra_config: Any) -> tuple[tuple[str, str], ...]:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` of a command-line run (texts)."""
    if hydra_config is None or not isinstance(cfg, DictConfig):
        return ()
    return ((layout.CONFIG_YAML, OmegaConf.to_yaml(cfg)),
            (layout.HYDRA_YAML, OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_config}))),
            (layout.OVERRIDES_YAML, OmegaConf.to_yaml(hydra_config.overrides.task)))


def build_spec(cfg: Any, hydra_config: Any = None) -> RunSpec:
    """The :class:`RunSpec` of a composed config (Hydra's, or the same keys as plain dicts).

    ``hydra_config``: Hydra's own config of a command-line run (its ``.hydra/`` files are kept in
    :attr:`RunSpec.hydra_files`).

    Raises:
        SettingError: every setting outside its allowed range, on one line, each naming its key,
            the allowed range and the value given (nothing has been written).
    """
    config, problems = _resolved(cfg)
    found: list[str | None] = [*problems, *_setting_problems(config)]
    methods = _methods(config, found) if isinstance(config.get("model"), dict) else []
    found = [p for p in found if p]
    if found:
        raise SettingError(f"{len(found)} setting(s) outside the allowed range (nothing was written): "
                           + "; ".join(found))
    protocol = config.get("protocol") or dict(_DEFAULT_PROTOCOL)
    return RunSpec(
        run_name=str(config.get("run_name")),
        ablation=config.get("ablation"),
        model=_model(config["model"]),
        data=_data(config["dataset"]),
        protocol=ProtocolSpec(name=str(protocol.get("name")), params=protocol),
        aggregation=config.get("aggregation"),
        methods=tuple(methods),
        options=_options(config),
        config=config,
        hydra_files=_hydra_files(cfg, hydra_config),
    )


def as_spec(spec_or_config: Any) -> RunSpec:
    """``spec_or_config`` when it is a :class:`RunSpec`, else :func:`build_spec` of it (a composed config)."""
    return spec_or_config if isinstance(spec_or_config, RunSpec) else build_spec(spec_or_config)
