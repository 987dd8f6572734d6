"""How fast is the cost model, the inner loop of every search?

Prints architectures per second, on distinct random specs in one process, for MAdds + params +
peak memory (scalar API) and for the full cost a search trial needs, the same plus the predicted
``pixel`` latency (nothing cached between architectures: block plans and the target's result
cache are emptied before every timing run); the vectorised numpy batch form per architecture;
and the speed-up over counting with ``torch.utils.flop_counter`` on the built model.

    python benchmarks/cost_model.py [--space mobilenetv2-imagenet] [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hw_models import batch_costs, count_madds, count_params, load_target, peak_memory_bytes, predict_latency_ms
from search_spaces import build_model, get_space
from search_spaces.arch import block_plan

try:
    from benchmarks._cli import Parser, positive_int
except ImportError:  # run as a script, python benchmarks/cost_model.py: its folder is on sys.path
    from _cli import Parser, positive_int


def best_of(repeats: int, fn) -> float:
    """Smallest wall time of ``repeats`` runs (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mobilenetv2-imagenet", help="search space name or JSON path")
    parser.add_argument("--n", type=positive_int, default=20000, help="architectures per timing run")
    parser.add_argument(
        "--flop-counter-n", type=positive_int, default=10, help="architectures counted with flop_counter"
    )
    parser.add_argument("--repeats", type=positive_int, default=5, help="timing runs (the fastest is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        space = get_space(args.space)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    codes = space.sample_codes(rng, args.n)
    specs = [space.decode(c) for c in codes]
    print(f"space {space.name}: {space.num_architectures():,} architectures; {args.n:,} random ones per run")

    def scalar() -> None:
        block_plan.cache_clear()  # every spec is costed from scratch
        for spec in specs:
            count_madds(spec)
            count_params(spec)
            peak_memory_bytes(spec)

    def full() -> None:
        block_plan.cache_clear()
        pixel = load_target("pixel").renamed("pixel")  # a fresh copy: empty result cache
        for spec in specs:
            count_madds(spec)
            count_params(spec)
            peak_memory_bytes(spec)
            predict_latency_ms(spec, pixel)

    t_scalar = best_of(args.repeats, scalar) / args.n
    t_full = best_of(args.repeats, full) / args.n
    t_batch = best_of(args.repeats, lambda: batch_costs(space, codes)) / args.n
    print(
        f"scalar  (count_madds + count_params + peak_memory_bytes): {1 / t_scalar:,.0f} arch/s ({t_scalar * 1e6:.1f} us/arch); goal >= 20,000 arch/s"
    )
    print(
        f"full    (the same + predict_latency_ms(spec, 'pixel')):   {1 / t_full:,.0f} arch/s ({t_full * 1e6:.1f} us/arch); goal >= 20,000 arch/s"
    )
    print(
        f"batch   (batch_costs on encodings, numpy):               {1 / t_batch:,.0f} arch/s ({t_batch * 1e6:.2f} us/arch)"
    )
    print(f"batch speed-up per architecture: {t_scalar / t_batch:.1f}x; goal >= 10x")

    flop_specs = specs[: args.flop_counter_n]

    def flop_count() -> None:
        for spec in flop_specs:
            model = build_model(spec).eval()
            with FlopCounterMode(display=False), torch.no_grad():
                model(torch.zeros(1, 3, spec.resolution, spec.resolution))
            sum(p.numel() for p in model.parameters())

    t_flop = best_of(1, flop_count) / len(flop_specs)
    print(
        f"flop_counter on the built model (build + count + params):  {1 / t_flop:,.1f} arch/s ({t_flop * 1e3:.1f} ms/arch)"
    )
    print(f"speed-up over flop_counter: scalar {t_flop / t_scalar:,.0f}x, batch {t_flop / t_batch:,.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
