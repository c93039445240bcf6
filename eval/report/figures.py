"""Figures of the tables: ablation sweeps (matplotlib, Agg backend). No torch.

Written atomically (:func:`eval.atomic.save_figure`). Colours come from :mod:`diffseg.masks` (the one
palette, shared with the segment CLI); ``colorize``, ``default_palette`` and ``overlay`` are re-exported
here. A run's qualitative grid is :mod:`eval.run.qualitative`, a comparison's figures :mod:`eval.stats.figures`.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from diffseg.masks import colorize as colorize  # noqa: E402  (re-exported)
from diffseg.masks import default_palette as default_palette  # noqa: E402  (re-exported)
from diffseg.masks import overlay as overlay  # noqa: E402  (re-exported)
from eval.atomic import save_figure  # noqa: E402

__all__ = ["METRICS", "colorize", "default_palette", "overlay", "plot_sweep"]

METRICS = ("ACC", "mIoU")


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
