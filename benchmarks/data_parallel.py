"""Data-parallel supernet training: ``python -m benchmarks.data_parallel`` (repository root).

Trains the default supernet (the settings ``nas.search`` uses, ``--epochs`` epochs) with 1 and
with ``--workers`` data-parallel processes, ``--threads`` torch threads each, for each of
``--seeds`` seeds, and prints per run the median epoch time (the first epoch excluded) and the
final validation accuracy of the largest and the smallest sub-network, then:

- the speedup of an epoch with N workers over 1 (goal on 2 CPU cores: >= 1.6x for 2 workers
  with 1 thread each);
- the accuracy difference N workers - 1 worker, next to the spread between seeds (the noise).

Then, unless ``--no-ceiling``, the ceiling the machine allows: N independent single-process
trainings at the per-worker batch (batch / N) run side by side, with no communication at all,
and the time of one of their steps is set against a step at the whole batch in one process alone.
Their ratio bounds what N workers can gain on this machine and this network: a step does not
halve with its batch (a fixed cost per op and per sub-network) and N processes share the
machine's caches and memory. The speedup measured above is shown as a fraction of it.

With ``--subnet-parallel G`` the N workers form groups of G that split each step's sub-networks
(see :mod:`nas.distributed`): with G = N every worker sees the whole batch and the result is one
process's up to float rounding; no ceiling is measured then (it is a different one: the largest
sub-network's share of a step).

By default the N-worker runs keep the global batch (each worker takes batch / N, so that the
sub-networks, batches and learning rates are exactly those of one process; only batch-norm
statistics see smaller batches). ``--scale-batch`` gives every worker the whole batch instead
(global batch x N, half the steps per epoch for 2 workers: weak scaling) and ``--lr-scaling``
scales the peak learning rate with the global batch (``sqrt`` or ``linear``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from nas.data import load_data
from nas.device import Runtime
from nas.distributed import check_subnet_parallel, check_workers
from nas.train import SupernetTrainConfig, run_supernet_training, steps_per_epoch
from search_spaces import DEFAULT_PROXY_SPACE, SearchSpace, get_space

try:
    from benchmarks._cli import Parser, positive_int
except ImportError:  # run as a script, python benchmarks/data_parallel.py: its folder is on sys.path
    from _cli import Parser, positive_int

SPEEDUP_GOAL = 1.6


def run(
    space, data, config, runtime, workers: int, threads: int, seed: int, subnet_parallel: int = 1
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="data-parallel-") as folder:
        result = run_supernet_training(
            space, data, config, Path(folder) / "supernet.pt", seed=seed, runtime=runtime, train_workers=workers,
            subnet_parallel=subnet_parallel, threads=threads, progress=False,
        )  # fmt: skip
    seconds = [h["seconds"] for h in result.history[1:]] or [result.history[0]["seconds"]]
    last = result.history[-1]
    return {"epoch_s": float(np.median(seconds)), "largest": last["val_largest"], "smallest": last["val_smallest"]}


def step_ms(space_dict: dict, data_name: str, config: SupernetTrainConfig, threads: int, seed: int) -> float:
    """Median milliseconds of one training step (the first epoch excluded) of a plain
    single-process supernet training, on the CPU with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    space = SearchSpace.from_dict(space_dict)
    data = load_data(data_name, resolution=max(space.resolutions), seed=seed)
    with tempfile.TemporaryDirectory(prefix="data-parallel-ceiling-") as folder:
        result = run_supernet_training(space, data, config, Path(folder) / "supernet.pt", seed=seed, progress=False)
    seconds = [h["seconds"] for h in result.history[1:]] or [result.history[0]["seconds"]]
    return 1000 * float(np.median(seconds)) / steps_per_epoch(data, config.batch_size)


