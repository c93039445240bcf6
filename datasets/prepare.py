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
import json
import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from eval.atomic import write_json_atomic  # noqa: E402
from eval.data import ade20k, coco_object, context, voc  # noqa: E402
from eval.data.base import read_id_list  # noqa: E402
from eval.data.coco_stuff import DEFAULT_LIST_FILE, IMAGE_DIR, LABEL_DIR, SUBSETS  # noqa: E402
from eval.data.download import (  # noqa: E402
    PINNED_FILES,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_pinned,
    read_tar_member,
    safe_extract_tar,
    safe_extract_zip,
    verify_file,
)
from eval.data.network import unreachable  # noqa: E402

DEFAULT_DOWNLOADS = REPO_ROOT / "datasets" / "downloads"
CITYSCAPES_VAL_IMAGES = 500
CITYSCAPES_DOWNLOAD_PAGE = "https://www.cityscapes-dataset.com/downloads/"
VOC_VAL_IMAGES = voc.VAL_IMAGES
CONTEXT_VAL_IMAGES = context.VAL_IMAGES
ADE20K_VAL_IMAGES = ade20k.VAL_IMAGES
VOC2012_TAR_PREFIX = "VOCdevkit/VOC2012/"
VOC2010_TAR_PREFIX = "VOCdevkit/VOC2010/"
ADE20K_ZIP_PREFIX = "ADEChallengeData2016/"


class PrepareError(RuntimeError):
    """A preparation step failed; the message is what the user needs to know."""


# --------------------------------------------------------------------------- COCO-Stuff-27


def _missing_coco(root: Path, ids: list[str]) -> tuple[list[str], list[str]]:
    images = [i for i in ids if not (root / IMAGE_DIR / f"{i}.jpg").is_file()]
    labels = [i for i in ids if not (root / LABEL_DIR / f"{i}.png").is_file()]
    return images, labels


def coco_ready(root: Path, subset: str = "curated") -> bool:
    """True when ``root`` has the subset's list file and the image and label of every listed id."""
    list_path = root / SUBSETS[subset]
    if not list_path.is_file():
        return False
    ids = read_id_list(list_path)
    images, labels = _missing_coco(root, ids)
    return bool(ids) and not images and not labels


def _write_all_list(downloads: Path, progress: bool) -> Path:
    """``downloads/val2017_all.txt``: every image id of the pinned val2017.zip, sorted."""
    archive = download_pinned("coco_val2017", downloads, progress=progress)
    with zipfile.ZipFile(archive) as zf:
        ids = sorted(Path(n).stem for n in zf.namelist() if n.startswith("val2017/") and n.endswith(".jpg"))
    path = downloads / SUBSETS["all"]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    os.replace(tmp, path)
    return path


def prepare_coco(root: Path, downloads: Path, progress: bool = True, subset: str = "curated") -> None:
    """Build a COCO-Stuff-27 root (layout in ``datasets/README.md``), fetching only what is missing.

    ``subset="all"`` keeps every val2017 image (5000) and lists them in ``val2017_all.txt``.
    """
    if coco_ready(root, subset):
        print(f"ready: {root}")
        return
    list_path = root / SUBSETS[subset]
    _require_network(_coco_needs(root, downloads, subset), downloads)
    downloads.mkdir(parents=True, exist_ok=True)
    if list_path.is_file():
        source_list = list_path
        print(f"using the existing id list {list_path}")
    elif subset == "all":
        source_list = _write_all_list(downloads, progress)
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
    if not coco_ready(root, subset):
        images, labels = _missing_coco(root, ids)
        raise PrepareError(f"{root} is still incomplete: {len(images)} images and {len(labels)} labels missing")
    print(f"ready: {root} ({len(ids)} images)")


def _coco_needs(root: Path, downloads: Path, subset: str = "curated") -> list[str]:
    """Pinned files a COCO-Stuff-27 preparation would fetch (all of them when the id list is not there yet)."""
    list_path = root / SUBSETS[subset]
    missing = _missing_coco(root, read_id_list(list_path)) if list_path.is_file() else (["?"], ["?"])
    needs = [] if list_path.is_file() or subset == "all" else ["coco_stuff27_list"]
    needs += [key for key, gap in (("coco_val2017", missing[0]), ("cocostuff_stuffthingmaps", missing[1])) if gap]
    return [key for key in needs if not (downloads / PINNED_FILES[key].name).is_file()]


