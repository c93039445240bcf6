"""Populations of per-image matching stats with known dataset-level scores, for the statistics tests.

An image i holds class c with probability ``freq[c]``; its pixel count is Poisson with
mean ``size[c] * g_i`` (``g_i`` ~ Gamma(2, 1/2): image scale). A method recovers each pixel
with probability ``recall[c] * q_i`` (``q_i`` ~ Beta(4, 2): image quality, shared by
the methods, so their errors are correlated as on real data) and adds Poisson false
positives with mean ``fp_mean[c] * h_i`` where ``h_i`` is 1 (errors spread evenly) or
``(1 - q_i) / E[1 - q]`` (errors where images are hard). All expectations are
closed-form, so the population ACC, IoU and mIoU (ratios of expected sums) are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.compare import ImageStats

C = 27
Q_MEAN = 4 / 6  # E[q], q ~ Beta(4, 2)


@dataclass(frozen=True)
class Method:
    recall: np.ndarray  # (C,) per-pixel recall at image quality 1
    fp_mean: np.ndarray  # (C,) expected false positives per image
    hard_images: bool = False  # false positives concentrated on low-quality images

    def population(self, freq: np.ndarray, size: np.ndarray) -> dict[str, float | np.ndarray]:
        """Exact population ACC, per-class IoU (C,) and mIoU, x100."""
        count = freq * size
        tp = count * self.recall * Q_MEAN
        iou = 100.0 * tp / (count + self.fp_mean)
        return {"acc": 100.0 * tp.sum() / count.sum(), "iou": iou, "miou": float(iou.mean())}


def classes(long_tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(freq, size) of the 27 classes: moderate frequencies, or a long tail down to 2 %."""
    rng = np.random.default_rng(27)
    if long_tail:
        freq = np.clip(0.7 * (np.arange(1, C + 1) ** -0.9), 0.02, None)
    else:
        freq = rng.uniform(0.15, 0.6, C)
    size = rng.uniform(500, 4000, C)
    return freq, size


def method(seed: int = 0, quality: float = 0.75) -> Method:
    """A method with class effects: recall around ``quality``, false positives around 30 % of the class's pixels."""
    rng = np.random.default_rng(1000 + seed)
    freq, size = classes()
    recall = np.clip(rng.normal(quality, 0.15, C), 0.1, 1.0)
    fp_mean = rng.uniform(0.1, 0.5, C) * freq * size
    return Method(recall, fp_mean)


def equal_iou_pair(long_tail: bool = False) -> tuple[Method, Method]:
    """A conservative and an aggressive method with the same population IoU per class.

    B recovers more pixels (recall x 1.25) and pays with more false positives, concentrated
    on hard images; its false-positive means are solved so that every class's IoU equals A's.
    """
    freq, size = classes(long_tail)
    a = method(1, quality=0.6)
    a = Method(a.recall, a.fp_mean * 0.5)
    recall_b = np.minimum(a.recall * 1.25, 1.0)
    count = freq * size
    iou_a = a.population(freq, size)["iou"] / 100.0
    fp_b = count * recall_b * Q_MEAN / iou_a - count
    assert (fp_b > 0).all()
    return a, Method(recall_b, fp_b, hard_images=True)


def draw(rng: np.random.Generator, samples: int, images: int, methods: list[Method],
         long_tail: bool = False) -> list[list[ImageStats]]:
    """``samples`` independent samples of ``images`` images, each method's stats on the same images.

    Returns ``out[s][m]``: the stats of method ``m`` in sample ``s``.
    """
    freq, size = classes(long_tail)
    shape = (samples, images, C)
    q = rng.beta(4.0, 2.0, (samples, images, 1))
    g = rng.gamma(2.0, 0.5, (samples, images, 1))
    count = rng.poisson(size * g * (rng.random(shape) < freq))
    hard = (1.0 - q) / (1.0 - Q_MEAN)
    out: list[list[ImageStats]] = [[] for _ in range(samples)]
    for m in methods:
        tp = rng.binomial(count, np.clip(m.recall * q, 0.0, 1.0))
        fp = rng.poisson(m.fp_mean * (hard if m.hard_images else np.ones_like(q)))
        for s in range(samples):
            out[s].append(ImageStats(tp[s], fp[s], count[s] - tp[s], count[s].sum(1)))
    return out
