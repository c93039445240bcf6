"""What every ``make data-*`` preparation shares (each dataset module holds its own steps).

* :class:`Preparation`: a dataset module's ``PREPARATION``, the ``datasets/prepare.py``
  sub-command (and ``make data-<command>`` target) that builds its root;
* :class:`PrepareError`: a step failed; its message is what the user needs to know
  (``datasets/prepare.py`` prints it and exits 2).
* :func:`require_network`: before any download, every host answers, else one error naming
  every file the step needs.
* :func:`listed_files_ready` / :func:`missing_files`: is every file of every listed id there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffseg.network import unreachable
from eval.data.base import read_id_list
from eval.data.download import pinned_files

__all__ = ["Preparation", "PrepareError", "listed_files_ready", "missing_files", "option", "require_network"]

FilesOf = Callable[[str], Iterable[Path]]


class PrepareError(RuntimeError):
    """A preparation step failed; the message is what the user needs to know."""


Option = tuple[tuple[str, ...], dict[str, Any]]


def option(*flags: str, **kwargs: Any) -> Option:
    """One more command-line option of a preparation: ``argparse.add_argument(*flags, **kwargs)``;
    its ``dest`` is the keyword the preparation's ``run`` receives it as."""
    return flags, kwargs


@dataclass(frozen=True)
class Preparation:
    """How ``datasets/prepare.py <command>`` (``make data-<command>``) builds a dataset's root.

    Every dataset module states one as ``PREPARATION``; the command line is built from them
    (:func:`eval.data.classes.preparations`), so a new dataset needs no line there or in the Makefile.

    Attributes:
        command: the sub-command (``voc``; the make target is ``data-voc``).
        run: ``run(root, downloads, progress=bool, **options)``: fetches and builds only what is
            missing, raises :class:`PrepareError` with what the user needs to know.
        help: one line for ``--help``: what it downloads and keeps.
        options: the command's own options (:func:`option`), passed to ``run`` by their ``dest``.
        downloads: the flags and help of the folder of archives (``run``'s second argument).
    """

    command: str
    run: Callable[..., None]
    help: str
    options: tuple[Option, ...] = ()
    downloads: Option = (("--downloads",), {"help": "where archives go"})


def require_network(keys: list[str], downloads: Path) -> None:
    """Before any download (and before any folder is made): every host answers, else name every file needed."""
    pinned = pinned_files()
    failed = unreachable(pinned[k].url for k in keys)
    if not failed:
        return
    lines = [f"  {pinned[k].name}  {pinned[k].url}" for k in keys]
    hosts = "; ".join(f"{h}: {why}" for h, why in failed.items())
    raise PrepareError(
        f"cannot reach {hosts}. Nothing was downloaded. This step needs these {len(keys)} file(s):\n"
        + "\n".join(lines)
        + f"\nput them in {downloads}/ (they are checked as usual) or run again with network. The run that "
        "follows also needs the Stable Diffusion v1.4 weights (CompVis/stable-diffusion-v1-4: unet, vae and "
        "text_encoder safetensors, their configs and the tokenizer) from the Hugging Face hub, unless they are "
        "already in its cache.")


def missing_files(ids: list[str], paths: FilesOf) -> list[str]:
    """The ids whose files (``paths(id)`` -> iterable of Paths) are not all present."""
    return [i for i in ids if not all(p.is_file() for p in paths(i))]


def listed_files_ready(list_path: Path, paths: FilesOf) -> bool:
    """True when the id list exists, is not empty, and ``paths(id)`` exist for every id."""
    if not list_path.is_file():
        return False
    ids = read_id_list(list_path)
    return bool(ids) and not missing_files(ids, paths)
