"""Settings refused before the run folder exists (one line, exit 2); experiments compose with any methods group.

* ``cache.max_gb`` not a positive number: refused by :func:`eval.spec.build_spec` (it was a
  traceback after the folder existed).
* A ``methods.<key>`` entry without ``segmenter._target_`` (keys an experiment or override set for a
  method the chosen ``methods=`` group does not hold): refused, naming the key (it failed later with
  "'DiffSeg' object is not callable").
* ``experiment=demo methods=diffseg_only`` runs DiffSeg alone (the demo's K-Means tweaks live in its own
  methods group option, ``conf/methods/demo.yaml``, so another choice replaces them whole).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra_compose import assert_multi_segment, compose_eval, run_config, synthetic_coco_stuff_root

from eval.run import run_cli
from eval.run.methods import build_methods
from eval.spec import SettingError, build_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=2, seed=41)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------ cache.max_gb
@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-1", "-1"), ("abc", "'abc'"), ("null", "None"),
                                              ("inf", "inf"), ("true", "True")])
def test_a_max_gb_that_is_not_a_positive_number_is_refused_before_the_folder_exists(root, tmp_path, capsys, value,
                                                                                     shown):
    out = tmp_path / "run"
    code = run_cli(run_config(root, out, "cache=memory", f"cache.max_gb={value}"))
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert f"cache.max_gb: expected a positive number, got {shown}" in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["0.5", "8", "1e-6"])
def test_a_positive_max_gb_is_accepted(root, tmp_path, value):
    cfg = run_config(root, tmp_path / "run", "cache=disk", f"cache.max_gb={value}")
    build_spec(cfg)  # raises SettingError otherwise
    assert float(cfg.cache.max_gb) == float(value)


def test_the_command_line_refuses_a_zero_max_gb_with_one_line_and_no_folder(root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "eval.run", "experiment=coco_stuff27_diffseg", "model=tiny",
                           "device=cpu", "num_workers=0", "dataset.size=128", f"dataset.root={root}",
                           "cache=disk", "cache.max_gb=0", f"hydra.run.dir={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "cache.max_gb: expected a positive number, got 0" in _one_line(proc.stderr)
    assert not out.exists()


# ------------------------------------------------------------------------ methods entries without _target_
def test_a_method_entry_without_a_target_is_refused_naming_it(root, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli(run_config(root, out, "+methods.kmeans_c.segmenter.n_init=2"))
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "1 setting(s)" in line
    assert "methods.kmeans_c: no segmenter._target_ (got {'segmenter': {'n_init': 2}})" in line
    assert "methods.kmeans_c=null" in line
    assert not out.exists()


def test_a_method_entry_without_a_segmenter_is_refused(root, tmp_path):
    with pytest.raises(SettingError, match=r"methods\.extra: no segmenter\._target_ \(got \{'name': 'X'\}\)"):
        build_spec(run_config(root, tmp_path / "run", "+methods.extra.name=X"))


def test_the_demo_composes_with_any_methods_group(tmp_path):
    def methods(*extra: str) -> dict:
        cfg = compose_eval(["experiment=demo", f"paths.output_dir={tmp_path}", *extra])
        build_spec(cfg)
        return {m.name: getattr(m.segmenter, "n_init", None) for m in build_methods(cfg)}

    # the demo's own choice: the paper's four methods, 2 K-Means restarts (as before)
    assert methods() == {"DiffSeg": None, "DiffSeg-fp32": None, "K-Means-C": 2, "K-Means-S": 2}
    assert methods("methods=diffseg_only") == {"DiffSeg": None}
    assert methods("methods=kmeans_s_only") == {"K-Means-S": 5}
    assert methods("methods=diffseg_kmeans") == {"DiffSeg": None, "K-Means-C": 5, "K-Means-S": 5}


def test_the_demo_runs_with_methods_diffseg_only(root, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli(compose_eval(["experiment=demo", "methods=diffseg_only", f"dataset.root={root}",
                                 f"paths.output_dir={out}", "dataset.size=128", "num_workers=0", "batch_size=2",
                                 "progress=false", "grid_images=0", "save_masks=false",
                                 "model.backbone.attention_scale=20"]))
    assert code == 0, capsys.readouterr().err[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    assert list(result["methods"]) == ["DiffSeg"]
    assert_multi_segment(result)
    assert result["methods"]["DiffSeg"]["images"] == 2
