"""Latency cost model benchmark: ``python -m benchmarks.latency`` (from the repository root).

Prints in one run:
1. ``pixel``: nested leave-one-out error over the 16 TF-slim rows and the 4 searched networks'
   latency ratios, and the same figures for "latency proportional to MAdds" (other published
   phone latencies are kept aside to check generalisation and are not in this repository);
2. ``host``: predicted vs measured end-to-end latency of random architectures of the target's
   search space (same runtime and threads as the target was profiled with): MAPE and the share
   within +-10% (nn-Meter's metric);
3. measurement spread: the median IQR/median of one measurement, and the run-to-run variation of
   the median over repeated measurements of the same networks;
4. the cost of one ``predict_latency_ms`` call.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from hw_models import load_target, measure_many, predict_latency_ms
from hw_models.opmodel import FEATURES
from hw_models.predict import (
    pixel_network_data,
)
from search_spaces import block_plan, get_space

try:
    from benchmarks._cli import Parser, positive_int
except ImportError:  # run as a script, python benchmarks/latency.py: its folder is on sys.path
    from _cli import Parser, positive_int


MIN_ARCHS = 30  # nn-Meter reports its within +-10% accuracy on at least this many architectures


def pixel_section() -> None:
    target = load_target("pixel")
    fit = target.fit
    print("== pixel (TF-Lite float, Pixel 1 big core) ==")
    print(
        f"fitted on {fit['absolute_rows']} TF-slim rows (ms) + {fit['ratio_rows']} searched networks "
        f"(ratio to MobileNetV2 of their source); GEMM tiles (K, N) = {target.gemm_tile}; coefficients:"
    )
    for name, value in zip(FEATURES, target.coefficients):
        print(f"  {name:>13s} {value:.4g} ms")
    madds = fit["madds_rule"]
    print(
        f"leave-one-out MAPE (nested over the tile choice): TF-slim rows {fit['cv_mape_pct_absolute_rows']:.2f}%, "
        f"searched-network ratios {fit['cv_mape_pct_ratio_rows']:.2f}% (max {fit['cv_max_ape_pct_ratio_rows']:.1f}%); "
        f"latency ~ MAdds: {madds['cv_mape_pct_absolute_rows']:.2f}% and {madds['cv_mape_pct_ratio_rows']:.2f}%"
    )
    n_abs = fit["absolute_rows"]
    names, specs, ratios, refs = pixel_network_data()
    for name, spec, ratio, ref, loo, rule in zip(
        names, specs, ratios, refs, fit["cv_errors_pct"][n_abs:], madds["cv_errors_pct"][n_abs:]
    ):
        fitted = target.predict(spec) / target.predict(ref)
        print(
            f"  {name:>20s} published ratio {ratio:.3f}  fitted {fitted:.3f} ({100 * (fitted / ratio - 1):+5.1f}%)  "
            f"left out {loo:+5.1f}%  MAdds ratio {rule:+5.1f}%"
        )
    every = np.abs(fit["cv_errors_pct"])
    print(
        f"all {len(every)} fitting rows, each left out in turn: mean {every.mean():.2f}% "
        f"(latency ~ MAdds: {np.mean(np.abs(madds['cv_errors_pct'])):.2f}%)"
    )


def host_section(target_name: str, n: int, seed: int, repeats: int, rounds: int) -> None:
    target = load_target(target_name)
    if target.lookup is None:
        print(f"== {target_name}: not a measured lookup-table target; skipping the end-to-end comparison ==")
        return
    runtime, threads = target.lookup.runtime, target.lookup.threads
    space = get_space(target.provenance.get("space", "proxy-digits"))
    print(
        f"\n== {target_name} ({target.provenance.get('device')}; {target.provenance.get('runtime')}; profiled {target.provenance.get('date')}) =="
    )
    rng = np.random.default_rng(seed)
    specs = [space.sample(rng) for _ in range(n)]
    coverage = np.mean([target.coverage(s) for s in specs])
    started = time.perf_counter()
    measured = measure_many(specs, runtime, threads=threads, repeats=repeats, rounds=rounds, progress=True, seed=seed)
    took = time.perf_counter() - started
    statistic = target.lookup.statistic
    y = np.array([m.value(statistic) for m in measured])
    p = np.array([target.predict(s) for s in specs])
    err = (p - y) / y
    print(
        f"{n} random architectures of {space.name} (seed {seed}), {runtime}, {threads} thread(s), "
        f"{statistic} of {repeats} samples in {rounds} interleaved rounds ({took:.0f} s); lookup coverage {100 * coverage:.0f}%"
    )
    print(f"measured {y.min():.4f}-{y.max():.4f} ms (median {np.median(y):.4f} ms)")
    print(
        f"MAPE {100 * np.mean(np.abs(err)):.2f}%; within +-10%: {100 * np.mean(np.abs(err) <= 0.10):.1f}% "
        f"({int(np.sum(np.abs(err) <= 0.10))}/{n}); within +-5%: {100 * np.mean(np.abs(err) <= 0.05):.1f}%; "
        f"max {100 * np.max(np.abs(err)):.1f}%; mean signed {100 * np.mean(err):+.2f}%"
    )
    if n >= 3:
        ranks_true = np.empty(n)
        ranks_true[np.argsort(y)] = np.arange(n)
        ranks_pred = np.empty(n)
        ranks_pred[np.argsort(p)] = np.arange(n)
        print(f"rank correlation (Spearman) predicted vs measured: {np.corrcoef(ranks_true, ranks_pred)[0, 1]:.3f}")
    spread = np.array([m.rel_spread for m in measured])
    print(f"\n== measurement spread ({runtime}, {threads} thread(s)) ==")
    print(
        f"one measurement: IQR/median of the samples, median over the {n} networks {100 * np.median(spread):.1f}% (max {100 * spread.max():.1f}%)"
    )
    k = min(8, n)
    again = [
        measure_many(specs[:k], runtime, threads=threads, repeats=repeats, rounds=rounds, seed=seed + r)
        for r in range(2)
    ]
    for stat in ("median", "p10"):
        table = np.array([[m.value(stat) for m in measured[:k]]] + [[m.value(stat) for m in ms] for ms in again])
        cv = table.std(axis=0, ddof=1) / table.mean(axis=0)
        print(
            f"run to run: the {stat} of {k} networks measured 3 times; coefficient of variation "
            f"median {100 * np.median(cv):.2f}%, max {100 * cv.max():.2f}%"
        )


def predict_cost_section(seed: int) -> None:
    print("\n== cost of predict_latency_ms ==")
    # host on the ImageNet space is outside its profiled space (fallback model): only the cost matters here
    warnings.filterwarnings("ignore", message="latency target 'host'", category=UserWarning)
    for space_name in ("proxy-digits", "mobilenetv2-imagenet"):
        space = get_space(space_name)
        specs = [space.sample(np.random.default_rng(seed + i)) for i in range(2000)]
        for name in ("pixel", "host"):
            block_plan.cache_clear()
            load_target(name)
            start = time.perf_counter()
            for s in specs:
                predict_latency_ms(s, name)
            cold = (time.perf_counter() - start) / len(specs) * 1e6
            start = time.perf_counter()
            for s in specs:
                predict_latency_ms(s, name)
            warm = (time.perf_counter() - start) / len(specs) * 1e6
            block_plan.cache_clear()
            for s in specs:
                block_plan(s)
            fresh = load_target(name).renamed(name)  # empty result cache, block plans cached
            start = time.perf_counter()
            for s in specs:
                predict_latency_ms(s, fresh)
            planned = (time.perf_counter() - start) / len(specs) * 1e6
            print(
                f"{space_name:>21s} {name:>5s}: new spec {cold:6.1f} us ({planned:5.1f} us when its block_plan is "
                f"already cached by another cost model); repeated spec {warm:4.1f} us"
            )


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="host", help="measured target to compare with this machine")
    parser.add_argument(
        "--archs",
        type=positive_int,
        default=40,
        help=f"random architectures for the host comparison (the within +-10%% figure needs >= {MIN_ARCHS})",
    )
    parser.add_argument("--seed", type=int, default=2024, help="architecture sampling seed (profiling uses 0)")
    parser.add_argument("--repeats", type=positive_int, default=100)
    parser.add_argument("--rounds", type=positive_int, default=10)
    parser.add_argument("--skip-host", action="store_true")
    args = parser.parse_args(argv)
    if args.archs < MIN_ARCHS and not args.skip_host:
        print(
            f"warning: --archs {args.archs} is below {MIN_ARCHS}; the nn-Meter-style within +-10% figure is "
            f"defined on >= {MIN_ARCHS} architectures, so read it as indicative only",
            file=sys.stderr,
        )
    try:
        pixel_section()
        if not args.skip_host:
            host_section(args.target, args.archs, args.seed, args.repeats, args.rounds)
        predict_cost_section(args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
