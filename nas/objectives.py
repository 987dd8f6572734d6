"""What a candidate scores: hardware costs from the cost models, accuracy from the supernet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hw_models import count_madds, count_params, load_target, peak_memory_bytes, predict_latency_ms
from search_spaces import ArchSpec, SearchSpace

COST_METRICS = ("latency_ms", "madds", "params", "peak_memory_bytes")
METRICS = ("accuracy", *COST_METRICS)


@dataclass(frozen=True)
class CostModel:
    """Hardware costs of an architecture on one target (all analytic or predicted: cheap)."""

    target: Any  # a loaded latency target (hw_models.load_target)
    memory_policy: str = "bottleneck"
    split_t: int = 4
    bytes_per_element: int = 2

    @classmethod
    def create(cls, target: str, memory_policy: str = "bottleneck", split_t: int = 4) -> CostModel:
        return cls(load_target(target), memory_policy, split_t)

    def __call__(self, spec: ArchSpec) -> dict[str, float]:
        return {
            "latency_ms": float(predict_latency_ms(spec, self.target)),
            "madds": count_madds(spec),
            "params": count_params(spec),
            "peak_memory_bytes": peak_memory_bytes(spec, self.memory_policy, self.bytes_per_element, t=self.split_t),
        }


def violations(costs: dict[str, float], constraints: dict[str, float]) -> list[float]:
    """Optuna's constraint convention: value <= 0 means satisfied, one entry per constraint."""
    return [float(costs[metric] - bound) for metric, bound in constraints.items()]


def _smallest_variants(space: SearchSpace) -> list[ArchSpec]:
    """The smallest architecture under every block option (options are not ordered by cost)."""
    base = space.smallest()
    return [
        base.replace(bottleneck_activation=a, shortcut=s) for a in space.bottleneck_activations for s in space.shortcuts
    ]


def check_feasible(space: SearchSpace, cost_model: CostModel, constraints: dict[str, float]) -> None:
    """Raise ``ValueError`` saying which bound no architecture of the space can meet, and why.

    Costs never fall when a choice grows (property-tested), so the smallest choice of every
    dimension minimises every cost at once: if it cannot meet the bounds, nothing can."""
    if not constraints:
        return
    variants = [(spec, cost_model(spec)) for spec in _smallest_variants(space)]
    for metric, bound in constraints.items():
        spec, costs = min(variants, key=lambda v: v[1][metric])
        if costs[metric] > bound:
            raise ValueError(
                f"no architecture in space {space.name!r} meets {metric} <= {bound:g}: the cheapest one "
                f"({spec.to_string()}) has {metric} = {costs[metric]:g}; relax the constraint or use a smaller space"
            )
    if all(any(v > 0 for v in violations(costs, constraints)) for _, costs in variants):
        raise ValueError(
            f"each constraint alone can be met in space {space.name!r}, but not all together "
            f"({', '.join(f'{m} <= {b:g}' for m, b in constraints.items())}); relax one of them"
        )


class CandidateEvaluator:
    """Scores an architecture: costs from ``cost_model``, accuracy inherited from the supernet
    with batch norm recalibrated for the candidate. Results are cached per architecture."""

    def __init__(
        self,
        supernet: Any,
        data: Any,
        cost_model: CostModel,
        split: str = "val",
        *,
        runtime: Any = None,
        workers: int = 0,
    ) -> None:
        from .device import CPU
        from .evaluate import SubnetEvaluator

        self.supernet = supernet
        self.cost_model = cost_model
        self.subnets = SubnetEvaluator(supernet, data, split=split, runtime=runtime or CPU, workers=workers)
        self.cache: dict[ArchSpec, dict[str, float]] = {}

    def __call__(self, spec: ArchSpec) -> dict[str, float]:
        if spec not in self.cache:
            self.cache[spec] = {"accuracy": float(self.subnets(spec).accuracy), **self.cost_model(spec)}
        return dict(self.cache[spec])
