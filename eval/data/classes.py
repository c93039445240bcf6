"""Every benchmark by its config name (``dataset.name``): its dataset class, title, class names and preparation.

The list of benchmarks is ``conf/dataset/*.yaml``: each config's ``_target_`` names the
:class:`~eval.data.base.LabelledImages` subclass that owns the dataset (its classes, label mapping,
layout and ``make`` target), and that class's module holds its ``PINNED`` files and its
``PREPARATION`` (:class:`~eval.data.preparation.Preparation`). Adding a config adds the dataset
everywhere: to the tables, the comparison, ``datasets/prepare.py`` and ``make data-*``. The dataset
modules (and so torch) are imported on first use: the analysis commands (``eval.tables``,
``eval.compare``) start without them.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

from omegaconf import OmegaConf

from eval.config_path import config_dir

__all__ = [
    "CONF_DIR",
    "dataset_class",
    "dataset_classes",
    "dataset_modules",
    "dataset_title",
    "default_root",
    "preparations",
]

CONF_DIR = config_dir()


@cache
def _configs() -> dict[str, Any]:
    """config name -> the (unresolved) ``conf/dataset/<name>.yaml``, in file-name order."""
    found = {}
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if cfg.get("name") != path.stem or "." not in str(cfg.get("_target_", "")):
            raise RuntimeError(f"{path} must state `name: {path.stem}` and the `_target_` class of the dataset")
        found[path.stem] = cfg
    return found


@cache
def _datasets() -> dict[str, Any]:
    found = {}
    for name, cfg in _configs().items():
        module, _, cls_name = cfg["_target_"].rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        if cls.name != name:
            raise RuntimeError(f"{cfg['_target_']}.name is {cls.name!r}, but conf/dataset/{name}.yaml names it")
        found[name] = cls
    return found


def dataset_class(name: str) -> Any:
    """The :class:`~eval.data.base.LabelledImages` subclass of config ``name`` (KeyError naming the known ones)."""
    datasets = _datasets()
    if name not in datasets:
        raise KeyError(f"no dataset config {name!r}; conf/dataset/ has {sorted(datasets)}")
    return datasets[name]


def dataset_title(name: str) -> str:
    """The title of dataset ``name`` (its config name); ``name`` itself for an unknown dataset."""
    return _datasets()[name].title if name in _configs() else name


def dataset_classes(name: str) -> tuple[str, ...] | None:
    """The class names of dataset ``name`` in id order; None for an unknown dataset.

    ``()`` for a dataset whose classes are set per run (``dataset=folder``: its ``class_names`` setting,
    recorded in each run's ``metrics.json`` config).
    """
    return _datasets()[name].classes if name in _configs() else None


def dataset_modules() -> dict[str, ModuleType]:
    """config name -> the module that owns the dataset (its class's module)."""
    return {name: importlib.import_module(cls.__module__) for name, cls in _datasets().items()}


def preparations() -> dict[str, Any]:
    """``datasets/prepare.py`` sub-command -> (config name, the module's ``PREPARATION``), in config order.

    Configs of one module (``cityscapes``, ``cityscapes19``) share its command, named by the first config.

    Raises:
        RuntimeError: two modules declare the same command.
    """
    found: dict[str, Any] = {}
    for name, module in dataset_modules().items():
        prep = module.PREPARATION
        if prep.command in found and found[prep.command][1] is not prep:
            raise RuntimeError(f"datasets/prepare.py command {prep.command!r} is declared twice "
                               f"(again in {module.__name__})")
        found.setdefault(prep.command, (name, prep))
    return found


def default_root(name: str) -> str:
    """The ``root`` config ``name`` resolves to with the default ``paths`` (relative to the current folder)."""
    merged = OmegaConf.create({"paths": OmegaConf.load(CONF_DIR / "paths" / "default.yaml"),
                               "dataset": _configs()[name]})
    return str(OmegaConf.select(merged, "dataset.root"))

