"""``python -m hw_models.profile --target-name host``: build a latency target for this machine.

Measures every part a search space can contain (stem, each distinct inverted-residual block with
its squeeze-excitation and activations, head, pool + [MobileNetV3 last conv +] classifier) on this machine with the chosen runtime and thread count: with PyTorch
inside a set of whole networks that together contain every part (so parts see the caches and call
overheads of a real forward pass), with ONNX Runtime each part exported and timed in its own
session. Fits the per-network overhead (end to end minus the sum of parts) and the per-op model
to the same measurements (the fallback for parts not in the table), and writes a target JSON (by
default into the user target directory, so ``--target NAME`` finds it). A measured target
describes the space it was profiled on: the ops beyond MobileNetV2's that its networks use
(squeeze-excitation, h-swish, the MobileNetV3 head) are the ones it can predict.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from invres_utils.atomic_files import check_writable_file
from invres_utils.cli import OneLineParser, non_negative_int, positive_int
from search_spaces.arch import ArchSpec, BlockPlan, block_plan
from search_spaces.builder import InvertedResidual, InvertedResidualNet, build_model
from search_spaces.space import SearchSpace
from search_spaces.spaces import DEFAULT_PROXY_SPACE, get_space

from .measure import RUNTIMES, STATISTICS, cpu_name, runners, summarize, time_interleaved, torch_threads
from .opmodel import TILE_PAIRS, fit_matrices, spec_ops
from .targets import (
    LatencyTarget,
    LookupTable,
    check_target_name,
    part_features,
    spec_part_keys,
    user_target_dir,
)

PART_ORDER = ("stem", "blocks", "head", "classifier")


@dataclass(frozen=True)
class Part:
    kind: str
    key: tuple
    spec: ArchSpec  # a network containing the part
    plan: BlockPlan | None = None  # blocks only


def _context_params(space: SearchSpace, stage: int) -> Iterator[dict[str, Any]]:
    """Choices of the stages before ``stage`` that can change its blocks: the previous stage's
    width (its input channels) and, with the ``expansion`` shortcut, what the previous block's
    expanded tensor looks like (previous expansion, repeats and the width before it). The
    previous stage's blocks all take one expansion (per-block stages included): its last block's
    is what matters."""
    if stage == 0:
        yield {}
        return
    prev = space.stages[stage - 1]
    k = min(prev.kernel_sizes)
    if "expansion" not in space.shortcuts:
        for c in prev.channels:
            yield space.stage_params(stage - 1, min(prev.expansions), c, min(prev.repeats), k)
        return
    before = space.stages[stage - 2].channels if stage >= 2 else (None,)
    for c, t, r, c2 in itertools.product(
        prev.channels, prev.expansions, {min(prev.repeats), max(prev.repeats)}, before
    ):
        params = space.stage_params(stage - 1, t, c, r, k)
        if c2 is not None:
            params[f"s{stage - 2}_channels"] = c2
        yield params


def _previous_block_expansions(space: SearchSpace, stage: int, expansion: int) -> Iterator[int | None]:
    """With the ``expansion`` shortcut, a block of a per-block stage sees the expanded tensor of
    the block before it, which may have another expansion: the expansions that block can take
    (``None``: the same as this one's, the only case for a per-stage expansion)."""
    st = space.stages[stage]
    yield None
    if st.per_block and max(st.repeats) > 1 and "expansion" in space.shortcuts:
        yield from (t for t in st.expansions if t != expansion)


def space_parts(space: SearchSpace) -> list[Part]:
    """Every distinct part any architecture of ``space`` contains, derived with ``block_plan`` on
    small sets of networks that cover each stage's possible contexts."""
    base = space.params_from_spec(space.smallest())
    found: dict[tuple[str, tuple], Part] = {}

    def add(kind: str, key: tuple, spec: ArchSpec, plan: BlockPlan | None = None) -> None:
        found.setdefault((kind, key), Part(kind, key, spec, plan))

    for resolution, act, shortcut in itertools.product(
        space.resolutions, space.bottleneck_activations, space.shortcuts
    ):
        common = {**base, "resolution": resolution, "bottleneck_activation": act, "shortcut": shortcut}
        for i, st in enumerate(space.stages):
            for ctx in _context_params(space, i):
                for t, c, k in itertools.product(st.expansions, st.channels, st.kernel_sizes):
                    for t_first in _previous_block_expansions(space, i, t):
                        params = {**common, **ctx, **space.stage_params(i, t, c, max(st.repeats), k)}
                        if t_first is not None:  # the second block sees a first block of another expansion
                            params[f"s{i}_b0_expansion"] = t_first
                        _add_stage_parts(add, space, space.spec_from_params(params), i)
    return sorted(found.values(), key=lambda p: (PART_ORDER.index(p.kind), str(p.key)))


def _add_stage_parts(add: Callable[..., None], space: SearchSpace, spec: ArchSpec, i: int) -> None:
    """The blocks of stage ``i`` of ``spec`` (and its stem or head and classifier at the ends)."""
    keys = spec_part_keys(spec)
    for plan, key in zip(block_plan(spec), keys["blocks"]):
        if plan.stage == i:
            add("blocks", key, spec, plan)
    if i == 0:
        add("stem", keys["stem"][0], spec)
    if i == len(space.stages) - 1:
        add("head", keys["head"][0], spec)
        add("classifier", keys["classifier"][0], spec)


class _Tail(nn.Module):
    """Global pool -> [MobileNetV3 last conv] -> flatten -> dropout -> classifier, as
    ``InvertedResidualNet.forward`` ends."""

    def __init__(self, net: InvertedResidualNet) -> None:
        super().__init__()
        self.pool, self.last_conv, self.dropout, self.classifier = net.pool, net.last_conv, net.dropout, net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tail(self, x)


def _tail(net: InvertedResidualNet | _Tail, x: torch.Tensor) -> torch.Tensor:
    x = net.pool(x)
    if net.last_conv is not None:
        x = net.last_conv(x)
    return net.classifier(net.dropout(x.flatten(1)))


class _WideBlock(nn.Module):
    """A block that receives the previous block's expanded tensor (held as a constant here)."""

    def __init__(self, block: InvertedResidual, wide: torch.Tensor) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("wide", wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.forward_wide(x, self.wide)[0]


def part_module(part: Part, generator: torch.Generator) -> tuple[nn.Module, tuple[int, ...]]:
    """The module a part runs and its input shape (batch 1), built by the project's builder."""
    spec = part.spec
    if part.kind == "blocks":
        p = part.plan
        assert p is not None
        block = InvertedResidual.from_plan(p, spec.bottleneck_activation)
        shape = (1, p.in_channels, p.in_size, p.in_size)
        if p.wide_shortcut:
            wide = torch.randn((1, p.hidden, p.in_size, p.in_size), generator=generator)
            return _WideBlock(block, wide).eval(), shape
        return block.eval(), shape
    net = build_model(spec).eval()
    if part.kind == "stem":
        return net.stem, (1, 3, spec.resolution, spec.resolution)
    if part.kind == "head":
        size = part.key[2]
        return net.head, (1, spec.stages[-1].channels, size, size)
    size, pooled = part.key[1], part.key[3] or spec.last_channels
    return _Tail(net).eval(), (1, pooled, size, size)


def covering_networks(
    parts: list[Part], needed: set[tuple[str, tuple]], space: SearchSpace | None = None, seed: int = 0, pool: int = 2000
) -> list[ArchSpec]:
    """A small set of networks that together contain every ``(kind, key)`` in ``needed``: greedy
    set cover over ``pool`` random networks of ``space`` at maximal depth plus the networks that
    revealed each part (which guarantee a cover exists). Every block of a per-block stage takes
    its own random choices."""
    candidates = list(dict.fromkeys(p.spec for p in parts))
    if space is not None:
        rng = np.random.default_rng(seed)
        codes = (rng.random((pool, len(space.cardinalities))) * space.cardinalities).astype(np.int64)
        for j, (name, choices) in enumerate(space.dimensions()):
            if name.endswith("_repeats"):
                codes[:, j] = choices.index(max(choices))
        candidates += [space.decode(code) for code in codes]
        candidates = list(dict.fromkeys(candidates))
    contents = {s: {(k, key) for k, keys in spec_part_keys(s).items() for key in keys} for s in candidates}
    uncovered, chosen = set(needed), []
    while uncovered:
        best = max(candidates, key=lambda s: len(contents[s] & uncovered))
        gain = contents[best] & uncovered
        if not gain:
            raise ValueError(f"no network of the space contains {sorted(uncovered)[:3]}")
        chosen.append(best)
        uncovered -= gain
    return chosen


def timed_forward(net: InvertedResidualNet, x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """``InvertedResidualNet.forward`` with a clock reading around each part: stem, every block,
    head, and pool + [last conv +] classifier (the stamps delimit ``2 + num_blocks + 1`` parts)."""
    clock = time.perf_counter
    stamps = [clock()]
    h = net.stem(x)
    stamps.append(clock())
    if net.spec.shortcut == "expansion":
        wide: torch.Tensor | None = None
        for block in net.blocks:
            h, wide = block.forward_wide(h, wide)
            stamps.append(clock())
    else:
        for block in net.blocks:
            h = block(h)
            stamps.append(clock())
    h = net.head(h)
    stamps.append(clock())
    out = _tail(net, h)
    stamps.append(clock())
    return out, stamps


def measure_in_context(
    specs: list[ArchSpec],
    threads: int,
    warmup: int,
    repeats: int,
    rounds: int,
    seed: int,
    progress: bool,
    desc: str,
    statistic: str = "median",
) -> dict[str, dict[tuple, float]]:
    """PyTorch: time every part *inside* whole networks (a clock reading between parts of the
    real forward pass), so that parts see the caches and call overheads they see in a network.
    Samples are taken in ``rounds`` interleaved passes over the networks. Returns the time of
    every part (``statistic`` over samples, then the median over the networks containing it)."""
    generator = torch.Generator().manual_seed(seed)
    nets = [build_model(s).eval() for s in specs]
    inputs = [torch.randn((1, 3, s.resolution, s.resolution), generator=generator) for s in specs]
    keys = [spec_part_keys(s) for s in specs]
    flat_keys = [[(k, key) for k in PART_ORDER for key in ks[k]] for ks in keys]
    rounds = max(1, min(rounds, repeats))
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    parts: list[list[np.ndarray]] = [[] for _ in specs]
    order_rng = np.random.default_rng(seed)
    with torch_threads(threads), torch.inference_mode():
        for net, x in zip(nets, inputs):
            for _ in range(warmup):
                net(x)
        with tqdm(total=rounds * len(nets), desc=desc, disable=None if progress else True) as bar:
            for r in range(rounds):
                for i in order_rng.permutation(len(nets)):
                    net, x = nets[i], inputs[i]
                    net(x)  # re-warm after the other networks ran
                    for _ in range(per_round[r]):
                        _, stamps = timed_forward(net, x)
                        parts[i].append(np.diff(stamps) * 1e3)
                    bar.update(1)
    occurrences: dict[tuple[str, tuple], list[float]] = {}
    for i, fk in enumerate(flat_keys):
        per_part = np.array(parts[i])
        figures = [summarize(per_part[:, j], statistic) for j in range(per_part.shape[1])]
        for key, ms in zip(fk, figures):
            occurrences.setdefault(key, []).append(float(ms))
    measured: dict[str, dict[tuple, float]] = {k: {} for k in PART_ORDER}
    for (kind, key), values in occurrences.items():
        measured[kind][key] = float(np.median(values))
    return measured


def _runtime_version(runtime: str) -> str:
    if runtime == "torch":
        return f"PyTorch {torch.__version__} eager, inference_mode"
    if runtime == "litert":
        from .litert import runtime_version

        return runtime_version()
    import onnxruntime

    return f"ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider (exported with opset 17)"


def profile_target(
    space: SearchSpace | str = DEFAULT_PROXY_SPACE,
    target_name: str = "host",
    runtime: str = "torch",
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    max_blocks: int | None = None,
    overhead_archs: int = 24,
    rounds: int = 10,
    seed: int = 0,
    progress: bool = True,
    statistic: str = "p10",
    log: Callable[[str], None] | None = None,
) -> LatencyTarget:
    """Measure every part of ``space`` on this machine and return the target (not saved).

    ``max_blocks`` measures only a seeded random subset of the blocks (quick runs, tests): the
    others are then predicted by the per-op model fitted to the measured parts. ``statistic`` is
    the figure kept from each part's timing samples: ``"p10"`` (10th percentile, the default: the
    undisturbed speed, which stays put while other processes come and go, see the README) or
    ``"median"``.
    """
    check_target_name(target_name)
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, but got {statistic!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, but got {runtime!r}")
    if runtime == "litert":
        from .litert import require_litert

        require_litert("--runtime litert")
    checks = (("threads", threads, 1), ("warmup", warmup, 0), ("repeats", repeats, 3), ("rounds", rounds, 1))
    for label, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}, but got {value!r}")
    if max_blocks is not None and (isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1):
        raise ValueError(f"max_blocks must be an integer >= 1, but got {max_blocks!r}")
    if isinstance(overhead_archs, bool) or not isinstance(overhead_archs, int) or overhead_archs < 1:
        raise ValueError(f"overhead_archs must be an integer >= 1, but got {overhead_archs!r}")
    space = get_space(space)
    rng = np.random.default_rng(seed)
    all_parts = space_parts(space)
    parts = list(all_parts)
    blocks = [p for p in parts if p.kind == "blocks"]
    total_blocks = len(blocks)
    if max_blocks is not None and max_blocks < len(blocks):
        keep = set(rng.choice(len(blocks), size=max_blocks, replace=False).tolist())
        blocks = [b for i, b in enumerate(blocks) if i in keep]
        parts = [p for p in parts if p.kind != "blocks"] + blocks
    started = time.perf_counter()
    desc = f"profiling {space.name} ({runtime}, {threads} thread)"
    # Random networks timed end to end as measure_latency_ms times them (back-to-back calls,
    # interleaved rounds), the figure users compare predictions with: scale and overhead are fitted
    # to them, since parts timed one by one do not add up exactly to a whole network.
    specs = [space.sample(rng) for _ in range(overhead_archs)]
    networks = [(build_model(s), (1, 3, s.resolution, s.resolution)) for s in specs]
    if runtime == "torch":
        needed = {(p.kind, p.key) for p in parts}
        cover = covering_networks(all_parts, needed, space, seed)
        measured = measure_in_context(cover, threads, warmup, repeats, rounds, seed, progress, desc, statistic)
        with runners(networks, runtime, threads, seed) as fns:
            timed = time_interleaved(fns, warmup, repeats, rounds, progress=progress, desc="end to end", seed=seed)
        e2e = [summarize(samples, statistic) for samples, _ in timed]
        method = (
            f"every part timed inside {len(cover)} whole networks that together contain them "
            "(clock readings between the parts of the real forward pass); scale and per-network overhead fitted "
            f"so that scale * (sum of parts + overhead) matches {len(specs)} random networks timed end to end"
        )
    else:
        generator = torch.Generator().manual_seed(seed)
        items = [part_module(p, generator) for p in parts]
        items += networks
        # the fixed cost of one call (session.run, a LiteRT signature call): paid once per
        # network, not once per part (LiteRT cannot convert an op-less graph: one ReLU on 1 value)
        items.append((nn.Identity() if runtime == "onnxruntime" else nn.ReLU(), (1, 1, 1, 1)))
        with runners(items, runtime, threads, seed, progress) as fns:
            timed = time_interleaved(fns, warmup, repeats, rounds, progress=progress, desc=desc, seed=seed)
        medians = [summarize(s, statistic) for s, _ in timed]
        call_ms = medians[-1]
        e2e = medians[len(parts) : len(parts) + len(specs)]
        measured = {k: {} for k in PART_ORDER}
        for part, ms in zip(parts, medians):
            measured[part.kind][part.key] = max(0.0, ms - call_ms)
        call = "session.run" if runtime == "onnxruntime" else "LiteRT signature call"
        method = (
            f"every part exported and timed in its own {'session' if runtime == 'onnxruntime' else 'signature'}, "
            f"minus the cost of an empty {call} "
            f"({call_ms:.4f} ms); scale and per-network overhead fitted so that scale * (sum of parts + overhead) "
            f"matches {len(specs)} random networks timed end to end"
        )
    plans = {p.key: p.plan for p in all_parts if p.kind == "blocks"}
    rows_x: dict[tuple[int, int], list[np.ndarray]] = {t: [] for t in TILE_PAIRS}
    rows_y: list[float] = []
    for kind, table in measured.items():
        for key, ms in table.items():
            if ms > 0:
                for t in TILE_PAIRS:
                    rows_x[t].append(part_features(kind, key, t, plans.get(key) if kind == "blocks" else None))
                rows_y.append(ms)
    if len(rows_y) < 2:
        raise ValueError(
            f"only {len(rows_y)} parts had a measurable latency; cannot fit the fallback model (raise --max-blocks)"
        )
    coef, tile, report = fit_matrices({t: np.array(v) for t, v in rows_x.items()}, rows_y)
    lookup = LookupTable(runtime, threads, 1, 0.0, measured, statistic)
    used = {op for p in all_parts for op in spec_ops(p.spec)}
    draft = LatencyTarget.from_fit(target_name, coef, tile, used, lookup=lookup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # parts left out by max_blocks use the fallback
        sums = [draft.predict(s) for s in specs]
        scale, overhead = fit_network_terms(e2e, sums)
        lookup = LookupTable(runtime, threads, 1, overhead, measured, statistic)
        final = draft.renamed(target_name, lookup=lookup, scale=scale)
        errors = [abs(final.predict(s) - y) / y for s, y in zip(specs, e2e)]
        raw_errors = [abs(x - y) / y for x, y in zip(sums, e2e)]
    elapsed = time.perf_counter() - started
    n_measured = sum(len(v) for v in measured.values())
    target = final.renamed(
        target_name,
        description=(
            f"This machine ({cpu_name()}), {_runtime_version(runtime)}, {threads} thread(s), batch 1. "
            "Measured per-part lookup table for the search space below; re-profile on your own machine "
            f"with `python -m hw_models.profile --target-name NAME`."
        ),
        provenance={
            "device": cpu_name(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "runtime": _runtime_version(runtime),
            "threads": threads,
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "space": space.name,
            "parts_measured": n_measured,
            "blocks_measured": len(measured["blocks"]),
            "blocks_in_space": total_blocks,
            "method": method,
            "timing": (
                f"{statistic} of {repeats} samples taken in {rounds} interleaved passes, after {warmup} warm-up calls"
            ),
            "profiling_seconds": round(elapsed, 1),
            "fallback": (
                "parts not in the lookup table are predicted by the per-op model (model.coefficients) "
                "fitted to the measured parts"
            ),
        },
        fit={
            "fallback_model": {**report, "fitted_on": f"{len(rows_y)} measured parts"},
            "overhead": {
                "networks": len(specs),
                "scale": round(scale, 6),
                "overhead_ms": round(overhead, 6),
                "sum_of_parts_mape_pct_on_those_networks": round(100 * float(np.mean(raw_errors)), 3),
                "end_to_end_mape_pct_on_those_networks": round(100 * float(np.mean(errors)), 3),
            },
        },
    )
    if log is not None:
        log(
            f"measured {n_measured} parts ({len(measured['blocks'])}/{total_blocks} blocks) in {elapsed:.0f} s; "
            f"fallback per-op model {report['cv']} MAPE {report['cv_mape_pct']:.1f}% over parts; "
            f"end to end = {scale:.3f} x (sum of parts + {overhead:.4f} ms), MAPE {100 * np.mean(errors):.1f}% "
            f"on {len(specs)} random networks (sum of parts alone: {100 * np.mean(raw_errors):.1f}%)"
        )
    return target


def fit_network_terms(end_to_end_ms: list[float], sum_of_parts_ms: list[float]) -> tuple[float, float]:
    """``(scale, overhead_ms)`` such that ``scale * (sum of parts + overhead)`` fits the networks'
    end-to-end times with the least squared relative error. Parts timed one at a time (inside a
    network or alone) do not add up exactly to a network timed as a whole, so both a factor and
    the network's own call cost are fitted. The overhead is never negative: a network's call
    cannot take negative time, and a negative constant would predict tiny networks at <= 0 ms."""
    y = np.asarray(end_to_end_ms, dtype=float)
    x = np.asarray(sum_of_parts_ms, dtype=float)
    if len(y) != len(x) or len(y) == 0 or np.any(y <= 0) or np.any(x <= 0):
        raise ValueError("fitting the network terms needs positive end-to-end times and sums of parts, one per network")
    w = 1.0 / y  # relative error: divide each row by its target
    if len(y) >= 2:
        (a, b), *_ = np.linalg.lstsq(np.column_stack([x * w, w]), np.ones_like(y), rcond=None)
        if a > 0 and b >= 0:
            return float(a), float(b / a)
    a = float(np.sum(x * w * w * y) / np.sum((x * w) ** 2))  # through the origin
    return a, 0.0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hw_models.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-name", required=True, help="name to save the target under (e.g. host)")
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE, help="search space name or JSON path")
    parser.add_argument("--runtime", default="torch", choices=RUNTIMES)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--warmup", type=non_negative_int, default=10)
    parser.add_argument(
        "--repeats",
        type=int,
        default=100,
        help="timing samples per part (--statistic says which figure of them is kept)",
    )
    parser.add_argument("--max-blocks", type=int, default=None, help="profile only this many blocks (quick runs)")
    parser.add_argument(
        "--overhead-archs",
        type=positive_int,
        default=24,
        help="random networks measured end to end to fit the per-network overhead and scale",
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=10, help="interleaved passes the samples are spread over"
    )
    parser.add_argument(
        "--statistic",
        default="p10",
        choices=STATISTICS,
        help="figure kept from each part's timing samples (p10 = 10th percentile, steady under changing load)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output path (default: <user target dir>/<name>.json)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_target_name(args.target_name)
        out = Path(args.out) if args.out else user_target_dir() / f"{args.target_name}.json"
        check_writable_file(out)  # before minutes of profiling
        target = profile_target(
            args.space,
            args.target_name,
            args.runtime,
            args.threads,
            args.warmup,
            args.repeats,
            args.max_blocks,
            args.overhead_archs,
            args.rounds,
            args.seed,
            progress=not args.no_progress,
            statistic=args.statistic,
            log=print,
        )
        path = target.save(out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"saved latency target {args.target_name!r} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
