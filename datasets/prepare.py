#!/usr/bin/env python3
"""Download, verify and extract the benchmark data (the ``make data-*`` targets).

Targets: ``data-coco``, ``data-cityscapes``, ``data-voc``, ``data-context``,
``data-coco-object``, ``data-ade20k``.

Usage::

    python datasets/prepare.py coco --root datasets/coco_stuff27 [--downloads datasets/downloads]
    python datasets/prepare.py cityscapes --root datasets/cityscapes --zips datasets/downloads
    python datasets/prepare.py voc --root datasets/VOCdevkit/VOC2012
    python datasets/prepare.py context --root datasets/VOCdevkit/VOC2010
    python datasets/prepare.py coco-object --root datasets/coco_stuff27 [--overlap smallest_on_top]
    python datasets/prepare.py ade20k --root datasets/ADEChallengeData2016

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
from eval.data.ade20k import ade20k_ready, prepare_ade20k  # noqa: E402
from eval.data.cityscapes import cityscapes_ready, prepare_cityscapes  # noqa: E402
from eval.data.coco_object import OVERLAP_RULES, prepare_coco_object  # noqa: E402
from eval.data.coco_stuff import SUBSETS, coco_ready, prepare_coco  # noqa: E402
from eval.data.context import context_ready, prepare_context  # noqa: E402
from eval.data.download import ChecksumError, DownloadError, UnsafeArchiveError  # noqa: E402
from eval.data.preparation import PrepareError  # noqa: E402
from eval.data.voc import prepare_voc, voc_ready  # noqa: E402

__all__ = [
    "DEFAULT_DOWNLOADS",
    "PrepareError",
    "ade20k_ready",
    "build_parser",
    "cityscapes_ready",
    "coco_ready",
    "context_ready",
    "main",
    "prepare_ade20k",
    "prepare_cityscapes",
    "prepare_coco",
    "prepare_coco_object",
    "prepare_context",
    "prepare_voc",
    "voc_ready",
]

DEFAULT_DOWNLOADS = REPO_ROOT / "datasets" / "downloads"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    coco = sub.add_parser("coco", help="COCO-Stuff-27 val (downloads ~1.5 GB, keeps 2175 images)")
    coco.add_argument("--root", type=Path, required=True, help="dataset root to build")
    coco.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS, help="where archives go")
    coco.add_argument("--subset", choices=sorted(SUBSETS), default="curated",
                      help="curated: the 2175 listed images (default); all: the 5000 val2017 images")
    city = sub.add_parser("cityscapes", help="Cityscapes val from the official zips")
    city.add_argument("--root", type=Path, required=True, help="dataset root to build")
    city.add_argument("--zips", type=Path, default=DEFAULT_DOWNLOADS, help="folder holding the zips")
    city.add_argument("--no-verify", action="store_true", help="skip the md5 check of the zips")
    vocp = sub.add_parser("voc", help="PASCAL VOC 2012 val (downloads the 2 GB trainval tar, keeps 1449 images)")
    ctx = sub.add_parser("context", help="PASCAL-Context val (VOC2010 trainval tar + trainval_merged.json)")
    ctx.add_argument("--no-verify", action="store_true", help="skip the sha1 check of a trainval_merged.json in --root")
    obj = sub.add_parser("coco-object", help="COCO-Object-81 labels from instances_val2017.json on the COCO root")
    obj.add_argument("--overlap", choices=OVERLAP_RULES, default="smallest_on_top",
                     help="how overlapping instances are resolved (default: smallest on top)")
    ade = sub.add_parser("ade20k", help="ADE20K SceneParsing validation (official zip, keeps 2000 images)")
    for extra in (vocp, ctx, obj, ade):
        extra.add_argument("--root", type=Path, required=True, help="dataset root to build")
        extra.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS, help="where archives go")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = not args.quiet
    try:
        if args.command == "coco":
            prepare_coco(args.root, args.downloads, progress=progress, subset=args.subset)
        elif args.command == "cityscapes":
            prepare_cityscapes(args.root, args.zips, verify=not args.no_verify, progress=progress)
        elif args.command == "voc":
            prepare_voc(args.root, args.downloads, progress=progress)
        elif args.command == "context":
            prepare_context(args.root, args.downloads, verify=not args.no_verify, progress=progress)
        elif args.command == "coco-object":
            prepare_coco_object(args.root, args.downloads, overlap=args.overlap, progress=progress)
        else:
            prepare_ade20k(args.root, args.downloads, progress=progress)
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
