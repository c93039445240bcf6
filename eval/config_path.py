"""Where the project's Hydra configuration (the repository's ``conf/`` folder) lies at run time.

The repository keeps ``conf/`` at its root. A built wheel ships the same files as package data of
``eval``, under ``eval/_conf`` (the mapping is in setup.py, explained in pyproject.toml). So:

* installed copy (``pip install .``): ``<site-packages>/eval/_conf``;
* checkout, or an editable install (whose modules are the checkout's files): ``<repository>/conf``.

Every module that reads a config file (Hydra's entry points, the dataset registry, the paper ledger,
the protocol table) finds the folder through :func:`config_dir`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigDirNotFoundError", "config_dir"]

_PACKAGE = Path(__file__).parent  # not resolved: an editable link tree keeps its own eval/_conf


class ConfigDirNotFoundError(FileNotFoundError):
    """Neither the installed package data nor a checkout's ``conf/`` is there."""


def config_dir() -> Path:
    """The folder holding ``eval.yaml`` and the config groups (``dataset/``, ``experiment/``, ``paper/``, ...)."""
    installed = _PACKAGE / "_conf"
    checkout = _PACKAGE.resolve().parent / "conf"
    for candidate in (installed, checkout):
        if (candidate / "eval.yaml").is_file():
            return candidate.resolve()
    raise ConfigDirNotFoundError(
        f"no Hydra configuration: neither {installed} (an installed copy) nor {checkout} (a checkout) holds "
        "eval.yaml; reinstall the package (`pip install .` ships conf/ as eval/_conf) or run from the repository")
