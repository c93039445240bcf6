"""Compose the project's Hydra configs in tests (no Hydra runtime, no chdir)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_eval(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The ``eval`` config with ``overrides`` (pass ``paths.output_dir=...`` to run it)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides, return_hydra_config=return_hydra_config)


# One method (DiffSeg) on 128 px images with the tiny backbone: a few seconds per run.
FAST_DIFFSEG = ["experiment=coco_stuff27_diffseg", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0",
                "progress=false", "device=cpu"]


def totals(result: dict) -> dict:
    """Per method, the summed matching counts of a result (what two equal runs share exactly)."""
    return {name: (m["tp"], m["fp"], m["fn"], m["valid"], m["images"]) for name, m in result["methods"].items()}
