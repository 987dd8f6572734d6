"""Measured latency on this machine: PyTorch eager, ONNX Runtime or LiteRT, pinned threads, robust statistics.

Each of ``repeats`` samples times ``number`` back-to-back calls (``number`` is chosen so a sample
lasts about ``sample_ms``: long enough for the timer's resolution, short enough that on a shared
machine most samples fit between two preemptions). The headline figure is the median over samples
of the per-call time, with the inter-quartile range as the spread; the 10th percentile
(``p10_ms``, the undisturbed speed) is reported too. The garbage collector is paused while
timing, as ``timeit`` does.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.arch import ArchSpec, parse_arch
from search_spaces.builder import InvertedResidualNet, build_model
from search_spaces.export import INPUT_NAME, export_onnx

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "litert")
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 100
DEFAULT_SAMPLE_MS = 0.5
STATISTICS: tuple[str, ...] = ("median", "p10", "min", "mean")
ArchLike = ArchSpec | str | os.PathLike | dict  # anything search_spaces.parse_arch reads


def cpu_name() -> str:
    """This machine's processor, as ``/proc/cpuinfo`` names it (profiles record it as ``device``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize(samples_ms: Any, statistic: str = "median") -> float:
    """One figure from timing samples: ``median``, ``p10`` (10th percentile), ``min`` or ``mean``."""
    s = np.asarray(samples_ms, dtype=float)
    if statistic == "median":
        return float(np.median(s))
    if statistic == "p10":
        return float(np.percentile(s, 10))
    if statistic == "min":
        return float(s.min())
    if statistic == "mean":
        return float(s.mean())
    raise ValueError(f"statistic must be one of {STATISTICS}, but got {statistic!r}")


