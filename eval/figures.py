"""Figures of the harness: ablation sweeps and qualitative grids (matplotlib, Agg backend).

Every figure is written atomically (a temporary file in the target folder, then
``os.replace``) with the user's umask. Colours come from :mod:`diffseg.masks` (the one
palette, shared with the segment CLI); ``colorize``, ``default_palette`` and ``overlay``
are re-exported here.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from diffseg.atomic import write_bytes_atomic  # noqa: E402
from diffseg.masks import colorize as colorize  # noqa: E402  (re-exported)
from diffseg.masks import default_palette as default_palette  # noqa: E402  (re-exported)
from diffseg.masks import overlay as overlay  # noqa: E402  (re-exported)
from eval.metrics import confusion_histogram, hungarian_match  # noqa: E402

METRICS = ("ACC", "mIoU")


def save_figure(fig: plt.Figure, out_path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save ``fig`` atomically to ``out_path`` (format from its suffix), close it, return the path."""
    out = Path(out_path)
    fmt = out.suffix.lstrip(".") or "png"
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, **kwargs)
    finally:
        plt.close(fig)
    return write_bytes_atomic(out, buf.getvalue())


def _sweep_methods(df: pd.DataFrame) -> list[str]:
    """Method names of a sweep table whose columns are '<method> ACC' / '<method> mIoU'."""
    methods: list[str] = []
    for col in df.columns:
        for metric in METRICS:
            suffix = f" {metric}"
            if str(col).endswith(suffix):
                name = str(col)[: -len(suffix)]
                if name not in methods:
                    methods.append(name)
    return methods


def plot_sweep(df: pd.DataFrame, param: str, out_path: str | os.PathLike, banner: str | None = None) -> Path:
    """Plot ACC and mIoU (two panels) against the swept value, one line per method.

    ``df`` is an ablation table: index = swept values, columns ``'<method> ACC'`` and
    ``'<method> mIoU'``. Non-numeric swept values are placed at evenly spaced positions.
    """
    values = list(df.index)
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for method in _sweep_methods(df):
            col = f"{method} {metric}"
            if col in df.columns:
                y = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
                ax.plot(x, y, marker="o", label=method)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric} (x100)")
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        if not numeric:
            ax.set_xticks(x, [str(v) for v in values], rotation=30, ha="right")
    if axes[0].lines:
        axes[0].legend(fontsize="small")
    if banner:
        fig.suptitle(banner, color="red", fontsize="small")
    return save_figure(fig, out_path, dpi=120)


def _nearest_resize(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (half-pixel centres) of a 2-D array to ``shape``."""
    if mask.shape == shape:
        return mask
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1)
    return mask[rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :]]


def _match_to_classes(mask: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Relabel segments for display: a segment matched to a GT class takes that class's id.

    Unmatched segments get ids from ``num_classes`` upwards, so colours agree with the
    ground-truth column wherever the metric's matching pairs them.
    """
    hist = confusion_histogram(mask, label, num_classes=num_classes)
    match = hungarian_match(hist)
    lut = np.full(hist.shape[1], -1, dtype=np.int64)
    for cls, seg in enumerate(match):
        if hist[cls, seg] > 0:
            lut[seg] = cls
    spare = num_classes
    for seg in np.unique(mask):
        if lut[seg] < 0:
            lut[seg] = spare
            spare += 1
    return lut[mask]


def qualitative_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     masks: Mapping[str, Sequence[np.ndarray]], out_path: str | os.PathLike,
                     class_names: Sequence[str] | None = None, banner: str | None = None) -> Path:
    """Grid of image | ground truth | one column per method, one row per image.

    Args:
        images: uint8 (H, W, 3) arrays.
        labels: int (H, W) ground truth, -1 (or any value outside the classes) = ignore,
            drawn black.
        masks: method name -> list of int (H, W) segment masks (resized to the image
            if needed). Segments are recoloured to their Hungarian-matched class.
        out_path: where to write the figure.
        class_names: optional class names; adds a legend of the classes shown.
        banner: optional line written above the grid (e.g. the demo banner).

    Returns:
        the written path.
    """
    n = len(images)
    if len(labels) != n or any(len(m) != n for m in masks.values()):
        raise ValueError("images, labels and every method's masks must have the same length")
    if n == 0:
        raise ValueError("no images to draw")
    num_classes = len(class_names) if class_names else 27
    for lab in labels:
        lab_max = int(np.asarray(lab).max(initial=-1))
        if not class_names and lab_max >= num_classes:
            num_classes = lab_max + 1
    cols = 2 + len(masks)
    fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.6 * n), squeeze=False)
    shown: set[int] = set()
    for r in range(n):
        img = np.asarray(images[r], dtype=np.uint8)
        hw = img.shape[:2]
        lab = _nearest_resize(np.asarray(labels[r]).astype(np.int64), hw)
        lab = np.where((lab >= 0) & (lab < num_classes), lab, -1)
        shown.update(int(c) for c in np.unique(lab) if c >= 0)
        gt = overlay(img, lab)
        gt[lab < 0] = 0
        panels = [("image", img), ("ground truth", gt)]
        for name, seq in masks.items():
            mask = _nearest_resize(np.asarray(seq[r]).astype(np.int64), hw)
            panels.append((name, overlay(img, _match_to_classes(mask, lab, num_classes))))
        for c, (title, panel) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize="small")
    if class_names and shown:
        palette = default_palette()
        handles = [Patch(color=palette[c % len(palette)] / 255.0, label=class_names[c])
                   for c in sorted(shown)]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize="x-small",
                   frameon=False)
    if banner:
        fig.suptitle(banner, color="red", fontsize="small")
    fig.tight_layout(rect=(0, 0.06 if class_names and shown else 0, 1, 0.97 if banner else 1))
    return save_figure(fig, out_path, dpi=100)
