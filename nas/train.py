"""Training: the weight-sharing supernet (sandwich rule, in-place distillation) and standalone
networks (from scratch, or fine-tuned from inherited weights), on any device and precision, with
streaming data and data-parallel ranks.

Both loops are one plain function over ``DataLoader`` batches. Randomness is explicit: batch order
and crops derive from ``(seed, epoch)``, the sub-networks a step trains from ``(seed, step)``, so
every data-parallel rank trains the same sub-networks and a run resumed from its checkpoint
continues exactly as if never stopped.

``python -m nas.train --space SPACE --data D --epochs E --out DIR`` trains a supernet into
``DIR/supernet.pt`` (what ``nas.search`` does before searching, with the same settings);
``python -m nas.train --arch runs/<name>/best/arch.json`` retrains a searched architecture.
Both take ``--device``, ``--precision``, ``--data-workers`` and ``--train-workers``, and run
under ``torchrun`` for several machines.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invres_utils.cli import OneLineParser
from search_spaces import ArchSpec, SearchSpace, build_model, get_space, parse_arch
from search_spaces.supernet import Supernet

from .checkpoint import load_checkpoint, save_checkpoint, supernet_payload
from .data import Dataset, model_input, train_loader
from .device import CPU, Runtime
from .distributed import (
    SINGLE,
    Ranks,
    WorkerError,
    all_reduce_gradients,
    average_buffers,
    broadcast,
    check_subnet_parallel,
    check_workers,
    init_process_group,
    launch_local,
    rank_runtime,
    shard_group,
    torchrun_context,
)
from .evaluate import SubnetEvaluator, evaluate_model, resize

EpochCallback = Callable[[dict[str, float]], "bool | None"]
_POSTFIX_SECONDS = 0.5  # progress-bar figures refreshed at most this often (each refresh syncs the device)


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum, linear warm-up then cosine decay, label smoothing.
    ``batch_size`` is the global batch: data-parallel ranks share it."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5  # not applied to batch norm and biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, but got {self.lr!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), but got {self.label_smoothing!r}")


@dataclass(frozen=True)
class SupernetTrainConfig(TrainConfig):
    """Sandwich rule: each step trains the largest, the smallest and ``num_random`` random
    sub-networks; with ``distill`` the others learn the largest one's soft labels."""

    epochs: int = 15  # the default run's budget
    # Sandwich steps sum four sub-networks' gradients; on the proxy task a higher peak rate
    # ranked architectures better (Kendall tau 0.71 vs 0.64 at 0.1, accuracy gap 4.8 vs 11.8 pts).
    lr: float = 0.5
    num_random: int = 2
    distill: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.num_random, bool) or not isinstance(self.num_random, int) or self.num_random < 0:
            raise ValueError(f"num_random must be an integer >= 0, but got {self.num_random!r}")

    @property
    def subnets_per_step(self) -> int:
        """How many sub-networks a step trains: the largest, the smallest and the random ones."""
        return 2 + self.num_random


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_at_epoch: int = 0
    stopped_early: bool = False  # an ``on_epoch`` callback asked to stop before the last epoch


@dataclass
class SupernetTrainResult:
    supernet: Supernet
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_at_epoch: int = 0
    stopped_early: bool = False


# ---- shared pieces ---------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD; weight decay on conv and linear weights only (not batch norm, not biases)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        foreach=True,  # one fused update per group: the default per-tensor loop costs ~3 ms a step on the CPU
    )


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def _over_shards(ranks: Ranks) -> str:
    if ranks.subnet_parallel == 1:
        return f"{ranks.world_size} training workers"
    return f"{ranks.shards} shard(s) ({ranks.world_size} training workers / --subnet-parallel {ranks.subnet_parallel})"


def rank_batch_size(batch_size: int, ranks: Ranks) -> int:
    """Each rank's share of the global batch (which must split evenly over the shards)."""
    if batch_size % ranks.shards:
        raise ValueError(
            f"--batch-size {batch_size} does not split evenly over {_over_shards(ranks)}; "
            f"use a multiple of {ranks.shards}"
        )
    return batch_size // ranks.shards


