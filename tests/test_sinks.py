"""The runner as a loop over sinks (eval/run/sinks.py): what each sink sees, and what an error in one leaves."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra_compose import assert_multi_segment, compose_eval, run_config, totals
from PIL import Image

import eval.run.runner as runner
from eval.data.loader import Batch
from eval.data.synthetic import write_synthetic_cityscapes, write_synthetic_coco_stuff
from eval.metrics import HungarianSegmentationMetric, image_stats
from eval.run import evaluate
from eval.run.sinks import MetricSink, Predictions, Sink, inference_on_dataset
from eval.run.unknown_labels import summarise_unknown

REPO = Path(__file__).resolve().parents[1]
STAT_KEYS = ("tp", "fp", "fn", "valid", "segments")


class Seen(Sink):
    """Keeps what the loop gives it: each image's stats, the skipped ids, the end hooks' arguments."""

    def __init__(self, fail_at_batch: int | None = None):
        self.stats: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []
        self.skipped: list[str] = []
        self.batches = 0
        self.fail_at_batch = fail_at_batch
        self.closed = 0
        self.summary_ids: list[str] | None = None
        self.finished: dict[str, Any] | None = None

    def process(self, batch, predictions, stats):
        self.batches += 1
        if self.batches == self.fail_at_batch:
            raise RuntimeError("this sink fails")
        self.seen += batch.ids
        self.skipped += [i for i, _ in batch.skipped]
        assert (predictions is None) == (len(batch) == 0)
        for name, per_image in stats.items():
            for image_id, s in zip(batch.ids, per_image, strict=True):
                self.stats.setdefault(image_id, {})[name] = s

    def close(self):
        self.closed += 1

    def summary(self, records):
        self.summary_ids = sorted(r["id"] for r in records)
        return {}

    def finish(self, result):
        self.finished = result


def summed(stats: list[dict[str, Any]]) -> tuple:
    return tuple(np.sum([s[k] for s in stats], axis=0).tolist() for k in ("tp", "fp", "fn", "valid"))


# ------------------------------------------------------------------------------------------- the metric
def test_metric_update_returns_the_per_image_stats():
    labels = torch.tensor([[[0, 0], [1, 1]], [[1, 1], [1, -1]]])
    preds = torch.tensor([[[5, 5], [7, 7]], [[3, 3], [4, 4]]])
    metric = HungarianSegmentationMetric(num_classes=2)
    stats = metric.update(preds, labels)
    # Image 0: segment 5 -> class 0 and 7 -> class 1, both exact. Image 1: class 1 (3 valid pixels) takes
    # segment 3 (2 pixels); segment 4's valid pixel is a false negative of class 1.
    assert [{k: s[k] for k in STAT_KEYS} for s in stats] == [
        {"tp": [2, 2], "fp": [0, 0], "fn": [0, 0], "valid": 4, "segments": 2},
        {"tp": [0, 2], "fp": [0, 0], "fn": [0, 1], "valid": 3, "segments": 2},
    ]
    assert metric.compute()["tp"] == [2, 4] and metric.compute()["images"] == 2
    assert metric.update(stats=stats) == stats  # replayed stats come back as given
    assert metric.compute()["tp"] == [4, 8]


# ------------------------------------------------------------------------------------------- the loop
def test_the_loop_feeds_every_image_once_with_the_metrics_stats():
    gen = torch.Generator().manual_seed(4)
    batches, expected = [], {}
    for b, size in enumerate((2, 0, 3, 1)):  # the second batch: every item skipped
        labels = torch.randint(-1, 5, (size, 16, 16), generator=gen)
        ids = [f"img{b}_{k}" for k in range(size)]
        batches.append(Batch(torch.zeros(size, 3, 16, 16), labels, ids, [(f"bad{b}", "cannot read")] if b == 1 else []))
    masks_of = {}

    def predict(batch):
        masks = {"A": torch.randint(0, 6, tuple(batch.labels.shape), generator=gen),
                 "B": torch.randint(0, 3, tuple(batch.labels.shape), generator=gen)}
        for name, m in masks.items():
            for image_id, stats in zip(batch.ids, image_stats(m, batch.labels, 5), strict=True):
                expected.setdefault(image_id, {})[name] = stats
        masks_of[tuple(batch.ids)] = masks
        return Predictions(masks, batch.labels)

    metric = MetricSink({n: HungarianSegmentationMetric(num_classes=5) for n in ("A", "B")}, {"A": None, "B": {"x": 1}})
    sinks = [Seen(), Seen()]
    stops = []
    inference_on_dataset(predict, batches, metric, sinks, after_batch=lambda: stops.append(1))
    ids = [i for b in batches for i in b.ids]
    for sink in sinks:
        assert sink.seen == ids and sink.skipped == ["bad1"] and sink.closed == 1 and sink.batches == 4
        assert sink.stats == expected  # the metric's stats, every image once, each method
    assert len(stops) == 4
    out = metric.totals(sync=False)
    assert out["B"]["ablation"] == {"x": 1} and "ablation" not in out["A"]
    for name in ("A", "B"):
        stats = [expected[i][name] for i in ids]
        assert (out[name]["tp"], out[name]["fp"], out[name]["fn"], out[name]["valid"]) == summed(stats)
        assert out[name]["images"] == 6
    assert metric.running()["name"] == "A"


# ------------------------------------------------------------------------------------------- the runner
@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    write_synthetic_coco_stuff(root, num_images=5, seed=3)
    return root


def add_sink(monkeypatch, sink: Sink, first: bool = False) -> None:
    """The runner's sinks with ``sink`` added (first: before the records; else after every other)."""
    build = runner._sinks
    monkeypatch.setattr(runner, "_sinks", lambda *a: [sink, *build(*a)] if first else [*build(*a), sink])


