"""Timing and device description for the benchmark (``eval.bench``)."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.benchmark import Timer

from eval.run.machine import cpu_name

__all__ = ["device_info", "load_average", "log", "timed"]


def timed(fn: Callable[[], Any], *, repeats: int = 1) -> tuple[Any, float]:
    """Time ``fn()`` with :class:`torch.utils.benchmark.Timer`; returns its last result and the median seconds.

    Each of the ``repeats`` measurements is ``Timer.blocked_autorange(min_run_time=0)``: one untimed
    warm-up run (the Timer's block-size estimate), then one timed run; the Timer synchronises the
    accelerator around it and runs with the caller's torch thread count.
    """
    last: list[Any] = []  # only the latest result is held (a stage's outputs can be large)
    timer = Timer(stmt="last.clear()\nlast.append(fn())", globals={"fn": fn, "last": last},
                  num_threads=torch.get_num_threads())
    times = [timer.blocked_autorange(min_run_time=0.0).median for _ in range(repeats)]
    return last[0], statistics.median(times)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------- device info
def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def device_info(device: torch.device) -> dict[str, Any]:
    """Kind (``cuda``/``cpu``), a readable name, core count, torch threads, the 1-minute load average when the
    run starts (other work on the machine slows every stage) and, on CUDA, the TF32 switches."""
    info: dict[str, Any] = {
        "kind": device.type,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": load_average(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["name"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    else:
        info["name"] = f"{info['cpu']} ({info['cpu_cores']} cores, {info['torch_threads']} torch threads)"
    return info


