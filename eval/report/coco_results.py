"""``python -m eval.report.coco_results RESULTS.json --png-dir DIR``: a COCO results file of predicted
masks (:mod:`eval.run.coco_results`) decoded to one PNG mask per image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.run.coco_results import write_pngs

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m eval.report.coco_results RESULTS.json --png-dir DIR``: decode a results file to PNGs."""
    parser = argparse.ArgumentParser(description="Decode a COCO results JSON of predicted masks to PNGs.")
    parser.add_argument("results", type=Path, help="results JSON (a list of RLE records)")
    parser.add_argument("--png-dir", type=Path, required=True, help="folder for <image id>.png")
    args = parser.parse_args(argv)
    try:
        paths = write_pngs(args.results, args.png_dir)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} masks to {args.png_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
