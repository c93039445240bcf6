"""The runner end to end: tiny random backbone, synthetic datasets in the real on-disk layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval, interrupt_unet_pass
from PIL import Image

from diffseg.masks import read_mask_png
from eval.data.coco_stuff import CocoStuff27
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff
from eval.metrics import HungarianSegmentationMetric, metric_json
from eval.run import evaluate
from eval.run.merge import merge_runs

# Small images keep the tiny backbone fast: 128 px -> 16x16 latents -> attention sides 16, 8, 4, 2.
FAST = [
    "model=tiny",
    "dataset.size=128",
    "batch_size=2",
    "num_workers=0",
    "progress=false",
    "device=cpu",
    "methods.kmeans_c.segmenter.n_init=1",
    "methods.kmeans_s.segmenter.n_init=1",
]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=5, seed=3)
    return root


def run(root: Path, out: Path, *extra: str, experiment: str = "coco_stuff27") -> dict:
    fast = [o for o in FAST if experiment.startswith(("coco", "cityscapes")) or not o.startswith("methods.kmeans")]
    cfg = compose_eval([f"experiment={experiment}", *fast, f"dataset.root={root}", f"paths.output_dir={out}", *extra])
    return evaluate(cfg)


def without_volatile(result: dict) -> dict:
    return {name: {k: v for k, v in m.items()} for name, m in result["methods"].items()}


@pytest.fixture(scope="module")
def clean_run(coco_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, run(coco_root, out, "save_masks=true")


def test_metrics_json_schema_and_values(clean_run, coco_root):
    out, result = clean_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["methods"] == result["methods"]
    assert list(result["methods"]) == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    for m in result["methods"].values():
        assert set(m) >= {"acc", "miou", "iou", "tp", "fp", "fn", "valid", "images", "mean_segments"}
        assert m["images"] == 5 and len(m["iou"]) == 27
        assert 0.0 <= m["acc"] <= 100.0 and 0.0 <= m["miou"] <= 100.0
    assert result["run"] == {"name": "coco_stuff27", "dataset": "coco_stuff27", "model": "tiny-random",
                             "ablation": None, "shard": None, "limit": None, "protocol": "diffseg",
                             "subset": "curated"}
    prov = result["provenance"]
    assert prov["random_weights"] is True and prov["synthetic_data"] is True and prov["partial"] is False
    assert prov["images"] == {"evaluated": 5, "skipped": 0, "selected": 5, "dataset": 5}
    assert result["image_ids"] == sorted(CocoStuff27(coco_root, size=128).ids)
    assert json.loads((out / "run.json").read_text())["fingerprint"] == prov["fingerprint"]
    assert all(json.loads(line)["fp"] == prov["fingerprint"]
               for line in (out / "per_image.jsonl").read_text().splitlines())
    assert result["config"]["model"]["timestep"] == 300
    assert {"torch", "diffusers"} <= set(result["versions"])
    assert len((out / "per_image.jsonl").read_text().splitlines()) == 5
    assert (out / "qualitative.png").exists()


def test_totals_match_an_independent_recount_from_saved_masks(clean_run, coco_root):
    """Masks on disk + labels from the loader -> the official metric -> the same totals."""
    out, result = clean_run
    data = CocoStuff27(coco_root, size=128)
    for name, summary in result["methods"].items():
        metric = HungarianSegmentationMetric(27)
        for i, image_id in enumerate(data.ids):
            mask = read_mask_png(out / "masks" / name / f"{image_id}.png")
            metric.update(torch.as_tensor(mask)[None], data[i][1][None])
        again = metric_json(metric.compute())
        assert again["tp"] == summary["tp"] and again["fp"] == summary["fp"] and again["fn"] == summary["fn"]
        assert again["acc"] == pytest.approx(summary["acc"], abs=1e-9)
        assert again["mean_segments"] == pytest.approx(summary["mean_segments"])


def test_k_means_s_uses_ground_truth_class_counts(clean_run, coco_root):
    out, _ = clean_run
    data = CocoStuff27(coco_root, size=128)
    for i, image_id in enumerate(data.ids):
        label = data[i][1]
        k = len(set(label[label >= 0].tolist()))
        mask = np.array(Image.open(out / "masks" / "K-Means-S" / f"{image_id}.png"))
        assert len(np.unique(mask)) <= k
        assert len(np.unique(np.array(Image.open(out / "masks" / "K-Means-C" / f"{image_id}.png")))) <= 6


def test_resume_after_interruption_gives_the_same_totals(clean_run, coco_root, tmp_path, monkeypatch):
    _, clean = clean_run
    restore = interrupt_unet_pass(monkeypatch)  # the second batch is interrupted
    with pytest.raises(KeyboardInterrupt):
        run(coco_root, tmp_path)
    assert len((tmp_path / "per_image.jsonl").read_text().splitlines()) == 2  # the first batch
    assert not (tmp_path / "metrics.json").exists()
    restore()
    # A torn last line (killed mid-write) is dropped and that image redone.
    with open(tmp_path / "per_image.jsonl", "a") as fh:
        fh.write('{"id": "0000')
    resumed = run(coco_root, tmp_path)
    assert without_volatile(resumed) == without_volatile(clean)
    assert resumed["timing"]["images_this_invocation"] == 3


def test_corrupt_image_is_reported_and_the_run_goes_on(tmp_path):
    root = tmp_path / "coco"
    ids = write_synthetic_coco_stuff(root, num_images=4, seed=5)
    (root / "val2017" / f"{ids[1]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = run(root, tmp_path / "out")
    assert [s[0] for s in result["skipped"]] == [ids[1]]
    assert f"{ids[1]}.jpg" in result["skipped"][0][1]
    assert all(m["images"] == 3 for m in result["methods"].values())
    assert result["provenance"]["partial"] and result["provenance"]["images"]["skipped"] == 1
    # A skipped image is not done: once readable, a resume evaluates it.
    write_synthetic_coco_stuff(root, num_images=4, seed=5)
    again = run(root, tmp_path / "out")
    assert again["skipped"] == [] and again["timing"]["images_this_invocation"] == 1
    assert all(m["images"] == 4 for m in again["methods"].values())
    assert not again["provenance"]["partial"]


def test_shards_merged_equal_one_run(coco_root, tmp_path):
    # Batch 1 on both sides: a shard batches other images together than one run does, and the CPU
    # UNet's floats depend on the batch (~1e-6), so exact totals are only compared at equal batches.
    clean = run(coco_root, tmp_path / "one", "batch_size=1")
    shards = [tmp_path / "s0", tmp_path / "s1"]
    for i, d in enumerate(shards):
        part = run(coco_root, d, f"dataset.shard={i}/2", "batch_size=1")
        assert part["run"]["shard"] == f"{i}/2"
    merged = merge_runs(shards, tmp_path / "merged")
    assert without_volatile(merged) == without_volatile(clean)
    assert json.loads((tmp_path / "merged" / "metrics.json").read_text())["methods"] == merged["methods"]


def test_cityscapes_layout_end_to_end(tmp_path):
    root = tmp_path / "cityscapes"
    write_synthetic_cityscapes(root, num_images=2, seed=1)
    result = run(root, tmp_path / "out", experiment="cityscapes")
    assert result["run"]["dataset"] == "cityscapes"
    assert result["config"]["methods"]["diffseg"]["segmenter"]["kl_threshold"] == 0.9
    assert all(m["images"] == 2 for m in result["methods"].values())


def test_in_run_ablation_and_cache(coco_root, tmp_path):
    result = run(coco_root, tmp_path / "a", "dataset.limit=2", "cache=memory", experiment="ablation_kl_threshold")
    assert [m["ablation"]["value"] for m in result["methods"].values()] == [0.5, 0.7, 0.9, 1.1, 1.3]
    # Same backbone setting again: every image comes from the cache, results unchanged.
    again = run(coco_root, tmp_path / "b", "dataset.limit=2", "cache=memory", experiment="ablation_kl_threshold")
    assert again["cache"]["hits"] == 2 and again["cache"]["misses"] == 0
    assert without_volatile(again) == without_volatile(result)


def test_missing_dataset_names_path_and_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data-coco") as info:
        run(tmp_path / "nowhere", tmp_path / "out")
    assert str(tmp_path / "nowhere") in str(info.value)
