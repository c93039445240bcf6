"""``python -m eval.explore``: DiffSeg in the browser (Gradio; ``pip install -e '.[explore]'`` or ``make explore``).

One image::

    python -m eval.explore --model tiny --image cat.jpg [--image dog.png ...] [--port P] [--no-browser]
    python -m eval.explore --model CompVis/stable-diffusion-v1-4 --image cat.jpg

One run, or two side by side::

    python -m eval.explore RUN_DIR [--port P] [--no-browser]
    python -m eval.explore RUN_A RUN_B

The server binds 127.0.0.1 (this machine only) unless ``--host`` says otherwise. Exit status 2
(one line on stderr) when the model cannot be loaded, a run folder is missing or unfinished,
``--port`` is in use, or Gradio is not installed; an unreadable ``--image`` is reported in the
page and the log.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from eval.run.provenance import RANDOM_BANNER

__all__ = ["PortInUseError", "build_app", "check_port", "load_backbone", "main", "serve"]

log = logging.getLogger("eval.explore")
DEFAULT_HOST = "127.0.0.1"
# The tiny random backbone's attention is sharpened as `make demo` does (conf/experiment/demo.yaml),
# so it gives several segments instead of one.
TINY_ATTENTION_SCALE = 5.0


class PortInUseError(OSError):
    """The port asked for is taken (the message names it and what to do)."""


def _port_message(host: str, port: int) -> str:
    return f"port {port} on {host} is in use (another explorer or server?): pick another with --port, or leave it out"


def check_port(host: str, port: int | None) -> None:
    """Raise :class:`PortInUseError` when ``port`` cannot be bound on ``host`` (None: Gradio picks a free one).

    Bound as Gradio's own check does (``SO_REUSEADDR``, so a port in TIME_WAIT counts as free).
    """
    if port is None:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise PortInUseError(_port_message(host, port)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.explore", description=(
        "Explore DiffSeg in the browser: one image with --model/--image (sliders over the kept attention), "
        "or one or two finished run folders (images, masks, per-image differences)."))
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="one run folder, or two to compare")
    parser.add_argument("--model", help="'tiny' (random weights, offline) or a hub id / local diffusers folder")
    parser.add_argument("--image", action="append", default=[], metavar="IMG", help="an image file (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: reachable from this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return parser


def load_backbone(model: str, device: str | None = None) -> tuple[Any, str | None]:
    """``(backbone, banner)``: the tiny random backbone or a pretrained one; the banner says random weights."""
    if model == "tiny":
        from diffseg.testing.tiny import tiny_backbone

        return tiny_backbone(attention_scale=TINY_ATTENTION_SCALE, device=device), RANDOM_BANNER
    from diffseg.backbone import StableDiffusionBackbone

    return StableDiffusionBackbone.from_pretrained(model, device=device), None


def build_app(args: argparse.Namespace) -> Any:
    """The Gradio app the arguments ask for (raises ``ValueError`` / ``RunError`` / ``BackboneLoadError``)."""
    if args.runs and (args.model or args.image):
        raise ValueError("give either run folders or --model/--image, not both")
    if args.runs:
        from eval.explore.run_app import build_run_app, open_runs

        open_runs(list(args.runs))  # refuse a missing or unfinished folder before serving
        return build_run_app(list(args.runs))
    if not args.model:
        raise ValueError("nothing to show: give a run folder, or --model MODEL (e.g. tiny) with --image IMG")
    from diffseg.preprocess import ImageDecodeError
    from eval.explore.image_app import build_image_app
    from eval.explore.session import ImageSession

    backbone, banner = load_backbone(args.model, args.device)
    session = ImageSession(backbone)
    messages = []
    for path in args.image:
        try:
            session.add_path(path)
        except (OSError, ImageDecodeError, ValueError) as exc:
            messages.append(f"{path}: cannot be read as an image ({exc}); upload another or fix the path")
    for message in messages:
        log.error(message)
    return build_image_app(session, banner=banner, messages=messages)


def serve(app: Any, host: str = DEFAULT_HOST, port: int | None = None, open_browser: bool = True,
          block: bool = True) -> str:
    """Launch ``app`` on ``host:port``; returns its local URL (``block=False`` returns at once)."""
    try:
        _, url, _ = app.launch(server_name=host, server_port=port, inbrowser=open_browser,
                               prevent_thread_lock=True, quiet=True, footer_links=[])
    except OSError as exc:  # Gradio: "Cannot find empty port" when the port was taken since check_port
        if port is not None:
            raise PortInUseError(_port_message(host, port)) from exc
        raise
    where = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "other machines too"
    print(f"DiffSeg explorer on {url} (bound to {host}: reachable from {where})", flush=True)
    if block:
        try:
            app.block_thread()
        except KeyboardInterrupt:
            pass
    return url


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    try:
        check_port(args.host, args.port)  # first: before Gradio is imported or a model loaded for nothing
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the explorer needs Gradio: pip install -e '.[explore]' (or make explore)", file=sys.stderr)
        return 2
    from diffseg.backbone import BackboneLoadError
    from eval.explore.runs import RunError

    try:
        app = build_app(args)
        serve(app, args.host, args.port, open_browser=not args.no_browser)
    except (RunError, ValueError, BackboneLoadError, PortInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