def _require_network(keys: list[str], downloads: Path) -> None:
    """Before any download (and before any folder is made): every host answers, else name every file needed."""
    failed = unreachable(PINNED_FILES[k].url for k in keys)
    if not failed:
        return
    lines = [f"  {PINNED_FILES[k].name}  {PINNED_FILES[k].url}" for k in keys]
    hosts = "; ".join(f"{h}: {why}" for h, why in failed.items())
    raise PrepareError(
        f"cannot reach {hosts}. Nothing was downloaded. This step needs these {len(keys)} file(s):\n"
        + "\n".join(lines)
        + f"\nput them in {downloads}/ (they are checked as usual) or run again with network. The run that "
        "follows also needs the Stable Diffusion v1.4 weights (CompVis/stable-diffusion-v1-4: unet, vae and "
        "text_encoder safetensors, their configs and the tokenizer) from the Hugging Face hub, unless they are "
        "already in its cache.")


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
    # (pinned zip, the val folder inside it, the files kept from it)
    for key, prefix, suffix in (("cityscapes_gtfine", "gtFine/val/", "_gtFine_labelIds.png"),
                                ("cityscapes_leftimg8bit", "leftImg8bit/val/", "_leftImg8bit.png")):
        safe_extract_zip(zips / PINNED_FILES[key].name, root, members_prefix=prefix,
                         member_filter=lambda name, suffix=suffix: name.endswith(suffix), progress=progress)
    images, labelled = _cityscapes_counts(root)
    if images != CITYSCAPES_VAL_IMAGES or labelled != images:
        raise PrepareError(
            f"{root} has {images} val images ({labelled} with labels) after extraction, "
            f"expected {CITYSCAPES_VAL_IMAGES}: are the zips the official ones?"
        )
    print(f"ready: {root} ({images} images)")


# --------------------------------------------------------------------------- shared


def _missing_files(ids: list[str], paths) -> list[str]:
    """The ids whose files (``paths(id)`` -> iterable of Paths) are not all present."""
    return [i for i in ids if not all(p.is_file() for p in paths(i))]


def _listed_files_ready(list_path: Path, paths) -> bool:
    """True when the id list exists, is not empty, and ``paths(id)`` exist for every id."""
    if not list_path.is_file():
        return False
    ids = read_id_list(list_path)
    return bool(ids) and not _missing_files(ids, paths)


# --------------------------------------------------------------------------- VOC-21


def _voc_files(root: Path):
    return lambda i: (root / voc.IMAGE_DIR / f"{i}.jpg", root / voc.LABEL_DIR / f"{i}.png")


def voc_ready(root: Path) -> bool:
    """True when ``root`` has the val list and the image and label of every listed id."""
    return _listed_files_ready(voc.split_list(root), _voc_files(root))


def prepare_voc(root: Path, downloads: Path, progress: bool = True) -> None:
    """Extract the 1449 val images and labels (and ``val.txt``) from the official VOC2012 tar."""
    if voc_ready(root):
        print(f"ready: {root}")
        return
    tar = download_pinned("voc2012_trainval", downloads, progress=progress)
    list_member = f"{VOC2012_TAR_PREFIX}ImageSets/Segmentation/val.txt"
    ids = [line.strip() for line in read_tar_member(tar, list_member).decode("utf-8").splitlines() if line.strip()]
    if len(ids) != VOC_VAL_IMAGES:
        raise PrepareError(f"{list_member} in {tar} lists {len(ids)} ids, expected {VOC_VAL_IMAGES}")
    members = [list_member]
    members += [f"{VOC2012_TAR_PREFIX}{voc.IMAGE_DIR}/{i}.jpg" for i in ids]
    members += [f"{VOC2012_TAR_PREFIX}{voc.LABEL_DIR}/{i}.png" for i in ids]
    print(f"extracting {len(ids)} val images and labels from {tar.name}")
    safe_extract_tar(tar, root, members=members, strip_prefix=VOC2012_TAR_PREFIX, progress=progress)
    if not voc_ready(root):
        raise PrepareError(f"{root} is still incomplete after extraction")
    print(f"ready: {root} ({len(ids)} images)")


# --------------------------------------------------------------------------- Context-60


def _context_files(root: Path):
    return lambda i: (root / context.IMAGE_DIR / f"{i}.jpg", root / context.LABEL_DIR / f"{i}.png")


def context_ready(root: Path) -> bool:
    """True when ``root`` has the built val list and the image and label of every listed id."""
    return _listed_files_ready(context.split_list(root), _context_files(root))


def _context_annotations(root: Path, downloads: Path, verify: bool, progress: bool) -> Path:
    """``<root>/trainval_merged.json`` when present (checked), else the pinned download."""
    pinned = PINNED_FILES["context_trainval_merged"]
    local = root / context.ANNOTATION_FILE
    if local.is_file():
        if verify:
            print(f"verifying {local} (sha1) ...")
            verify_file(local, sha256=pinned.sha256, md5=pinned.md5, sha1=pinned.sha1)
        return local
    try:
        return download_pinned("context_trainval_merged", downloads, progress=progress)
    except DownloadError as exc:
        raise PrepareError(
            "\n".join([
                f"PASCAL-Context needs {pinned.name} (the PASCAL in Detail annotations), and it could not be "
                f"fetched: {exc}",
                f"Its usual address is {pinned.url}; that host is not a stable archive. Get the file from "
                "wherever you can (e.g. an archived copy of that URL); any copy with",
                f"  sha1 {pinned.sha1}",
                f"works. Put it at {local.resolve()} and run `make data-context` again "
                "(the checksum is verified before use).",
            ])
        ) from None


