"""Training throughput: ``python -m benchmarks.train_throughput`` (from the repository root).

Prints, on the chosen ``--device``:
1. data-loader images/s: one epoch of training batches (decode, random crop) for each
   ``--data-workers`` count, with and without moving them to the device and normalising;
2. supernet training images/s with 1 and ``--workers`` data-parallel processes (``--threads``
   torch threads each on the CPU, one GPU each on CUDA) in each precision the device runs
   (``--precisions``), from the epochs after the first (the first pays for kernel selection and
   oneDNN code generation);
3. the ratios: N workers over 1 in each precision (goal on 2 CPU cores: >= 1.6x for 2 workers
   with 1 thread each), and each precision over fp32.

Every run trains the same supernet settings as ``nas.search`` (``--epochs`` of them) into a
temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas.data import load_data, model_input, train_loader
from nas.device import Runtime
from nas.distributed import check_subnet_parallel, check_workers
from nas.train import SupernetTrainConfig, run_supernet_training
from search_spaces import DEFAULT_PROXY_SPACE, get_space

try:
    from benchmarks._cli import Parser, non_negative_int, positive_int
except ImportError:  # run as a script, python benchmarks/train_throughput.py: its folder is on sys.path
    from _cli import Parser, non_negative_int, positive_int

SPEEDUP_GOAL = 1.6


def default_precisions(runtime: Runtime) -> list[str]:
    """What the device trains in: fp32 and bf16 on the CPU, plus fp16 on a GPU."""
    if runtime.device.type == "cpu":
        return ["fp32", "bf16"]
    if runtime.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return ["fp32", "fp16"]
    return ["fp32", "bf16", "fp16"]


def loader_rate(data, batch_size: int, workers: int, runtime: Runtime | None, seed: int) -> float:
    """Images per second of one training epoch's batches (to the device and normalised if ``runtime``)."""
    loader = train_loader(data, batch_size, seed=seed, workers=workers, pin_memory=runtime is not None and runtime.pin_memory)
    loader.sampler.set_epoch(0)
    batches = model_input(loader, data, runtime) if runtime is not None else loader
    started, images = time.perf_counter(), 0
    for _, y in batches:
        images += len(y)
    if runtime is not None:
        runtime.synchronize()
    return images / (time.perf_counter() - started)


def training_rate(space, data, config, runtime: Runtime, workers: int, threads: int | None, data_workers: int, seed: int, subnet_parallel: int = 1) -> tuple[float, float]:
    """(images/s, last epoch's seconds) of supernet training with ``workers`` processes."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as folder:
        result = run_supernet_training(
            space, data, config, Path(folder) / "supernet.pt", seed=seed, runtime=runtime, train_workers=workers,
            subnet_parallel=subnet_parallel, threads=threads, data_workers=data_workers, progress=False,
        )  # fmt: skip
    steady = result.history[1:] or result.history
    return float(np.median([h["images_per_second"] for h in steady])), float(steady[-1]["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE)
    parser.add_argument("--data", default="cluttered-digits")
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: all the device runs)")
    parser.add_argument("--workers", type=positive_int, default=2, help="data-parallel processes to compare with 1")
    parser.add_argument(
        "--subnet-parallel", type=positive_int, default=1, metavar="G",
        help="the workers split each step's sub-networks in groups of G (default 1: data parallel only)",
    )  # fmt: skip
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per training process on the CPU")
    parser.add_argument("--data-workers", default="0,2", help="comma-separated DataLoader worker counts for the loader figures")
    parser.add_argument("--train-data-workers", type=non_negative_int, default=0, help="DataLoader workers during the training runs")
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per training run (the first is not counted)")
    parser.add_argument("--batch-size", type=positive_int, default=SupernetTrainConfig().batch_size)
    parser.add_argument("--max-train", type=positive_int, default=None, help="train on a subset of this many images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        runtime = Runtime.create(args.device)
        check_workers(args.workers, runtime)
        check_subnet_parallel(args.subnet_parallel, args.workers, SupernetTrainConfig().subnets_per_step)
        precisions = args.precisions.split(",") if args.precisions else default_precisions(runtime)
        runtimes = {p: Runtime.create(args.device, p) for p in precisions}
        loader_workers = [w.strip() for w in args.data_workers.split(",")]
        if not all(w.isdecimal() for w in loader_workers):
            raise ValueError(
                f"--data-workers must list integers >= 0 separated by commas, but got {args.data_workers!r}"
            )
        loader_workers = [int(w) for w in loader_workers]
        space = get_space(args.space)
        data = load_data(args.data, resolution=max(space.resolutions), seed=args.seed, max_train=args.max_train)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = args.threads if runtime.device.type == "cpu" else None
    if threads is not None:
        torch.set_num_threads(threads)
    config = SupernetTrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    print(f"device {runtime.describe()}, space {space.name}, data {data.describe()}")
    print(f"batch {args.batch_size} (global), {args.epochs} epochs per run, {threads or 'default'} torch thread(s) per process\n")

    print("data loader, one epoch of training batches (random crops):")
    for workers in loader_workers:
        raw = loader_rate(data, args.batch_size, workers, None, args.seed)
        moved = loader_rate(data, args.batch_size, workers, runtime, args.seed)
        print(f"  {workers} loader worker(s): {raw:>10,.0f} images/s; to {runtime.device} and normalised {moved:>10,.0f} images/s")

    print(f"\nsupernet training ({', '.join(precisions)}; 1 and {args.workers} worker processes):")
    rates: dict[tuple[str, int], float] = {}
    for precision in precisions:
        for workers in sorted({1, args.workers}):
            parallel = args.subnet_parallel if workers > 1 else 1
            rate, seconds = training_rate(space, data, config, runtimes[precision], workers, threads, args.train_data_workers, args.seed, parallel)
            rates[(precision, workers)] = rate
            print(f"  {precision:>5}, {workers} worker(s): {rate:>9,.0f} images/s (last epoch {seconds:.1f} s)")

    print("\nratios:")
    for precision in precisions:
        if args.workers > 1:
            ratio = rates[(precision, args.workers)] / rates[(precision, 1)]
            goal = ""
            if runtime.device.type == "cpu" and args.workers == 2 and threads == 1:
                goal = f" ({'meets' if ratio >= SPEEDUP_GOAL else 'MISSES'} the goal of {SPEEDUP_GOAL}x on 2 cores)"
            print(f"  {precision}: {args.workers} workers / 1 worker = {ratio:.2f}x{goal}")
    for precision in precisions:
        if precision != "fp32" and "fp32" in precisions:
            for workers in sorted({1, args.workers}):
                print(f"  {precision} / fp32 with {workers} worker(s) = {rates[(precision, workers)] / rates[('fp32', workers)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
