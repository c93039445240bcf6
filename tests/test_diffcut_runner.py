"""DiffCut in the harness: a method of the same runs, its own UNet pass or DiffSeg's, the same metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra_compose import compose_eval

from diffseg import DiffCut
from diffseg.backbone import StableDiffusionBackbone
from diffseg.masks import read_mask_png
from diffseg.testing.tiny import tiny_backbone
from eval.data.coco_stuff import CocoStuff27
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.metrics import HungarianSegmentationMetric, metric_json
from eval.run import evaluate
from eval.run.methods import upsample_ids

FAST = ["experiment=coco_stuff27", "+method@methods.diffcut=diffcut", "model=tiny", "dataset.size=128",
        "batch_size=2", "num_workers=0", "progress=false", "device=cpu", "save_masks=true",
        "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=3, seed=8)
    return root


def count_unet_calls(monkeypatch) -> dict:
    calls = {"n": 0}
    original = StableDiffusionBackbone.unet_pass

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionBackbone, "unet_pass", counted)
    return calls


def test_diffcut_row_equals_a_direct_computation(root, tmp_path, monkeypatch):
    # Both sides at batch 1: the CPU UNet's floats depend on which images share a batch (~5e-7),
    # enough for DiffCut to number its clusters differently, so raw ids are only compared at equal batches.
    calls = count_unet_calls(monkeypatch)
    result = evaluate(compose_eval([*FAST, "batch_size=1", f"dataset.root={root}", f"paths.output_dir={tmp_path}"]))
    assert list(result["methods"]) == ["DiffSeg", "DiffCut"]
    assert calls["n"] == 3 * 2  # 3 batches, each: DiffSeg's pass + DiffCut's own pass (t=50, shared noise)
    data = CocoStuff27(root, size=128)
    backbone = tiny_backbone(input_size=128)
    method = DiffCut(tau=0.5, alpha=10, mask_size=128, max_segments=128, max_depth=64)
    metric = HungarianSegmentationMetric(27)
    for i, image_id in enumerate(data.ids):
        image, label, _ = data[i]
        _, features = backbone.unet_pass(image[None], 50, noise="shared", seed=42, attention=False, features=True)
        expected = upsample_ids(method(features), 128)[0]
        saved = torch.as_tensor(read_mask_png(tmp_path / "masks" / "DiffCut" / f"{image_id}.png"))
        assert torch.equal(saved, expected)
        metric.update(expected[None], label[None])
    ours = metric_json(metric.compute())
    assert {k: result["methods"]["DiffCut"][k] for k in ours} == ours
    assert result["provenance"]["non_default"]["DiffCut"]["model.name"] == ["tiny-random", "segmind/SSD-1B"]


def test_shared_pass_feeds_both_methods_with_one_unet_call(root, tmp_path, monkeypatch):
    calls = count_unet_calls(monkeypatch)
    result = evaluate(compose_eval([*FAST, "methods.diffcut.features.timestep=null", f"dataset.root={root}",
                                    f"paths.output_dir={tmp_path}"]))
    assert calls["n"] == 2  # one pass per batch feeds the attention and the features
    assert result["methods"]["DiffCut"]["images"] == 3
    assert "features.timestep" in result["provenance"]["non_default"]["DiffCut"]


def test_upsample_ids_keeps_blocks_and_moves_boundaries_between_pixels():
    ids = torch.tensor([[[0, 1], [2, 2]]])
    up = upsample_ids(ids, 4)
    assert up.tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]]
    assert torch.equal(upsample_ids(ids, 2), ids)


def test_diffcut_experiments_compose(tmp_path):
    for name in ("coco_stuff27_diffcut", "cityscapes_diffcut"):
        cfg = compose_eval([f"experiment={name}", f"paths.output_dir={tmp_path}"])
        assert [k for k, v in cfg.methods.items() if v is not None] == ["diffcut"]
        assert cfg.model.name == "segmind/SSD-1B" and cfg.methods.diffcut.output_size == 512
        assert cfg.protocol.name == "diffseg"
        native = compose_eval([f"experiment={name}", "protocol=diffcut", f"paths.output_dir={tmp_path}"])
        assert native.protocol.name == "diffcut" and native.dataset.size == 128
        assert native.methods.diffcut.output_size == 128 and native.protocol.geometry.input_size == 1024


def test_a_method_cannot_choose_its_own_protocol(root, tmp_path):
    cfg = compose_eval([*FAST, f"dataset.root={root}", f"paths.output_dir={tmp_path}",
                        "+methods.diffcut.protocol={label_size: 128}"])
    with pytest.raises(ValueError, match="protocol=diffcut"):
        evaluate(cfg)
