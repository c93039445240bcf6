"""DiffCut in the harness: a method of the same runs, its own UNet pass or DiffSeg's, the same metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval
from scipy.optimize import linear_sum_assignment

from diffseg import DiffCut
from diffseg.backbone import StableDiffusionBackbone
from diffseg.masks import read_mask_png
from diffseg.tiny import tiny_backbone
from eval.data.coco_stuff import CocoStuff27
from eval.data.synthetic import write_synthetic_coco_stuff, write_synthetic_voc
from eval.data.voc import Voc21
from eval.methods import upsample_ids
from eval.metrics import HungarianSegmentationMetric, match_stats, metric_json
from eval.run import evaluate

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
    calls = count_unet_calls(monkeypatch)
    result = evaluate(compose_eval([*FAST, f"dataset.root={root}", f"paths.output_dir={tmp_path}"]))
    assert list(result["methods"]) == ["DiffSeg", "DiffCut"]
    assert calls["n"] == 2 * 2  # 2 batches, each: DiffSeg's pass + DiffCut's own pass (t=50, shared noise)
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
        assert [k for k, v in cfg.methods.items() if v is not None] == ["diffcut", "diffcut_native"]
        assert cfg.model.name == "segmind/SSD-1B" and cfg.methods.diffcut.output_size == 512
        native = cfg.methods.diffcut_native
        assert native.output_size is None and native.protocol.label_size == 128 and native.name == "DiffCut@128"


def _brute_force_diffcut_protocol(pred: np.ndarray, label: np.ndarray, num_classes: int, background: int):
    """Plain loops: histogram, present classes matched one-to-one, other segments into background, counts."""
    ncols = max(num_classes, int(pred.max()) + 1)
    hist = np.zeros((num_classes, ncols), dtype=np.int64)
    for p, lab in zip(pred.ravel(), label.ravel(), strict=True):
        if 0 <= lab < num_classes:
            hist[lab, p] += 1
    present = [c for c in range(num_classes) if hist[c].sum() > 0]
    rows, cols = linear_sum_assignment(hist[present], maximize=True)
    match = {present[r]: c for r, c in zip(rows.tolist(), cols.tolist(), strict=True)}
    leftover = [c for c in range(ncols) if c not in match.values()]
    as_background = hist[:, leftover].sum(axis=1)
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    for c in range(num_classes):
        if c in match:
            column = hist[:, match[c]] + (as_background if c == background else 0)
            tp[c], fp[c], fn[c] = column[c], column.sum() - column[c], hist[c].sum() - column[c]
        elif c == background:
            fp[c] = as_background.sum()
    return tp, fp, fn


def test_merge_unmatched_moves_leftover_segments_into_background():
    hist = np.array([[5, 0, 2, 3],    # background: matched to column 0
                     [0, 6, 1, 0],    # class 1: matched to column 1; columns 2 and 3 unmatched
                     [0, 0, 0, 0]])   # class 2 absent: DiffSeg's protocol still matches it (column 2)
    tp, fp, fn = match_stats(hist)
    assert tp.tolist() == [5, 6, 0] and fn.tolist() == [5, 1, 0] and fp.tolist() == [0, 0, 3]
    tp, fp, fn = match_stats(hist, background=0)
    assert tp.tolist() == [10, 6, 0] and fn.tolist() == [0, 1, 0] and fp.tolist() == [1, 0, 0]
    # Background absent: the merged pixels are false background.
    tp, fp, fn = match_stats(np.array([[0, 0, 0], [4, 1, 2]]), background=0)
    assert tp.tolist() == [0, 4] and fp.tolist() == [3, 0] and fn.tolist() == [0, 3]


def test_diffcut_protocol_on_a_background_dataset_equals_plain_loops(tmp_path):
    root = tmp_path / "voc"
    write_synthetic_voc(root, num_images=2, seed=4, size_range=(60, 90))
    cfg = compose_eval(["experiment=voc21", "+method@methods.diffcut=diffcut",
                        "+method@methods.diffcut_native=diffcut_native", "model=tiny", "dataset.size=128",
                        "batch_size=2", "num_workers=0", "progress=false", "device=cpu", "save_masks=true",
                        "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null",
                        "methods.diffcut_native.protocol.label_size=64",
                        "methods.diffcut_native.segmenter.mask_size=64",
                        f"dataset.root={root}", f"paths.output_dir={tmp_path / 'out'}"])
    result = evaluate(cfg)
    assert list(result["methods"]) == ["DiffSeg", "DiffCut", "DiffCut@128"]
    data = Voc21(root, size=128)
    totals = np.zeros((3, 21), dtype=np.int64)
    for i, image_id in enumerate(data.ids):
        label = data[i][1]
        small = torch.nn.functional.interpolate(label[None, None].float(), size=(64, 64), mode="nearest-exact")
        mask = read_mask_png(tmp_path / "out" / "masks" / "DiffCut@128" / f"{image_id}.png")
        assert mask.shape == (64, 64)
        totals += np.stack(_brute_force_diffcut_protocol(mask, small[0, 0].long().numpy(), 21, 0))
    ours = result["methods"]["DiffCut@128"]
    assert [ours["tp"], ours["fp"], ours["fn"]] == totals.tolist()
    assert any("DiffCut@128: DiffCut's protocol (labels and masks at 64, unmatched segments merged" in n
               for n in result["provenance"]["notes"])
    # The same clusters under DiffSeg's protocol are scored differently (upsampled, no merge).
    assert result["methods"]["DiffCut"]["valid"] != ours["valid"]
