from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import SPACES, SearchSpace, StageChoices, block_plan, build_model, get_space
from search_spaces.supernet import Supernet


def options_space() -> SearchSpace:
    """A small space with every block option, expansion 1 among the choices, and 3/5/7 kernels."""
    return SearchSpace(
        name="options",
        resolutions=(12, 16),
        stem_channels=8,
        stages=(
            StageChoices(expansions=(1, 3), channels=(8, 12), repeats=(1, 2), kernel_sizes=(3, 5, 7), stride=1),
            StageChoices(expansions=(1, 2, 4), channels=(12, 16), repeats=(1, 2, 3), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 6), channels=(16, 24), repeats=(1, 2), kernel_sizes=(3,), stride=2),
        ),
        last_channels=32,
        num_classes=5,
        bottleneck_activations=("linear", "relu6"),
        shortcuts=("bottleneck", "expansion", "none"),
    )


def v3_options_space() -> SearchSpace:
    """Per-block kernels and expansions, SE of both bases and gates on searched widths, every
    activation, the MobileNetV3 head."""
    return SearchSpace(
        name="v3-options",
        resolutions=(12, 16),
        stem_channels=8,
        stem_activation="hswish",
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), activation="relu", se_ratio=0.25),
            StageChoices(
                expansions=(2, 3),
                channels=(12, 16),
                repeats=(1, 2, 3),
                kernel_sizes=(3, 5, 7),
                stride=2,
                per_block=True,
                se_ratio=0.25,
                se_basis="input",
                se_gate="sigmoid",
                activation="relu",
            ),
            StageChoices(
                expansions=(3, 4),
                channels=(16, 24),
                repeats=(1, 2),
                kernel_sizes=(3, 5),
                stride=1,
                per_block=True,
                se_ratio=0.5,
                activation="hswish",
            ),
            StageChoices(expansions=(2, 6), channels=(24, 32), repeats=(1, 2), stride=2, activation="relu6"),
        ),
        head="mbv3",
        head_channels=48,
        last_channels=40,
        head_activation="hswish",
        num_classes=5,
        shortcuts=("bottleneck", "expansion", "none"),
        bottleneck_activations=("linear", "relu6"),
    )


def perturbed_supernet(space: SearchSpace, seed: int = 0) -> Supernet:
    """A supernet whose batch-norm parameters and statistics are not the identity, so that
    slicing them wrongly shows."""
    torch.manual_seed(seed)
    supernet = Supernet(space)
    with torch.no_grad():
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:  # SE and the MobileNetV3 head
                m.bias.normal_(0, 0.5)
    return supernet.eval()


SMALL_SPACES = [options_space(), get_space("proxy-digits"), v3_options_space(), get_space("proxy-ofa-digits")]


