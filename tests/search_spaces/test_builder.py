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


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pointwise_conv_equals_a_1x1_conv2d_in_values_and_gradients(layout):
    from search_spaces.builder import pointwise_conv

    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 6, 5, 3), (3, 6, 1, 1), (1, 6, 4, 4)]:
        x = torch.randn(*shape, dtype=torch.float64, generator=generator).contiguous(memory_format=layout)
        x.requires_grad_()
        # A leading slice, as the supernet passes: not contiguous.
        weight = torch.randn(9, 8, 1, 1, dtype=torch.float64, generator=generator, requires_grad=True)
        expected = torch.nn.functional.conv2d(x, weight[:4, :6])
        got = pointwise_conv(x, weight[:4, :6])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)
        upstream = torch.randn_like(expected)
        grads = zip(torch.autograd.grad(got, (x, weight), upstream), torch.autograd.grad(expected, (x, weight), upstream))
        for g, e in grads:
            torch.testing.assert_close(g, e)


def test_pointwise_layers_train_through_a_matrix_product_and_evaluate_as_conv2d(monkeypatch):
    """A built network's stride-1 1x1 convs are PointwiseConv2d: pointwise_conv in training with
    gradients, plain nn.Conv2d otherwise (what exports see)."""
    import search_spaces.builder as builder

    model = build_model(get_space("proxy-digits").largest())
    pointwise = [m for m in model.modules() if isinstance(m, builder.PointwiseConv2d)]
    assert len(pointwise) == sum(
        1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.bias is None
    )
    calls = []
    monkeypatch.setattr(builder, "pointwise_conv", lambda x, w: calls.append(1) or torch.nn.functional.conv2d(x, w))
    x = torch.randn(2, 3, 24, 24)
    model.train()(x)
    assert len(calls) == len(pointwise)
    with torch.no_grad():
        model(x)
    model.eval()(x)
    assert len(calls) == len(pointwise)
    with_bias = builder.PointwiseConv2d(3, 4, 1, bias=True).train()
    plain = torch.nn.Conv2d(3, 4, 1, bias=True)
    plain.load_state_dict(with_bias.state_dict())
    torch.testing.assert_close(with_bias(x), plain(x))  # the bias is not dropped


def test_depthwise_layers_train_through_the_small_image_path_with_conv2d_values():
    """A built network's depthwise convs are DepthwiseConv2d: in training (with gradients) they run
    depthwise_conv, otherwise plain nn.Conv2d; both give nn.Conv2d's values and gradients."""
    from search_spaces.builder import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 6, 5, 1, padding=2, groups=6, bias=False).double()
    plain = torch.nn.Conv2d(6, 6, 5, 1, padding=2, groups=6, bias=False).double()
    plain.weight.data.copy_(conv.weight.data)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    for module in (conv, plain):
        module.train()
    got, expected = conv(x), plain(x)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got.sum(), (x, conv.weight)), torch.autograd.grad(expected.sum(), (x, plain.weight))
    for g, e in zip(*grads):
        torch.testing.assert_close(g, e)
    model = build_model(get_space("proxy-digits").largest())
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(isinstance(m, DepthwiseConv2d) for m in depthwise)
