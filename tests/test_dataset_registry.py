"""The datasets are listed once, by conf/dataset/*.yaml: each config's class, module, preparation,
`make` target and synthetic writer are found from it, and a new config adds a dataset everywhere."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eval.data import classes, synthetic
from eval.data import download as dl

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml"))


def _subcommands(parser) -> set[str]:
    return {name for action in parser._subparsers._group_actions for name in action.choices}


@pytest.fixture
def fresh_registry():
    """Empty the registry's caches before and after (a test that moves CONF_DIR must not leak)."""
    caches = (classes._configs, classes._datasets, dl.pinned_files)
    for c in caches:
        c.cache_clear()
    yield
    for c in caches:
        c.cache_clear()


def test_every_dataset_config_has_a_class_preparation_make_target_and_synthetic_writer(prepare, monkeypatch):
    monkeypatch.delenv("PROJECT_ROOT", raising=False)  # conf/paths: the default root_dir is "."
    assert len(CONFIGS) == 8
    parser, _ = prepare.build_parser()
    commands = _subcommands(parser)
    preps = classes.preparations()
    for name in CONFIGS:
        cls = classes.dataset_class(name)
        module = importlib.import_module(cls.__module__)
        assert cls.name == name and classes.dataset_title(name) == cls.title
        assert classes.dataset_classes(name) == cls.classes and len(cls.classes) == cls.num_classes
        # cityscapes19 shares cityscapes' module, files and command
        assert preps[module.PREPARATION.command] == ("cityscapes" if name == "cityscapes19" else name,
                                                     module.PREPARATION)
        assert module.PREPARATION.command in commands
        assert set(module.PINNED) <= set(dl.pinned_files())
        writer = getattr(synthetic, f"write_synthetic_{cls.__module__.rsplit('.', 1)[1]}")
        assert callable(writer)
        assert classes.default_root(name).startswith("./datasets/")
    # COCO-Object's config and COCO-Stuff's share a root but have their own preparations
    assert {c: n for c, (n, _) in preps.items()} == {
        "ade20k": "ade20k150", "cityscapes": "cityscapes", "coco-object": "coco_object81",
        "coco": "coco_stuff27", "context": "context60", "voc": "voc21", "folder": "folder"}
    assert classes.dataset_title("no_such_dataset") == "no_such_dataset"
    assert classes.dataset_classes("no_such_dataset") is None
    with pytest.raises(KeyError, match="no_such_dataset"):
        classes.dataset_class("no_such_dataset")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("command", ["voc", "ade20k", "coco-object", "folder"])
def test_make_data_target_of_a_command_runs_its_preparation(command):
    out = subprocess.run(["make", "-n", f"data-{command}", "ROOT=/data/x", "STAMP=", "PY=python"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert f"python datasets/prepare.py {command} --root /data/x --downloads datasets/downloads" in out


def _write_new_dataset(tmp_path: Path) -> Path:
    """A dataset the repository does not have: its module and its config, nothing else."""
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "newset_module.py").write_text(textwrap.dedent('''
        from eval.data.base import LabelledImages
        from eval.data.download import PinnedFile
        from eval.data.preparation import Preparation, option

        PINNED = {"newset_zip": PinnedFile(name="newset.zip", url="https://example.org/newset.zip", md5="0" * 32)}
        CALLS = []

        class NewSet(LabelledImages):
            name, title, classes, make_target = "newset", "New Set", ("a", "b"), "data-newset"

        def prepare_newset(root, downloads, progress=True, fast=False):
            CALLS.append((str(root), str(downloads), progress, fast))

        PREPARATION = Preparation("newset", prepare_newset, "a new set",
                                  options=(option("--fast", action="store_true"),))
    '''))
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "paths", conf / "paths")
    shutil.copytree(REPO / "conf" / "dataset", conf / "dataset")
    (conf / "dataset" / "newset.yaml").write_text(
        "_target_: newset_module.NewSet\nname: newset\nnum_classes: 2\nroot: ${paths.data_dir}/newset\n")
    return conf


def test_a_new_config_and_module_add_a_dataset_everywhere(tmp_path, monkeypatch, fresh_registry, prepare):
    conf = _write_new_dataset(tmp_path)
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    monkeypatch.setattr(classes, "CONF_DIR", conf)
    assert classes.dataset_title("newset") == "New Set" and classes.dataset_classes("newset") == ("a", "b")
    assert dl.pinned_files()["newset_zip"].name == "newset.zip"
    assert classes.default_root("newset") == "./datasets/newset"
    assert "newset" in _subcommands(prepare.build_parser()[0])
    assert prepare.main(["--quiet", "newset", "--root", str(tmp_path / "r"), "--fast"]) == 0
    # --quiet after the sub-command too (make data-<command> PREPARE_ARGS=--quiet)
    assert prepare.main(["newset", "--root", str(tmp_path / "r"), "--quiet"]) == 0
    import newset_module

    monkeypatch.delitem(sys.modules, "newset_module")
    assert newset_module.CALLS == [(str(tmp_path / "r"), str(prepare.DEFAULT_DOWNLOADS), False, True),
                                   (str(tmp_path / "r"), str(prepare.DEFAULT_DOWNLOADS), False, False)]


def test_a_config_naming_another_class_is_refused(tmp_path, monkeypatch, fresh_registry):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "paths", conf / "paths")
    shutil.copytree(REPO / "conf" / "dataset", conf / "dataset")
    (conf / "dataset" / "voc_copy.yaml").write_text("_target_: eval.data.voc.Voc21\nname: voc_copy\n")
    monkeypatch.setattr(classes, "CONF_DIR", conf)
    with pytest.raises(RuntimeError, match="voc_copy"):
        classes.dataset_title("voc21")
    (conf / "dataset" / "voc_copy.yaml").write_text("_target_: eval.data.voc.Voc21\nname: other\n")
    classes._configs.cache_clear()
    with pytest.raises(RuntimeError, match="name: voc_copy"):
        classes.dataset_title("voc21")
