"""eval.rescore under a run's own protocol gives the run's totals, and its twins: changed saved masks change them.

The equality runs on runs with several segments per image (:func:`hydra_compose.assert_multi_segment`),
so the totals depend on the masks rescore reads; each twin overwrites one saved mask (another
image's mask, or one constant segment) and checks that the re-scored totals move, by exactly the
change of that image's stats.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import (
    MULTI_SEGMENT,
    assert_multi_segment,
    compose_eval,
    run_config,
    synthetic_coco_stuff_root,
    totals,
)
from omegaconf import OmegaConf

from diffseg.masks import read_mask_png, write_mask_png
from eval.data.synthetic import write_synthetic_voc
from eval.instantiate import build_dataset
from eval.metrics import image_stats
from eval.rescore import rescore
from eval.run import evaluate
from eval.run.build import build_protocol
from eval.run.coco_results import CocoResults
from eval.run.mask_files import MASK_DIR

# DiffCut's protocol on VOC (its own geometry): the tiny backbone with the sharpened attention of FAST_DIFFSEG.
DIFFCUT_RUN = ["experiment=voc21", "model=tiny", "dataset.size=128", "protocol=diffcut", "protocol.size=128",
               "batch_size=2", "num_workers=0", "progress=false", "device=cpu", "grid_images=0",
               "methods=diffseg_only", MULTI_SEGMENT]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=4, seed=23)


@pytest.fixture(scope="module")
def png_run(coco_root, tmp_path_factory) -> tuple[Path, dict]:
    """A DiffSeg-protocol run (COCO-Stuff-27) that saved PNG masks, with several segments per image."""
    out = tmp_path_factory.mktemp("png_run")
    result = evaluate(run_config(coco_root, out, "save_masks=png", "grid_images=0"))
    return out, assert_multi_segment(result)


@pytest.fixture(scope="module")
def coco_run(coco_root, tmp_path_factory) -> tuple[Path, dict]:
    """The same run saving its masks as COCO results."""
    out = tmp_path_factory.mktemp("coco_run")
    result = evaluate(run_config(coco_root, out, "save_masks=coco", "grid_images=0"))
    return out, assert_multi_segment(result)


@pytest.fixture(scope="module")
def diffcut_run(tmp_path_factory) -> tuple[Path, dict]:
    """A DiffCut-protocol run (VOC, its own geometry) that saved PNG masks, with several segments per image."""
    root = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(root, num_images=3, seed=4, size_range=(100, 160))
    out = tmp_path_factory.mktemp("diffcut_run")
    result = evaluate(compose_eval([*DIFFCUT_RUN, f"dataset.root={root}", "save_masks=png",
                                    f"paths.output_dir={out}"]))
    return out, assert_multi_segment(result)


def _records(folder: Path) -> dict[str, dict]:
    lines = (folder / "per_image.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines) if "methods" in r}


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "perturbed"
    shutil.copytree(run, copy)
    return copy


def _busiest(result: dict, records: dict[str, dict], method: str = "DiffSeg") -> str:
    """The evaluated image whose mask has the most segments."""
    return max(result["image_ids"], key=lambda i: (records[i]["methods"][method]["segments"], i))


def _label(run: Path, image_id: str) -> torch.Tensor:
    """``image_id``'s label as the run scored it (the run's dataset and protocol geometry)."""
    cfg = OmegaConf.create(json.loads((run / "metrics.json").read_text())["config"])
    dataset = build_dataset(cfg.dataset, build_protocol(cfg).geometry)
    return dataset.label(image_id)


def _expected_change(result: dict, records: dict[str, dict], image_id: str, new_stats: dict) -> dict:
    """The run's DiffSeg totals with ``image_id``'s stats replaced by ``new_stats``."""
    old = records[image_id]["methods"]["DiffSeg"]
    m = result["methods"]["DiffSeg"]
    return {"DiffSeg": tuple([a - b + c for a, b, c in zip(m[k], old[k], new_stats[k], strict=True)]
                             for k in ("tp", "fp", "fn")) + (m["valid"], m["images"])}


@pytest.mark.parametrize("fixture", ["png_run", "coco_run", "diffcut_run"])
def test_rescore_under_the_runs_own_protocol_gives_its_totals(fixture, request, tmp_path):
    run, result = request.getfixturevalue(fixture)
    protocol = result["run"]["protocol"]
    again = rescore(run, protocol, tmp_path / "rescored")
    assert_multi_segment(again)  # the masks it read hold several segments per image
    assert totals(again) == totals(result)
    assert {i: r["methods"] for i, r in _records(tmp_path / "rescored").items()} == \
        {i: r["methods"] for i, r in _records(run).items()}


@pytest.mark.parametrize("perturbation", ["another image's mask", "one segment"])
def test_rescore_totals_follow_the_png_masks_it_reads(png_run, tmp_path, perturbation):
    """Twin of the equality: one saved PNG mask overwritten changes the re-scored totals by that image's change."""
    run, result = png_run
    copy = _copy(run, tmp_path)
    records = _records(run)
    image_id = _busiest(result, records)
    path = copy / MASK_DIR / "DiffSeg" / f"{image_id}.png"
    mask = read_mask_png(path)
    if perturbation == "one segment":
        new = np.zeros_like(mask)
    else:
        other = next(i for i in result["image_ids"] if i != image_id
                     and not np.array_equal(read_mask_png(run / MASK_DIR / "DiffSeg" / f"{i}.png"), mask))
        new = read_mask_png(run / MASK_DIR / "DiffSeg" / f"{other}.png")
        assert new.shape == mask.shape  # the diffseg geometry: every mask is dataset.size square
    write_mask_png(path, new)

    changed = rescore(copy, "diffseg", tmp_path / "rescored")
    assert totals(changed) != totals(result)
    stats = image_stats(torch.as_tensor(new)[None], _label(run, image_id)[None], 27)[0]
    assert stats["tp"] != records[image_id]["methods"]["DiffSeg"]["tp"]
    assert totals(changed) == _expected_change(result, records, image_id, stats)
    rescored = _records(tmp_path / "rescored")
    assert rescored[image_id]["methods"]["DiffSeg"]["segments"] == len(np.unique(new))
    assert all(rescored[i]["methods"] == records[i]["methods"] for i in result["image_ids"] if i != image_id)