def prepare_context(root: Path, downloads: Path, verify: bool = True, progress: bool = True) -> None:
    """Build a Context-60 root: VOC2010 val images + labels built from ``trainval_merged.json``."""
    if context_ready(root):
        print(f"ready: {root}")
        return
    json_path = _context_annotations(root, downloads, verify, progress)
    print(f"reading {json_path} ...")
    coco = context.load_detail(json_path, phase="val")
    names = sorted(context.image_ids_by_name(coco))
    if len(names) != CONTEXT_VAL_IMAGES:
        print(f"warning: {json_path} has {len(names)} val images, the benchmark has {CONTEXT_VAL_IMAGES}",
              file=sys.stderr)
    missing = [i for i in names if not (root / context.IMAGE_DIR / f"{i}.jpg").is_file()]
    if missing:
        print(f"{len(missing)} of {len(names)} images missing: fetching {PINNED_FILES['voc2010_trainval'].name}")
        tar = download_pinned("voc2010_trainval", downloads, progress=progress)
        members = [f"{VOC2010_TAR_PREFIX}{context.IMAGE_DIR}/{i}.jpg" for i in missing]
        safe_extract_tar(tar, root, members=members, strip_prefix=VOC2010_TAR_PREFIX, progress=progress)
    ids = context.build_context_labels(root, coco, split="val", progress=progress)
    if not context_ready(root):
        raise PrepareError(f"{root} is still incomplete after building the labels")
    print(f"ready: {root} ({len(ids)} images)")


# --------------------------------------------------------------------------- COCO-Object-81


def _agreement_line(report: dict) -> str:
    def pct(value):
        return "n/a" if value is None else f"{value:.2f}%"

    return (
        f"label agreement (stuffthingmaps vs instances, overlap rule {report.get('overlap_rule')}): "
        f"{pct(report['agreement'])} of {report['pixels']} valid pixels, {pct(report['object_agreement'])} of "
        f"{report['object_pixels']} object pixels, on {report['images']} images"
    )


def prepare_coco_object(root: Path, downloads: Path, overlap: str = "smallest_on_top", progress: bool = True) -> None:
    """Build the instance-derived COCO-Object-81 labels on a COCO-Stuff-27 root and compare the sources.

    Writes ``<root>/annotation_object81_instances/<id>.png`` and the agreement report
    ``<root>/object81_agreement.json``.
    """
    prepare_coco(root, downloads, progress=progress)
    ids = read_id_list(root / DEFAULT_LIST_FILE)
    report_path = root / coco_object.AGREEMENT_FILE
    previous = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    built = all((root / coco_object.INSTANCE_LABEL_DIR / f"{i}.png").is_file() for i in ids)
    if built and previous is not None and previous.get("overlap_rule") == overlap:
        print(_agreement_line(previous))
        print(f"ready: {root}")
        return
    json_path = root / coco_object.INSTANCES_FILE
    if not json_path.is_file():
        archive = download_pinned("coco_annotations_trainval2017", downloads, progress=progress)
        safe_extract_zip(archive, root, members=[coco_object.INSTANCES_FILE], progress=progress)
    rebuild = previous is not None and previous.get("overlap_rule") != overlap
    print(f"building {len(ids)} instance labels from {json_path} (overlap rule {overlap})")
    coco_object.build_instance_labels(root, ids, json_path, overlap=overlap, overwrite=rebuild, progress=progress)
    report = {"overlap_rule": overlap, **coco_object.label_agreement(root, ids)}
    write_json_atomic(report_path, report)
    print(_agreement_line(report))
    print(f"ready: {root} ({len(ids)} images, both label sources; report in {report_path})")


# --------------------------------------------------------------------------- ADE20K-150


def ade20k_ready(root: Path) -> bool:
    """True when ``root`` has all validation images, each with its annotation PNG."""
    ids = ade20k.image_ids(root)
    labelled = [i for i in ids if (root / "annotations" / "validation" / f"{i}.png").is_file()]
    return len(ids) == ADE20K_VAL_IMAGES and len(labelled) == len(ids)


def prepare_ade20k(root: Path, downloads: Path, progress: bool = True) -> None:
    """Extract the validation split of the official ADEChallengeData2016 zip."""
    if ade20k_ready(root):
        print(f"ready: {root}")
        return
    archive = download_pinned("ade20k_challenge", downloads, progress=progress)
    wanted = (f"{ADE20K_ZIP_PREFIX}images/validation/", f"{ADE20K_ZIP_PREFIX}annotations/validation/")
    safe_extract_zip(
        archive,
        root,
        member_filter=lambda name: name.startswith(wanted),
        strip_prefix=ADE20K_ZIP_PREFIX,
        progress=progress,
    )
    if not ade20k_ready(root):
        ids = ade20k.image_ids(root)
        raise PrepareError(
            f"{root} has {len(ids)} validation images after extraction, expected {ADE20K_VAL_IMAGES} "
            "with an annotation each: is the zip the official one?"
        )
    print(f"ready: {root} ({ADE20K_VAL_IMAGES} images)")


# --------------------------------------------------------------------------- CLI


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
    obj.add_argument("--overlap", choices=coco_object.OVERLAP_RULES, default="smallest_on_top",
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
