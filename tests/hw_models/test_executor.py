from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hw_models import peak_memory_bytes
from hw_models.executor import NaiveExecutor, SplitExecutor
from hw_models.memtrace import measure_peak_bytes
from search_spaces import SPACES, ArchSpec, StageSpec, build_model, get_space, mobilenet_v2, reference_arch
from search_spaces.arch import block_plan
from tests.properties import ofa_arch_specs

# Hand-made specs for the rare paths: a t=1 block passing its input on as the wide (expansion)
# shortcut, a t=1 block receiving one, a stride-1 stem, 5x5 and 7x7 kernels.
EDGE_SPECS = [
    ArchSpec(24, 16, (StageSpec(1, 8, 1, 1), StageSpec(2, 16, 2, 1, 5), StageSpec(6, 16, 1, 2)), 32, 5),
    ArchSpec(20, 16, (StageSpec(1, 16, 1, 1), StageSpec(1, 16, 1, 1, 7), StageSpec(2, 24, 2, 2)), 32, 5, stem_stride=1),
    ArchSpec(3, 4, (StageSpec(1, 4, 1, 2, 1), StageSpec(3, 4, 2, 2)), 8, 3),  # 1x1 outputs, 1x1 depthwise
]
# Squeeze-excitation on every path of the split executor: a fused stem (t=1 first block with SE),
# a t=1 SE block passing its input on as the wide shortcut and one receiving it, SE blocks with
# an expansion conv receiving and passing on wide shortcuts (per-block expansions 3:2:2 keep the
# expanded width), SE with a residual and no expansion conv, both SE bases and gates, every
# activation, the MobileNetV3 head, SE at 1x1.
SE_EDGE_SPECS = [
    ArchSpec(
        24,
        16,
        (
            StageSpec(1, 16, 1, 2, se_ratio=0.25, activation="relu"),
            StageSpec(1, 16, 2, 1, 5, se_ratio=0.5, se_gate="sigmoid", se_basis="input", activation="hswish"),
            StageSpec((3, 2, 2), 24, 3, 1, (3, 5, 7), se_ratio=0.25, activation="hswish"),
            StageSpec(4, 32, 1, 2, activation="relu"),
        ),
        32,
        5,
        stem_activation="hswish",
        head="mbv3",
        head_channels=24,
        head_activation="hswish",
    ),
    ArchSpec(
        16,
        8,
        (StageSpec(1, 8, 2, 1, se_ratio=0.25), StageSpec(6, 16, 1, 2, se_ratio=0.25, activation="relu")),
        16,
        3,
        stem_activation="relu",
        head="mbv3",
        head_channels=8,
    ),
    ArchSpec(
        3,
        4,
        (StageSpec(1, 4, 1, 2, 1, se_ratio=0.25), StageSpec(3, 4, 2, 2, se_ratio=1, se_basis="input")),
        8,
        3,
        head="mbv3",
        head_channels=4,
    ),
]


def trained_like(spec: ArchSpec, seed: int = 0) -> nn.Module:
    """A built model whose batch norms and classifier are not at their identity-like init, so that
    folding is exercised and the logits are O(1) (the init classifier makes them ~0.01)."""
    g = torch.Generator().manual_seed(seed)
    model = build_model(spec).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
        nn.init.normal_(model.classifier.weight, 0.0, spec.last_channels**-0.5, generator=g)
    return model


def random_specs(max_resolution: int = 48) -> list[ArchSpec]:
    """Random specs of every shipped space, with every shortcut and bottleneck activation."""
    rng = np.random.default_rng(0)
    specs = []
    for name in sorted(SPACES):
        space = get_space(name)
        for i in range(2):
            spec = space.sample(rng)
            spec = spec.replace(resolution=min(spec.resolution, max_resolution))
            for shortcut in ("bottleneck", "expansion", "none"):
                specs.append(spec.replace(shortcut=shortcut, bottleneck_activation=("linear", "relu6")[i % 2]))
    for i, spec in enumerate(EDGE_SPECS):
        for shortcut in ("bottleneck", "expansion", "none"):
            specs.append(spec.replace(shortcut=shortcut, bottleneck_activation=("linear", "relu6")[i % 2]))
    for spec in SE_EDGE_SPECS:
        for shortcut in ("bottleneck", "expansion", "none"):
            for activation in ("linear", "relu6"):
                specs.append(spec.replace(shortcut=shortcut, bottleneck_activation=activation))
    return specs


def test_random_specs_cover_every_executor_path():
    specs = random_specs()
    blocks = []  # (residual, has expansion conv, receives wide shortcut, passes one on)
    for spec in specs:
        ps = block_plan(spec)
        for i, p in enumerate(ps):
            feeds = i + 1 < len(ps) and ps[i + 1].wide_shortcut
            blocks.append((p.residual, p.hidden != p.in_channels, p.wide_shortcut, feeds))
    assert any(r for r, _, _, _ in blocks)
    for has_expand in (True, False):
        assert any(w_in and e == has_expand for _, e, w_in, _ in blocks)
        assert any(w_out and e == has_expand for _, e, _, w_out in blocks)
    assert any(w_in and w_out for _, _, w_in, w_out in blocks)
    assert any(SplitExecutor(build_model(s)).fused_stem for s in specs)
    assert not all(SplitExecutor(build_model(s)).fused_stem for s in specs)


