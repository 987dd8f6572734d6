"""``SearchConfig``: every argument of a search, validated, as one frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from hw_models import MEMORY_POLICIES

from .analysis import OBJECTIVE_DIRECTIONS
from .verify import VerifySettings

ENGINES = ("optuna", "ray")
SAMPLERS = ("nsga2", "tpe", "random")
SELECTIONS = ("accuracy", "latency_ms", "madds", "params", "peak_memory_bytes", "knee")
# Constraint argument -> (metric column, factor from the argument's unit to the metric's unit).
CONSTRAINTS: dict[str, tuple[str, float]] = {
    "max_latency_ms": ("latency_ms", 1.0),
    "max_madds": ("madds", 1.0),
    "max_params": ("params", 1.0),
    "max_memory_kb": ("peak_memory_bytes", 1024.0),
}
# Arguments that define what the study's numbers mean: resuming must keep them.
STUDY_DEFINING = ("space", "target", "data", "objectives", "memory_policy", "split_t", *CONSTRAINTS)


@dataclass(frozen=True)
class SearchConfig:
    target: str = "pixel"
    space: str = "proxy-digits"
    data: str = "cluttered-digits"
    engine: str = "optuna"
    sampler: str = "nsga2"
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    trials: int = 300  # about 0.1 s each on the default proxy task
    seed: int = 0
    max_latency_ms: float | None = None
    max_madds: float | None = None
    max_params: float | None = None
    max_memory_kb: float | None = None
    memory_policy: str = "bottleneck"
    split_t: int = 4
    select: str = "accuracy"
    out: str | None = None
    storage: str | None = None
    study_name: str = "invres-nas"
    ray_address: str | None = None
    ray_workers: int = 2
    # torch threads for scoring trials; 1 lets several workers share a machine without
    # oversubscribing it (2 workers x 2 threads on 2 cores ran 7x slower than 1 worker)
    threads: int = 1
    supernet: str | None = None
    supernet_epochs: int | None = None
    # where and how the supernet trains and trials are scored (nas.device, nas.distributed)
    device: str = "auto"
    precision: str = "fp32"
    data_workers: int = 0
    train_workers: int = 1
    subnet_parallel: int = 1  # groups of this many training workers split a step's sub-networks
    export_onnx: bool = True
    export_tflite: bool | None = None  # None: when the LiteRT extra is installed
    progress: bool = True
    # --verify-top K: train K front members standalone after the search (0: do not verify)
    verify_top: int = 0
    verify_epochs: int = 10
    verify_from: str = "supernet"
    verify_pruner: str = "none"

    def __post_init__(self) -> None:
        if isinstance(self.objectives, str | list):
            names = self.objectives.split(",") if isinstance(self.objectives, str) else self.objectives
            object.__setattr__(self, "objectives", tuple(n.strip() for n in names if n.strip()))
        self.validate()

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, but got {self.engine!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, but got {self.sampler!r}")
        if not self.objectives:
            raise ValueError("--objectives needs at least one of " + ", ".join(OBJECTIVE_DIRECTIONS))
        unknown = [o for o in self.objectives if o not in OBJECTIVE_DIRECTIONS]
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; choose from {', '.join(OBJECTIVE_DIRECTIONS)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"--objectives lists an objective twice: {','.join(self.objectives)}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"--trials must be a positive integer, but got {self.trials!r}")
        for name in CONSTRAINTS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, but got {value!r}")
        if self.memory_policy not in MEMORY_POLICIES:
            raise ValueError(
                f"--memory-policy must be one of {', '.join(MEMORY_POLICIES)}, but got {self.memory_policy!r}"
            )
        if isinstance(self.split_t, bool) or not isinstance(self.split_t, int) or self.split_t < 1:
            raise ValueError(f"--split-t must be an integer >= 1, but got {self.split_t!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"--select must be one of {', '.join(SELECTIONS)}, but got {self.select!r}")
        if isinstance(self.ray_workers, bool) or not isinstance(self.ray_workers, int) or self.ray_workers < 1:
            raise ValueError(f"--ray-workers must be an integer >= 1, but got {self.ray_workers!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"--threads must be an integer >= 1, but got {self.threads!r}")
        from .device import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, but got {self.precision!r}")
        for name, low in (("data_workers", 0), ("train_workers", 1), ("subnet_parallel", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}, but got {value!r}")
        if isinstance(self.verify_top, bool) or not isinstance(self.verify_top, int) or self.verify_top < 0:
            raise ValueError(f"--verify-top must be an integer >= 0 (0: no verification), but got {self.verify_top!r}")
        self.verify_settings(top=max(1, self.verify_top)).validate()
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise ValueError(f"--study-name must be a non-empty name, but got {self.study_name!r}")
        if self.supernet_epochs is not None and (not isinstance(self.supernet_epochs, int) or self.supernet_epochs < 1):
            raise ValueError(f"--supernet-epochs must be an integer >= 1, but got {self.supernet_epochs!r}")

    @property
    def directions(self) -> dict[str, str]:
        return {o: OBJECTIVE_DIRECTIONS[o] for o in self.objectives}

    def verify_settings(self, top: int | None = None) -> VerifySettings:
        """The ``--verify-*`` arguments (``top`` overrides ``verify_top``)."""
        return VerifySettings(
            top=self.verify_top if top is None else top,
            epochs=self.verify_epochs,
            start=self.verify_from,
            pruner=self.verify_pruner,
            seed=self.seed,
        )

    def constraints(self) -> dict[str, float]:
        """Metric column -> upper bound in the metric's unit, for the constraints that are set."""
        return {
            metric: float(getattr(self, name)) * factor
            for name, (metric, factor) in CONSTRAINTS.items()
            if getattr(self, name) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
