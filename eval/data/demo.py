"""The demo's dataset: a synthetic root in the COCO-Stuff-27 layout that ``make demo`` writes.

It reads exactly as :class:`~eval.data.coco_stuff.CocoStuff27` (same layout, classes and
protocol); only the way to get a missing root differs: ``make demo`` (or
``python -m eval.demo --data ROOT``) writes it, where ``make data-coco`` would download the
real COCO images.
"""

from __future__ import annotations

from eval.data.coco_stuff import CocoStuff27

__all__ = ["DemoCocoStuff27"]


class DemoCocoStuff27(CocoStuff27):
    """:class:`~eval.data.coco_stuff.CocoStuff27` over the demo's synthetic root (``conf/experiment/demo.yaml``)."""

    make_target = "demo"

    def prepare_hint(self) -> str:
        return (f"run `make demo` (or `python -m eval.demo --data {self.root}`) to write the synthetic demo "
                "dataset (no download)")
