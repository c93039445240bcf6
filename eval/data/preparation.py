"""What every ``make data-*`` preparation shares (each dataset module holds its own steps).

* :class:`PrepareError`: a step failed; its message is what the user needs to know
  (``datasets/prepare.py`` prints it and exits 2).
* :func:`require_network`: before any download, every host answers, else one error naming
  every file the step needs.
* :func:`listed_files_ready` / :func:`missing_files`: is every file of every listed id there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from eval.data.base import read_id_list
from eval.data.download import pinned_files
from eval.data.network import unreachable

__all__ = ["PrepareError", "listed_files_ready", "missing_files", "require_network"]

FilesOf = Callable[[str], Iterable[Path]]


class PrepareError(RuntimeError):
    """A preparation step failed; the message is what the user needs to know."""


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
