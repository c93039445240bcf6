"""Compose the project's Hydra configs in tests (no Hydra runtime, no chdir), and the synthetic data runs read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from eval.config_path import config_dir
from eval.data.synthetic import write_synthetic_coco_stuff

CONF_DIR = config_dir()
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_eval(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The ``eval`` config with ``overrides`` (pass ``paths.output_dir=...`` to run it)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides, return_hydra_config=return_hydra_config)


# The tiny backbone's attention sharpened so DiffSeg finds several segments per image (about 11 on the
# synthetic images): with one segment per image the totals would depend on the labels alone, and a test
# comparing totals (cache, resume, shards, merge) could not see wrong maps or records.
MULTI_SEGMENT = "model.backbone.attention_scale=20"
MIN_SEGMENTS = 3.0
# One method (DiffSeg) on 128 px images with the tiny backbone: a few seconds per run.
FAST_DIFFSEG = ["experiment=coco_stuff27_diffseg", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0",
                "progress=false", "device=cpu", MULTI_SEGMENT]


def assert_multi_segment(result: dict, minimum: float = MIN_SEGMENTS) -> dict:
    """``result`` after checking that every method found at least ``minimum`` segments per image on average.

    Equality tests of totals call it on their reference run: only then do the totals depend on the maps.
    """
    few = {name: m.get("mean_segments") for name, m in result["methods"].items()
           if not (m.get("mean_segments") or 0) >= minimum}
    assert not few, f"fixture too easy: mean segments per image {few} < {minimum}; the totals would not see the maps"
    return result


def run_config(root: Path, out: Path, *extra: str, fast: list[str] = FAST_DIFFSEG) -> DictConfig:
    """The config of a run of ``fast`` (default :data:`FAST_DIFFSEG`) over ``root`` into ``out``, then ``extra``."""
    return compose_eval([*fast, f"dataset.root={root}", f"paths.output_dir={out}", *extra])


def synthetic_coco_stuff_root(tmp_path_factory: pytest.TempPathFactory, num_images: int, seed: int) -> Path:
    """A new folder holding ``num_images`` synthetic COCO-Stuff images (``write_synthetic_coco_stuff``)."""
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=num_images, seed=seed)
    return root


def totals(result: dict) -> dict:
    """Per method, the summed matching counts of a result (what two equal runs share exactly)."""
    return {name: (m["tp"], m["fp"], m["fn"], m["valid"], m["images"]) for name, m in result["methods"].items()}


def interrupt_unet_pass(monkeypatch: pytest.MonkeyPatch, call: int = 2):
    """Make the ``call``-th UNet pass raise KeyboardInterrupt (Ctrl-C in the middle of a run).

    Returns a function that puts the real pass back, for the resume that follows.
    """
    from diffseg.backbone import StableDiffusionBackbone

    original = StableDiffusionBackbone.unet_pass
    calls = {"n": 0}

    def dies(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionBackbone, "unet_pass", dies)
    return lambda: monkeypatch.setattr(StableDiffusionBackbone, "unet_pass", original)
