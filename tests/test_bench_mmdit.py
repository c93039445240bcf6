"""``python -m eval.bench.mmdit`` (part of ``make bench``): the capture-overhead and peak-memory rows, with values
that make sense (no timing thresholds)."""

from __future__ import annotations

import json

import pytest

from eval.bench import mmdit


@pytest.fixture(scope="module")
def result():
    # a small pass (16 image tokens) and a memory row at 1024 image tokens, 8 heads: seconds, not minutes. Chunks
    # of 64 queries: the resident-set measure can also hold the previous chunk's freed blocks (measured 28 to 44 MiB
    # against a 23.6 MiB bound at chunks of 256 on this size, 14.6 to 20.0 against 10.4 at 64), so the chunk is
    # kept small against the unchunked 70 MiB for the comparisons below to hold on any machine.
    return mmdit.run_bench(side=8, text_tokens=6, repeats=1, memory_image_tokens=1024, heads=8, head_dim=64,
                           chunk=64)


def test_capture_overhead_rows(result):
    cap = result["capture_overhead"]
    assert cap["image_tokens"] == 16 and cap["text_tokens"] == 6
    assert [r["pass"] for r in cap["rows"]] == ["plain (baseline)", "capture block 2", "capture all 3 blocks"]
    assert [r["layers"] for r in cap["rows"]] == [0, 1, 3]
    plain = cap["rows"][0]["seconds"]
    assert plain > 0 and cap["rows"][0]["ratio"] == 1.0
    for row in cap["rows"][1:]:
        assert row["seconds"] > 0 and row["ratio"] == pytest.approx(row["seconds"] / plain)
    assert all(r["output_unchanged"] for r in cap["rows"])  # the capture never changes the transformer's output


def test_peak_memory_rows(result):
    mem = result["peak_memory"]
    unchunked, chunked = mem["rows"]
    assert unchunked["query_chunk"] is None and chunked["query_chunk"] == 64
    # the bound: 2 x 8 heads x c x 1030 keys (scores, probabilities) + head means + result + keys, float32
    assert unchunked["computed_bound_mib"] > 3 * chunked["computed_bound_mib"]
    scores_mib = 8 * 1024 * 1030 * 4 / 2**20  # one unchunked scores tensor alone
    assert unchunked["measured_mib"] >= scores_mib  # the unchunked call holds at least its scores
    assert chunked["measured_mib"] < unchunked["measured_mib"] / 2  # chunks bound the peak
    for row in (unchunked, chunked):
        assert row["measured_mib"] <= row["computed_bound_mib"] + 16  # the bound holds (page-size slack)
    assert unchunked["ratio"] == 1.0 and chunked["ratio"] == pytest.approx(chunked["measured_mib"]
                                                                           / unchunked["measured_mib"])
    assert mem["full_probabilities_mib"] == pytest.approx(8 * 1024 * 1030 * 4 / 2**20)
    assert "VmHWM" in mem["measure"] or "cuda" in mem["measure"]


def test_render_and_out_never_overwrites(result, tmp_path, capsys):
    text = mmdit.render(result)
    assert "| plain (baseline) |" in text and "| capture all 3 blocks |" in text
    assert "| none (baseline) |" in text and "| 64 |" in text and "1.000x" in text
    json.dumps(result)  # the --out JSON holds plain values
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as info:
        mmdit.main(["--out", str(existing)])
    assert info.value.code == 2 and existing.read_text() == "{}"
    assert "never overwrites" in capsys.readouterr().err