def side_by_side_step_ms(space, data_name: str, config, threads: int, seed: int, copies: int) -> list[float]:
    """:func:`step_ms` of ``copies`` independent trainings started together (fresh processes)."""
    with ProcessPoolExecutor(copies, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(step_ms, space.to_dict(), data_name, config, threads, seed) for _ in range(copies)]
        return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE)
    parser.add_argument("--data", default="cluttered-digits")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per worker)")
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per process on the CPU")
    parser.add_argument("--seeds", type=positive_int, default=2, help="seeds 0..N-1 for each worker count")
    parser.add_argument("--epochs", type=positive_int, default=SupernetTrainConfig().epochs)
    parser.add_argument(
        "--subnet-parallel", type=positive_int, default=1, metavar="G",
        help="the N workers split each step's sub-networks in groups of G (default 1: data parallel only)",
    )  # fmt: skip
    parser.add_argument("--scale-batch", action="store_true", help="each worker takes the whole batch (weak scaling)")
    parser.add_argument("--lr-scaling", choices=("none", "sqrt", "linear"), default="none")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the side-by-side ceiling measurement")
    parser.add_argument(
        "--ceiling-epochs", type=positive_int, default=3, help="epochs of each ceiling run (the first not timed)"
    )
    args = parser.parse_args(argv)
    try:
        runtime = Runtime.create(args.device)
        check_workers(args.workers, runtime)
        check_subnet_parallel(args.subnet_parallel, args.workers, SupernetTrainConfig().subnets_per_step)
        space = get_space(args.space)
        datasets = {seed: load_data(args.data, resolution=max(space.resolutions), seed=seed) for seed in range(args.seeds)}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = SupernetTrainConfig(epochs=args.epochs)
    factor = args.workers if args.scale_batch else 1
    lr_factor = {"none": 1.0, "sqrt": math.sqrt(factor), "linear": float(factor)}[args.lr_scaling]
    wide = dataclasses.replace(base, batch_size=base.batch_size * factor, lr=base.lr * lr_factor)
    threads = args.threads if runtime.device.type == "cpu" else None
    print(f"space {space.name}, data {args.data}, {runtime.describe()}, {threads or 'default'} thread(s) per process")
    shards = args.workers // args.subnet_parallel
    split = f", sub-networks split over groups of {args.subnet_parallel}" if args.subnet_parallel > 1 else ""
    print(
        f"1 worker: batch {base.batch_size}, lr {base.lr:g}; {args.workers} workers: global batch {wide.batch_size} "
        f"({wide.batch_size // shards} per worker{split}), lr {wide.lr:g}\n"
    )
    print(f"{'workers':>7} {'seed':>4} {'epoch s':>8} {'val largest':>11} {'val smallest':>12}")
    results: dict[int, list[dict[str, float]]] = {1: [], args.workers: []}
    for seed in range(args.seeds):
        for workers, config in ((1, base), (args.workers, wide)):
            parallel = args.subnet_parallel if workers > 1 else 1
            outcome = run(space, datasets[seed], config, runtime, workers, threads, seed, parallel)
            results[workers].append(outcome)
            print(f"{workers:>7} {seed:>4} {outcome['epoch_s']:>8.2f} {outcome['largest']:>11.4f} {outcome['smallest']:>12.4f}")

    one, many = results[1], results[args.workers]
    speedup = np.median([r["epoch_s"] for r in one]) / np.median([r["epoch_s"] for r in many])
    verdict = ""
    if runtime.device.type == "cpu" and args.workers == 2 and threads == 1:
        verdict = f" ({'meets' if speedup >= SPEEDUP_GOAL else 'MISSES'} the goal of {SPEEDUP_GOAL}x)"
    print(f"\nepoch time, 1 worker / {args.workers} workers (medians): {speedup:.2f}x{verdict}")
    for key in ("largest", "smallest"):
        difference = np.mean([m[key] - o[key] for m, o in zip(many, one)])
        spread = np.std([o[key] for o in one], ddof=1) if len(one) > 1 else float("nan")
        print(
            f"val accuracy {key}: {args.workers} workers - 1 worker = {difference:+.4f} (mean over seeds); "
            f"seed-to-seed std with 1 worker {spread:.4f}"
        )
    if args.no_ceiling or runtime.device.type != "cpu" or args.scale_batch or args.subnet_parallel > 1:
        return 0
    short = dataclasses.replace(base, epochs=args.ceiling_epochs)
    alone = step_ms(space.to_dict(), args.data, short, threads, 0)
    share = dataclasses.replace(short, batch_size=base.batch_size // args.workers)
    beside = side_by_side_step_ms(space, args.data, share, threads, 0, args.workers)
    ceiling = alone / max(beside)
    print(
        f"\nceiling: a step at batch {base.batch_size} alone {alone:.1f} ms; at batch {share.batch_size}, "
        f"{args.workers} independent processes side by side: {', '.join(f'{b:.1f}' for b in beside)} ms; "
        f"at most {ceiling:.2f}x for {args.workers} workers on this machine; measured {speedup:.2f}x = "
        f"{speedup / ceiling:.2f} of it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