def steps_per_epoch(data: Dataset, batch_size: int, ranks: Ranks = SINGLE) -> int:
    """Optimizer steps per epoch (incomplete batches dropped); a one-line error if not even one."""
    share = rank_batch_size(batch_size, ranks)
    steps = (data.size("train") // ranks.shards) // share
    if steps < 1:
        workers = f" over {_over_shards(ranks)}" if ranks.shards > 1 else ""
        raise ValueError(
            f"the training split has {data.size('train')} images, fewer than one batch of {batch_size}{workers}; "
            "use a smaller batch size, fewer workers or more data"
        )
    return steps


def _progress_bar(total: int, initial: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", disable=None if progress else True, dynamic_ncols=True
    )


def _describe(runtime: Runtime, ranks: Ranks) -> str:
    workers = f" x{ranks.world_size} ranks" if ranks.active else ""
    if ranks.subnet_parallel > 1:
        workers += f", sub-networks split {ranks.subnet_parallel} ways"
    return f"{runtime.describe()}{workers}"


def _at(x: Tensor, resolution: int, runtime: Runtime) -> Tensor:
    return resize(x, resolution).contiguous(memory_format=runtime.memory_format)


def _sgd_loop(
    module: nn.Module,
    data: Dataset,
    config: TrainConfig,
    seed: int,
    train_step: Callable[[Tensor, Tensor, int, torch.amp.GradScaler], tuple[Tensor, Tensor] | None],
    *,
    runtime: Runtime,
    ranks: Ranks,
    data_workers: int,
    desc: str,
    progress: bool,
    start_epoch: int = 0,
    state: dict[str, Any] | None = None,
    history: list[dict[str, float]] | None = None,
    end_of_epoch: Callable[[int, dict[str, Any], list[dict[str, float]]], dict[str, float]] | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[list[dict[str, float]], bool]:
    """The loop both trainers share: batches, learning-rate schedule, gradient all-reduce, progress
    bar, per-epoch record. ``train_step(x, y, step, scaler)`` runs the forward and backward passes
    of one batch and returns its (detached) mean loss and number of correct predictions (``None``
    on the ranks of a sub-network group other than its first, which reports for the group);
    ``end_of_epoch(epoch, state, history)`` evaluates and checkpoints (``state``: the optimizer's
    and the gradient scaler's); ``on_epoch(record)`` returning True stops training. Returns the
    history and whether training stopped early."""
    history = list(history or [])
    per_epoch = steps_per_epoch(data, config.batch_size, ranks)
    loader = train_loader(
        data, rank_batch_size(config.batch_size, ranks), seed=seed, rank=ranks.shard, world_size=ranks.shards,
        workers=data_workers, pin_memory=runtime.pin_memory, augment=config.augment,
    )  # fmt: skip
    total = config.epochs * per_epoch
    warmup = round(config.warmup_epochs * per_epoch)
    optimizer = make_optimizer(module, config)
    scaler = runtime.grad_scaler()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    parameters = list(module.parameters())
    bar = _progress_bar(
        total, start_epoch * per_epoch, f"{desc} [{_describe(runtime, ranks)}]", progress and ranks.main
    )
    stopped = False
    try:
        for epoch in range(start_epoch, config.epochs):
            module.train()
            loader.sampler.set_epoch(epoch)
            runtime.synchronize()
            started = last_shown = time.perf_counter()
            sums = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # loss * n, correct
            shown, count, shown_count = sums.clone(), 0, 0
            for i, (x, y) in enumerate(model_input(loader, data, runtime)):
                step = epoch * per_epoch + i
                lr = learning_rate(step, total, warmup, config.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                reported = train_step(x, y, step, scaler)
                all_reduce_gradients(parameters, ranks)
                scaler.step(optimizer)
                scaler.update()
                if reported is not None:
                    loss, correct = reported
                    sums += torch.stack([loss.double() * len(y), correct.double()])
                    count += len(y)
                bar.update(1)
                now = time.perf_counter()
                if bar.disable is False and now - last_shown >= _POSTFIX_SECONDS:
                    (loss_part, correct_part), n = (sums - shown).tolist(), max(count - shown_count, 1)
                    bar.set_postfix(
                        epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss_part / n:.3f}", acc=f"{correct_part / n:.3f}",
                        img_s=f"{n * ranks.shards / (now - last_shown):.0f}",
                    )  # fmt: skip
                    shown, shown_count, last_shown = sums.clone(), count, now
            totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)])
            if ranks.active:
                torch.distributed.all_reduce(totals)
            runtime.synchronize()
            seconds = time.perf_counter() - started
            loss_sum, correct_sum, count = totals.tolist()
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(count, 1),
                "train_accuracy": correct_sum / max(count, 1),
                "seconds": seconds,
                "images_per_second": count / seconds if seconds > 0 else float("nan"),
            }
            history.append(record)
            if end_of_epoch is not None:
                record.update(end_of_epoch(epoch + 1, {"optimizer": optimizer, "scaler": scaler}, history))
            if on_epoch is not None:
                stop = bool(on_epoch(dict(record))) if ranks.main else False
                stopped = bool(broadcast(stop, ranks))
                if stopped:
                    break
    finally:
        bar.close()
    return history, stopped


