"""Peak activation memory and time of the Section 5 executor against the number of chunks t.

For t = 1..T, runs MobileNetV2 (default 1.0@224, fp32, batch 1; ``--arch`` for any reference-zoo
network, arch.json or compact string, e.g. ``--arch mobilenet_v3_large``) with
``hw_models.executor.SplitExecutor`` and prints:

- measured: peak bytes of live activation storages (``hw_models.memtrace``: every tensor an aten
  op allocates during the run, the input image included, freed when its last tensor dies);
- model: ``peak_memory_bytes(spec, "split", t=t, bytes_per_element=4)``;
- allocator: peak of the CPU allocator's own alloc/free stream (``torch.profiler`` memory events),
  which also sees scratch buffers kernels allocate internally (oneDNN reorders); it is what the
  process really needs on top of the weights;
- time: median wall time per inference over ``--repeats`` rounds (the t values are interleaved in
  every round, so background load affects them alike), and relative to t = 1.

Printed for reference: plain layer-by-layer inference with batch norm folded
(``hw_models.executor.NaiveExecutor``, the image held by the caller), measured against
``peak_memory_bytes(spec, "naive")``, and the plain ``model.eval()`` forward (nn.Module, batch norm
not folded).

    python benchmarks/memory_split.py [--arch mobilenet_v2] [--resolution 224] [--width-mult 1.0]
        [--max-t 8] [--repeats 30] [--threads 1] [--proxy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from hw_models import peak_memory_bytes
from hw_models.executor import NaiveExecutor, SplitExecutor
from hw_models.memtrace import measure_peak_bytes
from hw_models.report import resolve_arch
from search_spaces import ArchSpec, build_model, get_space

try:
    from benchmarks._cli import Parser, positive_float, positive_int
except ImportError:  # run as a script, python benchmarks/memory_split.py: its folder is on sys.path
    from _cli import Parser, positive_float, positive_int


def allocator_peak_bytes(fn: Callable[[], object]) -> int | None:
    """Peak of the CPU allocator's running total during ``fn()`` from torch.profiler memory events
    (a private profiler API: returns None if this torch does not offer it)."""
    # kineto logs every profiler start/stop ("USDT: ... profiler_start") to stderr; level 6 is
    # above all its levels. Read when the profiler first starts, so a user's own setting wins.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            e = stack.pop()
            if e.tag == _EventType.Allocation:
                events.append((e.start_time_ns, e.extra_fields.alloc_size))
            stack.extend(e.children)
    except (ImportError, AttributeError, RuntimeError):
        return None
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def run(spec: ArchSpec, max_t: int, repeats: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    shape = (1, 3, spec.resolution, spec.resolution)
    x = torch.randn(shape)
    executors = {t: SplitExecutor(model, t) for t in range(1, max_t + 1)}
    with torch.no_grad():
        ref = model(x)
        for ex in executors.values():
            assert (ex(x) - ref).abs().max().item() <= 1e-4

    times: dict[str, list[float]] = {str(t): [] for t in executors} | {"plain": []}
    with torch.no_grad():
        for _ in range(2):  # warm-up (oneDNN primitive caches)
            model(x)
            for ex in executors.values():
                ex(x)
        for _ in range(repeats):
            for t, ex in executors.items():
                t0 = time.perf_counter()
                ex(x)
                times[str(t)].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model(x)
            times["plain"].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in times.items()}

    print(f"architecture: {spec.to_string()}")
    print(f"fp32, batch 1, {torch.get_num_threads()} thread(s), median of {repeats} runs")
    header = f"{'t':>5}  {'measured B':>11}  {'model B':>11}  {'meas/model':>10}  {'allocator B':>11}  {'ms':>7}  {'time/t=1':>8}"
    print(header)
    base = median["1"]
    for t, ex in executors.items():
        _, measured = measure_peak_bytes(lambda ex=ex: ex.run([torch.randn(shape)]))
        predicted = peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)
        alloc = allocator_peak_bytes(lambda ex=ex: ex.run([torch.randn(shape)]))
        alloc_text = "n/a" if alloc is None else f"{alloc:,}"
        print(
            f"{t:>5}  {measured:>11,}  {predicted:>11,}  {measured / predicted:>10.4f}  {alloc_text:>11}  "
            f"{median[str(t)] * 1e3:>7.2f}  {median[str(t)] / base:>8.3f}"
        )
    naive_executor = NaiveExecutor(model)
    with torch.no_grad():
        assert (naive_executor(x) - ref).abs().max().item() <= 1e-4
    _, naive_measured = measure_peak_bytes(lambda: naive_executor(torch.randn(shape)))
    naive = peak_memory_bytes(spec, "naive", bytes_per_element=4)
    naive_alloc = allocator_peak_bytes(lambda: naive_executor(torch.randn(shape)))
    print(
        f"naive (layer by layer, BN folded): measured {naive_measured:,} B, model {naive:,} B "
        f"({naive_measured / naive:.4f}), allocator {'n/a' if naive_alloc is None else f'{naive_alloc:,}'} B"
    )
    _, plain_measured = measure_peak_bytes(lambda: model(torch.randn(shape)))
    plain_alloc = allocator_peak_bytes(lambda: model(torch.randn(shape)))
    print(
        f"plain model.forward (BN not folded): measured {plain_measured:,} B, "
        f"allocator {'n/a' if plain_alloc is None else f'{plain_alloc:,}'} B, "
        f"{median['plain'] * 1e3:.2f} ms ({median['plain'] / base:.3f} x executor t=1)"
    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--arch", default="mobilenet_v2", help="a reference-zoo name, an arch.json path or a compact string"
    )
    parser.add_argument("--resolution", type=positive_int, default=None, help="default: the architecture's (224)")
    parser.add_argument("--width-mult", type=positive_float, default=1.0)
    parser.add_argument("--max-t", type=positive_int, default=8, help="largest number of chunks t")
    parser.add_argument("--repeats", type=positive_int, default=30, help="timing rounds (the median is kept)")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch intra-op threads (pinned for the whole run)"
    )
    parser.add_argument("--proxy", action="store_true", help="also run the largest proxy-digits architecture")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        spec = resolve_arch(args.arch, args.width_mult, args.resolution)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    run(spec, args.max_t, args.repeats, args.seed)
    if args.proxy:
        space = get_space("proxy-digits")
        run(space.largest(), args.max_t, args.repeats * 10, args.seed)
        run(space.sample(np.random.default_rng(args.seed)), args.max_t, args.repeats * 10, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