def test_random_specs_cover_every_squeeze_excite_path():
    blocks = []  # (fused stem, residual, has expansion conv, receives wide shortcut, passes one on)
    for spec in random_specs():
        ps = block_plan(spec)
        fused = SplitExecutor(build_model(spec)).fused_stem
        for i, p in enumerate(ps):
            if p.se_channels:
                feeds = i + 1 < len(ps) and ps[i + 1].wide_shortcut
                blocks.append((i == 0 and fused, p.residual, p.hidden != p.in_channels, p.wide_shortcut, feeds))
    assert any(f for f, *_ in blocks)
    for has_expand in (True, False):
        assert any(r and e == has_expand for _, r, e, _, _ in blocks)
        assert any(w_in and e == has_expand for _, _, e, w_in, _ in blocks)
        assert any(w_out and e == has_expand for _, _, e, _, w_out in blocks)
    assert any(w_in and w_out for *_, w_in, w_out in blocks)


@pytest.mark.parametrize("t", [1, 3, 8])
def test_equals_normal_forward_on_mobilenet_v2(t):
    spec = mobilenet_v2(1.0, 64)
    model = trained_like(spec)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    assert ref.abs().max() > 0.1  # the comparison below is not against ~zero logits
    assert (SplitExecutor(model, t)(x) - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("spec", random_specs(), ids=str)
def test_equals_normal_forward_on_random_specs(spec):
    model = trained_like(spec)
    x = torch.randn(2, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    for t in (1, 2, 5):
        assert (SplitExecutor(model, t)(x) - ref).abs().max().item() <= 1e-5


def test_repeated_runs_do_not_touch_the_weights():
    spec = mobilenet_v2(0.35, 32)  # the last blocks run at 1x1, where an output buffer could alias a bias
    model = trained_like(spec)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    executor = SplitExecutor(model, 2)
    first = executor(x)
    with torch.no_grad():
        assert (first - model(x)).abs().max().item() <= 1e-5
    assert torch.equal(executor(x), first)


def measured_peak(executor: SplitExecutor, resolution: int) -> int:
    _, peak = measure_peak_bytes(lambda: executor.run([torch.randn(1, 3, resolution, resolution)]))
    return peak


def test_measured_peak_is_the_split_model_on_mobilenet_v2():
    spec = mobilenet_v2(1.0, 96)
    model = build_model(spec).eval()
    for t in range(1, 9):
        predicted = peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)
        measured = measured_peak(SplitExecutor(model, t), spec.resolution)
        assert abs(measured - predicted) <= 0.1 * predicted
        assert measured == predicted  # the executor allocates exactly what the model accounts for


@pytest.mark.parametrize("spec", random_specs(max_resolution=32), ids=str)
def test_measured_peak_matches_the_split_model_on_random_specs(spec):
    model = build_model(spec).eval()
    for t in range(1, 9):
        predicted = peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)
        assert abs(measured_peak(SplitExecutor(model, t), spec.resolution) - predicted) <= 0.1 * predicted