def _scaler_state(scaler: torch.amp.GradScaler) -> dict[str, Any]:
    return scaler.state_dict() if scaler.is_enabled() else {}


# ---- supernet ------------------------------------------------------------------------------------
def sandwich(space: SearchSpace, rng: np.random.Generator, num_random: int) -> list[ArchSpec]:
    """The sub-networks one step trains (``SupernetTrainConfig.subnets_per_step`` of them): largest
    first (the teacher), smallest, then random."""
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


def sandwich_share(specs: list[ArchSpec], parts: int, part: int) -> list[int]:
    """The indices of ``specs`` that rank ``part`` of a group of ``parts`` trains: longest first,
    each to the least loaded rank (MAdds at the spec's resolution as the load), so the teacher,
    ``specs[0]``, goes to part 0. The same on every rank, and in ``specs`` order."""
    if parts == 1:
        return list(range(len(specs)))
    from hw_models.analytic import count_madds

    madds = [count_madds(spec) for spec in specs]
    loads = [0] * parts
    owner = [0] * len(specs)
    for i in sorted(range(len(specs)), key=lambda i: (i != 0, -madds[i], i)):
        owner[i] = min(range(parts), key=lambda p: (loads[p], p))
        loads[owner[i]] += madds[i]
    return [i for i in range(len(specs)) if owner[i] == part]


def supernet_identity(
    space: SearchSpace, data: Dataset, config: SupernetTrainConfig, seed: int, precision: str = "fp32"
) -> dict[str, Any]:
    """What a supernet checkpoint was trained with; training is deterministic given all of it
    (on the CPU bit for bit; on CUDA up to cuDNN's non-deterministic kernels)."""
    return {
        "space": space.to_dict(),
        "data": data.name,
        "augmentation": data.augmentation.to_dict(),
        "config": asdict(config),
        "seed": seed,
        "precision": precision,
    }


