"""Supernet fidelity: does the accuracy a sub-network inherits rank architectures the way
training them from scratch does?  ``python -m benchmarks.supernet_ranking`` (repository root).

Trains the default supernet on the embedded dataset (or loads ``--supernet``), picks
architectures spread over the space (evenly spaced quantiles of MAdds among random samples, the
smallest and the largest included), trains each from scratch as a standalone network, and prints
per architecture the standalone and inherited (batch norm recalibrated) test accuracy, then the
Kendall tau between the two (goal: at least 0.6), Spearman's rho and the mean accuracy gap.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from hw_models import count_madds
from nas.checkpoint import load_supernet
from nas.data import load_data
from nas.evaluate import SubnetEvaluator
from nas.train import SupernetTrainConfig, TrainConfig, train_supernet
from search_spaces import DEFAULT_PROXY_SPACE, ArchSpec, SearchSpace, get_space

try:
    from benchmarks._cli import Parser, positive_int
    from benchmarks._training import Job, run_jobs
except ImportError:  # run as a script, python benchmarks/supernet_ranking.py: its folder is on sys.path
    from _cli import Parser, positive_int
    from _training import Job, run_jobs

TAU_GOAL = 0.6


def spread_architectures(space: SearchSpace, n: int, seed: int, pool: int = 2000) -> list[ArchSpec]:
    """``n`` architectures spread over the space's range of MAdds: the smallest, the largest and
    evenly spaced quantiles of ``pool`` random samples in between."""
    if n < 2:
        raise ValueError(f"need at least 2 architectures to rank, but got {n}")
    rng = np.random.default_rng(seed)
    samples = sorted({space.sample(rng) for _ in range(pool)}, key=count_madds)
    inner = [samples[int(round(q * (len(samples) - 1)))] for q in np.linspace(0, 1, n)[1:-1]]
    return [space.smallest(), *inner, space.largest()]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE)
    parser.add_argument("--data", default="cluttered-digits")
    parser.add_argument("--archs", type=positive_int, default=8, help="architectures to rank (at least 2)")
    parser.add_argument("--epochs", type=positive_int, default=TrainConfig().epochs, help="standalone training epochs")
    parser.add_argument("--supernet-epochs", type=positive_int, default=None, help="default: the default")
    parser.add_argument("--supernet", default=None, help="use this trained supernet checkpoint")
    parser.add_argument("--jobs", type=positive_int, default=2, help="standalone trainings in parallel (1 thread each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        space = get_space(args.space)
        resolution = max(space.resolutions)
        data = load_data(args.data, resolution=resolution, seed=args.seed)
        specs = spread_architectures(space, args.archs, args.seed)
        supernet = load_supernet(args.supernet, space) if args.supernet else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"space {space.name}, data {data.describe()}")

    started = time.perf_counter()
    if supernet is None:
        torch.set_num_threads(2)
        config = SupernetTrainConfig() if args.supernet_epochs is None else SupernetTrainConfig(epochs=args.supernet_epochs)
        supernet = train_supernet(space, data, config, progress=False, seed=args.seed).supernet
        print(f"supernet trained in {time.perf_counter() - started:.0f} s ({config.epochs} epochs)")
    evaluator = SubnetEvaluator(supernet, data, split="test", seed=args.seed)
    inherited = [evaluator(spec).accuracy for spec in specs]

    started = time.perf_counter()
    outcomes = run_jobs([Job(spec, args.data, resolution, args.epochs, args.seed) for spec in specs], args.jobs)
    standalone = [outcome.test_accuracy for outcome in outcomes]
    print(
        f"{len(specs)} standalone networks trained from scratch ({args.epochs} epochs each) in "
        f"{time.perf_counter() - started:.0f} s\n"
    )

    print(f"{'MAdds':>10} {'standalone':>10} {'inherited':>9}  architecture (test split, {data.size('test')} images)")
    for spec, s, i in zip(specs, standalone, inherited):
        print(f"{count_madds(spec):>10,} {s:>10.4f} {i:>9.4f}  {spec}")
    tau = kendalltau(standalone, inherited).statistic
    rho = spearmanr(standalone, inherited).statistic
    gap = float(np.mean(np.array(standalone) - np.array(inherited)))
    verdict = "meets" if tau >= TAU_GOAL else "MISSES"
    print(
        f"\nKendall tau {tau:.3f} ({verdict} the goal of {TAU_GOAL}), Spearman rho {rho:.3f}, "
        f"mean gap standalone - inherited {gap:+.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
