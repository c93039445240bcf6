#!/usr/bin/env python3
"""Download, verify and extract the benchmark data (``make data-coco`` / ``make data-cityscapes``).

Usage::

    python datasets/prepare.py coco --root datasets/coco_stuff27 [--downloads datasets/downloads]
    python datasets/prepare.py cityscapes --root datasets/cityscapes --zips datasets/downloads

Exit codes: 0 = the root is ready, 2 = something could not be fetched, verified or
found (one explanation on stderr, no traceback), 130 = interrupted (run again to resume).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from eval.data.coco_stuff import DEFAULT_LIST_FILE, IMAGE_DIR, LABEL_DIR, read_id_list  # noqa: E402
from eval.data.download import (  # noqa: E402
    PINNED_FILES,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_pinned,
    safe_extract_zip,
    verify_file,
)

DEFAULT_DOWNLOADS = REPO_ROOT / "datasets" / "downloads"
CITYSCAPES_VAL_IMAGES = 500
CITYSCAPES_DOWNLOAD_PAGE = "https://www.cityscapes-dataset.com/downloads/"


class PrepareError(RuntimeError):
    """A preparation step failed; the message is what the user needs to know."""


# --------------------------------------------------------------------------- COCO-Stuff-27


def _missing_coco(root: Path, ids: list[str]) -> tuple[list[str], list[str]]:
    images = [i for i in ids if not (root / IMAGE_DIR / f"{i}.jpg").is_file()]
    labels = [i for i in ids if not (root / LABEL_DIR / f"{i}.png").is_file()]
    return images, labels


def coco_ready(root: Path) -> bool:
    """True when ``root`` has the list file and the image and label of every listed id."""
    list_path = root / DEFAULT_LIST_FILE
    if not list_path.is_file():
        return False
    ids = read_id_list(list_path)
    images, labels = _missing_coco(root, ids)
    return bool(ids) and not images and not labels


def prepare_coco(root: Path, downloads: Path, progress: bool = True) -> None:
    """Build a COCO-Stuff-27 root (layout in ``datasets/README.md``), fetching only what is missing."""
    if coco_ready(root):
        print(f"ready: {root}")
        return
    downloads.mkdir(parents=True, exist_ok=True)
    list_path = root / DEFAULT_LIST_FILE
    if list_path.is_file():
        source_list = list_path
        print(f"using the existing id list {list_path}")
    else:
        source_list = download_pinned("coco_stuff27_list", downloads, progress=progress)
    ids = read_id_list(source_list)
    if not ids:
        raise PrepareError(f"the id list {source_list} is empty")
    missing_images, missing_labels = _missing_coco(root, ids)

    # (what, missing ids, pinned archive, target folder, file extension); both zips hold val2017/<id>.<ext>
    parts = [
        ("images", missing_images, "coco_val2017", IMAGE_DIR, "jpg"),
        ("labels", missing_labels, "cocostuff_stuffthingmaps", LABEL_DIR, "png"),
    ]
    for what, missing, key, folder, ext in parts:
        if not missing:
            continue
        print(f"{len(missing)} of {len(ids)} {what} missing: fetching {PINNED_FILES[key].name}")
        archive = download_pinned(key, downloads, progress=progress)
        safe_extract_zip(
            archive,
            root / folder,
            members=[f"val2017/{i}.{ext}" for i in missing],
            strip_prefix="val2017/",
            progress=progress,
        )
    if not list_path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = list_path.with_name(list_path.name + ".tmp")
        shutil.copyfile(source_list, tmp)
        os.replace(tmp, list_path)
    if not coco_ready(root):
        images, labels = _missing_coco(root, ids)
        raise PrepareError(f"{root} is still incomplete: {len(images)} images and {len(labels)} labels missing")
    print(f"ready: {root} ({len(ids)} images)")


# --------------------------------------------------------------------------- Cityscapes


def _cityscapes_counts(root: Path) -> tuple[int, int]:
    """(number of val images, number of those that have a labelIds file)."""
    images = list((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    labelled = 0
    for path in images:
        name = path.name[: -len("_leftImg8bit.png")]
        if (root / "gtFine" / "val" / path.parent.name / f"{name}_gtFine_labelIds.png").is_file():
            labelled += 1
    return len(images), labelled


def cityscapes_ready(root: Path) -> bool:
    """True when ``root`` has all val images, each with its labelIds PNG."""
    images, labelled = _cityscapes_counts(root)
    return images == CITYSCAPES_VAL_IMAGES and labelled == images


def prepare_cityscapes(root: Path, zips: Path, verify: bool = True, progress: bool = True) -> None:
    """Extract the Cityscapes val split from the two official zips (which need a login)."""
    if cityscapes_ready(root):
        print(f"ready: {root}")
        return
    needed = [PINNED_FILES["cityscapes_gtfine"], PINNED_FILES["cityscapes_leftimg8bit"]]
    missing = [pinned for pinned in needed if not (zips / pinned.name).is_file()]
    if missing:
        lines = [
            f"Cityscapes is not prepared in {root} and {len(missing)} of the official zips are missing.",
            f"Cityscapes needs a (free) login: download these files from {CITYSCAPES_DOWNLOAD_PAGE}",
        ]
        lines += [f"  {pinned.name}   ({pinned.url}, md5 {pinned.md5})" for pinned in missing]
        lines.append(f"and put them in {zips.resolve()}/ , then run `make data-cityscapes` again.")
        raise PrepareError("\n".join(lines))
    for pinned in needed:
        path = zips / pinned.name
        if verify:
            print(f"verifying {path} (md5) ...")
            verify_file(path, sha256=pinned.sha256, md5=pinned.md5)
    root.mkdir(parents=True, exist_ok=True)
    safe_extract_zip(
        zips / PINNED_FILES["cityscapes_gtfine"].name,
        root,
        members_prefix="gtFine/val/",
        member_filter=lambda name: name.endswith("_gtFine_labelIds.png"),
        progress=progress,
    )
    safe_extract_zip(
        zips / PINNED_FILES["cityscapes_leftimg8bit"].name,
        root,
        members_prefix="leftImg8bit/val/",
        member_filter=lambda name: name.endswith("_leftImg8bit.png"),
        progress=progress,
    )
    images, labelled = _cityscapes_counts(root)
    if images != CITYSCAPES_VAL_IMAGES or labelled != images:
        raise PrepareError(
            f"{root} has {images} val images ({labelled} with labels) after extraction, "
            f"expected {CITYSCAPES_VAL_IMAGES}: are the zips the official ones?"
        )
    print(f"ready: {root} ({images} images)")


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    coco = sub.add_parser("coco", help="COCO-Stuff-27 val (downloads ~1.5 GB, keeps 2175 images)")
    coco.add_argument("--root", type=Path, required=True, help="dataset root to build")
    coco.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS, help="where archives go")
    city = sub.add_parser("cityscapes", help="Cityscapes val from the official zips")
    city.add_argument("--root", type=Path, required=True, help="dataset root to build")
    city.add_argument("--zips", type=Path, default=DEFAULT_DOWNLOADS, help="folder holding the zips")
    city.add_argument("--no-verify", action="store_true", help="skip the md5 check of the zips")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = not args.quiet
    try:
        if args.command == "coco":
            prepare_coco(args.root, args.downloads, progress=progress)
        else:
            prepare_cityscapes(args.root, args.zips, verify=not args.no_verify, progress=progress)
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
        OSError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
