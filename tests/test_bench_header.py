"""Every benchmark report says which code produced it: code id, library versions, device, threads, load.

The header is built from :func:`eval.bench.provenance.run_provenance` (cheap: no model, no timing) and
rendered by each benchmark's text/Markdown renderer from a tiny fake result, so no benchmark runs here.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from eval.bench import diffcut, explore, mmdit
from eval.bench.provenance import run_provenance
from eval.bench.report import NOT_RECORDED, header_lines, render_markdown, render_table
from eval.run.identity import code_version


@pytest.fixture(scope="module")
def provenance():
    return run_provenance(torch.device("cpu"))


def _pipeline_report(provenance):
    return {**provenance, "config": {"num_points": 4, "kl_threshold": 1.1, "postprocessing_only": True},
            "stages": []}


def _diffcut_result(provenance):
    return {**provenance, "features": {"images": 1, "side": 4, "clusters": 2, "channels": 8},
            "rows": [{"seed": 0, "fast_s": 0.5, "naive_s": 1.0, "identical": True, "clusters_fast": 2,
                      "clusters_naive": 2}],
            "fast_median_s": 0.5, "naive_median_s": 1.0, "speedup": 2.0, "all_identical": True, "guard_hits": 0}


def _mmdit_result(provenance):
    dev = provenance["device"]
    return {**provenance,
            "capture_overhead": {"model": "tiny", "image_tokens": 16, "text_tokens": 4, "repeats": 1, "device": dev,
                                 "rows": [{"pass": "plain (baseline)", "seconds": 0.1, "ratio": 1.0,
                                           "output_unchanged": True}]},
            "peak_memory": {"image_tokens": 16, "text_tokens": 4, "heads": 2, "head_dim": 8,
                            "full_probabilities_mib": 0.1, "measure": "m", "device": dev,
                            "rows": [{"query_chunk": None, "measured_mib": 1.0, "computed_bound_mib": 2.0,
                                      "ratio": 1.0}]}}


def _explore_report(provenance):
    return {**provenance, "what": "w", "backbone_pass_s": 1.0, "threads": 2, "load_average": [1.0, 1.0, 1.0],
            "cases": [{"case": "kl threshold", "explorer_s": 0.1, "plain_s": 0.2, "ratio": 2.0, "segments": 3,
                       "identical_masks": True, "target_s": 0.3}]}


def test_provenance_is_the_current_code_libraries_and_machine(provenance):
    assert provenance["code"]["id"] == code_version()["id"]
    assert provenance["versions"]["torch"] == torch.__version__
    assert provenance["versions"]["diffusers"] == diffusers.__version__
    assert provenance["device"]["torch_threads"] == torch.get_num_threads()
    assert provenance["device"]["kind"] == "cpu"


@pytest.mark.parametrize("render", [
    lambda p: render_markdown(_pipeline_report(p)),
    lambda p: render_table(_pipeline_report(p)),
    lambda p: diffcut._table(_diffcut_result(p)),
    lambda p: mmdit.render(_mmdit_result(p)),
    lambda p: explore.render(_explore_report(p)),
], ids=["bench-markdown", "bench-stdout", "diffcut", "mmdit", "explore"])
def test_every_report_starts_with_what_produced_it(render, provenance):
    text = render(provenance)
    head = text.splitlines()[:6]
    dev = provenance["device"]
    code_line = next(line for line in head if "code: " in line)
    assert code_line.endswith(f"code: {code_version()['id']}")
    assert code_version()["id"].split()[0] in code_line  # the commit (or package version), not only libraries
    versions_line = next(line for line in head if "versions: " in line)
    assert f"torch {torch.__version__}" in versions_line and f"diffusers {diffusers.__version__}" in versions_line
    device_line = next(line for line in head if "device: " in line)
    assert dev["cpu"] in device_line
    assert f"{torch.get_num_threads()} torch CPU threads of {dev['cpu_cores']} cores" in device_line
    assert f"1-minute load average {dev['load_average_1m']} when the run started" in device_line


def test_the_markdown_header_gives_the_end_load_and_the_gpu_memory():
    report = {"code": {"id": "0123456789ab torch-9 diffusers-8"}, "versions": {"torch": "9", "diffusers": "8"},
              "device": {"kind": "cuda", "name": "Some GPU", "gpu_memory_gib": 79.1, "cpu": "Some CPU",
                         "cpu_cores": 16, "torch_threads": 8, "load_average_1m": 0.5, "load_average_1m_end": 1.25},
              "config": {}, "stages": []}
    assert header_lines(report) == [
        "code: 0123456789ab torch-9 diffusers-8",
        "versions: torch 9, diffusers 8",
        "device: Some GPU (79.1 GiB); 8 torch CPU threads of 16 cores; 1-minute load average 0.5 when the run "
        "started, 1.25 when it ended",
    ]
    assert render_markdown(report).splitlines()[2:5] == [f"- {line}" for line in header_lines(report)]


def test_a_report_from_before_the_code_was_recorded_says_so():
    """The committed reports under results/bench predate the ``code`` field: no version is invented."""
    old = {"device": {"kind": "cpu", "name": "test CPU"}, "versions": {"torch": "x"}, "config": {}, "stages": []}
    lines = header_lines(old)
    assert lines[0] == f"code: {NOT_RECORDED}"
    assert lines[1] == "versions: torch x"
    assert lines[2].startswith("device: test CPU; torch CPU threads not recorded")