def check_resumable(checkpoint_path: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``checkpoint_path`` if it exists and was trained with ``identity``
    (``None`` if there is none); a one-line ``ValueError`` naming what differs otherwise."""
    if not Path(checkpoint_path).exists():
        return None
    saved = load_checkpoint(checkpoint_path, supernet_payload_format(), "supernet checkpoint")
    changed = [k for k, v in identity.items() if saved.get("identity", {}).get(k) != v]
    if changed:
        raise ValueError(
            f"supernet checkpoint {checkpoint_path} was trained with a different {', '.join(changed)}; "
            "use the same settings to resume it, or a new run folder"
        )
    return saved


def supernet_payload_format() -> str:
    from .checkpoint import SUPERNET_FORMAT

    return SUPERNET_FORMAT


def train_supernet(
    space: SearchSpace,
    data: Dataset,
    config: SupernetTrainConfig | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    seed: int = 0,
    runtime: Runtime = CPU,
    data_workers: int = 0,
    ranks: Ranks = SINGLE,
    on_epoch: EpochCallback | None = None,
) -> SupernetTrainResult:
    """Train a supernet over ``space`` on ``data``'s training split, on ``runtime``'s device and
    precision, reading batches with ``data_workers`` loader processes.

    With ``checkpoint_path``, a checkpoint is written atomically after every epoch (by rank 0);
    with ``resume`` an existing one is continued (or, if finished, returned without training). A
    checkpoint made with another space, data, augmentation, configuration, seed or precision is
    refused. ``ranks`` places this process among data-parallel ranks (its process group must be
    initialised; see :mod:`nas.distributed`); ``on_epoch(record)`` returning True stops training.
    """
    config = config or SupernetTrainConfig()
    if data.num_classes != space.num_classes:
        raise ValueError(
            f"the data has {data.num_classes} classes but space {space.name!r} has {space.num_classes}; "
            "use a space whose num_classes matches the data"
        )
    identity = supernet_identity(space, data, config, seed, runtime.precision)
    check_subnet_parallel(ranks.subnet_parallel, ranks.world_size, config.subnets_per_step)
    steps_per_epoch(data, config.batch_size, ranks)  # fail before anything else
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supernet = Supernet(space)
    saved: Any = None
    if checkpoint_path is not None and resume and ranks.main:
        try:
            saved = check_resumable(checkpoint_path, identity)
        except ValueError as e:
            saved = ValueError(str(e))
    saved = broadcast(saved, ranks)
    if isinstance(saved, ValueError):
        raise saved
    start_epoch, state, history = 0, None, []
    if saved is not None:
        supernet.load_state_dict(saved["state_dict"])
        start_epoch, history = int(saved["epoch"]), list(saved["history"])
        state = {"optimizer": saved.get("optimizer"), "scaler": saved.get("scaler")}
    runtime.module(supernet)
    if start_epoch >= config.epochs:
        return SupernetTrainResult(supernet.eval(), history, 0.0, start_epoch)
    if state is not None and state["optimizer"] is None:
        state = None

    group = shard_group(ranks) if ranks.subnet_parallel > 1 else None

    def forward(x: Tensor, spec: ArchSpec) -> Tensor:
        with runtime.autocast():
            return supernet(_at(x, spec.resolution, runtime), spec).float()

    def student_loss(logits: Tensor, y: Tensor, teacher: Tensor | None) -> Tensor:
        return soft_cross_entropy(logits, teacher) if teacher is not None else F.cross_entropy(logits, y)

    def train_step(x: Tensor, y: Tensor, step: int, scaler: torch.amp.GradScaler) -> tuple[Tensor, Tensor] | None:
        specs = sandwich(space, np.random.default_rng([seed, step]), config.num_random)
        mine = sandwich_share(specs, ranks.subnet_parallel, ranks.slot)
        send_soft_labels = config.distill and ranks.subnet_parallel > 1
        if mine[0] != 0:
            # Not the teacher's rank: forward all of this rank's sub-networks while the teacher
            # runs its own, then take its soft labels and backpropagate them together.
            outputs = [forward(x, specs[i]) for i in mine]
            teacher = None
            if send_soft_labels:
                teacher = torch.empty_like(outputs[0])
                torch.distributed.broadcast(teacher, ranks.group_leader, group=group)
            scaler.scale(sum(student_loss(logits, y, teacher) for logits in outputs)).backward()
            return None
        logits = forward(x, specs[0])
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        correct = (logits.argmax(1) == y).sum()
        teacher = F.softmax(logits.detach(), dim=1) if config.distill else None
        if send_soft_labels:
            torch.distributed.broadcast(teacher, ranks.group_leader, group=group)
        scaler.scale(loss).backward()
        for i in mine[1:]:
            scaler.scale(student_loss(forward(x, specs[i]), y, teacher)).backward()
        return loss.detach(), correct

    def end_of_epoch(epoch: int, state: dict[str, Any], history: list[dict[str, float]]) -> dict[str, float]:
        average_buffers(supernet, ranks)
        scores = None
        if ranks.main:
            evaluator = SubnetEvaluator(
                supernet,
                data,
                "val",
                calibration_images=200,
                seed=seed,
                runtime=runtime,
                workers=data_workers,
                cache_bytes=0,
            )
            scores = {
                "val_largest": evaluator(space.largest()).accuracy,
                "val_smallest": evaluator(space.smallest()).accuracy,
            }
            supernet.train()
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path,
                    supernet_payload(
                        supernet,
                        identity=identity,
                        epoch=epoch,
                        complete=epoch >= config.epochs,
                        optimizer=state["optimizer"].state_dict(),
                        scaler=_scaler_state(state["scaler"]),
                        history=[*history[:-1], {**history[-1], **scores}],
                        runtime={
                            "device": str(runtime.device),
                            "precision": runtime.precision,
                            "ranks": ranks.world_size,
                            "subnet_parallel": ranks.subnet_parallel,
                        },
                    ),
                )
        return broadcast(scores, ranks)

    started = time.perf_counter()
    history, stopped = _sgd_loop(
        supernet, data, config, seed, train_step, runtime=runtime, ranks=ranks, data_workers=data_workers,
        desc="supernet", progress=progress, start_epoch=start_epoch, state=state, history=history,
        end_of_epoch=end_of_epoch, on_epoch=on_epoch,
    )  # fmt: skip
    return SupernetTrainResult(supernet.eval(), history, time.perf_counter() - started, start_epoch, stopped)


def default_threads(workers: int) -> int:
    """Torch threads per training process on the CPU: the usable cores shared out."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _supernet_rank(
    ranks: Ranks, runtime: Runtime, *, space: SearchSpace, data: Dataset, config: SupernetTrainConfig,
    checkpoint: str, seed: int, data_workers: int, progress: bool, subnet_parallel: int,
) -> dict[str, Any]:  # fmt: skip
    result = train_supernet(
        space, data, config, checkpoint_path=checkpoint, progress=progress, seed=seed, runtime=runtime,
        data_workers=data_workers, ranks=ranks.split(subnet_parallel),
    )  # fmt: skip
    return {"history": result.history, "seconds": result.seconds, "resumed_at_epoch": result.resumed_at_epoch}


