"""Figures of a comparison (:mod:`eval.stats.report`): per-class IoU bars with their intervals, the
distribution of a per-image score, a method's worst and best images (matplotlib, Agg backend).

Written atomically (:func:`eval.atomic.save_figure`); masks coloured with :mod:`diffseg.masks`'s palette.
No torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from diffseg.masks import colorize  # noqa: E402
from eval.atomic import save_figure  # noqa: E402

__all__ = ["image_extremes", "per_class_iou_bars", "per_image_distribution"]


def per_class_iou_bars(class_names: Sequence[str], iou: Mapping[str, Sequence[float | None]],
                       out_path: str | os.PathLike,
                       intervals: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
                       banner: str | None = None) -> Path:
    """Grouped bars of the per-class IoU (x100): classes on the x axis, one bar per method.

    Args:
        class_names: C class names.
        iou: method label -> C IoUs (None for a class absent from the data: no bar).
        out_path: where to write the figure.
        intervals: optional method label -> C ``(low, high)`` intervals (or None), drawn as error bars.
        banner: optional line written above the figure.
    """
    names = list(iou)
    num = len(class_names)
    x = np.arange(num, dtype=float)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(min(18.0, max(8.0, 0.1 * num * max(len(names), 2) + 3)), 4.5),
                           constrained_layout=True)
    for j, name in enumerate(names):
        values = np.asarray([np.nan if v is None else float(v) for v in iou[name]], dtype=float)
        yerr = None
        if intervals is not None and name in intervals:
            bounds = [(np.nan, np.nan) if r is None else r for r in intervals[name]]
            low = np.asarray([b[0] for b in bounds], dtype=float)
            high = np.asarray([b[1] for b in bounds], dtype=float)
            yerr = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0).clip(min=0.0)
        ax.bar(x + (j - (len(names) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width, yerr=yerr,
               capsize=1.5, error_kw={"elinewidth": 0.6}, label=name)
    ax.set_xticks(x, list(class_names), rotation=60, ha="right", fontsize="small")
    ax.set_ylabel("IoU (x100)")
    ax.set_xlim(-0.6, num - 0.4)
    ax.grid(True, axis="y", alpha=0.3)
    title = "Per-class IoU (dataset level)" + (", bootstrap intervals as error bars" if intervals else "")
    ax.set_title(title, fontsize="medium")
    if names:
        ax.legend(fontsize="x-small", ncol=min(len(names), 4))
    if banner:
        fig.suptitle(banner, color="red", fontsize="small")
    return save_figure(fig, out_path, dpi=110)


def per_image_distribution(values: Mapping[str, Any], out_path: str | os.PathLike,
                           dataset_level: Mapping[str, float | None] | None = None,
                           ylabel: str = "per-image mIoU (x100)", banner: str | None = None) -> Path:
    """Box plots of a per-image score, one per method, with the dataset-level score marked.

    Args:
        values: method label -> (N,) per-image scores (NaN entries are left out).
        out_path: where to write the figure.
        dataset_level: optional method label -> dataset-level score, drawn as a red diamond.
        ylabel: y-axis label.
        banner: optional line written above the figure.
    """
    names = list(values)
    data = []
    for name in names:
        arr = np.asarray(values[name], dtype=float).ravel()
        data.append(arr[np.isfinite(arr)])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 4.5), constrained_layout=True)
    positions = np.arange(1, len(names) + 1)
    kept = [i for i, d in enumerate(data) if d.size]
    if kept:
        ax.boxplot([data[i] for i in kept], positions=positions[kept], widths=0.5, showmeans=False,
                   flierprops={"markersize": 2, "alpha": 0.4})
    if dataset_level:
        ys = [dataset_level.get(n) for n in names]
        xs = [p for p, y in zip(positions, ys, strict=True) if y is not None]
        ax.scatter(xs, [y for y in ys if y is not None], marker="D", color="red", zorder=3,
                   label="dataset-level mIoU (the reported metric)")
        ax.legend(fontsize="x-small", loc="lower right")
    ax.set_xticks(positions, names, rotation=20, ha="right", fontsize="small")
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"Distribution over images (n = {max((d.size for d in data), default=0)})", fontsize="medium")
    if banner:
        fig.suptitle(banner, color="red", fontsize="small")
    return save_figure(fig, out_path, dpi=110)


def image_extremes(worst: Sequence[tuple[str, float]], best: Sequence[tuple[str, float]],
                   out_path: str | os.PathLike, title: str,
                   masks: Mapping[str, np.ndarray] | None = None, banner: str | None = None) -> Path:
    """The worst and best images of a method with their ids and per-image scores.

    With ``masks`` (image id -> (H, W) segment ids, for every listed id) a grid of the
    coloured predicted masks, worst images on the top row and best below, each titled by
    id and score; otherwise two horizontal bar panels with the ids as labels.
    """
    rows = [("worst", list(worst)), ("best", list(best))]
    if masks is not None and all(i in masks for _, group in rows for i, _ in group):
        cols = max(len(worst), len(best), 1)
        fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 5.6), squeeze=False, constrained_layout=True)
        for r, (kind, group) in enumerate(rows):
            for c in range(cols):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(group):
                    image_id, score = group[c]
                    ax.imshow(colorize(masks[image_id]))
                    ax.set_title(f"{kind}: {image_id}\n{score:.1f}", fontsize="x-small")
                else:
                    ax.axis("off")
        fig.suptitle(title + " (predicted segments)" + (f"\n{banner}" if banner else ""), fontsize="small",
                     color="red" if banner else "black")
        return save_figure(fig, out_path, dpi=100)
    height = max(2.5, 0.35 * max(len(worst), len(best), 1) + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(9, height), constrained_layout=True)
    for ax, (kind, group), color in zip(axes, rows, ("tab:red", "tab:green"), strict=True):
        ids = [i for i, _ in group]
        vals = [v for _, v in group]
        y = np.arange(len(group))
        ax.barh(y, vals, color=color)
        for yi, v in zip(y, vals, strict=True):
            ax.text(v, yi, f" {v:.1f}", va="center", fontsize="x-small")
        ax.set_yticks(y, ids, fontsize="x-small")
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("per-image mIoU (x100)")
        ax.set_title(f"{kind} {len(group)}", fontsize="small")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title + (f"\n{banner}" if banner else ""), fontsize="small", color="red" if banner else "black")
    return save_figure(fig, out_path, dpi=100)
