"""Data-parallel training of the base policies (DDP) under ``torchrun``.

``torchrun --nproc-per-node N -m robot_rl.cli.main train bc|diffusion ...`` starts N processes; each reads
its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). Without them (or with one process) training is the plain single-process loop, unchanged.

With N > 1:

- the process group is gloo on CPU, NCCL when CUDA is available (each process then trains on
  ``cuda:LOCAL_RANK``);
- every process loads the same demonstrations and fits the same normalizer; rank r draws its batches from its
  own shard of the training windows (windows r, r + N, r + 2N, ...: DistributedSampler's split, drawn with
  replacement as the single-process loop draws), ``batch_size / N`` windows per step, so the global batch
  is the ``--batch-size`` of a single-process run;
- the model starts from the same weights (seeded alike, and DDP broadcasts rank 0's), DDP averages the
  gradients, and the logged loss is the mean over ranks;
- each rank's batch generator and diffusion noise are seeded from (seed, rank): a run is repeatable for a
  given N;
- only rank 0 writes the run folder (same layout and checkpoints as a single-process run), keeps the EMA and
  runs the evaluations; the others wait for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class Workers:
    """This process's place among the training processes."""

    rank: int = 0
    """Global rank (0 writes the run folder and evaluates)."""
    world_size: int = 1
    """Number of training processes."""
    local_rank: int = 0
    """Rank on this machine (the CUDA device with NCCL)."""
    local_world_size: int = 1
    """Training processes on this machine."""

    @property
    def main(self) -> bool:
        """True on the process that writes the run folder and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def backend(self) -> str:
        """``nccl`` where CUDA is available, else ``gloo``."""
        return "nccl" if torch.cuda.is_available() else "gloo"

    @property
    def device(self) -> torch.device:
        """Where this process trains: ``cuda:LOCAL_RANK`` with NCCL, else the CPU."""
        if self.distributed and self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer (torchrun sets it). Got {value!r}.") from None


def from_environment() -> Workers:
    """The place torchrun gave this process; one process (rank 0 of 1) when it is not under torchrun."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE) and WORLD_SIZE >= 1. Got RANK={rank}, WORLD_SIZE={world}.")
    local = _env_int("LOCAL_RANK", rank)
    return Workers(rank, world, local, _env_int("LOCAL_WORLD_SIZE", world))


@contextlib.contextmanager
def process_group(workers: Workers) -> Iterator[None]:
    """The process group for the duration of training (nothing to do for one process)."""
    if not workers.distributed:
        yield
        return
    if workers.backend == "nccl":
        torch.cuda.set_device(workers.local_rank)
    dist.init_process_group(workers.backend, rank=workers.rank, world_size=workers.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, workers: Workers) -> int:
    """The seed of this rank's batches and noise: ``seed`` itself for one process, else drawn from (seed, rank)."""
    if not workers.distributed:
        return seed
    return int(np.random.SeedSequence([seed, workers.rank]).generate_state(1, np.uint64)[0] % (2**63))


def local_batch_size(batch_size: int, workers: Workers) -> int:
    """Windows per process and step: the global ``batch_size`` split evenly over the processes.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    if batch_size % workers.world_size:
        raise ValueError(
            f"`batch_size` must be a multiple of the {workers.world_size} training processes (each takes an equal "
            f"share of the global batch). Got {batch_size}; e.g. {batch_size - batch_size % workers.world_size}."
        )
    return batch_size // workers.world_size


def shard(num_windows: int, workers: Workers) -> torch.Tensor:
    """This rank's training windows (rank, rank + N, ...): all of them for one process.

    Raises:
        ValueError: fewer windows than processes.
    """
    if num_windows < workers.world_size:
        raise ValueError(
            f"{num_windows} training windows cannot be split over {workers.world_size} processes; use fewer "
            "processes or more demonstrations."
        )
    return torch.arange(workers.rank, num_windows, workers.world_size)


class _Loss(nn.Module):
    """``forward`` = the policy's training loss: what DDP wraps (it hooks ``forward`` only)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The policy's loss on raw obs (B, n_obs, D) and raw action chunks (B, H, A)."""
        return self.policy.loss(obs, actions)


def loss_fn(policy: nn.Module, workers: Workers) -> Any:
    """``loss(obs, actions)``: the policy's own for one process; through DDP (gradients averaged) for several."""
    if not workers.distributed:
        return policy.loss
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [workers.local_rank] if workers.device.type == "cuda" else None
    # Buffers (normalizer, noise schedule) are equal on every rank and never change: synced once at init, not per step.
    return DistributedDataParallel(_Loss(policy), device_ids=device_ids, forward_sync_buffers=False)


def mean(value: torch.Tensor, workers: Workers) -> float:
    """The mean of a scalar over the processes (itself for one process): the loss every rank logs and checks."""
    if not workers.distributed:
        return float(value)
    total = value.detach().clone().reshape(1)
    dist.all_reduce(total)
    return float(total) / workers.world_size


def share(value: Any, workers: Workers) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object); also the point where the others wait for rank 0."""
    if not workers.distributed:
        return value
    box = [value if workers.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(workers: Workers) -> None:
    """Wait for every process (nothing for one)."""
    if workers.distributed:
        dist.barrier()
