"""protocol=seg4diff (Seg4Diff's test_unsupervised + detectron2's test mapper) and the MM-DiT runs of eval.run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra_compose import compose_eval
from omegaconf import OmegaConf

from diffseg import Seg4Diff
from diffseg.testing.tiny_mmdit import tiny_mmdit_backbone
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff
from eval.instantiate import build_dataset
from eval.metrics import image_stats
from eval.metrics.protocols import ProtocolError
from eval.metrics.protocols.seg4diff import Seg4DiffGeometry, shortest_edge_size
from eval.report.ledger import load_ledger
from eval.run.joint_passes import JointAttentionPasses
from eval.run.methods import Method
from eval.run.runner import evaluate, run_cli
from eval.spec import SettingError

ONLY_SEG4DIFF = ["methods.diffseg=null", "methods.diffseg_fp32=null", "methods.kmeans_c=null", "methods.kmeans_s=null"]
FAST = ["num_workers=0", "progress=false", "device=cpu", "grid_images=0"]


# ------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(("size", "expected"), [
    ((480, 640), (640, 853)),      # 640 * 640 / 480 = 853.33
    ((427, 640), (640, 959)),      # 640 * 640 / 427 = 959.25
    ((500, 375), (853, 640)),      # portrait: the width is the short side
    ((256, 401), (640, 1003)),     # 2.5 * 401 = 1002.5: int(x + 0.5) rounds half up (Python's round gives 1002)
    ((1024, 2048), (640, 1280)),   # Cityscapes
    ((100, 1000), (256, 2560)),    # long side 6400 > 2560: both scaled by 0.4
    ((640, 640), (640, 640)),
])
def test_shortest_edge_size_is_detectron2s(size, expected):
    assert shortest_edge_size(*size) == expected
    assert Seg4DiffGeometry().resized(*size) == expected


def test_labels_pil_nearest_no_crop_and_images_uint8():
    geometry = Seg4DiffGeometry()
    raw = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    label = geometry.label(raw)
    assert label.shape == (640, 1280) and label.dtype == torch.int64  # short side 2 -> 640, nothing cropped
    expected = raw.repeat_interleave(320, 0).repeat_interleave(320, 1)  # a scale of exactly 320: blocks
    assert torch.equal(label, expected)
    image = geometry.image(torch.full((3, 2, 4), 200, dtype=torch.uint8))
    assert image.shape == (3, 640, 1280)
    torch.testing.assert_close(image, torch.full_like(image, 200 / 127.5 - 1.0))
    with pytest.raises(ValueError, match="0..255"):
        geometry.label(torch.tensor([[300, 1]]))


def _halves(side: int) -> torch.Tensor:
    """(1, side*side, 2) image-to-text maps: token 0 on the left half of the grid, token 1 on the right."""
    grid = torch.zeros(side, side, 2)
    grid[:, : side // 2, 0] = 1.0
    grid[:, side // 2:, 1] = 1.0
    return (0.05 + grid).reshape(1, side * side, 2)


def _passes(geometry: Seg4DiffGeometry) -> tuple[JointAttentionPasses, list[Method]]:
    segmenter = Seg4Diff(kl_threshold=0.1, layers=[0], text_tokens=None)
    methods = [Method("Seg4Diff", segmenter, text_attention=True)]
    spec = SimpleNamespace(model=SimpleNamespace(joint_layers=(0,), query_chunk=256, backbone={}))  # what it reads
    return JointAttentionPasses(spec, torch.device("cpu"), methods, geometry), methods


def test_cityscapes_release_keeps_the_top_left_of_the_full_size_prediction_aligned_does_not():
    # Cityscapes' 1024 x 2048 -> 640 x 1280, scaled down 16 times: 64 x 128 recorded, 40 x 80 scored
    release = Seg4DiffGeometry(short_edge=40, max_size=160, dataset="cityscapes",
                               recorded_sizes={"cityscapes": [64, 128]})
    aligned = Seg4DiffGeometry(short_edge=40, max_size=160, dataset="cityscapes", recorded_sizes=None,
                               name="seg4diff_aligned")
    assert release.resized(64, 128) == (40, 80) and release.prediction_size((40, 80)) == (64, 128)
    assert aligned.prediction_size((40, 80)) == (40, 80)
    label = torch.zeros(1, 40, 80, dtype=torch.int64)
    label[..., 40:] = 1  # left half class 0, right half class 1
    maps = {"transformer_blocks.0.attn": _halves(8)}
    out = {}
    for geometry in (release, aligned):
        passes, methods = _passes(geometry)
        out[geometry.name] = passes.segment(methods, None, {"image_to_text": maps}, {"Seg4Diff": label}, 2)["Seg4Diff"]
    # the release: the 64 x 128 prediction's top-left 40 x 80: its second segment starts at column 64, not 40
    full = Seg4Diff(kl_threshold=0.1, layers=[0], text_tokens=None)(maps, out_size=(64, 128))
    assert torch.equal(out["seg4diff"], full[..., :40, :80])
    assert torch.equal(out["seg4diff"][0, 0], (torch.arange(80) >= 64).long())
    assert torch.equal(out["seg4diff_aligned"], Seg4Diff(kl_threshold=0.1, layers=[0], text_tokens=None)(
        maps, out_size=(40, 80)))
    stats = {k: image_stats(v, label, 2, protocol=k)[0] for k, v in out.items()}
    # by hand: class 0 (columns 0-39) <- segment 0 (columns 0-63), class 1 (40-79) <- segment 1 (64-79)
    assert stats["seg4diff"]["tp"] == [40 * 40, 40 * 16] and stats["seg4diff"]["fp"] == [40 * 24, 0]
    assert stats["seg4diff"]["fn"] == [0, 40 * 24] and stats["seg4diff"]["valid"] == 40 * 80
    assert stats["seg4diff_aligned"]["tp"] == [1600, 1600] and stats["seg4diff_aligned"]["fp"] == [0, 0]


def test_recorded_size_is_checked_like_detectron2():
    geometry = Seg4DiffGeometry(dataset="cityscapes", recorded_sizes={"cityscapes": [1024, 2048]})
    with pytest.raises(ValueError, match="1024 x 2048"):
        geometry.label(torch.zeros(512, 1024, dtype=torch.int64))


def test_protocol_configs_compose(tmp_path):
    cfg = compose_eval(["experiment=cityscapes_seg4diff", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    assert cfg.protocol.name == "seg4diff" and cfg.batch_size == 1 and cfg.model.kind == "mmdit"
    assert list(cfg.protocol.geometry.recorded_sizes.cityscapes) == [1024, 2048]
    aligned = compose_eval(["experiment=cityscapes_seg4diff", "protocol=seg4diff_aligned",
                            f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(aligned)
    assert aligned.protocol.name == "seg4diff_aligned" and aligned.protocol.geometry.recorded_sizes is None
    coco = compose_eval(["experiment=coco_stuff27_seg4diff", f"paths.output_dir={tmp_path}"])
    assert coco.model.name == "stabilityai/stable-diffusion-3-medium-diffusers"
    assert list(coco.methods.seg4diff.segmenter.layers) == [9] and coco.methods.seg4diff.segmenter.kl_threshold == 0.1


# ------------------------------------------------------------------------------------------- runs
def _coco(root: Path, num_images: int, seed: int) -> Path:
    """Synthetic COCO-Stuff with both lists (experiment=coco_stuff27_seg4diff reads every val2017 image)."""
    write_synthetic_coco_stuff(root, num_images=num_images, seed=seed)
    (root / "val2017_all.txt").write_text((root / "Coco164kFull_Stuff_Coarse_7.txt").read_text())
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return _coco(tmp_path_factory.mktemp("coco"), 2, 3)


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "per_image.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines) if "methods" in r}


def test_coco_run_records_equal_seg4diff_on_the_captured_maps(coco_root, tmp_path):
    out = tmp_path / "run"
    cfg = compose_eval(["experiment=coco_stuff27_seg4diff", "model=tiny_sd3", f"dataset.root={coco_root}",
                        f"paths.output_dir={out}", *FAST, "methods.diffseg_fp32=null", "methods.kmeans_c=null",
                        "methods.kmeans_s=null", "methods.diffseg.segmenter.num_points=4"])
    result = evaluate(cfg)
    assert result["run"]["protocol"] == "seg4diff"
    records = _records(out)
    dataset = build_dataset(cfg.dataset)
    geometry = Seg4DiffGeometry()
    backbone = tiny_mmdit_backbone("sd3", input_size=128)
    segmenter = Seg4Diff(kl_threshold=0.1, layers=[2])
    valid = 0
    for image_id in dataset.ids:
        from diffseg.preprocess import load_image

        image = load_image(dataset.image_path(image_id))
        label = dataset._classes(geometry.label(dataset.read_label(image_id)))
        assert min(label.shape) == 640 and label.shape == geometry.resized(*image.shape[-2:])  # no crop
        pixels = ((geometry.image(image) + 1.0) * 127.5).round()[None]
        store = backbone.joint_attention(pixels, layers=["transformer_blocks.2"])
        mask = segmenter(store.image_to_text(), out_size=tuple(label.shape))
        expected = image_stats(mask, label[None], 27)[0]
        got = records[image_id]["methods"]["Seg4Diff"]
        assert {k: got[k] for k in ("tp", "fp", "fn", "valid")} == {k: expected[k] for k in ("tp", "fp", "fn", "valid")}
        valid += expected["valid"]
    assert valid > 2 * 512 * 512  # scored at the resized size, not DiffSeg's 512
    assert result["methods"]["Seg4Diff"]["valid"] == valid == result["methods"]["DiffSeg"]["valid"]
    assert result["methods"]["Seg4Diff"]["mean_segments"] > 1  # several segments: the records see the maps


def test_cityscapes_release_and_aligned_runs_differ_as_the_crop_says(tmp_path):
    root = tmp_path / "cityscapes"
    write_synthetic_cityscapes(root, num_images=1, seed=0, size=(128, 256))
    totals = {}
    for protocol in ("seg4diff", "seg4diff_aligned"):
        out = tmp_path / protocol
        cfg = compose_eval(["experiment=cityscapes_seg4diff", "model=tiny_sd35", f"protocol={protocol}",
                            f"dataset.root={root}", f"paths.output_dir={out}", *FAST, *ONLY_SEG4DIFF,
                            "protocol.short_edge=64", "protocol.max_size=256",
                            "protocol.geometry.recorded_sizes={cityscapes19: [128, 256]}",
                            "methods.seg4diff.segmenter.kl_threshold=1e-9"])  # every token its own group
        if protocol == "seg4diff_aligned":
            cfg.protocol.geometry.recorded_sizes = None
        m = evaluate(cfg)["methods"]["Seg4Diff"]
        totals[protocol] = (m["tp"], m["fp"], m["fn"], m["valid"])
        assert m["valid"] <= 64 * 128 and m["mean_segments"] > 2
    assert totals["seg4diff"][3] == totals["seg4diff_aligned"][3]  # the same labels
    assert totals["seg4diff"][:3] != totals["seg4diff_aligned"][:3]  # the top-left crop is not the aligned map


def test_refusals_before_anything_is_written(coco_root, tmp_path):
    out = tmp_path / "refused"
    unet = compose_eval(["experiment=coco_stuff27_diffseg", "model=tiny", "protocol=seg4diff", "batch_size=1",
                         f"dataset.root={coco_root}", f"paths.output_dir={out}", *FAST])
    with pytest.raises(SettingError, match="only the MM-DiT"):
        evaluate(unet)
    seg4diff_on_unet = compose_eval(["experiment=coco_stuff27", "model=tiny", "+method@methods.s4d=seg4diff",
                                     f"dataset.root={coco_root}", f"paths.output_dir={out}", *FAST])
    with pytest.raises(SettingError, match="Seg4Diff"):
        evaluate(seg4diff_on_unet)
    batch = compose_eval(["experiment=coco_stuff27_seg4diff", "model=tiny_sd3", "batch_size=2",
                          f"dataset.root={coco_root}", f"paths.output_dir={out}", *FAST])
    with pytest.raises(ProtocolError, match="batch_size=1"):
        evaluate(batch)
    assert not out.exists()


@pytest.mark.parametrize(("experiment", "weights"), [("coco_stuff27_seg4diff", "stable-diffusion-3-medium"),
                                                     ("cityscapes_seg4diff", "stable-diffusion-3-medium")])
def test_offline_refusal_names_the_weights(experiment, weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = tmp_path / "data"
    if experiment.startswith("coco"):
        _coco(root, 1, 0)
    else:
        write_synthetic_cityscapes(root, num_images=1, seed=0)
    cfg = compose_eval([f"experiment={experiment}", f"dataset.root={root}", f"paths.output_dir={tmp_path / 'out'}",
                        *FAST])
    assert run_cli(cfg) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and weights in err[0] and "offline" in err[0]


def test_ledger_holds_seg4diffs_unsupervised_claims():
    claims = [c for c in load_ledger() if c.method == "Seg4Diff"]
    by_key = {(c.dataset, c.backbone): c for c in claims}
    assert by_key[("coco_stuff27", "SD3")].miou == 49.7 and by_key[("cityscapes19", "SD3")].miou == 24.2
    assert by_key[("coco_stuff27", "SD3.5")].miou == 47.1 and by_key[("cityscapes19", "SD3.5")].miou == 24.2
    assert {c.protocol for c in claims} == {"seg4diff"} and all(c.source for c in claims)
    # the release scores Cityscapes' 19 trainId classes: the claim never sits beside a 27-class row
    assert not [c for c in claims if c.dataset == "cityscapes"]
    assert np.isfinite([c.miou for c in claims]).all()
