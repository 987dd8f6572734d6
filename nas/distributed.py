"""Data-parallel and sub-network-parallel training on ``torch.distributed``: ranks, the gradient
all-reduce, local launch.

Every rank holds the whole network, and the sub-networks a step trains are a function of the seed
and the step number, so every rank knows them all. The ranks share a step's work in one of two
ways, or both (``Ranks.subnet_parallel``, ``--subnet-parallel G``):

- *data parallel* (G = 1, the default): every rank trains all of the step's sub-networks on its
  own shard of the batch;
- *sub-network parallel* (G > 1): ranks form groups of G that read the same shard, and each rank
  of a group trains a share of the step's sub-networks on all of it (the largest, the teacher,
  on the group's first rank, which sends its soft labels to the others after its forward pass).
  Every sub-network and every batch norm then sees exactly the images one process would: this
  is the mode for steps made of many small ops (small images and batches), where a rank's fixed
  cost per op does not shrink with a smaller batch. With world size W there are W / G shards.

Plain ``DistributedDataParallel`` does not fit the sandwich rule: a step runs several backward
passes (largest, smallest, random sub-networks) and DDP would all-reduce after each one, or, with
``no_sync`` on all but the last, expects the last sub-network to reach every parameter, which a
small random one does not. So gradients are reduced explicitly, once per step, after all of the
step's backward passes: every parameter's gradient (zeros where a rank has none) is packed into a
few flat buckets, each with a flag per parameter saying whether the rank has a gradient for it,
and each bucket is all-reduced once: gradients are summed over a group's ranks (they trained
different sub-networks) and averaged over shards. A parameter no rank's sub-networks used keeps
no gradient, exactly as in a single process, so SGD skips it there too.

Batch-norm running statistics are not synchronised per step (training normalises with batch
statistics, so they never reach the gradients); they are averaged over ranks at the end of every
epoch, before rank 0 evaluates and checkpoints, so that all ranks continue from the same
state and a resumed run starts where the checkpoint says.

``launch_local(job, workers)`` starts ``workers`` processes on this machine (gloo on the CPU,
NCCL on CUDA with one GPU per rank); under ``torchrun`` the ranks come from its environment
(:func:`torchrun_context`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .device import Runtime

BUCKET_BYTES = 32 * 1024**2
TIMEOUT = timedelta(minutes=60)  # rank 0 evaluates and checkpoints while the others wait


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the processes of one training run, and how they share
    its steps: groups of ``subnet_parallel`` consecutive ranks read the same shard of every batch
    and split the step's sub-networks among them (1: plain data parallel)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    subnet_parallel: int = 1

    def __post_init__(self) -> None:
        assert 0 <= self.rank < self.world_size and self.world_size % self.subnet_parallel == 0, self

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, evaluates and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def shards(self) -> int:
        """How many shards each batch is dealt into (one per group of ``subnet_parallel`` ranks)."""
        return self.world_size // self.subnet_parallel

    @property
    def shard(self) -> int:
        """The shard of every batch this rank reads."""
        return self.rank // self.subnet_parallel

    @property
    def slot(self) -> int:
        """This rank's place in its group: which share of a step's sub-networks it trains."""
        return self.rank % self.subnet_parallel

    @property
    def group_leader(self) -> int:
        """The group's first rank: it trains the teacher and reports the group's loss."""
        return self.shard * self.subnet_parallel

    def split(self, subnet_parallel: int) -> Ranks:
        """These ranks with groups of ``subnet_parallel`` (checked by :func:`check_subnet_parallel`)."""
        return Ranks(self.rank, self.world_size, self.local_rank, subnet_parallel)


SINGLE = Ranks()


def torchrun_context() -> Ranks | None:
    """This process's ranks if ``torchrun`` (or any launcher setting ``WORLD_SIZE``, ``RANK`` and
    ``LOCAL_RANK``) started it with more than one process, else ``None``."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise ValueError(
            "WORLD_SIZE is set but RANK / LOCAL_RANK are missing or not integers; start the ranks with torchrun"
        ) from None


