"""Data-parallel training on ``torch.distributed``: ranks, the gradient all-reduce, local launch.

Every rank holds the whole network and trains the same sub-networks at each step (their choice
is a function of the seed and the step number), each on its own shard of the batch. Plain
``DistributedDataParallel`` does not fit the sandwich rule: a step runs several backward passes
(largest, smallest, random sub-networks) and DDP would all-reduce after each one, or, with
``no_sync`` on all but the last, expects the last sub-network to reach every parameter, which a
small random one does not. So gradients are averaged explicitly, once per step, after all of the
step's backward passes: the gradients that exist (the same parameters on every rank, because the
sub-networks are the same) are packed into a few flat buckets and each bucket is all-reduced
once. A parameter no sub-network of the step used keeps no gradient on any rank, exactly as in a
single process, so SGD skips it there too.

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
    """Where this process stands among the data-parallel processes of one training run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, evaluates and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


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


def init_process_group(ranks: Ranks, runtime: Runtime, init_method: str = "env://") -> None:
    """Join the run's process group: NCCL for CUDA (after selecting the rank's GPU), else gloo."""
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=init_method, rank=ranks.rank, world_size=ranks.world_size, timeout=TIMEOUT
    )


def all_reduce_gradients(parameters: Iterable[nn.Parameter], ranks: Ranks, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average the gradients of ``parameters`` over all ranks, in place: one all-reduce per flat
    bucket of up to ``bucket_bytes`` (same dtype and device). Parameters without a gradient are
    left without one: every rank trained the same sub-networks, so it is the same set on all."""
    if not ranks.active:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        if (
            not buckets
            or size + g.numel() * g.element_size() > bucket_bytes
            or (g.dtype, g.device) != (buckets[-1][0].dtype, buckets[-1][0].device)
        ):
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel() * g.element_size()
    for bucket in buckets:
        _average_in_place(bucket, ranks)


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
    "check_workers",
    "init_process_group",
    "launch_local",
    "rank_runtime",
    "torchrun_context",
]