def run_supernet_training(
    space: SearchSpace,
    data: Dataset,
    config: SupernetTrainConfig,
    checkpoint: str | Path,
    *,
    seed: int = 0,
    runtime: Runtime = CPU,
    train_workers: int = 1,
    subnet_parallel: int = 1,
    threads: int | None = None,
    data_workers: int = 0,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> SupernetTrainResult:
    """Train (or resume, or reuse) the supernet in ``checkpoint``: what ``nas.train --space`` and
    ``nas.search`` both run. One process, ``train_workers`` local processes, or, with ``ranks``
    (under ``torchrun``), this process as one rank of an initialised group; the ranks split each
    step's sub-networks in groups of ``subnet_parallel`` and the batch over the groups (see
    :mod:`nas.distributed`). Bad settings are refused before any process starts or any file is
    written."""
    check_workers(train_workers, runtime)
    workers = ranks.world_size if ranks is not None else train_workers
    check_subnet_parallel(subnet_parallel, workers, config.subnets_per_step)
    if ranks is not None and ranks.active:
        return train_supernet(
            space, data, config, checkpoint_path=checkpoint, progress=progress, seed=seed, runtime=runtime,
            data_workers=data_workers, ranks=ranks.split(subnet_parallel),
        )  # fmt: skip
    identity = supernet_identity(space, data, config, seed, runtime.precision)
    steps_per_epoch(data, config.batch_size, Ranks(0, train_workers, 0, subnet_parallel))
    saved = check_resumable(checkpoint, identity)
    if saved is not None and int(saved["epoch"]) >= config.epochs:
        from .checkpoint import load_supernet

        supernet = runtime.module(load_supernet(checkpoint, space))
        return SupernetTrainResult(supernet.eval(), list(saved["history"]), 0.0, int(saved["epoch"]))
    if train_workers == 1:
        if threads is not None:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
        try:
            return train_supernet(
                space, data, config, checkpoint_path=checkpoint, progress=progress, seed=seed, runtime=runtime,
                data_workers=data_workers,
            )  # fmt: skip
        finally:
            if threads is not None:
                torch.set_num_threads(previous)
    job = functools.partial(
        _supernet_rank, space=space, data=data, config=config, checkpoint=str(checkpoint), seed=seed,
        data_workers=data_workers, progress=progress, subnet_parallel=subnet_parallel,
    )  # fmt: skip
    if threads is None and runtime.device.type == "cpu":
        threads = default_threads(train_workers)
    outcome = launch_local(job, train_workers, runtime, threads)
    from .checkpoint import load_supernet

    supernet = runtime.module(load_supernet(checkpoint, space))
    return SupernetTrainResult(supernet.eval(), outcome["history"], outcome["seconds"], outcome["resumed_at_epoch"])


# ---- standalone networks ---------------------------------------------------------------------------
def train_model(
    spec: ArchSpec,
    data: Dataset,
    config: TrainConfig | None = None,
    *,
    init: nn.Module | None = None,
    progress: bool = True,
    seed: int = 0,
    dropout: float = 0.2,
    runtime: Runtime = CPU,
    data_workers: int = 0,
    ranks: Ranks = SINGLE,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``build_model(spec)`` on ``data`` from scratch (seeded initialisation), or starting
    from ``init``'s weights (e.g. ``supernet.extract(spec)``) to fine-tune, with the same device,
    precision, data-loader and data-parallel options as :func:`train_supernet`.

    After every epoch the record ``{"epoch", "loss", "train_accuracy", "val_accuracy",
    "val_loss", "seconds", "images_per_second"}`` is appended to the history and passed to
    ``on_epoch``; if it returns True, training stops there (``stopped_early`` in the result).
    An Optuna pruner plugs in as::

        def report(record):
            trial.report(record["val_accuracy"], step=record["epoch"])
            return trial.should_prune()
        if train_model(spec, data, config, on_epoch=report).stopped_early:
            raise optuna.TrialPruned()

    Returns the model (on ``runtime``'s device) in eval mode with its history."""
    config = config or TrainConfig()
    check_subnet_parallel(ranks.subnet_parallel, ranks.world_size, None)
    if data.num_classes != spec.num_classes:
        raise ValueError(
            f"the data has {data.num_classes} classes but the architecture has {spec.num_classes}; "
            "use an architecture whose num_classes matches the data"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec, dropout=dropout)
    if init is not None:
        model.load_state_dict(init.state_dict())
    runtime.module(model)

    def train_step(x: Tensor, y: Tensor, step: int, scaler: torch.amp.GradScaler) -> tuple[Tensor, Tensor]:
        with runtime.autocast():
            logits = model(_at(x, spec.resolution, runtime)).float()
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        scaler.scale(loss).backward()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def end_of_epoch(epoch: int, state: dict[str, Any], history: list[dict[str, float]]) -> dict[str, float]:
        average_buffers(model, ranks)  # as for the supernet: rank 0 evaluates and returns the ranks' average
        scores = None
        if ranks.main:
            score = evaluate_model(
                model, data, "val", resolution=spec.resolution, runtime=runtime, workers=data_workers
            )
            scores = {"val_accuracy": score.accuracy, "val_loss": score.loss}
            model.train()
        return broadcast(scores, ranks)

    # Dropout draws from torch's global generator: seed it for reproducibility, restore afterwards;
    # per rank, or every rank would drop the same units of its shard's images.
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1 + ranks.rank)
        history, stopped = _sgd_loop(
            model, data, config, seed, train_step, runtime=runtime, ranks=ranks, data_workers=data_workers,
            desc="train", progress=progress, end_of_epoch=end_of_epoch, on_epoch=on_epoch,
        )  # fmt: skip
    return TrainResult(model.eval(), history, time.perf_counter() - started, 0, stopped)


# ---- CLI ---------------------------------------------------------------------------------------------
def _supernet_weights(arch_path: Path, spec: ArchSpec, supernet_path: str | None) -> nn.Module:
    """Inherited weights for ``--init supernet``: the given supernet checkpoint, else the run
    folder's ``supernet.pt`` next to ``best/arch.json``."""
    from .checkpoint import load_supernet

    path = Path(supernet_path) if supernet_path else _run_supernet(arch_path.resolve().parent.parent)
    if not path.is_file():
        raise ValueError(f"no supernet checkpoint at {path}; pass --supernet PATH or use --init scratch")
    supernet = load_supernet(path)
    try:
        supernet.check(spec)
    except ValueError as e:
        raise ValueError(f"the architecture is not in the space of supernet {path}: {e}") from None
    return supernet.extract(spec)


def _run_supernet(run_dir: Path) -> Path:
    """The supernet a run folder's search used: its own ``supernet.pt``, or the checkpoint it was
    given with ``--supernet`` (recorded in its ``config.json``)."""
    own = run_dir / "supernet.pt"
    if own.is_file() or not (run_dir / "config.json").is_file():
        return own
    from .run_dir import read_json

    try:
        given = read_json(run_dir / "config.json", "run config").get("args", {}).get("supernet")
    except (ValueError, AttributeError):
        return own
    return Path(given) if isinstance(given, str) and given else own


def build_parser() -> OneLineParser:
    from invres_utils.cli import non_negative_int, positive_int

    from .device import DEVICES, PRECISIONS

    parser = OneLineParser(prog="python -m nas.train", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--space", help="train the supernet of this space (a shipped name or a JSON file) into --out/supernet.pt"
    )
    what.add_argument(
        "--arch", help="train this architecture: arch.json (e.g. runs/<name>/best/arch.json), YAML or compact string"
    )
    parser.add_argument(
        "--data",
        default="cluttered-digits",
        help="'cluttered-digits' (embedded default), 'digits', a CIFAR-10 python folder, an image folder or an .npz",
    )
    parser.add_argument("--init", choices=("scratch", "supernet"), default="scratch", help="--arch: initial weights")
    parser.add_argument("--supernet", default=None, help="--arch: supernet checkpoint for --init supernet")
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="default 15 for a supernet (as nas.search), 30 for --arch"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 0.5 supernet, 0.1 --arch, 0.01 to fine-tune)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=TrainConfig().batch_size,
        help="global batch, shared by --train-workers",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=None, help="output folder (supernet: default runs/supernet-<space>-<time>; --arch: next to it)"
    )
    parser.add_argument(
        "--device", default="auto", help=f"{'|'.join(DEVICES)} (default auto: cuda, then mps, then cpu)"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="training precision (autocast; fp16 with a gradient scaler)",
    )
    parser.add_argument(
        "--data-workers", type=non_negative_int, default=0, help="DataLoader worker processes per training process"
    )
    parser.add_argument(
        "--train-workers",
        type=positive_int,
        default=1,
        help="data-parallel training processes on this machine (one GPU each on CUDA)",
    )
    parser.add_argument(
        "--subnet-parallel",
        type=positive_int,
        default=1,
        metavar="G",
        help="--space: groups of G training workers split each step's sub-networks and share a batch shard "
        "(exact: every sub-network sees the whole batch; for steps of many small ops, e.g. small images on CPUs); "
        "default 1: every worker trains all of them on its own shard",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads per training process (default: cores / --train-workers)",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


@dataclass(frozen=True)
class _Job:
    """Everything a training run needs, checked before any process starts or file is written."""

    args: Any
    runtime: Runtime
    data: Dataset
    out: Path
    space: SearchSpace | None = None
    spec: ArchSpec | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    init_state: dict[str, Tensor] | None = None


def _prepare(args: Any, ranks: Ranks | None) -> _Job:
    from .data import load_data

    runtime = Runtime.create(args.device, args.precision)
    if ranks is not None:
        if args.train_workers != 1:
            raise ValueError(
                "--train-workers cannot be combined with torchrun, which starts the ranks itself (--nproc-per-node)"
            )
        runtime = rank_runtime(runtime, ranks)
    check_workers(args.train_workers, runtime)
    world = ranks.world_size if ranks is not None else args.train_workers
    if args.space is None:
        check_subnet_parallel(args.subnet_parallel, world, None)
    workers = Ranks(0, world)
    if args.space is not None:
        space = get_space(args.space)
        defaults = SupernetTrainConfig()
        config = SupernetTrainConfig(
            epochs=args.epochs or defaults.epochs,
            batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else defaults.lr,
        )
        data = load_data(args.data, resolution=max(space.resolutions), seed=args.seed)
        if data.num_classes != space.num_classes:
            raise ValueError(
                f"the data has {data.num_classes} classes but space {space.name!r} has {space.num_classes}; "
                "use a space whose num_classes matches the data"
            )
        out = Path(args.out) if args.out else Path("runs") / f"supernet-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        check_subnet_parallel(args.subnet_parallel, world, config.subnets_per_step)
        steps_per_epoch(data, config.batch_size, workers.split(args.subnet_parallel))
        check_resumable(out / "supernet.pt", supernet_identity(space, data, config, args.seed, runtime.precision))
        return _Job(args, runtime, data, out, space=space, config=config)
    spec = parse_arch(args.arch)
    arch_path = Path(args.arch)
    lr = args.lr if args.lr is not None else (0.01 if args.init == "supernet" else TrainConfig().lr)
    config = TrainConfig(epochs=args.epochs or TrainConfig().epochs, batch_size=args.batch_size, lr=lr)
    data = load_data(args.data, resolution=spec.resolution, seed=args.seed)
    if data.num_classes != spec.num_classes:
        raise ValueError(
            f"the data has {data.num_classes} classes but the architecture has {spec.num_classes}; "
            "use an architecture whose num_classes matches the data"
        )
    init = _supernet_weights(arch_path, spec, args.supernet) if args.init == "supernet" else None
    if args.out:
        out = Path(args.out)
    elif arch_path.is_file():
        out = arch_path.resolve().parent / f"retrained-{args.init}"
    else:
        out = Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    steps_per_epoch(data, config.batch_size, workers)
    return _Job(
        args, runtime, data, out, spec=spec, config=config, init_state=init.state_dict() if init is not None else None
    )


def _train_supernet(job: _Job, runtime: Runtime, ranks: Ranks | None) -> list[str]:
    """``--space``: train the supernet through :func:`run_supernet_training`, as ``nas.search``
    does (one process, ``--train-workers`` local ranks, or, with ``ranks``, this process as one
    torchrun rank); rank 0 writes ``supernet.json``. Returns the summary lines (rank 0)."""
    from .run_dir import atomic_write_json

    args = job.args
    assert job.space is not None
    main_process = ranks is None or ranks.main
    if main_process:
        job.out.mkdir(parents=True, exist_ok=True)
    checkpoint = job.out / "supernet.pt"
    result = run_supernet_training(
        job.space, job.data, job.config, checkpoint, seed=args.seed, runtime=runtime,
        train_workers=args.train_workers if ranks is None else 1, subnet_parallel=args.subnet_parallel,
        threads=args.threads if ranks is None else None, data_workers=args.data_workers,
        progress=not args.no_progress, ranks=ranks,
    )  # fmt: skip
    if not main_process:
        return []
    world = Ranks(0, ranks.world_size if ranks is not None else args.train_workers, 0, args.subnet_parallel)
    last = result.history[-1]
    atomic_write_json(
        job.out / "supernet.json",
        {"space": job.space.name, "data": job.data.name, "config": asdict(job.config), "seed": args.seed,
         "device": str(runtime.device), "precision": runtime.precision, "train_workers": world.world_size,
         "subnet_parallel": world.subnet_parallel, "history": result.history, "seconds": result.seconds},
    )  # fmt: skip
    done = "already trained" if result.seconds == 0 else f"trained in {result.seconds:.0f} s"
    return [
        f"supernet of {job.space.name} on {job.data.name}: {job.config.epochs} epochs {done} "
        f"({_describe(runtime, world)}); val accuracy largest {last.get('val_largest', float('nan')):.4f}, "
        f"smallest {last.get('val_smallest', float('nan')):.4f}",
        f"wrote {checkpoint}, {job.out / 'supernet.json'}",
        f"search with it: python -m nas.search --space {args.space} --data {args.data} --seed {args.seed} --supernet {checkpoint}",
    ]


def _run(ranks: Ranks, runtime: Runtime, job: _Job) -> list[str]:
    """``--arch``: train on this rank; rank 0 writes the outputs. Returns the summary lines (rank 0)."""
    from .export import save_model
    from .run_dir import atomic_write_json

    args = job.args
    progress = not args.no_progress
    spec = job.spec
    assert spec is not None
    init = None
    if job.init_state is not None:
        init = build_model(spec)
        init.load_state_dict(job.init_state)
    result = train_model(
        spec, job.data, job.config, init=init, progress=progress, seed=args.seed, runtime=runtime,
        data_workers=args.data_workers, ranks=ranks,
    )  # fmt: skip
    if not ranks.main:
        return []
    test = evaluate_model(
        result.model, job.data, "test", resolution=spec.resolution, runtime=runtime, workers=args.data_workers
    )
    job.out.mkdir(parents=True, exist_ok=True)
    spec.to_json(job.out / "arch.json")
    save_model(result.model.cpu(), spec, job.out / "model.pt")
    atomic_write_json(
        job.out / "train.json",
        {"arch": spec.to_string(), "data": job.data.name, "init": args.init, "config": asdict(job.config), "seed": args.seed,
         "device": str(runtime.device), "precision": runtime.precision, "train_workers": ranks.world_size,
         "history": result.history, "test_accuracy": test.accuracy, "seconds": result.seconds},
    )  # fmt: skip
    last = result.history[-1]
    return [
        f"{spec.to_string()}: val accuracy {last['val_accuracy']:.4f}, test accuracy {test.accuracy:.4f} "
        f"({test.examples} images) after {job.config.epochs} epochs in {result.seconds:.0f} s ({_describe(runtime, ranks)})",
        f"wrote {job.out}/model.pt, arch.json, train.json",
    ]


def _run_local_rank(ranks: Ranks, runtime: Runtime, job: _Job) -> list[str]:
    return _run(ranks, runtime, job)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ranks = torchrun_context()
        job = _prepare(args, ranks)
        if ranks is not None:  # started by torchrun: this process is one rank
            init_process_group(ranks, job.runtime)
            try:
                if args.threads is not None:
                    torch.set_num_threads(args.threads)
                if job.space is not None:
                    lines = _train_supernet(job, job.runtime, ranks)
                else:
                    lines = _run(ranks, job.runtime, job)
            finally:
                torch.distributed.destroy_process_group()
        elif job.space is not None:
            lines = _train_supernet(job, job.runtime, None)
        elif args.train_workers > 1:
            threads = args.threads or (
                default_threads(args.train_workers) if job.runtime.device.type == "cpu" else None
            )
            lines = launch_local(functools.partial(_run_local_rank, job=job), args.train_workers, job.runtime, threads)
        else:
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            lines = _run(SINGLE, job.runtime, job)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WorkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an --out that cannot be created or written
        print(f"error: cannot write {e.filename or '--out'}: {e.strerror or e}; choose a writable --out folder", file=sys.stderr)
        return 2
    for line in lines or []:
        print(line)
    return 0


__all__ = [
    "EpochCallback",
    "SupernetTrainConfig",
    "SupernetTrainResult",
    "TrainConfig",
    "TrainResult",
    "check_resumable",
    "learning_rate",
    "run_supernet_training",
    "sandwich",
    "supernet_identity",
    "train_model",
    "train_supernet",
]

if __name__ == "__main__":
    sys.exit(main())
