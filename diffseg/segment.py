"""Segment any images: ``python -m diffseg.segment IMAGE... --out DIR`` (or the ``diffseg`` script).

For each image: EXIF orientation applied (photos are shown upright; ``--ignore-exif``
keeps the stored pixel grid, as the benchmark loader does), 16-bit and float images
scaled to 8 bits (:func:`diffseg.preprocess.to_rgb8`), centre crop, resize to 512 (as the
benchmark pre-processing), one UNet pass, aggregation, DiffSeg; writes
``<stem>_mask.png`` (segment ids, :func:`diffseg.masks.write_mask_png`) and
``<stem>_overlay.png`` (the cropped image with coloured segments).
"""

from __future__ import annotations

import argparse
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffseg.aggregation import aggregate_attention
from diffseg.atomic import write_bytes_atomic
from diffseg.backbone import DEFAULT_MODEL_ID, BackboneLoadError, StableDiffusionBackbone
from diffseg.masks import overlay, write_mask_png
from diffseg.preprocess import ImageDecodeError, load_image, preprocess_image
from diffseg.segmenter import DiffSeg

__all__ = ["main", "segment_images"]


def _png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (H, W, 3) image."""
    buf = BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def segment_images(paths: list[Path], out_dir: Path, backbone: StableDiffusionBackbone, segmenter: DiffSeg,
                   size: int = 512, timestep: int = 300, exif_transpose: bool = True) -> list[Path]:
    """Segment each image file; returns the written mask paths. Unreadable files are reported and skipped.

    ``exif_transpose`` applies each photo's EXIF orientation before cropping (masks then
    follow the upright image); ``False`` keeps the stored pixel grid.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        try:
            pixels = load_image(path, exif_transpose=exif_transpose)
        except (OSError, ImageDecodeError) as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        image = preprocess_image(pixels, size)[None]  # (1, 3, size, size) in [-1, 1]
        with torch.inference_mode():
            maps = backbone.attention_maps(image.to(backbone.device), timestep=timestep)
            mask = segmenter(aggregate_attention(maps))[0].cpu().numpy()
        shown = ((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        if mask.shape != shown.shape[:2]:
            mask = np.array(Image.fromarray(mask.astype(np.int32)).resize(shown.shape[1::-1], Image.NEAREST))
        mask_path = write_mask_png(out_dir / f"{path.stem}_mask.png", mask)
        write_bytes_atomic(out_dir / f"{path.stem}_overlay.png", _png_bytes(overlay(shown, mask)))
        print(f"{path}: {len(np.unique(mask))} segments -> {mask_path}")
        written.append(mask_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffseg",
        description="Segment images with DiffSeg (no training, no text). Photos are turned upright by their EXIF "
        "orientation before the centre crop (unlike the benchmark loader, which keeps the stored pixel grid as "
        "the official release does); 16-bit and float images are scaled to 8 bits.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, TIFF, ...)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for masks and overlays")
    parser.add_argument("--model", default=DEFAULT_MODEL_ID, help="hub id or local diffusers folder (SD 1.x/2.x)")
    parser.add_argument("--tiny", action="store_true", help="tiny random backbone (offline smoke test, no weights)")
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
        segmenter = DiffSeg(kl_threshold=args.kl_threshold, num_points=args.num_points, refine=args.refine,
                            kl_precision=args.kl_precision)
        if args.tiny:
            from diffseg.testing.tiny import tiny_backbone

            backbone = tiny_backbone(device=args.device)
        else:
            backbone = StableDiffusionBackbone.from_pretrained(args.model, device=args.device)
    except (ValueError, BackboneLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = segment_images(args.images, args.out, backbone, segmenter, size=backbone.input_size,
                             timestep=args.timestep, exif_transpose=not args.ignore_exif)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
