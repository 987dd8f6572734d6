from __future__ import annotations

import numpy as np
import pytest
import torch

from hw_models import LatencyMeasurement, measure_latency_ms, measure_many
from hw_models.measure import time_callable, time_interleaved
from search_spaces import build_model, get_space, mobilenet_v2

TINY = mobilenet_v2(0.35, 16, num_classes=10)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_measure_both_runtimes_on_a_tiny_spec(runtime):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # only set: running 2 threads on a loaded 2-core machine is slow
    try:
        m = measure_latency_ms(TINY, runtime=runtime, threads=1, warmup=1, repeats=5)
        assert torch.get_num_threads() == 2  # torch's setting is restored
    finally:
        torch.set_num_threads(before)
    assert isinstance(m, LatencyMeasurement)
    assert m.runtime == runtime and m.threads == 1 and m.repeats == 5 and m.batch_size == 1
    assert m.median_ms > 0 and m.min_ms <= m.median_ms and m.iqr_ms >= 0 and m.number >= 1
    assert m.rel_spread >= 0
    assert "ms" in str(m)


def test_measure_a_module_needs_its_input_shape_and_keeps_its_mode():
    model = build_model(TINY).train()
    m = measure_latency_ms(model, batch_size=2, warmup=0, repeats=3)
    assert m.batch_size == 2 and model.training
    conv = torch.nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency_ms(conv, repeats=3)
    assert measure_latency_ms(conv, input_shape=(1, 3, 8, 8), repeats=3, number=2).number == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runtime": "tflite"}, "runtime"),
        ({"threads": 0}, "threads"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_latency_ms(TINY, **kwargs)
    with pytest.raises(ValueError, match="ArchSpec"):
        measure_latency_ms(3.5)
    with pytest.raises(ValueError, match="architecture string must start with"):  # as predict_latency_ms
        measure_latency_ms("not a model")


def test_statistics_from_samples():
    m = LatencyMeasurement.from_samples([1.0, 2.0, 3.0, 4.0, 100.0], 3, "torch", 1)
    assert m.median_ms == 3.0 and m.iqr_ms == 2.0 and m.min_ms == 1.0 and m.mean_ms == 22.0
    assert m.p10_ms == pytest.approx(1.4)
    assert m.rel_spread == pytest.approx(2 / 3)
    assert [m.value(s) for s in ("median", "p10", "min", "mean")] == [3.0, m.p10_ms, 1.0, 22.0]
    with pytest.raises(ValueError, match="statistic"):
        m.value("max")


def test_time_callable_counts_calls():
    calls = []
    samples, number = time_callable(lambda: calls.append(1), warmup=2, repeats=4, number=3)
    assert number == 3 and len(samples) == 4 and len(calls) == 2 + 4 * 3


def test_interleaved_timing_takes_every_sample():
    calls = {"a": 0, "b": 0}
    fns = [lambda: calls.__setitem__("a", calls["a"] + 1), lambda: calls.__setitem__("b", calls["b"] + 1)]
    out = time_interleaved(fns, warmup=0, repeats=7, rounds=3)
    assert [len(s) for s, _ in out] == [7, 7]
    assert all(n >= 1 for _, n in out)


def test_measure_many_is_aligned_with_its_inputs(rng):
    specs = [get_space("proxy-digits").sample(rng).replace(resolution=16) for _ in range(2)]
    ms = measure_many(specs, warmup=0, repeats=4, rounds=2)
    assert len(ms) == 2 and all(m.repeats == 4 and m.median_ms > 0 for m in ms)
    assert np.all(np.isfinite([m.median_ms for m in ms]))
