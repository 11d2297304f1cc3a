"""Many processes: torchrun's environment, the process group, and the few collectives training needs.

`dcgan train` under `torchrun` runs one process per GPU (or CPU slot). Every rank builds the same
networks from the shared seed and draws its slice of each global batch; DistributedDataParallel
averages the gradients, so the networks stay identical. Rank 0 alone writes the run directory.
A single process is a world of size 1, where every helper here does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import inspect
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PeerFailed, UserError

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)  # a rank waits this long for the others (rank 0 may be evaluating)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's RANK, LOCAL_RANK, WORLD_SIZE)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    restart: int = 0  # TORCHELASTIC_RESTART_COUNT: how often torchrun has restarted the workers
    run_id: str = ""  # TORCHELASTIC_RUN_ID: the same for every rank and every restart of one torchrun job
    backend: str = ""  # once joined: nccl or gloo
    control: Any = field(default=None, compare=False)  # once joined: a gloo group for small CPU-side messages

    @property
    def is_main(self) -> bool:
        """Rank 0, which writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (LOCAL_RANK) on CUDA."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device


def world_from_env(environ: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in the environment; a single process when it is not set."""
    if "WORLD_SIZE" not in environ:
        return World()
    try:
        return World(rank=int(environ["RANK"]), local_rank=int(environ.get("LOCAL_RANK", 0)),
                     size=int(environ["WORLD_SIZE"]), restart=int(environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
                     run_id=environ.get("TORCHELASTIC_RUN_ID", ""))
    except (KeyError, ValueError) as exc:
        raise UserError(f"bad torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK): {exc}") from None


def start(world: World, device: torch.device) -> World:
    """Join the process group: nccl for CUDA (one GPU per local rank), gloo on the CPU.

    Decisions taken together (stop now?) and objects handed from rank 0 travel through a second,
    gloo group on the CPU, so they never wait for the GPU's queue.
    """
    if not world.distributed:
        return world
    stop_with_parent()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        # torchrun's store outlives a restart: a key prefix per attempt keeps a restarted group from
        # reading the addresses that the killed processes published
        store, rank, size = next(dist.rendezvous("env://", timeout=TIMEOUT))
        store = dist.PrefixStore(f"dcgan/attempt{world.restart}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else dist.group.WORLD
    return replace(world, backend=backend, control=control)


def stop_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have the kernel send `signum` to this process when its parent (torchrun's agent) dies; Linux only.

    A worker whose launcher was killed would otherwise train on as an orphan; with the signal it
    stops after its step, with a checkpoint, as on Ctrl-C. Returns whether the request was made.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the parent died before the request: no signal will come
        os.kill(os.getpid(), signum)
    return True


def stop(world: World, *, together: bool = True) -> None:
    """Leave the process group; `together`: once every rank has come this far (after a failure, at once).

    Leaving together keeps a rank from closing its connections while a peer still reads from them,
    and collecting garbage first frees DistributedDataParallel wrappers, which hold the group, while
    the interpreter is whole: otherwise gloo can abort a rank ("terminate called without an active
    exception") as the process exits.
    """
    if world.distributed and dist.is_initialized():
        gc.collect()
        if together:
            dist.barrier(group=world.control)
        dist.destroy_process_group()


def agreed(world: World, action: Callable[[], T]) -> T:
    """Run `action` on every rank; if it fails with a UserError on any, every rank stops.

    The first failing rank's message is raised on rank 0 (named by rank when it is another),
    and the other ranks raise PeerFailed, so the user reads one error line, not one per rank.
    """
    result, error = None, None
    try:
        result = action()
    except UserError as exc:
        error = str(exc)
    if not world.distributed:
        if error is not None:
            raise UserError(error)
        return result
    errors: list[str | None] = [None] * world.size
    dist.all_gather_object(errors, error, group=world.control)
    failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
    if failed:
        rank, message = failed[0]
        if world.is_main:
            raise UserError(message if rank == 0 else f"rank {rank}: {message}")
        raise PeerFailed(message)
    return result


def from_main(world: World, action: Callable[[], T]) -> T:
    """Run `action` on rank 0 alone and hand its result to every rank (a UserError stops them all)."""
    if not world.distributed:
        return action()
    box: list[Any] = [None]
    if world.is_main:
        try:
            box[0] = ("ok", action())
        except UserError as exc:
            box[0] = ("error", str(exc))
    dist.broadcast_object_list(box, src=0, group=world.control)
    outcome, value = box[0]
    if outcome == "error":
        if world.is_main:
            raise UserError(value)
        raise PeerFailed(value)
    return value


def mean_over_ranks(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the ranks (itself in a world of one)."""
    if not world.distributed:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total / world.size


def lost_contact(world: World, exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another rank stopped (its own error is its to print)."""
    if not world.distributed:
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(
        text in str(exc) for text in ("Connection reset by peer", "Connection closed by peer", "NCCL error"))


def any_rank(world: World, *flags: bool) -> list[bool]:
    """For each flag, whether it is set on any rank (one small collective on the CPU)."""
    if not world.distributed:
        return list(flags)
    values = torch.tensor([float(flag) for flag in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=world.control)
    return [bool(value) for value in values.tolist()]


def gather(world: World, value: T) -> list[T]:
    """Every rank's `value`, in rank order."""
    if not world.distributed:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value, group=world.control)
    return values


def broadcast_buffers(world: World, module: nn.Module) -> None:
    """Copy rank 0's buffers (batch norm's running statistics) to every rank."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def parallel(world: World, module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped for data-parallel training: gradients averaged over the ranks in backward.

    Buffers are not broadcast at every forward (that would overwrite them between the passes of
    one step); the training step synchronises the generator's once per step instead.
    """
    if not world.distributed:
        return module
    ddp = nn.parallel.DistributedDataParallel
    # newer torch names the option forward_sync_buffers (and warns about the old name)
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (noise, dropout, augmentation) for a run's seed."""
    return (seed * 1_000_003 + 7919 * (rank + 1)) % 2**63


def describe(world: World) -> str:
    """One line for the log: how many processes, on which backend."""
    return f"world size {world.size} ({world.backend}): rank 0 writes the run directory"
