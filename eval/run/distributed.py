"""Data-parallel runs under ``torchrun``: who this process is, and the few collectives the runner needs.

``torchrun --nproc-per-node=N -m eval.run ...`` (or multi-node torchrun, or a SLURM
job whose tasks set the same variables) starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`init_from_env`
joins the process group (NCCL on CUDA, gloo on CPU); a plain ``python -m
eval.run`` is rank 0 of 1 and never touches ``torch.distributed``.

A SLURM job of several tasks started by submitit (``hydra/launcher=slurm_multigpu``)
gets the same variables from :func:`export_slurm_env`, so the same code runs one
process per GPU there.

The split is deterministic: the images still to do, in dataset order, go
round-robin to the ranks (:func:`split`). There are no collectives inside the
image loop, so ranks with unequal work never wait on each other; the metric
states are summed once at the end through torchmetrics' sync.

The run owns the process group it creates (:func:`process_group`) and destroys it when it
ends: a gloo group left to the interpreter's exit keeps its C++ worker threads past their
owner, and their destruction at exit can abort the process ("terminate called without an
active exception", SIGABRT).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Dist", "export_slurm_env", "init_from_env", "process_group", "split"]

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Rank and world size of this process (0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        """True in a data-parallel run (a process group with more than one rank)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes metrics.json, tables input and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op outside a data-parallel run)."""
        if self.active:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (picklable Python objects; the harness's own, never data)."""
        if not self.active:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def export_slurm_env() -> None:
    """In a submitit SLURM job of several tasks, export torch.distributed's variables (RANK, WORLD_SIZE, ...).

    Nothing happens outside such a job, with one task, or when ``WORLD_SIZE`` is already
    set (torchrun inside a SLURM job keeps its own values). Needs submitit (the ``cluster`` extra).
    """
    in_submitit_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    if "WORLD_SIZE" in os.environ or not in_submitit_job or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as exc:
        raise RuntimeError("a SLURM job with several tasks runs data-parallel and needs submitit: "
                           "pip install -e '.[cluster]'") from exc
    # Every task sees all of the node's GPUs and picks cuda:LOCAL_RANK (diffseg.devices).
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_from_env(device: torch.device) -> Dist:
    """Join the torchrun process group described by the environment, if any.

    Uses NCCL for CUDA devices and gloo otherwise; a group that is already initialised
    (e.g. by a caller) is reused.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Dist]:
    """:func:`init_from_env` for the block; a group it created is destroyed when the block ends.

    On a normal end every rank first meets at a barrier (no rank closes its connections while
    another still reads the last broadcast); on an exception (a signal, a refusal) the group is
    destroyed at once. A group initialised by the caller is left to the caller.
    """
    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    ctx = init_from_env(device)
    try:
        yield ctx
    except BaseException:
        if created and dist.is_initialized():
            dist.destroy_process_group()
        raise
    if created and dist.is_initialized():
        ctx.barrier()
        dist.destroy_process_group()


def split(items: Sequence[T], ctx: Dist) -> list[T]:
    """This rank's share of ``items``: positions ``rank, rank + world_size, ...``."""
    return list(items[ctx.rank :: ctx.world_size])
