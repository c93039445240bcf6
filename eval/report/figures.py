"""Figures of the harness: ablation sweeps and qualitative grids (matplotlib, Agg backend).

Every figure is written atomically (a temporary file in the target folder, then
``os.replace``) with the user's umask. Colours come from :mod:`diffseg.masks` (the one
palette, shared with the segment CLI); ``colorize``, ``default_palette`` and ``overlay``
are re-exported here. torch and the metric are imported where they are used, so the
report modules (tables, compare) load without model code.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import torch

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


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (half-pixel centres) of a 2-D array to ``shape``."""
    if mask.shape == shape:
        return mask
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1)
    return mask[rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :]]


def match_to_classes(mask: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Relabel segments for display: a segment matched to a GT class takes that class's id.

    Unmatched segments get ids from ``num_classes`` upwards, so colours agree with the
    ground-truth column wherever the metric's matching pairs them.
    """
    from eval.metrics import confusion_histogram, hungarian_match

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
        lab = resize_nearest(np.asarray(labels[r]).astype(np.int64), hw)
        lab = np.where((lab >= 0) & (lab < num_classes), lab, -1)
        shown.update(int(c) for c in np.unique(lab) if c >= 0)
        gt = overlay(img, lab)
        gt[lab < 0] = 0
        panels = [("image", img), ("ground truth", gt)]
        for name, seq in masks.items():
            mask = resize_nearest(np.asarray(seq[r]).astype(np.int64), hw)
            panels.append((name, overlay(img, match_to_classes(mask, lab, num_classes))))
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


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class QualitativeSamples:
    """The first ``count`` images of a run with their labels and masks, for ``qualitative.png``."""

    def __init__(self, count: int, methods: list[str]):
        self.count = count
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.masks: dict[str, list[np.ndarray]] = {m: [] for m in methods}

    def add(self, images: torch.Tensor, labels: torch.Tensor, masks: dict[str, torch.Tensor]) -> None:
        """Keep images ``(B, 3, h, w)`` in [-1, 1], labels ``(B, H, W)`` and masks until ``count`` are held.

        Everything is shown at the labels' size: images at the backbone's input size are resized
        bilinearly, masks at another side (DiffCut's protocol) by nearest neighbour.
        """
        import torch

        keep = min(self.count - len(self.images), images.shape[0])
        if keep <= 0:
            return
        side = tuple(labels.shape[-2:])
        shown = images[:keep].float()
        if tuple(shown.shape[-2:]) != side:
            shown = torch.nn.functional.interpolate(shown, size=side, mode="bilinear", align_corners=False)
        for b in range(keep):
            self.images.append(to_uint8_image(shown[b]))
            self.labels.append(labels[b].cpu().numpy())
            for name, mask in masks.items():
                m = mask[b : b + 1]
                if tuple(m.shape[-2:]) != side:
                    m = torch.nn.functional.interpolate(m[:, None].float(), size=side, mode="nearest-exact")[:, 0]
                self.masks[name].append(m[0].long().cpu().numpy())

    def write(self, path: Path, class_names: list[str], banner: str | None) -> None:
        """The grid (image | ground truth | each method), when any image was kept."""
        if not self.images:
            return
        qualitative_grid(self.images, self.labels, self.masks, path, class_names=class_names or None,
                         banner=banner)
