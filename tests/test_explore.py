"""The explorer's reading and re-segmenting parts (no Gradio, no browser): kept attention, run folders, CLI."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from explore_fixtures import RUN_OVERRIDES, disjoint_copy, synthetic_run_folder
from hydra_compose import compose_eval
from PIL import Image
from reference_protocols import release_label_geometry

from diffseg import DiffSeg, aggregate_attention
from diffseg.families import BackboneFamily
from diffseg.masks import read_mask_png
from diffseg.preprocess import load_image, load_label, preprocess_label
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.explore.__main__ import main as explore_main
from eval.explore.runs import ALL_CLASSES, RunError, RunFolder, compare_runs, matched_colours
from eval.explore.session import ImageSession, SegmentParams, weights_from
from eval.run import evaluate
from eval.run.cache import AttentionCache
from eval.run.coco_results import CocoResults
from eval.run.records import read_records

SIDES = (16, 8, 4)
REPO = Path(__file__).resolve().parents[1]


class FakeBackbone:
    """Seeded softmax attention at sides 16, 8, 4 for a 128 px input; counts its passes."""

    name = "fake"
    dtype = torch.float32
    device = torch.device("cpu")
    input_size = 128
    family = BackboneFamily("sd1", 128, layout={16: 1, 8: 1, 4: 1})

    def __init__(self):
        self.calls: list[int] = []

    def attention_maps(self, images: torch.Tensor, timestep: int = 300) -> dict[int, torch.Tensor]:
        self.calls.append(int(timestep))
        seed = int(images.abs().sum().item() * 1000) % 2**31 + timestep
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for s in SIDES:
            # smooth-ish maps: attention to nearby keys, plus noise, so KL merging finds several segments
            yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
            pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
            dist = torch.cdist(pos, pos) / s
            logits = -8.0 * dist + 2.0 * torch.randn(s * s, s * s, generator=gen)
            out[s] = torch.softmax(logits, dim=-1)[None]
        return out


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    return synthetic_run_folder(tmp_path_factory)


@pytest.fixture
def session():
    AttentionCache.clear_memory()  # the kept attention lives in the process-wide memory cache
    sess = ImageSession(FakeBackbone(), output_size=128, cache_gb=0.5)
    rng = np.random.default_rng(0)
    sess.add_array((rng.random((150, 170, 3)) * 255).astype(np.uint8), "a")
    yield sess
    AttentionCache.clear_memory()


@pytest.mark.parametrize("params", [
    SegmentParams(),
    SegmentParams(kl_threshold=0.4, num_points=8),
    SegmentParams(kl_threshold=0.8, kl_precision="float32", refine=True),
    SegmentParams(kl_threshold=1.1, weights=weights_from({16: 1.0}), num_points=4),
])
def test_resegmenting_from_kept_attention_equals_diffseg(session, params):
    seg = session.segment("a", params)
    maps = session.backbone.attention_maps(session.images["a"].pixels[None], timestep=params.timestep)
    attention = aggregate_attention(maps, params.weights_dict())
    expected = DiffSeg(kl_threshold=params.kl_threshold, num_points=params.num_points, refine=params.refine,
                       kl_precision=params.kl_precision, output_size=128)(attention)[0].numpy()
    np.testing.assert_array_equal(seg.mask, expected)
    assert seg.segments == np.unique(expected).size
    assert len(seg.anchors) == params.num_points ** 2
    assert [name for name, _ in seg.stages][-1] == ("refined" if params.refine else "iteration 3")
    np.testing.assert_array_equal(seg.stage_mask(len(seg.stages) - 1), seg.mask)


def test_backbone_runs_once_per_image_and_timestep(session):
    backbone = session.backbone
    first = session.segment("a", SegmentParams(kl_threshold=1.1))
    assert first.backbone_ran and backbone.calls == [300]
    counts = {session.segment("a", SegmentParams(kl_threshold=t)).segments for t in (0.3, 0.6, 1.1, 2.0)}
    session.segment("a", SegmentParams(num_points=8, kl_precision="float32", weights=weights_from({8: 1.0})))
    assert backbone.calls == [300]  # every change above re-segmented from the kept attention
    assert len(counts) > 1  # the threshold changes the segment count
    assert session.segment("a", SegmentParams(timestep=100)).backbone_ran
    assert backbone.calls == [300, 100]
    assert not session.segment("a", SegmentParams(timestep=300)).backbone_ran


def test_attention_at_pixel_is_the_query_row(session):
    maps = session.attention_at("a", 300, x=100.0, y=20.0)  # output grid 128 px
    assert list(maps) == ["16 x 16", "8 x 8", "4 x 4"]
    kept, _ = session.attention("a", 300)
    row, col = int(20 * 16 / 128), int(100 * 16 / 128)
    np.testing.assert_array_equal(maps["16 x 16"], kept[16][row * 16 + col].reshape(16, 16).numpy())
    for side, m in zip(SIDES, maps.values(), strict=True):
        assert m.shape == (side, side) and abs(float(m.sum()) - 1.0) < 1e-4


def test_upload_and_path_give_the_same_image(session, tmp_path):
    rng = np.random.default_rng(1)
    pixels = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    from_path = session.add_path(tmp_path / "x.png")
    from_upload = session.add_array(pixels, "upload 1")
    assert from_path.key == from_upload.key and from_path.shown.shape == (128, 128, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.jpg"):
        session.add_path(tmp_path / "bad.jpg")


def test_invalid_settings_are_value_errors(session):
    with pytest.raises(ValueError, match="num_points"):
        session.segment("a", SegmentParams(num_points=40))  # more anchors than the 16 x 16 grid


# ------------------------------------------------------------------------------------------- run folders
def _hand_miou(stats: dict) -> float:
    tp, fp, fn = (np.asarray(stats[k], dtype=float) for k in ("tp", "fp", "fn"))
    union = tp + fp + fn
    return float(np.mean(100 * tp[union > 0] / union[union > 0]))


def test_run_table_sorts_filters_and_scores(synthetic_run):
    run = RunFolder.open(synthetic_run)
    assert run.methods == ["DiffSeg", "K-Means-C"] and len(run.ids) == 3
    records = read_records(synthetic_run / "per_image.jsonl")
    table = run.table(sort_by="K-Means-C", descending=True)
    values = table["K-Means-C"].tolist()
    assert values == sorted(values, reverse=True)
    for _, row in table.iterrows():
        assert row["K-Means-C"] == pytest.approx(round(_hand_miou(records[row["image"]]["methods"]["K-Means-C"]), 1))
    ascending = run.table(sort_by="K-Means-C", descending=False)["K-Means-C"].tolist()
    assert ascending == sorted(values)
    present = run.present()
    # from the records themselves: a class in the label is tp + fn > 0 of any method
    in_label = {i: {c for c, (tp, fn) in enumerate(zip(r["methods"]["K-Means-C"]["tp"], r["methods"]["K-Means-C"]["fn"],
                                                        strict=True)) if tp + fn > 0} for i, r in records.items()}
    counts = np.array([sum(c in v for v in in_label.values()) for c in range(run.num_classes)])
    assert present.sum(0).tolist() == counts.tolist()
    some = np.flatnonzero((counts > 0) & (counts < len(run.ids)))
    assert some.size, "the synthetic run should have a class in some images but not all"
    cls = run.class_names[int(some[0])]
    filtered = run.table(class_filter=cls)
    assert 0 < len(filtered) < 3 and len(filtered) == int(counts[some[0]])
    assert sorted(filtered["image"]) == sorted(i for i, v in in_label.items() if some[0] in v)
    assert all(cls in text.split(", ") for text in filtered["classes in the label"])
    assert len(run.table(class_filter=ALL_CLASSES)) == 3
    with pytest.raises(RunError, match="sort by"):
        run.table(sort_by="nope")


def test_run_masks_png_and_coco_rle(synthetic_run, tmp_path):
    run = RunFolder.open(synthetic_run)
    image_id = run.ids[0]
    assert run.mask_format() == "PNG"
    png = read_mask_png(synthetic_run / "masks" / "DiffSeg" / f"{image_id}.png")
    np.testing.assert_array_equal(run.mask("DiffSeg", image_id), png)
    # the same run with COCO RLE results instead of PNG masks
    copy = tmp_path / "coco_run"
    shutil.copytree(synthetic_run, copy)
    for method in run.methods:
        results = CocoResults()
        for i in run.ids:
            results.add(i, read_mask_png(copy / "masks" / method / f"{i}.png"))
        shutil.rmtree(copy / "masks" / method)
        results.save(copy / "masks" / f"{method}.json")
    coco = RunFolder.open(copy)
    assert coco.mask_format() == "COCO RLE"
    np.testing.assert_array_equal(coco.mask("DiffSeg", image_id), png)
    # no masks at all
    shutil.rmtree(copy / "masks")
    bare = RunFolder.open(copy)
    assert bare.mask_format() is None and bare.mask("DiffSeg", image_id) is None


def test_run_image_label_banner_and_colours(synthetic_run):
    run = RunFolder.open(synthetic_run)
    image, label = run.image_and_label(run.ids[0])
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and label.shape == (128, 128)
    present = set(np.unique(label[label >= 0]).tolist())
    assert present == set(np.flatnonzero(run.present_of(run.ids[0])).tolist())
    warnings, _ = run.banner_lines()
    assert any(w.startswith("RANDOM WEIGHTS") for w in warnings) and any(w.startswith("SYNTHETIC") for w in warnings)
    mask = run.mask("K-Means-C", run.ids[0])
    coloured = matched_colours(mask, label, run.num_classes)
    # each segment keeps one colour; a segment coloured as a class overlaps that class in the label
    for segment in np.unique(mask):
        values = np.unique(coloured[mask == segment])
        assert values.size == 1
        if values[0] < run.num_classes:
            assert ((mask == segment) & (label == values[0])).any()


def test_run_errors_name_the_path(tmp_path, synthetic_run):
    with pytest.raises(RunError, match="no such run folder"):
        RunFolder.open(tmp_path / "missing")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(RunError, match="no metrics.json"):
        RunFolder.open(tmp_path / "unfinished")
    moved = tmp_path / "moved"
    shutil.copytree(synthetic_run, moved)
    metrics = json.loads((moved / "metrics.json").read_text())
    metrics["config"]["dataset"]["root"] = str(tmp_path / "gone")
    (moved / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="not available"):
        RunFolder.open(moved).image_and_label(RunFolder.open(moved).ids[0])


def test_two_runs_differences_sorted(synthetic_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synthetic_run, other)
    records = read_records(other / "per_image.jsonl")
    worse = sorted(records)[1]
    stats = records[worse]["methods"]["DiffSeg"]
    stats["fn"] = [a + b for a, b in zip(stats["fn"], stats["tp"], strict=True)]  # nothing right any more
    stats["tp"] = [0] * len(stats["tp"])
    (other / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    a, b = RunFolder.open(synthetic_run), RunFolder.open(other)
    frame, note = compare_runs(a, b)
    assert "3 images" in note and len(frame) == 6  # 3 images x 2 methods
    assert frame["B - A"].tolist() == sorted(frame["B - A"].tolist())
    top = frame.iloc[0]
    assert (top["image"], top["method"]) == (worse, "DiffSeg") and top["B - A"] < 0
    assert frame.loc[frame["method"] == "K-Means-C", "B - A"].abs().max() == 0
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["run"]["dataset"] = "cityscapes"
    (other / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="one dataset"):
        compare_runs(a, RunFolder.open(other))


@pytest.fixture(scope="module")
def diffcut_run(tmp_path_factory):
    """A finished protocol=diffcut run (DiffSeg only) on 2 synthetic images, labels and masks at 128."""
    root = tmp_path_factory.mktemp("explore_diffcut_data")
    write_synthetic_coco_stuff(root, num_images=2, seed=9, size_range=(150, 190))
    out = tmp_path_factory.mktemp("explore_diffcut_run")
    evaluate(compose_eval([*RUN_OVERRIDES, "methods.kmeans_c=null", "protocol=diffcut", "protocol.size=128",
                           f"dataset.root={root}", f"paths.output_dir={out}"]))
    return out


def test_diffcut_run_shows_image_and_label_cut_the_diffcut_way(diffcut_run):
    run = RunFolder.open(diffcut_run)
    assert run.metrics["run"]["protocol"] == "diffcut"
    dataset = run.dataset_object()
    differs = []
    for image_id in run.ids:
        image, label = run.image_and_label(image_id)
        raw_label = load_label(dataset.label_path(image_id)).numpy()
        raw_image = load_image(dataset.image_path(image_id))
        h, w = raw_label.shape
        # the release's geometry, computed here: crop min(h, w) - 1 at round-half-even offsets, then resizes
        expected_label = dataset._lut[torch.as_tensor(release_label_geometry(raw_label, 128, 128))].numpy()
        np.testing.assert_array_equal(label, expected_label)
        side = min(h, w) - 1
        top, left = int(np.round((h - side) / 2)), int(np.round((w - side) / 2))
        crop = raw_image[:, top:top + side, left:left + side].float()[None]
        resized = F.interpolate(crop, size=(128, 128), mode="bilinear", align_corners=False, antialias=False)[0]
        expected_image = (resized / 127.5 - 1.0 + 1.0) * 127.5
        expected_image = expected_image.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        assert image.shape == (128, 128, 3)
        assert np.abs(image.astype(int) - expected_image.astype(int)).max() <= 1  # float rounding of the [-1, 1] trip
        # the label shown is the one the run scored: its classes are the records' (tp + fn > 0)
        assert set(np.unique(label[label >= 0]).tolist()) == set(np.flatnonzero(run.present_of(image_id)).tolist())
        # DiffSeg's cut of the same file (centre crop to min(h, w), nearest-exact) is another label
        differs.append(not np.array_equal(label, dataset._lut[preprocess_label(torch.as_tensor(raw_label), 128)]))
    assert any(differs)


def test_two_runs_without_common_methods_side_by_side(synthetic_run, tmp_path):
    other = tmp_path / "ablation"
    rename = disjoint_copy(synthetic_run, other)
    records = read_records(other / "per_image.jsonl")
    changed = sorted(records)[0]  # the "ablation" does worse on one image
    stats = records[changed]["methods"]["DiffSeg [kl_threshold=0.5]"]
    stats["fn"] = [a + b for a, b in zip(stats["fn"], stats["tp"], strict=True)]
    stats["tp"] = [0] * len(stats["tp"])
    (other / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    a, b = RunFolder.open(synthetic_run), RunFolder.open(other)
    assert not set(a.methods) & set(b.methods)
    frame, note = compare_runs(a, b)
    assert frame.columns.tolist() == ["image", "A: DiffSeg", "A: K-Means-C", "B: DiffSeg [kl_threshold=0.5]",
                                      "B: K-Means-C [kl_threshold=0.5]"]
    assert frame["image"].tolist() == sorted(a.ids) and len(frame) == 3
    source = read_records(synthetic_run / "per_image.jsonl")
    for _, row in frame.iterrows():
        for method, renamed in rename.items():
            expected_a = _hand_miou(source[row["image"]]["methods"][method])
            expected_b = _hand_miou(records[row["image"]]["methods"][renamed])
            assert row[f"A: {method}"] == pytest.approx(round(expected_a, 1))
            assert row[f"B: {renamed}"] == pytest.approx(round(expected_b, 1))
    row = frame.set_index("image").loc[changed]
    assert row["B: DiffSeg [kl_threshold=0.5]"] == 0.0 and row["A: DiffSeg"] > 0
    assert "no method in common" in note and "DiffSeg [kl_threshold=0.5]" in note and "K-Means-C" in note


def _one_line_exit(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eval.explore", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_port_in_use_exits_2_with_one_line(synthetic_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = _one_line_exit([str(synthetic_run), "--port", str(port), "--no-browser"])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: port ") and str(port) in lines[0] and "--port" in lines[0]
    assert done.stdout.strip() == ""


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_refuses_clearly(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert explore_main([str(tmp_path / "nope"), "--no-browser"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert explore_main(["--no-browser"]) == 2
    assert "nothing to show" in capsys.readouterr().err
    assert explore_main([str(tmp_path), "--model", "tiny"]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_help_names_the_interface(capsys):
    with pytest.raises(SystemExit) as exc:
        explore_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--image", "--port", "--no-browser", "RUN_DIR", "127.0.0.1"):
        assert flag in text


def test_serve_on_a_port_taken_after_the_check_is_port_in_use(monkeypatch):
    gr = pytest.importorskip("gradio")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # Gradio's launch sets it; restored as it was after the test
    from eval.explore.__main__ import PortInUseError, serve

    with socket.socket() as taken, gr.Blocks() as app:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            serve(app, port=port, open_browser=False, block=False)
    app.close()