def rank_runtime(runtime: Runtime, ranks: Ranks) -> Runtime:
    """The runtime of one rank: on CUDA, the rank's own GPU (``cuda:LOCAL_RANK``)."""
    if runtime.device.type != "cuda" or not ranks.active:
        return runtime
    return Runtime(torch.device("cuda", ranks.local_rank), runtime.precision, runtime.channels_last)


def check_workers(workers: int, runtime: Runtime) -> None:
    """A one-line error if ``workers`` local ranks cannot run on ``runtime``'s device."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--train-workers must be an integer >= 1, but got {workers!r}")
    if workers == 1:
        return
    if runtime.device.type == "mps":
        raise ValueError("--train-workers > 1 needs --device cpu or cuda (torch.distributed has no MPS backend)")
    if runtime.device.type == "cuda":
        count = torch.cuda.device_count()
        if workers > count:
            raise ValueError(f"--train-workers {workers} needs one GPU each, but {count} CUDA device(s) are visible")


def check_subnet_parallel(subnet_parallel: int, workers: int, subnets_per_step: int | None) -> None:
    """A one-line error unless ``workers`` ranks form groups of ``subnet_parallel`` that each
    have at least one of a step's ``subnets_per_step`` sub-networks to train (``None``: a
    standalone network, which has one)."""
    if isinstance(subnet_parallel, bool) or not isinstance(subnet_parallel, int) or subnet_parallel < 1:
        raise ValueError(f"--subnet-parallel must be an integer >= 1, but got {subnet_parallel!r}")
    if subnet_parallel == 1:
        return
    if subnets_per_step is None:
        raise ValueError("--subnet-parallel splits a supernet's sub-networks; a single network trains with 1")
    if workers % subnet_parallel:
        raise ValueError(
            f"--subnet-parallel {subnet_parallel} needs a multiple of {subnet_parallel} training workers, "
            f"but got {workers}; use --train-workers {subnet_parallel} (or a multiple)"
        )
    if subnet_parallel > subnets_per_step:
        raise ValueError(
            f"--subnet-parallel {subnet_parallel} is more than the {subnets_per_step} sub-networks a step trains; "
            f"use at most {subnets_per_step}"
        )


def init_process_group(ranks: Ranks, runtime: Runtime, init_method: str = "env://") -> None:
    """Join the run's process group: NCCL for CUDA (after selecting the rank's GPU), else gloo."""
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=init_method, rank=ranks.rank, world_size=ranks.world_size, timeout=TIMEOUT
    )


def all_reduce_gradients(parameters: Iterable[nn.Parameter], ranks: Ranks, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Reduce the gradients of ``parameters`` over all ranks, in place: summed over the ranks of
    a group (each trained its own sub-networks) and averaged over shards. One all-reduce per flat
    bucket of up to ``bucket_bytes`` (same dtype and device), in parameter order, so every rank
    packs the same layout: a gradient a rank lacks is sent as zeros, with a flag per parameter
    saying who had one. A parameter no rank has a gradient for keeps none."""
    if not ranks.active:
        return
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in parameters:
        if (
            not buckets
            or size + p.numel() * p.element_size() > bucket_bytes
            or (p.dtype, p.device) != (buckets[-1][0].dtype, buckets[-1][0].device)
        ):
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += p.numel() * p.element_size()
    for bucket in buckets:
        _reduce_bucket(bucket, ranks)


def _reduce_bucket(params: list[nn.Parameter], ranks: Ranks) -> None:
    """:func:`all_reduce_gradients` for one bucket (one dtype and device)."""
    first = params[0]
    flags = torch.tensor([p.grad is not None for p in params], dtype=first.dtype, device=first.device)
    flat = torch.cat([*(p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params), flags])
    dist.all_reduce(flat)
    if ranks.shards > 1:
        flat.div_(ranks.shards)
    pieces = flat.split([*(p.numel() for p in params), len(params)])
    had = pieces[-1].tolist()
    for p, piece, count in zip(params, pieces, had):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = piece.view_as(p).clone()
        else:
            p.grad.copy_(piece.view_as(p))