any_arch = st.builds(
    ArchSpec,
    resolution=st.integers(1, 20),
    stem_channels=st.integers(1, 24),
    stages=st.lists(
        st.builds(
            StageSpec,
            expansion=st.integers(1, 6),
            channels=st.integers(1, 24),
            repeats=st.integers(1, 3),
            stride=st.sampled_from([1, 2]),
            kernel_size=st.sampled_from([1, 3, 5, 7]),
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
    last_channels=st.integers(1, 32),
    num_classes=st.integers(1, 10),
    stem_stride=st.sampled_from([1, 2]),
    bottleneck_activation=st.sampled_from(["linear", "relu6"]),
    shortcut=st.sampled_from(["bottleneck", "expansion", "none"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_arch, st.integers(1, 8))
def test_any_architecture_runs_exactly_and_within_the_model(spec, t):
    model = trained_like(spec)
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    executor = SplitExecutor(model, t)
    assert (executor(x) - ref).abs().max().item() <= 1e-5
    assert measured_peak(executor, spec.resolution) == peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ofa_arch_specs(), st.integers(1, 8))
def test_any_mobilenet_v3_style_architecture_runs_exactly_and_as_both_models_say(spec, t):
    """Per-block kernels and (fractional) expansions, SE of either basis and gate, every
    activation, either head: both executors equal the model and allocate what the models say."""
    model = trained_like(spec)
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    split, naive = SplitExecutor(model, t), NaiveExecutor(model)
    assert (split(x) - ref).abs().max().item() <= 1e-5
    assert (naive(x) - ref).abs().max().item() <= 1e-5
    assert measured_peak(split, spec.resolution) == peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)
    assert measured_naive_peak(naive, spec.resolution) == peak_memory_bytes(spec, "naive", bytes_per_element=4)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large", "mnasnet_a1"])
def test_zoo_networks_with_squeeze_excitation_run_exactly_and_as_both_models_say(name):
    spec = reference_arch(name, resolution=64)
    model = trained_like(spec)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    assert ref.abs().max() > 0.1  # the comparisons below are not against ~zero logits
    naive = NaiveExecutor(model)
    assert (naive(x) - ref).abs().max().item() <= 1e-5
    assert measured_naive_peak(naive, 64) == peak_memory_bytes(spec, "naive", bytes_per_element=4)
    peaks = []
    for t in (1, 2, 4, 8):
        split = SplitExecutor(model, t)
        assert (split(x) - ref).abs().max().item() <= 1e-5
        peaks.append(measured_peak(split, 64))
        assert peaks[-1] == peak_memory_bytes(spec, "split", bytes_per_element=4, t=t)
    assert peaks == sorted(peaks, reverse=True)


def test_a_squeeze_excite_block_holds_its_whole_depthwise_output():
    """The gate needs the mean of the whole depthwise output: with many chunks, an SE block's
    step is that tensor plus its output (or plus a slice), never just slices."""
    se, plain = (
        ArchSpec(16, 8, (StageSpec(1, 8, 1, 1), StageSpec(6, 16, 1, 1, se_ratio=s)), 8, 3, stem_stride=1)
        for s in (0.25, 0.0)
    )
    t = 16
    hidden_whole = 48 * 16 * 16 * 4
    models = {spec: build_model(spec).eval() for spec in (se, plain)}
    peaks = {spec: measured_peak(SplitExecutor(m, t), 16) for spec, m in models.items()}
    assert peaks[se] == peak_memory_bytes(se, "split", bytes_per_element=4, t=t)
    assert peaks[se] >= hidden_whole > peaks[plain]


def measured_naive_peak(executor: NaiveExecutor, resolution: int) -> int:
    # the image is created inside the measured function and held by it for the whole run
    _, peak = measure_peak_bytes(lambda: executor(torch.randn(1, 3, resolution, resolution)))
    return peak


def test_measured_peak_is_the_naive_model_on_mobilenet_v2():
    spec = mobilenet_v2(1.0, 96)
    model = trained_like(spec)
    executor = NaiveExecutor(model)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (executor(x) - model(x)).abs().max().item() <= 1e-5
    predicted = peak_memory_bytes(spec, "naive", bytes_per_element=4)
    measured = measured_naive_peak(executor, 96)
    assert abs(measured - predicted) <= 0.1 * predicted
    assert measured == predicted  # plain inference allocates exactly what the model accounts for
    assert measured < measure_peak_bytes(lambda: model(torch.randn(1, 3, 96, 96)))[1]  # BN not folded


@pytest.mark.parametrize("spec", random_specs(max_resolution=32), ids=str)
def test_naive_executor_runs_exactly_and_matches_the_naive_model_on_random_specs(spec):
    model = trained_like(spec)
    executor = NaiveExecutor(model)
    x = torch.randn(2, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (executor(x) - model(x)).abs().max().item() <= 1e-5
    predicted = peak_memory_bytes(spec, "naive", bytes_per_element=4)
    assert abs(measured_naive_peak(executor, spec.resolution) - predicted) <= 0.1 * predicted


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_arch)
def test_any_architecture_naive_peak_is_the_naive_model(spec):
    model = trained_like(spec)
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))
    executor = NaiveExecutor(model)
    with torch.no_grad():
        assert (executor(x) - model(x)).abs().max().item() <= 1e-5
    assert measured_naive_peak(executor, spec.resolution) == peak_memory_bytes(spec, "naive", bytes_per_element=4)


def test_more_chunks_less_memory_than_plain_forward():
    spec = mobilenet_v2(1.0, 96)
    model = build_model(spec).eval()
    _, plain = measure_peak_bytes(lambda: model(torch.randn(1, 3, 96, 96)))
    peaks = [measured_peak(SplitExecutor(model, t), 96) for t in (1, 2, 4, 8)]
    assert peaks == sorted(peaks, reverse=True)
    assert peaks[-1] < plain / 3


def test_tracker_counts_allocations_views_and_frees():
    weight = torch.randn(100)  # allocated outside: never counted

    def work() -> torch.Tensor:
        a = torch.randn(1000)  # 4,000 B
        b = a.view(10, 100)  # a view allocates nothing
        c = b * weight  # 4,000 B -> 8,000 live
        c.clamp_(0, 1)  # in place
        del a, b
        d = torch.randn(3000)  # 12,000 B; a is freed: 16,000 live
        return d.sum() + c.sum()  # three 4-byte scalars while c and d are alive

    _, peak = measure_peak_bytes(work)
    assert peak == 16_000 + 3 * 4


def test_bad_arguments():
    model = build_model(mobilenet_v2(0.35, 32))
    with pytest.raises(ValueError, match="t \\(number of chunks\\)"):
        SplitExecutor(model, 0)
    with pytest.raises(ValueError, match="build_model"):
        SplitExecutor(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="shape"):
        SplitExecutor(model)(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="build_model"):
        NaiveExecutor(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="shape"):
        NaiveExecutor(model)(torch.randn(1, 1, 32, 32))