def records_of(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "per_image.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def clean_run(coco_root, tmp_path_factory) -> tuple[Path, dict[str, Any], Seen]:
    """One uninterrupted run with a :class:`Seen` sink after the runner's own: its folder, result and sink."""
    seen, out = Seen(), tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as patch:
        add_sink(patch, seen)
        result = assert_multi_segment(evaluate(run_config(coco_root, out)))
    return out, result, seen


def test_a_custom_sink_in_a_run_sees_every_image_once_with_the_recorded_stats(clean_run):
    out, result, seen = clean_run
    records = records_of(out)
    assert sorted(seen.seen) == sorted(records) == result["image_ids"] and len(seen.seen) == 5
    assert {i: s["DiffSeg"] for i, s in seen.stats.items()} == {i: r["methods"]["DiffSeg"] for i, r in records.items()}
    m = result["methods"]["DiffSeg"]
    assert summed([s["DiffSeg"] for s in seen.stats.values()]) == (m["tp"], m["fp"], m["fn"], m["valid"])
    assert seen.closed == 1 and seen.summary_ids == result["image_ids"] and seen.finished == result
    assert all("label_pixels" not in r for r in records.values())  # square labels: records as before


@pytest.mark.parametrize(("first", "recorded"), [(True, 2), (False, 4)])
def test_an_error_in_a_sink_leaves_the_folder_resumable(coco_root, clean_run, tmp_path, monkeypatch, first, recorded):
    """A sink that fails on the second batch (of 2 + 2 + 1 images): before the records sink, that batch is not
    recorded; after it, it is. Either way the run in the same folder resumes to the totals of one clean run."""
    clean = clean_run[1]
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        add_sink(patch, Seen(fail_at_batch=2), first=first)
        with pytest.raises(RuntimeError, match="this sink fails"):
            evaluate(run_config(coco_root, out))
    assert not (out / "metrics.json").exists()
    before = set(records_of(out))
    assert len(before) == recorded
    seen = Seen()
    add_sink(monkeypatch, seen)
    resumed = evaluate(run_config(coco_root, out))
    assert sorted(seen.seen) == sorted(set(clean["image_ids"]) - before)  # each image not recorded, once
    assert totals(resumed) == totals(clean)
    # The totals rest on the replayed records too: this invocation's images alone give other sums.
    m = clean["methods"]["DiffSeg"]
    assert summed([s["DiffSeg"] for s in seen.stats.values()]) != (m["tp"], m["fp"], m["fn"], m["valid"])
    assert f"resuming: {recorded} of 5 images already done" in (out / "run.log").read_text()


# ------------------------------------------------------------------------------------------- unknown labels
def test_unknown_fraction_is_of_the_label_pixels_scored(tmp_path):
    """protocol=seg4diff keeps the aspect ratio: a 128 x 256 label scored at 64 x 128 has 8192 pixels, not 64 ** 2."""
    root = tmp_path / "cityscapes"
    ids = write_synthetic_cityscapes(root, num_images=2, seed=0, size=(128, 256))
    label_file = next((root / "gtFine" / "val").rglob(f"{ids[0]}_gtFine_labelIds.png"))
    label = np.array(Image.open(label_file))
    label[:8, :32] = 200  # not a Cityscapes labelId
    Image.fromarray(label).save(label_file)
    out = tmp_path / "run"
    cfg = compose_eval(["experiment=cityscapes_seg4diff", "model=tiny_sd35", f"dataset.root={root}",
                        f"paths.output_dir={out}", "num_workers=0", "progress=false", "device=cpu", "grid_images=0",
                        "methods.diffseg=null", "methods.diffseg_fp32=null", "methods.kmeans_c=null",
                        "methods.kmeans_s=null", "protocol.short_edge=64", "protocol.max_size=256",
                        "protocol.geometry.recorded_sizes={cityscapes19: [128, 256]}", "max_unknown_label_fraction=1"])
    result = evaluate(cfg)
    unknown = result["unknown_labels"]
    assert unknown["pixels"] == 4 * 16 and unknown["images"] == {ids[0]: 4 * 16}  # 8 x 32 at half the size
    assert unknown["fraction"] == pytest.approx(64 / (2 * 64 * 128))  # was 64 / (2 * 64 ** 2): twice too large
    assert [r["label_pixels"] for r in records_of(out).values()] == [64 * 128] * 2
    # A record without "label_pixels" was scored at the square size.
    mixed = [{"id": "a", "methods": {}, "unknown_labels": 10}, {"id": "b", "methods": {}, "unknown_labels": 0,
                                                                 "label_pixels": 300}]
    assert summarise_unknown(mixed, 100)["fraction"] == pytest.approx(10 / 400)


# ------------------------------------------------------------------------------------------- the runner's size
def test_no_function_in_the_runner_is_over_60_lines():
    tree = ast.parse((REPO / "eval" / "run" / "runner.py").read_text())
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert lengths and max(lengths.values()) <= 60, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
    params = {node.name: len(node.args.args) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert params["_finish"] == 1
