"""The shared tail of the benchmark command lines: ``--threads`` and ``--out`` (a new JSON file, never overwritten)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from eval.atomic import write_json_atomic

__all__ = ["add_common_options", "run_and_report"]


def add_common_options(parser: argparse.ArgumentParser, threads_help: str) -> None:
    """``--threads`` (torch CPU threads) and ``--out`` (also write the numbers to a new JSON file)."""
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers to this JSON file (new file)")


def run_and_report(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   bench: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Refuse an existing ``--out`` before measuring, set ``--threads``, run ``bench``, print it, write ``--out``."""
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists; choose a new file (this benchmark never overwrites)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench()
    print(render(result))
    if args.out is not None:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return result