def test_rescore_totals_follow_the_coco_masks_it_reads(coco_run, tmp_path):
    """Twin for ``save_masks=coco``: one image's RLE records replaced by one segment change the totals."""
    run, result = coco_run
    copy = _copy(run, tmp_path)
    records = _records(run)
    image_id = _busiest(result, records)
    path = copy / MASK_DIR / "DiffSeg.json"
    saved = CocoResults.load(path)
    shape = saved.mask(image_id).shape
    saved.add(image_id, np.zeros(shape, dtype=np.int64))  # replaces the image's records
    saved.save(path)
    assert CocoResults.load(path).mask(image_id).max() == 0

    changed = rescore(copy, "diffseg", tmp_path / "rescored")
    stats = image_stats(torch.zeros((1, *shape), dtype=torch.int64), _label(run, image_id)[None], 27)[0]
    assert totals(changed) != totals(result)
    assert totals(changed) == _expected_change(result, records, image_id, stats)


def test_rescore_totals_follow_the_masks_of_a_diffcut_run(diffcut_run, tmp_path):
    """Twin under DiffCut's protocol and geometry: one mask made a single segment changes the totals."""
    run, result = diffcut_run
    copy = _copy(run, tmp_path)
    records = _records(run)
    image_id = _busiest(result, records)
    path = copy / MASK_DIR / "DiffSeg" / f"{image_id}.png"
    new = np.zeros_like(read_mask_png(path))
    write_mask_png(path, new)

    changed = rescore(copy, "diffcut", tmp_path / "rescored")
    label = _label(run, image_id)
    assert tuple(label.shape) == new.shape
    stats = image_stats(torch.as_tensor(new)[None], label[None], 21, background=0, protocol="diffcut")[0]
    assert totals(changed) != totals(result)
    assert totals(changed) == _expected_change(result, records, image_id, stats)
