"""Supernet speed: ``python -m benchmarks.supernet_speed`` (from the repository root).

Prints:
1. the wall time of the default supernet training on the embedded dataset (goal: at most 3
   minutes on 2 CPU cores), with its per-epoch figures;
2. the cost of a sub-network's forward pass through the supernet relative to the extracted
   standalone model with the same weights (batch 64, eval mode; goal: at most 1.15x), for the
   largest, the smallest and random sub-networks, timed in interleaved rounds.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from nas.data import load_data
from nas.device import Runtime
from nas.train import SupernetTrainConfig, train_supernet
from search_spaces import DEFAULT_PROXY_SPACE, get_space
from search_spaces.supernet import Supernet

try:
    from benchmarks._cli import Parser, non_negative_int, positive_int
except ImportError:  # run as a script, python benchmarks/supernet_speed.py: its folder is on sys.path
    from _cli import Parser, non_negative_int, positive_int

TRAINING_GOAL_S = 180.0
FORWARD_GOAL = 1.15


def forward_ratios(
    supernet: Supernet, specs: list, batch_size: int, rounds: int, threads: int, runtime: Runtime | None = None
) -> list[tuple[object, float, float]]:
    """Per spec: (spec, standalone median ms, supernet/standalone ratio of medians), both timed
    alternately in each round so that changing machine load hits both alike."""
    runtime = runtime or Runtime.create("cpu", channels_last=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    results = []
    runtime.module(supernet)
    try:
        with torch.inference_mode():
            for spec in specs:
                model = runtime.module(supernet.extract(spec).eval())
                x = runtime.tensor(torch.randn(batch_size, 3, spec.resolution, spec.resolution))
                for _ in range(3):
                    supernet(x, spec)
                    model(x)
                times = {"supernet": [], "standalone": []}
                for _ in range(rounds):
                    start = time.perf_counter()
                    supernet(x, spec)
                    runtime.synchronize()
                    middle = time.perf_counter()
                    model(x)
                    runtime.synchronize()
                    times["supernet"].append(middle - start)
                    times["standalone"].append(time.perf_counter() - middle)
                standalone = float(np.median(times["standalone"]))
                results.append((spec, standalone * 1e3, float(np.median(times["supernet"])) / standalone))
    finally:
        torch.set_num_threads(previous)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE)
    parser.add_argument("--data", default="cluttered-digits")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the default)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2: a 2-core laptop)")
    parser.add_argument("--archs", type=positive_int, default=10, help="random sub-networks for the forward ratio")
    parser.add_argument("--rounds", type=positive_int, default=20, help="interleaved timing rounds per sub-network")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--skip-training", action="store_true", help="time the forward pass only (random weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|cuda:N|mps (default cpu: the goals are CPU goals)")
    parser.add_argument("--precision", default="fp32", help="training precision: fp32, bf16 or fp16")
    parser.add_argument("--data-workers", type=non_negative_int, default=0, help="DataLoader worker processes during training")
    args = parser.parse_args(argv)
    try:
        runtime = Runtime.create(args.device, args.precision)
        space = get_space(args.space)
        data = load_data(args.data, resolution=max(space.resolutions), seed=args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    print(f"space {space.name}, data {data.describe()}, {runtime.describe()}, {args.threads} torch threads")
    if args.skip_training:
        supernet = Supernet(space).eval()
    else:
        config = SupernetTrainConfig() if args.epochs is None else SupernetTrainConfig(epochs=args.epochs)
        started = time.perf_counter()
        result = train_supernet(
            space, data, config, progress=False, seed=args.seed, runtime=runtime, data_workers=args.data_workers
        )
        seconds = time.perf_counter() - started
        supernet = result.supernet
        last = result.history[-1]
        per_epoch = [h["seconds"] for h in result.history]
        print(
            f"supernet training: {seconds:.0f} s for {config.epochs} epochs "
            f"(per epoch: median {np.median(per_epoch):.1f} s, first {per_epoch[0]:.1f} s); "
            f"val accuracy largest {last['val_largest']:.3f}, smallest {last['val_smallest']:.3f}"
        )
        verdict = "meets" if seconds <= TRAINING_GOAL_S else "MISSES"
        print(f"  {verdict} the goal of {TRAINING_GOAL_S:.0f} s on 2 cores")

    rng = np.random.default_rng(args.seed)
    specs = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(args.archs))]
    # The forward-pass goal is about the supernet's slicing: timed in NCHW, float32, as before.
    plain = Runtime(runtime.device, "fp32", channels_last=False)
    results = forward_ratios(supernet.eval(), specs, args.batch_size, args.rounds, args.threads, plain)
    print(f"\nforward pass, batch {args.batch_size}: supernet vs extracted standalone model (same weights)")
    print(f"{'standalone ms':>14} {'ratio':>7}  architecture")
    for spec, ms, ratio in results:
        print(f"{ms:>14.2f} {ratio:>7.3f}  {spec}")
    ratios = np.array([r for _, _, r in results])
    verdict = "meets" if np.median(ratios) <= FORWARD_GOAL else "MISSES"
    print(
        f"ratio: median {np.median(ratios):.3f}, mean {ratios.mean():.3f}, max {ratios.max():.3f} over "
        f"{len(ratios)} sub-networks; {verdict} the goal of {FORWARD_GOAL}x (median)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
