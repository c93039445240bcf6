#!/usr/bin/env python3
"""Download, verify and extract the benchmark data (the ``make data-*`` targets).

One sub-command per dataset, built from the ``PREPARATION`` of each dataset module that a
``conf/dataset/*.yaml`` names (``--help`` lists them); ``make data-<command>`` runs it.

Usage::

    python datasets/prepare.py coco [--root datasets/coco_stuff27] [--downloads datasets/downloads] [--subset all]
    python datasets/prepare.py cityscapes [--root datasets/cityscapes] --zips datasets/downloads
    python datasets/prepare.py voc [--root datasets/VOCdevkit/VOC2012]
    python datasets/prepare.py context [--root datasets/VOCdevkit/VOC2010]
    python datasets/prepare.py coco-object [--root datasets/coco_stuff27] [--overlap smallest_on_top]
    python datasets/prepare.py ade20k [--root datasets/ADEChallengeData2016]
    python datasets/prepare.py folder --root DIR [--num-classes N]   (your own data: checks it, downloads nothing)

``--root`` defaults to the ``root`` of the dataset's config (under ``datasets/`` of the current folder).

Exit codes: 0 = the root is ready, 2 = something could not be fetched, verified or
found (one explanation on stderr, no traceback), 130 = interrupted (run again to resume).
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Each dataset's steps live in its module (eval/data/<dataset>.py); this file only parses and dispatches.
from eval.data.classes import default_root, preparations  # noqa: E402
from eval.data.download import ChecksumError, DownloadError, UnsafeArchiveError  # noqa: E402
from eval.data.preparation import PrepareError  # noqa: E402

__all__ = ["DEFAULT_DOWNLOADS", "PrepareError", "build_parser", "main"]

DEFAULT_DOWNLOADS = REPO_ROOT / "datasets" / "downloads"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """The parser, and for each command the ``dest`` of its own options (passed to its ``run``)."""
    quiet = argparse.ArgumentParser(add_help=False)  # before or after the sub-command (make's PREPARE_ARGS)
    quiet.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], parents=[quiet])
    sub = parser.add_subparsers(dest="command", required=True)
    own: dict[str, list[str]] = {}
    for command, (name, prep) in preparations().items():
        cmd = sub.add_parser(command, help=prep.help, description=f"{prep.help} (config: conf/dataset/{name}.yaml)",
                             parents=[quiet])
        cmd.add_argument("--root", type=Path, default=Path(default_root(name)),
                         help="dataset root to build (default: the config's, %(default)s)")
        flags, kwargs = prep.downloads
        cmd.add_argument(*flags, dest="downloads", type=Path, default=DEFAULT_DOWNLOADS, **kwargs)
        own[command] = [cmd.add_argument(*f, **kw).dest for f, kw in prep.options]
    return parser, own


def main(argv: list[str] | None = None) -> int:
    parser, own = build_parser()
    args = parser.parse_args(argv)
    _, prep = preparations()[args.command]
    try:
        options = {d: getattr(args, d) for d in own[args.command]}
        prep.run(args.root, args.downloads, progress=not getattr(args, "quiet", False), **options)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except KeyError as exc:  # a listed member is not in the archive
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except (
        PrepareError,
        DownloadError,
        ChecksumError,
        UnsafeArchiveError,
        zipfile.BadZipFile,
        tarfile.TarError,
        ValueError,
        OSError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