def _average_in_place(tensors: list[torch.Tensor], ranks: Ranks) -> None:
    """Average ``tensors`` (one dtype and device) over all ranks with one all-reduce."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(ranks.world_size)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def average_buffers(module: nn.Module, ranks: Ranks) -> None:
    """Average the floating-point buffers (batch-norm running statistics) over all ranks."""
    if not ranks.active:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if buffers:
        _average_in_place(buffers, ranks)


def broadcast(value: Any, ranks: Ranks, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (pickled over the process group; our own processes)."""
    if not ranks.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard_group(ranks: Ranks) -> Any:
    """The process group of the ranks that read this rank's shard (``None``: all ranks). Every
    rank must call this, in the same order, since each group is created by all of them."""
    if ranks.shards == 1:
        return None
    groups = [
        dist.new_group(list(range(first, first + ranks.subnet_parallel)))
        for first in range(0, ranks.world_size, ranks.subnet_parallel)
    ]
    return groups[ranks.shard]


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


# ---- local launch ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    rank: int,
    job: Callable[[Ranks, Runtime], Any],
    runtime: Runtime,
    workers: int,
    threads: int | None,
    port: int,
    folder: str,
) -> None:
    """One locally launched rank: join the group, run ``job``, report a failure in ``folder``."""
    ranks = Ranks(rank, workers, rank)
    runtime = rank_runtime(runtime, ranks)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        init_process_group(ranks, runtime, f"tcp://127.0.0.1:{port}")
        result = job(ranks, runtime)
        if ranks.main:
            Path(folder, "result.json").write_text(json.dumps(result))
        # No rank tears its gloo connections down while another still uses them: a peer closing
        # mid-collective can end the other rank in std::terminate, with no report.
        if dist.is_initialized():
            dist.barrier()
    except BaseException as exc:
        report = {
            "kind": "usage" if isinstance(exc, ValueError) else "crash",
            "message": " ".join(str(exc).split()),
            "traceback": "".join(traceback.format_exception(exc)),
            "at": time.monotonic_ns(),  # system-wide: orders the ranks' failures
        }
        Path(folder, f"error-{rank}.json").write_text(json.dumps(report))
        sys.exit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class WorkerError(RuntimeError):
    """A locally launched rank failed other than by bad input (its traceback is on stderr)."""


def launch_local(
    job: Callable[[Ranks, Runtime], Any], workers: int, runtime: Runtime, threads: int | None = None
) -> Any:
    """Run ``job(ranks, runtime)`` in ``workers`` new processes on this machine and return rank 0's
    JSON-serialisable result. ``job`` must be picklable (a module-level function, or a
    ``functools.partial`` of one). A ``ValueError`` in any rank comes back as a one-line
    ``ValueError``; any other failure as :class:`WorkerError`."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    check_workers(workers, runtime)
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")  # "terminating process ..." after a failure
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="invres-ranks-") as folder:
        try:
            mp.start_processes(
                _rank_main,
                args=(job, runtime, workers, threads, _free_port(), folder),
                nprocs=workers,
                join=True,
                start_method="spawn",
            )
        except ProcessException:
            # The first failure is the cause; the other ranks then lose their peers (gloo's
            # "Connection closed by peer"), often before the launcher stops them, so reports are
            # taken in the order they were made, not by rank. Bad input (a ValueError) is reported
            # as such; anything else with the traceback of the rank that failed first.
            reports = sorted(
                (json.loads(p.read_text()) for p in Path(folder).glob("error-*.json")), key=lambda r: r["at"]
            )
            usage = [r["message"] for r in reports if r["kind"] == "usage"]
            if usage:
                raise ValueError(usage[0]) from None
            if not reports:
                raise WorkerError("a training rank exited without a report (killed? out of memory?)") from None
            print(reports[0]["traceback"], file=sys.stderr, end="")
            raise WorkerError(f"a training rank failed: {reports[0]['message']} (traceback above)") from None
        finally:
            spawn_log.setLevel(level)
        result = Path(folder, "result.json")
        return json.loads(result.read_text()) if result.exists() else None


__all__ = [
    "SINGLE",
    "Ranks",
    "WorkerError",
    "all_reduce_gradients",
    "average_buffers",
    "barrier",
    "broadcast",
    "check_subnet_parallel",
    "check_workers",
    "init_process_group",
    "launch_local",
    "rank_runtime",
    "shard_group",
    "torchrun_context",
]