@dataclass(frozen=True)
class LatencyMeasurement:
    """Per-call latency statistics over ``repeats`` samples of ``number`` calls each."""

    median_ms: float
    iqr_ms: float  # inter-quartile range of the per-sample figures
    min_ms: float
    mean_ms: float
    p10_ms: float  # 10th percentile: the uncontended speed, steadier than the median on a loaded machine
    repeats: int
    number: int
    runtime: str
    threads: int
    batch_size: int = 1

    @property
    def rel_spread(self) -> float:
        """IQR / median: the relative spread of a single sample."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    def value(self, statistic: str = "median") -> float:
        """The figure named by ``statistic`` (one of ``STATISTICS``)."""
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, but got {statistic!r}")
        return {"median": self.median_ms, "p10": self.p10_ms, "min": self.min_ms, "mean": self.mean_ms}[statistic]

    @classmethod
    def from_samples(
        cls, samples_ms: Any, number: int, runtime: str, threads: int, batch_size: int = 1
    ) -> LatencyMeasurement:
        s = np.asarray(samples_ms, dtype=float)
        p10, q1, med, q3 = np.percentile(s, [10, 25, 50, 75])
        return cls(
            median_ms=float(med),
            iqr_ms=float(q3 - q1),
            min_ms=float(s.min()),
            mean_ms=float(s.mean()),
            p10_ms=float(p10),
            repeats=int(s.size),
            number=int(number),
            runtime=runtime,
            threads=int(threads),
            batch_size=int(batch_size),
        )

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.4g} ms (IQR {self.iqr_ms:.2g} ms, {100 * self.rel_spread:.1f}%; "
            f"{self.repeats} samples x {self.number} calls, {self.runtime}, {self.threads} thread(s))"
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")


def time_callable(
    fn: Callable[[], Any],
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    number: int | None = None,
    sample_ms: float = DEFAULT_SAMPLE_MS,
) -> tuple[np.ndarray, int]:
    """Per-call times (ms) of ``repeats`` samples and the ``number`` of calls per sample."""
    for _ in range(warmup):
        fn()
    if number is None:
        start = time.perf_counter()
        fn()
        one = max(time.perf_counter() - start, 1e-7)
        number = max(1, math.ceil(sample_ms / 1e3 / one))
    samples = np.empty(repeats)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[i] = (time.perf_counter() - start) * 1e3 / number
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, number


def time_interleaved(
    fns: Sequence[Callable[[], Any]],
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    rounds: int = 10,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    progress: bool = False,
    desc: str = "timing",
    seed: int = 0,
) -> list[tuple[np.ndarray, int]]:
    """Like :func:`time_callable` for many callables, but the ``repeats`` samples of each are taken
    in ``rounds`` passes over all of them (in a fresh random order each pass), so a burst of load
    from other processes spreads over every callable instead of inflating a few."""
    from tqdm import tqdm

    rounds = max(1, min(rounds, repeats))
    numbers = [time_callable(fn, warmup, 1, None, sample_ms)[1] for fn in fns]
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    samples: list[list[np.ndarray]] = [[] for _ in fns]
    order_rng = np.random.default_rng(seed)
    with tqdm(total=rounds * len(fns), desc=desc, disable=None if progress else True) as bar:
        for r in range(rounds):
            for i in order_rng.permutation(len(fns)):
                s, _ = time_callable(fns[i], 1, per_round[r], numbers[i], sample_ms)
                samples[i].append(s)
                bar.update(1)
    return [(np.concatenate(s), n) for s, n in zip(samples, numbers)]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op threads for the block and restore the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def ort_session(onnx_path: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, sequential execution and all
    graph optimisations (what a deployment would use)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def _resolve(spec_or_model: ArchLike | nn.Module, batch_size: int, input_shape: tuple[int, ...] | None):
    if isinstance(spec_or_model, nn.Module):
        model: nn.Module = spec_or_model
    elif isinstance(spec_or_model, ArchLike):
        model = build_model(parse_arch(spec_or_model))  # what predict_latency_ms accepts
    else:
        raise ValueError(
            "expected an ArchSpec (or a compact string, arch.json path or dict) or a torch.nn.Module, "
            f"but got {type(spec_or_model).__name__}"
        )
    if input_shape is None:
        if not isinstance(model, InvertedResidualNet):
            raise ValueError(f"cannot tell the input shape of a {type(model).__name__}; pass input_shape=(N, C, H, W)")
        input_shape = (batch_size, 3, model.spec.resolution, model.spec.resolution)
    return model, tuple(int(d) for d in input_shape)


def litert_callables(
    items: Sequence[tuple[nn.Module, tuple[int, ...]]],
    inputs: Sequence[torch.Tensor],
    threads: int,
    folder: str | Path,
    progress: bool = False,
) -> list[Callable[[], Any]]:
    """Convert the modules to ``.tflite`` in ``folder`` (as the signatures of a few shared files:
    one conversion per module is the slow part) and return a call of each on its input, through
    the LiteRT interpreter with ``threads`` threads (XNNPACK)."""
    from tqdm import tqdm

    from .litert import SIGNATURES_PER_FILE, TFLiteModel, convert

    fns: list[Callable[[], Any]] = []
    chunks = [list(range(i, min(i + SIGNATURES_PER_FILE, len(items)))) for i in range(0, len(items), SIGNATURES_PER_FILE)]
    with tqdm(total=len(items), desc="converting to LiteRT", disable=None if progress else True) as bar:
        for c, chunk in enumerate(chunks):
            names = [f"m{i}" for i in chunk]
            path = convert([(n, items[i][0], items[i][1]) for n, i in zip(names, chunk)], Path(folder) / f"c{c}.tflite")
            for n, i in zip(names, chunk):
                model = TFLiteModel(path, threads, None if len(chunk) == 1 else n)
                model.bind(inputs[i].numpy())
                fns.append(model.invoke)
            bar.update(len(chunk))
    return fns


@contextlib.contextmanager
def runners(
    items: Sequence[tuple[nn.Module, tuple[int, ...]]], runtime: str, threads: int, seed: int = 0, progress: bool = False
) -> Iterator[list[Callable[[], Any]]]:
    """Zero-argument callables that run each ``(module, input_shape)`` once with ``runtime``:
    the eval-mode module under ``torch.inference_mode`` with ``threads`` pinned, an ONNX Runtime
    session of its ONNX export with ``threads`` intra-op threads, or its LiteRT conversion on the
    LiteRT interpreter (XNNPACK) with ``threads`` threads. Training modes and torch's thread
    setting are restored on exit."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, but got {runtime!r}")
    if runtime == "litert":
        from .litert import require_litert

        require_litert("runtime 'litert'")
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(shape, generator=generator) for _, shape in items]
    modes = [m.training for m, _ in items]
    for m, _ in items:
        m.eval()
    try:
        if runtime == "torch":
            with torch_threads(threads), torch.inference_mode():
                yield [functools.partial(m, x) for (m, _), x in zip(items, inputs)]
        elif runtime == "litert":
            with tempfile.TemporaryDirectory(prefix="invres-nas-") as tmp:
                yield litert_callables(items, inputs, threads, tmp, progress)
        else:
            fns = []
            with tempfile.TemporaryDirectory(prefix="invres-nas-") as tmp:
                for i, ((m, shape), x) in enumerate(zip(items, inputs)):
                    session = ort_session(export_onnx(m, Path(tmp) / f"m{i}.onnx", input_shape=shape), threads)
                    fns.append(functools.partial(session.run, None, {INPUT_NAME: x.numpy()}))
            yield fns
    finally:
        for (m, _), mode in zip(items, modes):
            m.train(mode)