@pytest.mark.parametrize("space", SMALL_SPACES, ids=lambda s: s.name)
def test_extracted_model_equals_supernet(space):
    supernet = perturbed_supernet(space)
    rng = np.random.default_rng(0)
    for spec in [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(25))]:
        model = supernet.extract(spec).eval()
        x = torch.randn(3, 3, spec.resolution, spec.resolution)
        with torch.no_grad():
            diff = (supernet(x, spec) - model(x)).abs().max().item()
        assert diff <= 1e-5, spec.to_string()


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_extraction_property_on_random_specs(data):
    space = data.draw(st.sampled_from(SMALL_SPACES))
    code = [data.draw(st.integers(0, int(k) - 1)) for k in space.cardinalities]
    spec = space.decode(code)
    supernet = perturbed_supernet(space, seed=1)
    x = torch.randn(2, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        assert (supernet(x, spec) - supernet.extract(spec).eval()(x)).abs().max().item() <= 1e-5


def test_imagenet_space_extraction_at_low_resolution():
    space = dataclasses.replace(get_space("mobilenetv2-imagenet"), resolutions=(64,))  # keep the test light
    supernet = perturbed_supernet(space)
    spec = space.sample(np.random.default_rng(3))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (supernet(x, spec) - supernet.extract(spec).eval()(x)).abs().max().item() <= 1e-5


def test_ofa_mbv3_space_extraction_at_low_resolution():
    space = dataclasses.replace(get_space("ofa-mbv3"), resolutions=(48,))
    supernet = perturbed_supernet(space)
    rng = np.random.default_rng(4)
    for spec in (space.largest(), space.sample(rng), space.sample(rng)):
        x = torch.randn(1, 3, 48, 48)
        with torch.no_grad():
            assert (supernet(x, spec) - supernet.extract(spec).eval()(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("space", [options_space(), v3_options_space()], ids=lambda s: s.name)
def test_extracted_model_is_a_plain_build_model_network(space):
    spec = space.sample(np.random.default_rng(1))
    model = perturbed_supernet(space).extract(spec)
    reference = build_model(spec)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("name", ["proxy-ofa-digits", "ofa-mbv3"])
def test_per_block_supernet_holds_the_largest_network_exactly(name):
    """Largest kernel and expansion in every block, SE at the widest squeeze, the fixed head."""
    space = get_space(name)
    supernet = Supernet(space)
    largest = build_model(space.largest())
    assert sum(p.numel() for p in supernet.parameters()) == sum(p.numel() for p in largest.parameters())


def test_training_step_reaches_the_active_squeeze_excitation_only():
    space = v3_options_space()
    supernet = Supernet(space).train()
    spec = space.smallest()
    loss = supernet(torch.randn(4, 3, 12, 12), spec).square().mean()
    loss.backward()
    plan = next(p for p in block_plan(spec) if p.stage == 2)
    grad = supernet.stages[2][0].se.reduce.weight.grad
    assert 0 < plan.se_channels < grad.shape[0] and plan.hidden < grad.shape[1]
    assert grad[: plan.se_channels, : plan.hidden].abs().sum() > 0
    assert grad[plan.se_channels :].abs().sum() == 0 and grad[:, plan.hidden :].abs().sum() == 0


def test_supernet_holds_the_largest_choices():
    space = get_space("proxy-digits")
    supernet = Supernet(space)
    largest = build_model(space.largest())
    # The largest network is the supernet minus nothing but unused expansion convs of t=1 stages.
    assert sum(p.numel() for p in supernet.parameters()) == sum(p.numel() for p in largest.parameters())


def test_forward_leaves_no_state_behind():
    """The active architecture is an argument: running another spec in between changes nothing."""
    space = options_space()
    supernet = perturbed_supernet(space)
    rng = np.random.default_rng(2)
    a, b = space.sample(rng), space.sample(rng)
    x = torch.randn(2, 3, a.resolution, a.resolution)
    with torch.no_grad():
        first = supernet(x, a)
        supernet(torch.randn(2, 3, b.resolution, b.resolution), b)
        assert torch.equal(first, supernet(x, a))


def test_smaller_kernel_is_the_centre_of_the_largest():
    space = options_space()
    supernet = Supernet(space)
    dw = supernet.stages[0][0].depthwise
    assert torch.equal(dw.sliced_weight(8, 8, 3), dw.conv.weight[:8, :, 2:5, 2:5])
    with pytest.raises(ValueError, match="kernel size 9 is not available"):
        dw.sliced_weight(8, 8, 9)


def test_training_updates_only_the_active_slice():
    space = options_space()
    supernet = Supernet(space).train()
    spec = space.smallest()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    supernet(torch.randn(4, 3, spec.resolution, spec.resolution), spec).sum().backward()
    stem = supernet.stem.bn
    assert not torch.equal(stem.running_mean, before["stem.bn.running_mean"])  # in place, through the slice
    project = supernet.stages[2][0].project
    grad = project.conv.weight.grad
    out, hidden = spec.stages[2].channels, spec.stages[1].channels * spec.stages[2].expansion
    assert grad[:out, :hidden].abs().sum() > 0
    assert grad[out:].abs().sum() == 0 and grad[:, hidden:].abs().sum() == 0
    assert supernet.stages[1][2].project.conv.weight.grad is None  # dropped trailing block


def test_spec_outside_the_space_is_a_clear_error():
    space = get_space("proxy-digits")
    supernet = Supernet(space)
    spec = space.largest().replace(resolution=40)
    with pytest.raises(ValueError, match="resolution=40 is not one of"):
        supernet.extract(spec)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_shipped_space_builds(name):
    Supernet(get_space(name))


def test_inference_after_a_weight_update_uses_the_new_weights():
    """Eval-mode inference reuses contiguous weight slices; any update of the weights or batch-norm
    statistics (optimizer step, load_state_dict, recalibration) must be seen by the next call."""
    space = options_space()
    supernet = perturbed_supernet(space)
    spec = space.smallest()
    x = torch.randn(2, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        before = supernet(x, spec)
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.mul_(2.0)
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.5)
        after = supernet(x, spec)
        expected = supernet.extract(spec).eval()(x)
    assert (after - before).abs().max().item() > 1e-3
    assert (after - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_depthwise_conv_equals_conv2d_with_same_padding_at_every_image_size(layout):
    """Images smaller than the kernel take the cropped-kernel path: same values and gradients."""
    from search_spaces.builder import depthwise_conv

    generator = torch.Generator().manual_seed(0)
    for height, width, kernel, stride in [(1, 1, 3, 1), (2, 2, 5, 1), (2, 3, 5, 2), (3, 3, 5, 1), (4, 2, 7, 2),
                                          (3, 5, 7, 1), (5, 5, 5, 1), (8, 8, 3, 2)]:  # fmt: skip
        x = torch.randn(2, 6, height, width, dtype=torch.float64, generator=generator)
        x = x.contiguous(memory_format=layout).requires_grad_()
        weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64, generator=generator, requires_grad=True)
        expected = torch.nn.functional.conv2d(x, weight, None, stride, kernel // 2, 1, 6)
        got = depthwise_conv(x, weight, stride)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)
        upstream = torch.randn_like(expected)
        for g, e in zip(torch.autograd.grad(got, (x, weight), upstream), torch.autograd.grad(expected, (x, weight), upstream)):
            torch.testing.assert_close(g, e)
