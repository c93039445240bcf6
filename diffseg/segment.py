"""Segment any images: ``python -m diffseg.segment IMAGE... --out DIR`` (or the ``diffseg`` script).

Inputs are image files or folders (a folder gives its image files by suffix, sorted; not its
subfolders). For each image: EXIF orientation applied (photos are shown upright; ``--ignore-exif``
keeps the stored pixel grid, as the benchmark loader does), 16-bit and float images
scaled to 8 bits (:func:`diffseg.preprocess.to_rgb8`), centre crop, resize to 512 (as the
benchmark pre-processing), one UNet pass, aggregation, DiffSeg; writes
``<name>_mask.png`` (segment ids, :func:`diffseg.masks.write_mask_png`) and
``<name>_overlay.png`` (the cropped image with coloured segments). ``<name>`` is the file's
stem, or, for inputs that share a stem (``a/photo.png b/photo.png a/photo.jpg``), its path
relative to the inputs' common folder with ``/`` as ``__`` (``a__photo.png``), so no output
overwrites another. A non-square image is cut to its centre square, and the CLI says so.

Exit status: 0 every input segmented; 1 some input could not be read (the others are
written; each failure is named); 2 refused settings (``--device cuda`` without CUDA,
``--num-points`` or ``--timestep`` out of range, ``--out`` naming a file, ``--model`` with
``--tiny``, the same file twice, a folder without image files), before any work (before the
model is loaded). ``--tiny`` is the sharpened tiny random-weight model of ``make demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffseg.aggregation import aggregate_attention
from diffseg.atomic import write_bytes_atomic
from diffseg.backbone import DEFAULT_MODEL_ID, BackboneLoadError, StableDiffusionBackbone
from diffseg.devices import resolve_device
from diffseg.masks import overlay, write_mask_png
from diffseg.merging import anchor_grid
from diffseg.preprocess import ImageDecodeError, load_image, preprocess_image
from diffseg.segmenter import DiffSeg

__all__ = ["main", "output_names", "segment_images"]

RANDOM_WEIGHTS_NOTE = ("RANDOM WEIGHTS (--tiny): these masks come from an untrained tiny backbone "
                       "and say nothing about DiffSeg")
# --tiny: the sharpened tiny model of `make demo` (conf/experiment/demo.yaml, model.backbone.attention_scale):
# plain random attention is nearly uniform and every image would come out as one segment.
TINY_ATTENTION_SCALE = 5.0
# What a folder given as an input contributes: its files with these suffixes (not its subfolders).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class UsageError(ValueError):
    """A command-line setting the CLI refuses before any work (exit status 2)."""


def output_names(paths: list[Path]) -> list[str]:
    """One distinct output name per input: its stem, or for inputs sharing a stem their path relative to
    the inputs' common folder with the suffix kept and ``/`` written ``__`` (``a/photo.png`` -> ``a__photo.png``).

    Raises:
        UsageError: the same file is given twice.
    """
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p, r in zip(paths, resolved, strict=True) if resolved.count(r) > 1})
    if twice:
        raise UsageError(f"the same input is given more than once: {', '.join(twice)}")
    stems = [p.stem for p in paths]
    shared = {s for s in stems if stems.count(s) > 1}
    if not shared:
        return stems
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    names = []
    for path, real in zip(paths, resolved, strict=True):
        names.append("__".join(real.relative_to(common).parts) if path.stem in shared else path.stem)
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # e.g. a stem that equals another input's rewritten name
        raise UsageError(f"inputs would write the same output name(s) {clashes}: rename or segment them separately")
    return names


def expand_inputs(paths: list[Path]) -> list[Path]:
    """The image files of ``paths``: a file stays as given, a folder becomes its image files (by suffix,
    :data:`IMAGE_SUFFIXES`, sorted; subfolders are not entered).

    Raises:
        UsageError: a folder holds no image file.
    """
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UsageError(f"{path} is a folder with no image files ({', '.join(IMAGE_SUFFIXES)}); "
                             "give image files or a folder of them")
        files.extend(found)
    return files


def _png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (H, W, 3) image."""
    buf = BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def segment_images(paths: list[Path], out_dir: Path, backbone: StableDiffusionBackbone, segmenter: DiffSeg,
                   size: int = 512, timestep: int = 300, exif_transpose: bool = True,
                   names: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    """Segment each image file: ``(written mask paths, inputs that could not be read)``.

    Unreadable files are reported on stderr and skipped. ``names``: the output name of each input
    (default :func:`output_names`). ``exif_transpose`` applies each photo's EXIF orientation before
    cropping (masks then follow the upright image); ``False`` keeps the stored pixel grid.
    """
    names = output_names(paths) if names is None else names
    out_dir.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    for path, name in zip(paths, names, strict=True):
        try:
            pixels = load_image(path, exif_transpose=exif_transpose)
        except (OSError, ImageDecodeError) as exc:
            print(f"failed {path}: {exc}", file=sys.stderr)
            failed.append(path)
            continue
        height, width = pixels.shape[-2:]
        if height != width:
            side = min(height, width)
            print(f"{path}: {width} x {height} cut to its centre {side} x {side} "
                  f"({max(height, width) - side} px of {'width' if width > height else 'height'} dropped)")
        image = preprocess_image(pixels, size)[None]  # (1, 3, size, size) in [-1, 1]
        with torch.inference_mode():
            maps = backbone.attention_maps(image.to(backbone.device), timestep=timestep)
            mask = segmenter(aggregate_attention(maps))[0].cpu().numpy()
        shown = ((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        if mask.shape != shown.shape[:2]:
            mask = np.array(Image.fromarray(mask.astype(np.int32)).resize(shown.shape[1::-1], Image.NEAREST))
        mask_path = write_mask_png(out_dir / f"{name}_mask.png", mask)
        write_bytes_atomic(out_dir / f"{name}_overlay.png", _png_bytes(overlay(shown, mask)))
        print(f"{path}: {len(np.unique(mask))} segments -> {mask_path}")
        written.append(mask_path)
    return written, failed


def _check_usage(args: argparse.Namespace) -> None:
    """Refuse settings that would end in a traceback or be silently ignored (before any work)."""
    if args.tiny and args.model is not None:
        raise UsageError(f"--model {args.model} and --tiny exclude each other (--tiny is a random-weight backbone)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder (it is created when missing)")
    if args.num_points < 2:
        raise UsageError(f"--num-points: expected an integer >= 2, got {args.num_points}")
    if args.timestep < 0:
        raise UsageError(f"--timestep: expected an integer in [0, 1000), got {args.timestep}")
    try:
        resolve_device(args.device or "auto")
    except RuntimeError as exc:
        raise UsageError(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)") from exc


def _check_against_backbone(args: argparse.Namespace, backbone: StableDiffusionBackbone) -> None:
    """Ranges that depend on the model: the anchor grid within the largest attention side, the timestep."""
    steps = int(backbone.scheduler.config.num_train_timesteps)
    if not 0 <= args.timestep < steps:
        raise UsageError(f"--timestep: expected an integer in [0, {steps}) for {backbone.name}, got {args.timestep}")
    side = backbone.input_size // 8
    try:
        anchor_grid(args.num_points, side)
    except ValueError:
        raise UsageError(f"--num-points: expected an integer in [2, {side}] (the largest attention side of "
                         f"{backbone.name} at {backbone.input_size} px), got {args.num_points}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffseg",
        description="Segment images with DiffSeg (no training, no text). Photos are turned upright by their EXIF "
        "orientation before the centre crop (unlike the benchmark loader, which keeps the stored pixel grid as "
        "the official release does); 16-bit and float images are scaled to 8 bits.",
    )
    parser.add_argument("images", nargs="+", type=Path,
                        help="image files (JPEG, PNG, TIFF, ...) or folders of them (their image files, sorted)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for masks and overlays")
    parser.add_argument("--model", default=None,
                        help=f"hub id or local diffusers folder (SD 1.x/2.x; default {DEFAULT_MODEL_ID})")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny RANDOM-WEIGHT backbone (offline smoke test, no weights; masks mean nothing)")
    parser.add_argument("--kl-threshold", type=float, default=1.1)
    parser.add_argument("--num-points", type=int, default=16)
    parser.add_argument("--refine", action="store_true", help="K-means refinement of the proposals")
    parser.add_argument("--kl-precision", choices=["float16", "float32"], default="float16")
    parser.add_argument("--timestep", type=int, default=300)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--ignore-exif", action="store_true",
                        help="do not apply the EXIF orientation tag: segment the stored pixel grid as it is "
                        "(what the benchmark loader does)")
    args = parser.parse_args(argv)
    try:
        _check_usage(args)
        args.images = expand_inputs(args.images)
        names = output_names(args.images)
        segmenter = DiffSeg(kl_threshold=args.kl_threshold, num_points=args.num_points, refine=args.refine,
                            kl_precision=args.kl_precision)
        if args.tiny:
            from diffseg.testing.tiny import tiny_backbone

            backbone = tiny_backbone(device=args.device, attention_scale=TINY_ATTENTION_SCALE)
            print(RANDOM_WEIGHTS_NOTE)
        else:
            backbone = StableDiffusionBackbone.from_pretrained(args.model or DEFAULT_MODEL_ID, device=args.device)
        _check_against_backbone(args, backbone)
    except (ValueError, BackboneLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, name in zip(args.images, names, strict=True):
        if name != path.stem:
            print(f"{path} -> {name}_mask.png (inputs share the stem {path.stem!r})")
    written, failed = segment_images(args.images, args.out, backbone, segmenter, size=backbone.input_size,
                                     timestep=args.timestep, exif_transpose=not args.ignore_exif, names=names)
    if args.tiny and written:
        print(RANDOM_WEIGHTS_NOTE)
    if failed:
        print(f"error: {len(failed)} of {len(args.images)} input(s) could not be read: "
              f"{', '.join(str(p) for p in failed)}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