def _check_args(runtime: str, batch_size: int, threads: int, warmup: int, repeats: int) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, but got {runtime!r}")
    if runtime == "litert":
        from .litert import require_litert

        require_litert("runtime 'litert'")
    _check_int("batch_size", batch_size, 1)
    _check_int("threads", threads, 1)
    _check_int("warmup", warmup, 0)
    _check_int("repeats", repeats, 1)


def measure_latency_ms(
    spec_or_model: ArchLike | nn.Module,
    runtime: str = "torch",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    *,
    number: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    seed: int = 0,
) -> LatencyMeasurement:
    """Measured inference latency of one forward pass of ``batch_size`` images on this machine.

    ``runtime="torch"`` times the eager module in eval mode under ``torch.inference_mode``;
    ``"onnxruntime"`` exports it to ONNX (batch norm folded) and times an ONNX Runtime CPU session;
    ``"litert"`` converts it to ``.tflite`` with litert-torch and times the LiteRT interpreter
    (XNNPACK, ``threads`` threads; needs the ``[litert]`` extra).
    An architecture may be given as anything :func:`predict_latency_ms` accepts (an ``ArchSpec``,
    a compact string, an ``arch.json``/YAML path or a dict).
    Threads are pinned to ``threads`` (torch's previous setting is restored afterwards). A module
    other than a built network needs ``input_shape``.
    """
    _check_args(runtime, batch_size, threads, warmup, repeats)
    if number is not None:
        _check_int("number", number, 1)
    model, shape = _resolve(spec_or_model, batch_size, input_shape)
    with runners([(model, shape)], runtime, threads, seed) as (fn,):
        samples, number = time_callable(fn, warmup, repeats, number, sample_ms)
    return LatencyMeasurement.from_samples(samples, number, runtime, threads, shape[0])


def measure_many(
    specs: Sequence[ArchLike],
    runtime: str = "torch",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    *,
    rounds: int = 10,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    progress: bool = False,
    seed: int = 0,
) -> list[LatencyMeasurement]:
    """:func:`measure_latency_ms` for several networks, with their samples interleaved in
    ``rounds`` passes (see :func:`time_interleaved`): the fair way to compare networks on a
    machine whose load changes."""
    _check_args(runtime, batch_size, threads, warmup, repeats)
    items = [_resolve(s, batch_size, None) for s in specs]
    with runners(items, runtime, threads, seed, progress) as fns:
        timed = time_interleaved(fns, warmup, repeats, rounds, sample_ms, progress, f"measuring ({runtime})", seed)
    return [LatencyMeasurement.from_samples(s, n, runtime, threads, batch_size) for s, n in timed]


__all__ = [
    "DEFAULT_REPEATS",
    "DEFAULT_WARMUP",
    "RUNTIMES",
    "STATISTICS",
    "LatencyMeasurement",
    "measure_latency_ms",
    "measure_many",
    "runners",
    "summarize",
    "ort_session",
    "time_callable",
    "time_interleaved",
    "torch_threads",
]
