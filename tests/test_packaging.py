"""An installed copy (``pip install .``, outside the clone) carries conf/ and runs ``python -m eval.run``.

The install is real: pip builds the project from a copy of its source with the venv's own setuptools
(``--no-build-isolation --no-deps --no-index``: nothing is downloaded) into a temporary ``--target``;
the installed code then runs from a temporary working folder with only that target on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import eval.config_path as config_path
from eval.config_path import ConfigDirNotFoundError, config_dir

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "diffseg", "eval", "conf"]  # what a build reads


def _yaml_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}


def _installed_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "HYDRA"))}
    env.update(PYTHONPATH=str(target), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --target`` of the project, built from a copy of the source (no build/ left in the clone)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, target = tmp / "src", tmp / "site"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_conf"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--no-compile",
         "--quiet", "--target", str(target), str(src)],
        cwd=tmp, env=_installed_env(tmp / "nothing"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_installed_env(target), capture_output=True,
                          text=True, timeout=300)


def test_installed_copy_ships_every_config_file(installed):
    shipped = installed / "eval" / "_conf"
    assert _yaml_files(shipped) == _yaml_files(REPO / "conf")
    assert len(_yaml_files(shipped)) > 20  # the config groups, not an empty folder
    assert (shipped / "experiment" / "demo.yaml").read_bytes() == (REPO / "conf/experiment/demo.yaml").read_bytes()


def test_installed_config_dir_points_into_the_install(installed, tmp_path):
    done = _run_installed(installed, tmp_path, "-c", (
        "import json, eval, eval.data.classes as c, eval.report.ledger as l, eval.run.provenance as p\n"
        "from eval.config_path import config_dir\n"
        "print(eval.__file__); print(config_dir()); print(c.CONF_DIR); print(l.DEFAULT_LEDGER);"
        " print(p.DEFAULT_PROTOCOL); print(json.dumps(sorted(c.dataset_modules())))"))
    assert done.returncode == 0, done.stderr
    package, conf, registry, ledger, protocol, datasets = done.stdout.strip().splitlines()
    target = installed.resolve()
    assert Path(package).parent == target / "eval"  # the installed code, not the clone's nor the venv's
    assert Path(conf) == target / "eval" / "_conf"
    assert Path(registry) == Path(conf)
    assert Path(ledger) == Path(conf) / "paper" / "numbers.yaml" and Path(ledger).is_file()
    assert Path(protocol) == Path(conf) / "paper" / "protocol.yaml" and Path(protocol).is_file()
    assert not Path(conf).is_relative_to(REPO)
    assert json.loads(datasets) == sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml"))  # registry


def test_installed_copy_ships_and_reads_the_pinned_files_table(installed, tmp_path):
    shipped = installed / "eval" / "data" / "pinned_files.json"
    assert shipped.read_bytes() == (REPO / "eval" / "data" / "pinned_files.json").read_bytes()
    done = _run_installed(installed, tmp_path, "-c", (
        "import dataclasses, json, eval.data.download as d\n"
        "print(d.PINNED_TABLE)\n"
        "print(json.dumps({k: dataclasses.asdict(v) for k, v in d.PINNED_FILES.items()}))"))
    assert done.returncode == 0, done.stderr
    table, pinned = done.stdout.strip().splitlines()
    assert Path(table) == installed.resolve() / "eval" / "data" / "pinned_files.json"  # the install's own copy
    before = json.loads((REPO / "tests" / "data" / "pinned_files_before.json").read_text(encoding="utf-8"))
    assert json.loads(pinned) == {k: {f: v for f, v in e.items() if f != "module"} for k, e in before.items()}
    assert json.loads(pinned)["coco_val2017"]["size"] == 815585330


def test_installed_copy_composes_the_demo_experiment(installed, tmp_path):
    """``python -m eval.run experiment=demo --cfg job`` from outside the clone prints the demo's config."""
    done = _run_installed(installed, tmp_path, "-m", "eval.run", "experiment=demo", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["run_name"] == "demo_coco_stuff27"
    demo = yaml.safe_load((REPO / "conf" / "experiment" / "demo.yaml").read_text())  # the clone's own values
    assert cfg["device"] == "cpu" and cfg["batch_size"] == demo["batch_size"] == 1 and cfg["save_masks"] is True
    assert cfg["model"]["backbone"]["attention_scale"] == 5.0
    assert cfg["dataset"]["root"] == "${paths.data_dir}/demo_coco_stuff27"
    assert {"kmeans_c", "kmeans_s"} <= set(cfg["methods"])
    assert cfg["methods"]["kmeans_c"]["segmenter"]["n_init"] == 2
    assert not (tmp_path / "outputs").exists()  # --cfg job composes only: no run folder


def test_checkout_config_dir_is_the_repository_conf():
    assert config_dir() == REPO / "conf"
    assert (config_dir() / "eval.yaml").is_file()


def test_config_dir_prefers_the_installed_copy_and_explains_a_missing_one(tmp_path, monkeypatch):
    package = tmp_path / "eval"
    package.mkdir()
    monkeypatch.setattr(config_path, "_PACKAGE", package)
    with pytest.raises(ConfigDirNotFoundError, match="eval.yaml"):
        config_dir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "eval.yaml").write_text("a: 1\n")
    assert config_dir() == (tmp_path / "conf").resolve()  # a checkout: conf/ beside the package
    (package / "_conf").mkdir()
    (package / "_conf" / "eval.yaml").write_text("a: 2\n")
    assert config_dir() == (package / "_conf").resolve()  # an installed copy: its own package data
