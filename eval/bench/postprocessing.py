"""The post-processing headline of the benchmark: ours vs the naive port vs the official segmentor.

Aggregation + DiffSeg float16 merge + NMS of one image with SD 1.x-sized attention
(sides 64/32/16/8) from :func:`realistic_attention`, timed for ``aggregate_attention`` +
``DiffSeg``, for the naive port (``eval.bench.baselines.naive_diffseg.naive_segment``) and, when TensorFlow is
importable and ``DIFFSEG_OFFICIAL_SEGMENTOR`` names a copy of the official ``diffseg/segmentor.py``, for the
official segmentor itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from diffseg import DiffSeg, aggregate_attention
from eval.bench.baselines.naive_diffseg import naive_segment
from eval.bench.timing import log, timed

__all__ = ["OFFICIAL_ENV", "SD_SIDES", "postprocessing_headline", "realistic_attention"]

OFFICIAL_ENV = "DIFFSEG_OFFICIAL_SEGMENTOR"


def realistic_attention(
    seed: int = 0, sides: tuple[int, ...] = (64, 32, 16, 8), device: torch.device | str = "cpu"
) -> dict[int, torch.Tensor]:
    """SD-like self-attention of one image: ``{s: Tensor(s*s, s*s)}`` float32, rows sum to 1.

    Softmax of structured logits: queries attend to keys of their own region
    (an 8 x 8 layout of 6 regions, a region-specific gap), with a locality
    term, Gaussian noise and 2% very peaked rows (whose small entries round
    to 0 in float16, as with real attention). Not uniform noise.
    """
    gen = torch.Generator().manual_seed(seed)
    layout = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 1, 1],
            [0, 0, 0, 1, 1, 1, 1, 1],
            [0, 0, 2, 2, 1, 1, 3, 3],
            [4, 4, 2, 2, 2, 3, 3, 3],
            [4, 4, 2, 2, 2, 3, 3, 3],
            [4, 4, 4, 5, 5, 5, 3, 3],
            [4, 4, 4, 5, 5, 5, 5, 3],
            [4, 4, 4, 5, 5, 5, 5, 5],
        ]
    )
    gaps = torch.tensor([6.0, 8.0, 5.0, 7.0, 9.0, 6.5], dtype=torch.float64)
    maps = {}
    for s in sides:
        idx = torch.arange(s) * layout.shape[0] // s
        region = layout[idx][:, idx].reshape(-1)  # (s*s,)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1).double() / s  # (s*s, 2)
        same = (region[:, None] == region[None, :]).double()
        logits = same * gaps[region][:, None] - 4.0 * torch.cdist(pos, pos) ** 2
        logits += torch.randn(logits.shape, generator=gen, dtype=torch.float64)
        peaked = torch.rand(s * s, generator=gen) < 0.02
        logits[peaked] *= 6.0
        maps[s] = torch.softmax(logits, dim=-1).float().to(device)
    return maps


# ------------------------------------------------------------------------------------------- the headline
def _load_official(path: str):
    """The ``DiffSeg`` class of a copy of the official ``diffseg/segmentor.py`` (imports TensorFlow)."""
    spec = importlib.util.spec_from_file_location("official_diffseg_segmentor", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DiffSeg


SD_SIDES = (64, 32, 16, 8)


def postprocessing_headline(
    device: torch.device,
    threshold: float = 1.1,
    num_points: int = 16,
    seed: int = 0,
    sides: tuple[int, ...] = SD_SIDES,
) -> dict[str, Any]:
    """Post-processing alone (aggregation + DiffSeg float16 merge + NMS to 512 px, one image, no refinement).

    Ours (``aggregate_attention`` + ``DiffSeg``) vs the naive port (``naive_segment``) and, when
    available, the official TensorFlow segmentor fed the same maps as ``(B=1, heads=1, s*s, s*s)``
    arrays (``segment(weight_64, weight_32, weight_16, weight_8)`` averages axis 1 over heads).
    ``sides`` other than SD 1.x's 64/32/16/8 (only for quick checks) skip the official segmentor.
    """
    log("post-processing headline")
    cuda = device.type == "cuda"
    maps = realistic_attention(seed=seed, sides=sides, device=device)
    thresholds = [threshold] * 3
    segmenter = DiffSeg(kl_threshold=threshold, num_points=num_points, kl_precision="float16", refine=False)

    def ours() -> torch.Tensor:
        return segmenter(aggregate_attention({s: m[None] for s, m in maps.items()}))[0]

    def naive() -> torch.Tensor:
        return naive_segment(maps, thresholds, num_points, "float16")

    repeats = 3
    naive_repeats = 3 if cuda else 1
    mask, ours_s = timed(ours, repeats=repeats)
    naive_mask, naive_s = timed(naive, repeats=naive_repeats)
    result: dict[str, Any] = {
        "what": "aggregation + DiffSeg float16 merge + NMS to 512x512, one image, "
                f"sides {'/'.join(str(s) for s in sides)}, no refinement",
        "input": "realistic_attention(): softmax of region + locality logits with noise and 2% very peaked rows",
        "num_points": num_points,
        "sides": list(sides),
        "segments": int(mask.unique().numel()),
        "ours_s": ours_s,
        "ours_repeats": repeats,
        "naive_s": naive_s,
        "naive_repeats": naive_repeats,
        "ratio_vs_naive": naive_s / ours_s,
        "agreement_vs_naive": (mask == naive_mask).double().mean().item(),
        "official_s": None,
        "ratio_vs_official": None,
    }
    path = os.environ.get(OFFICIAL_ENV)
    if importlib.util.find_spec("tensorflow") is None or not path:
        missing = [] if importlib.util.find_spec("tensorflow") is not None else ["tensorflow is not importable"]
        if not path:
            missing.append(f"{OFFICIAL_ENV} is not set")
        result["official_note"] = "official segmentor skipped: " + "; ".join(missing)
        return result
    if tuple(sides) != SD_SIDES:
        result["official_note"] = f"official segmentor skipped: it takes sides {SD_SIDES}, not {tuple(sides)}"
        return result
    if not Path(path).is_file():
        result["official_note"] = f"official segmentor skipped: {OFFICIAL_ENV}={path} is not a file"
        return result
    import tensorflow as tf

    official = _load_official(path)(thresholds, False, num_points)
    weights = [maps[s].cpu().numpy()[None, None] for s in SD_SIDES]  # (B=1, heads=1, s*s, s*s)
    official_mask, result["official_s"] = timed(lambda: official.segment(*weights)[0], repeats=naive_repeats)
    result["official_repeats"] = naive_repeats
    result["ratio_vs_official"] = result["official_s"] / ours_s
    result["agreement_vs_official"] = float((official_mask == mask.cpu().numpy()).mean())
    result["official_note"] = (
        f"official diffseg/segmentor.py from {path}, tensorflow {tf.__version__} "
        f"({'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}), warmed up, median of {naive_repeats}"
    )
    return result
