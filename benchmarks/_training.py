"""Standalone training jobs shared by the benchmarks, run in worker processes (1 thread each)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from nas.data import load_data
from nas.evaluate import evaluate_model
from nas.train import TrainConfig, train_model
from search_spaces import ArchSpec


@dataclass(frozen=True)
class Job:
    spec: ArchSpec
    data: str
    resolution: int  # the resolution the data is loaded at (the space's largest)
    epochs: int
    seed: int


@dataclass(frozen=True)
class Outcome:
    test_accuracy: float
    val_curve: tuple[float, ...]  # validation accuracy after each epoch
    seconds: float


def run_job(job: Job) -> Outcome:
    """Train ``job.spec`` from scratch and score it on the test split."""
    torch.set_num_threads(1)
    data = load_data(job.data, resolution=job.resolution, seed=job.seed)
    result = train_model(job.spec, data, TrainConfig(epochs=job.epochs), progress=False, seed=job.seed)
    score = evaluate_model(result.model, data, "test", resolution=job.spec.resolution)
    return Outcome(score.accuracy, tuple(h["val_accuracy"] for h in result.history), result.seconds)


def run_jobs(jobs: list[Job], workers: int) -> list[Outcome]:
    """Every job, ``workers`` at a time, in order."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_job, jobs))
