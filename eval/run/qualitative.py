"""The qualitative grid of a run (``qualitative.png``): its first images, their labels and each method's
masks, every segment coloured as the ground-truth class the metric matched it to (matplotlib, Agg backend).

Colours come from :mod:`diffseg.masks` (the one palette, shared with the segment CLI); the figure is
written atomically (:func:`eval.atomic.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from diffseg.masks import default_palette, overlay  # noqa: E402
from eval.atomic import save_figure  # noqa: E402
from eval.metrics import confusion_histogram, hungarian_match  # noqa: E402

__all__ = ["QualitativeSamples", "match_to_classes", "qualitative_grid", "resize_nearest", "to_uint8_image"]


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
