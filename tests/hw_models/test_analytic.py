from __future__ import annotations

import csv
from importlib import resources

import pytest
import torch
from hypothesis import given, settings
from torch.utils.flop_counter import FlopCounterMode

from hw_models import count_madds, count_params, layer_table, peak_memory_bytes
from search_spaces import SPACES, build_model, get_space, mobilenet_v2
from tests.properties import arch_specs

# columns of a published MobileNetV2 table row that the analytic counts must reproduce
GOLDEN_COLUMNS = ("width_mult", "resolution", "madds_m", "params_m")
PIXEL_CSV = resources.files("hw_models") / "reference" / "mobilenet_v2_pixel1.csv"


def reference_rows(path=PIXEL_CSV) -> list[dict[str, str]]:
    """Rows of a reference CSV (a ``pathlib.Path`` or a package resource)."""
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def assert_reproduces_published_row(row: dict[str, str]) -> None:
    """hw_models/reference/README.md conventions: MACs in millions truncated, params in millions
    rounded to 2 decimals (BN folded, 1001 classes)."""
    spec = mobilenet_v2(float(row["width_mult"]), int(row["resolution"]))
    assert count_madds(spec) // 10**6 == int(row["madds_m"]), row
    assert round(count_params(spec) / 1e6, 2) == float(row["params_m"]), row


@pytest.mark.parametrize("row", reference_rows(), ids=lambda r: f"{r['width_mult']}@{r['resolution']}")
def test_published_table_rows_are_reproduced_exactly(row):
    assert_reproduces_published_row(row)


@pytest.mark.parametrize(
    "width, resolution, madds_m, params_m",
    [(1.0, 224, 300, 3.4), (1.4, 224, 585, 6.9)],  # paper Table 4 (rounded there: 300M/3.4M, 585M/6.9M)
)
def test_paper_table_4(width, resolution, madds_m, params_m):
    spec = mobilenet_v2(width, resolution)
    assert abs(count_madds(spec) / 1e6 - madds_m) / madds_m < 0.01
    # Table 4 counts 1.4's params with a wider classifier convention; stay within 15%
    assert abs(count_params(spec) / 1e6 - params_m) / params_m < 0.15


def test_torchvision_convention():
    assert count_params(mobilenet_v2(num_classes=1000), include_bn=True) == 3_504_872


def test_table_3_bottleneck_memory():
    # MobileNetV2 Table 3: 400K, the 112x112x16 bottleneck at 16 bits
    assert peak_memory_bytes(mobilenet_v2()) == 401_408
    assert peak_memory_bytes(mobilenet_v2(), bytes_per_element=4) == 802_816


def measured_madds(model: torch.nn.Module, resolution: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, resolution, resolution))
    counts = counter.get_flop_counts()["Global"]
    ops = torch.ops.aten
    flops = sum(v for k, v in counts.items() if k in (ops.convolution, ops.addmm, ops.mm, ops.linear))
    assert set(counts) <= {ops.convolution, ops.addmm, ops.mm}, counts
    return flops // 2


@pytest.mark.parametrize("name", sorted(SPACES))
def test_madds_and_params_equal_the_built_model(name, rng):
    space = get_space(name)
    for _ in range(3):
        spec = space.sample(rng)
        if spec.resolution > 128:
            spec = spec.replace(resolution=96)
        for shortcut in space.shortcuts + ("expansion",):
            s = spec.replace(shortcut=shortcut)
            model = build_model(s).eval()
            assert count_madds(s) == measured_madds(model, s.resolution)
            assert count_params(s, include_bn=True) == sum(p.numel() for p in model.parameters())


def test_layer_table_sums_to_totals():
    spec = mobilenet_v2(0.75, 192)
    table = layer_table(spec)
    assert table["madds"].sum() == count_madds(spec)
    assert table["params"].sum() == count_params(spec)
    assert table["params"].sum() + table["bn_params"].sum() == count_params(spec, include_bn=True)
    assert list(table.columns[:4]) == ["layer", "op", "input", "output"]


def test_memory_policies_order():
    spec = mobilenet_v2()
    split = [peak_memory_bytes(spec, "split", t=t) for t in range(1, 9)]
    assert split == sorted(split, reverse=True)  # more chunks never need more memory
    assert peak_memory_bytes(spec, "bottleneck") < split[-1] < peak_memory_bytes(spec, "naive") < split[0]


def test_expansion_shortcut_costs_memory():
    spec = mobilenet_v2()
    assert peak_memory_bytes(spec.replace(shortcut="expansion")) > peak_memory_bytes(spec)
    # dropping the shortcut frees the held block input in plain execution
    assert peak_memory_bytes(spec.replace(shortcut="none"), "naive") <= peak_memory_bytes(spec, "naive")
    assert peak_memory_bytes(spec.replace(shortcut="expansion"), "split", t=4) > peak_memory_bytes(spec, "split", t=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="policy must be one of"):
        peak_memory_bytes(mobilenet_v2(), "magic")
    with pytest.raises(ValueError, match="t \\(number of chunks\\)"):
        peak_memory_bytes(mobilenet_v2(), "split", t=0)


# ---- the per-stage closed forms equal the per-block rules of block_plan ------------------------
@settings(max_examples=300, deadline=None)
@given(arch_specs)
def test_per_stage_counts_equal_the_sum_over_the_block_plan(spec):
    from hw_models.analytic import _materialised_tensors, block_madds, block_params
    from search_spaces.arch import block_plan, conv_out_size, final_size

    stem = conv_out_size(spec.resolution, spec.stem_stride) ** 2 * 3 * spec.stem_channels * 9
    head = final_size(spec) ** 2 * spec.stages[-1].channels * spec.last_channels
    classifier = spec.last_channels * spec.num_classes
    assert count_madds(spec) == stem + head + classifier + sum(block_madds(p) for p in block_plan(spec))
    for bn in (False, True):
        fixed = 27 * spec.stem_channels + spec.stages[-1].channels * spec.last_channels + classifier + spec.num_classes
        fixed += 2 * (spec.stem_channels + spec.last_channels) if bn else 0
        assert count_params(spec, include_bn=bn) == fixed + sum(block_params(p, bn) for p in block_plan(spec))
    assert peak_memory_bytes(spec, bytes_per_element=1) == max(_materialised_tensors(spec))
