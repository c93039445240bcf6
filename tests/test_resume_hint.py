"""The resume hint of an interrupted run names the interpreter that ran it, so a copy-paste works from any shell.

``python`` only when the ``python`` on PATH is that same file (an activated venv); otherwise the full
``sys.executable`` (quoted for the shell), e.g. a venv run as ``.venv/bin/python -m eval.run`` without activation.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from eval.run.runner import _resume_command

OVERRIDES = ["experiment=demo", "dataset.limit=3"]


def _python(folder: Path) -> Path:
    folder.mkdir(parents=True)
    exe = folder / "python"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eval/run/__main__.py", *OVERRIDES, "hydra.run.dir=old"])


def test_an_interpreter_not_on_path_is_named_in_full(argv, monkeypatch, tmp_path):
    venv = _python(tmp_path / "my venv" / "bin")
    _python(tmp_path / "system")  # another python comes first on PATH
    monkeypatch.setenv("PATH", str(tmp_path / "system"))
    monkeypatch.setattr(sys, "executable", str(venv))
    command = _resume_command(Path("outputs/run a"))
    assert shlex.split(command) == [str(venv), "-m", "eval.run", *OVERRIDES, 'hydra.run.dir="outputs/run a"']
    assert command.startswith(shlex.quote(str(venv)) + " -m eval.run ")


def test_the_python_on_path_is_shortened(argv, monkeypatch, tmp_path):
    venv = _python(tmp_path / "venv" / "bin")
    monkeypatch.setenv("PATH", str(venv.parent))
    monkeypatch.setattr(sys, "executable", str(venv))
    command = _resume_command(Path("outputs/run"))
    assert command == "python -m eval.run experiment=demo dataset.limit=3 hydra.run.dir=outputs/run"


def test_a_link_to_the_same_binary_is_not_the_same_interpreter(argv, monkeypatch, tmp_path):
    """A venv's ``bin/python`` is a link to the system one, but imports other packages: not shortened."""
    system = _python(tmp_path / "system")
    venv = tmp_path / "venv" / "bin" / "python"
    venv.parent.mkdir(parents=True)
    venv.symlink_to(system)
    monkeypatch.setenv("PATH", str(system.parent))
    monkeypatch.setattr(sys, "executable", str(venv))
    assert shlex.split(_resume_command(Path("o")))[0] == str(venv)


def test_no_known_interpreter_falls_back_to_python(argv, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", "")
    assert _resume_command(Path("o")).startswith("python -m eval.run ")
