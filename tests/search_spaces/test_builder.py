from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces import SPACES, build_model, get_space, mobilenet_v2
from search_spaces.builder import InvertedResidual


def test_torchvision_convention_param_count():
    model = build_model(mobilenet_v2(num_classes=1000))
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_block_structure_follows_the_paper():
    model = build_model(mobilenet_v2())
    first, second = model.blocks[0], model.blocks[1]
    assert first.expand is None  # t = 1: no expansion conv
    assert isinstance(second.expand[2], nn.ReLU6) and isinstance(second.depthwise[2], nn.ReLU6)
    assert len(second.project) == 2  # linear bottleneck: conv + BN, no activation
    assert second.depthwise[0].groups == second.depthwise[0].in_channels == 96


@pytest.mark.parametrize("resolution", [32, 57, 96, 224])
def test_any_resolution_runs(resolution):
    spec = mobilenet_v2(0.35, resolution, num_classes=7)
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_specs_build_and_run(name, rng):
    space = get_space(name)
    for _ in range(2):
        spec = space.sample(rng)
        if spec.resolution > 128:
            spec = spec.replace(resolution=64)  # keep the test light; shapes are resolution-agnostic
        model = build_model(spec).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, spec.resolution, spec.resolution)).shape == (1, spec.num_classes)


@pytest.mark.parametrize("shortcut", ["bottleneck", "expansion", "none"])
@pytest.mark.parametrize("activation", ["linear", "relu6"])
def test_block_options(shortcut, activation):
    spec = get_space("proxy-digits").largest().replace(shortcut=shortcut, bottleneck_activation=activation)
    model = build_model(spec).eval()
    blocks = list(model.blocks)
    assert any(b.residual for b in blocks) == (shortcut == "bottleneck")
    assert any(b.wide_shortcut for b in blocks) == (shortcut == "expansion")
    assert all((len(b.project) == 3) == (activation == "relu6") for b in blocks)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


def test_residual_is_only_for_matching_shapes():
    with pytest.raises(AssertionError):
        InvertedResidual(8, 8, 16, 3, 1, residual=False, wide_shortcut=True).forward_wide(torch.randn(1, 8, 4, 4), None)
