"""The one place that turns ``device`` / ``dtype`` settings into torch objects.

Every entry point (the runner, the segment CLI, the backbone, the benchmark)
resolves through here, so "auto" means the same thing everywhere:

* device ``"auto"`` (or None) -> ``cuda:LOCAL_RANK`` when CUDA is available (the
  local rank of a ``torchrun`` process, 0 otherwise), else the CPU;
* dtype ``"float32"`` (the default, as the official release runs Stable
  Diffusion: KerasCV without a mixed-precision policy) turns TF32 off for
  matmuls and convolutions, so float32 really is float32 on Ampere and newer;
  ``"float16"`` / ``"bfloat16"`` are the fast variants.
"""

from __future__ import annotations

import os

import torch

__all__ = ["DTYPES", "resolve_device", "resolve_dtype"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; anything else as given.

    Raises ``RuntimeError`` for a CUDA device on a machine without CUDA.
    """
    if isinstance(name, torch.device):
        device = name
    elif name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    else:
        device = torch.device(str(name))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name}: CUDA is not available on this machine (use device=cpu or auto)")
    return device


def resolve_dtype(name: str | torch.dtype | None = "float32") -> torch.dtype:
    """``"float32"`` (default, TF32 off), ``"float16"`` or ``"bfloat16"`` -> the torch dtype.

    Raises ``ValueError`` for anything else.
    """
    if isinstance(name, torch.dtype):
        dtype = name
        if dtype not in DTYPES.values():
            raise ValueError(f"model.dtype: expected one of {sorted(DTYPES)}, got {dtype}")
    else:
        key = "float32" if name is None else str(name)
        if key not in DTYPES:
            raise ValueError(f"model.dtype: expected one of {sorted(DTYPES)}, got {name!r}")
        dtype = DTYPES[key]
    if dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return dtype
