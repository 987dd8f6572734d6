from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from hw_models import load_target, profile_target
from hw_models.profile import covering_networks, fit_network_terms, main, space_parts, timed_forward
from hw_models.targets import spec_part_keys
from search_spaces import SPACES, SearchSpace, StageChoices, build_model, get_space


def tiny_ofa_space(shortcuts=("bottleneck",)) -> SearchSpace:
    """Per-block choices, squeeze-excitation, h-swish and the MobileNetV3 head, small."""
    return SearchSpace(
        name="tiny-ofa",
        resolutions=(16,),
        stem_channels=8,
        stem_activation="hswish",
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), activation="relu"),
            StageChoices(
                expansions=(2, 3),
                channels=(16,),
                repeats=(1, 2, 3),
                kernel_sizes=(3, 5),
                stride=2,
                per_block=True,
                se_ratio=0.25,
                activation="hswish",
            ),
        ),
        head="mbv3",
        head_channels=24,
        last_channels=32,
        head_activation="hswish",
        num_classes=4,
        shortcuts=shortcuts,
    )


def tiny_space(shortcuts=("bottleneck",), activations=("linear",)) -> SearchSpace:
    return SearchSpace(
        name="tiny",
        resolutions=(16,),
        stem_channels=8,
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), stride=1),
            StageChoices(expansions=(2, 3), channels=(8, 16), repeats=(1, 2), kernel_sizes=(3,), stride=2),
        ),
        last_channels=16,
        num_classes=4,
        shortcuts=shortcuts,
        bottleneck_activations=activations,
    )


@pytest.mark.parametrize(
    "space",
    [
        get_space("proxy-digits"),
        tiny_space(("bottleneck", "expansion", "none"), ("linear", "relu6")),
        get_space("proxy-digits").__class__(
            **{**get_space("proxy-digits").__dict__, "shortcuts": ("expansion",), "name": "proxy-expansion"}
        ),
        get_space("proxy-ofa-digits"),
        tiny_ofa_space(("bottleneck", "expansion", "none")),
    ],
    ids=lambda s: s.name,
)
def test_space_parts_cover_every_sampled_architecture(space, rng):
    parts = {(p.kind, p.key) for p in space_parts(space)}
    for _ in range(300):
        spec = space.sample(rng)
        for kind, keys in spec_part_keys(spec).items():
            for key in keys:
                assert (kind, key) in parts, (kind, key, str(spec))


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_parts_are_distinct(name):
    parts = space_parts(get_space(name))
    assert len({(p.kind, p.key) for p in parts}) == len(parts)
    assert {p.kind for p in parts} == {"stem", "blocks", "head", "classifier"}


@pytest.mark.parametrize("shortcut", ["bottleneck", "expansion"])
@pytest.mark.parametrize("space", ["proxy-digits", "proxy-ofa-digits"])
def test_timed_forward_is_the_forward_pass(space, shortcut, rng):
    spec = get_space(space).sample(rng).replace(shortcut=shortcut)
    net = build_model(spec).eval()
    x = torch.randn(1, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        out, stamps = timed_forward(net, x)
        torch.testing.assert_close(out, net(x), rtol=0, atol=0)
    assert len(stamps) == 1 + 1 + spec.num_blocks + 2 and stamps == sorted(stamps)


@pytest.mark.parametrize("name", ["proxy-digits", "proxy-ofa-digits"])
def test_covering_networks_contain_every_part(name):
    space = get_space(name)
    parts = space_parts(space)
    nets = covering_networks(parts, {(p.kind, p.key) for p in parts}, space)
    covered = {(k, key) for s in nets for k, keys in spec_part_keys(s).items() for key in keys}
    assert covered == {(p.kind, p.key) for p in parts}
    # A network holds one block per position, so the parts seen at the busiest block position
    # need about that many networks: the greedy cover must come within 10% of that floor.
    busiest = max(Counter((p.plan.stage, p.plan.index) for p in parts if p.plan is not None).values())
    assert len(nets) <= 1.1 * busiest < len(parts) / 2


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_a_couple_of_blocks(runtime, rng):
    space = tiny_space()
    target = profile_target(
        space,
        "tinyhost",
        runtime,
        statistic="median",
        threads=1,
        warmup=1,
        repeats=3,
        max_blocks=2,
        overhead_archs=1,
        rounds=1,
        progress=False,
    )
    in_space = len([p for p in space_parts(space) if p.kind == "blocks"])
    measured = len(target.lookup.parts["blocks"])
    # onnxruntime times exactly the chosen blocks; torch times every block of the networks containing them
    assert measured == 2 if runtime == "onnxruntime" else 2 <= measured < in_space
    assert target.lookup.statistic == "median"
    assert target.lookup.runtime == runtime and target.provenance["blocks_in_space"] == in_space
    assert all(c >= 0 for c in target.coefficients)
    assert "fallback" in target.provenance and target.provenance["blocks_measured"] == measured
    coverages = []
    with pytest.warns(UserWarning, match="fallback per-op model"):  # said once per target
        for _ in range(20):
            spec = space.sample(rng)
            assert target.predict(spec) > 0  # blocks not measured fall back to the fitted op model
            coverages.append(target.coverage(spec))
    assert min(coverages) < 1
    assert target.fit["fallback_model"]["rows"] >= 2


def test_cli_writes_a_target_found_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path / "targets"))
    space_file = tmp_path / "tiny.json"
    tiny_space().to_json(space_file)
    argv = ["--target-name", "bench", "--space", str(space_file), "--max-blocks", "2", "--repeats", "3"]
    argv += ["--warmup", "1", "--overhead-archs", "1", "--rounds", "1", "--no-progress"]
    assert main(argv) == 0
    assert "saved latency target 'bench'" in capsys.readouterr().out
    target = load_target("bench")
    assert target.provenance["space"] == "tiny" and target.lookup.threads == 1
    assert target.lookup.statistic == "p10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # parts left out by --max-blocks
        assert np.isfinite(target.predict(tiny_space().largest()))


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--target-name", "x", "--space", "nope"], "unknown search space"),
        (["--target-name", "../x"], "target name"),
        (["--target-name", "x", "--repeats", "1"], "repeats"),
        (["--target-name", "x", "--max-blocks", "0"], "max_blocks"),
    ],
)
def test_cli_errors_are_one_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1


def test_network_terms_recover_scale_and_overhead():
    sums = [0.4, 0.6, 0.9, 1.3]
    e2e = [1.07 * (x + 0.02) for x in sums]
    assert fit_network_terms(e2e, sums) == pytest.approx((1.07, 0.02))


def test_network_overhead_is_never_negative():
    """Parts that add up to more than whole networks by a constant give overhead 0 and a scale
    below 1, never a negative call cost (which would predict tiny networks at <= 0 ms)."""
    sums = [0.4, 0.6, 0.9, 1.3]
    scale, overhead = fit_network_terms([x - 0.05 for x in sums], sums)
    assert overhead == 0.0 and 0.8 < scale < 1.0
    with pytest.raises(ValueError):
        fit_network_terms([1.0, -1.0], [1.0, 1.0])


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_a_space_with_squeeze_excitation_hswish_and_the_mbv3_head(runtime, rng):
    space = tiny_ofa_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # onnx export chatter
        target = profile_target(
            space, "tinyofa", runtime, statistic="median", warmup=1, repeats=3, max_blocks=3, overhead_archs=2,
            rounds=1, progress=False,
        )  # fmt: skip
    assert set(target.ops) == {"squeeze_excitation", "hswish", "mbv3_head"}
    blocks = target.lookup.parts["blocks"]
    kinds = {(key[-3], key[-2] > 0) for key in blocks}  # (activation, has squeeze-excitation)
    assert ("hswish", True) in kinds and kinds <= {("hswish", True), ("relu", False)}
    (classifier,) = target.lookup.parts["classifier"]
    assert classifier[3:] == (24, "hswish")  # the mbv3 head's pooled width and last conv's activation
    assert all(c >= 0 for c in target.coefficients)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # blocks left out by max_blocks fall back
        for _ in range(10):
            assert target.predict(space.sample(rng)) > 0
    again = type(target).from_dict(target.to_dict())
    assert again.ops == target.ops
    assert {k: set(v) for k, v in again.lookup.parts.items()} == {k: set(v) for k, v in target.lookup.parts.items()}


def test_a_measured_target_refuses_ops_its_space_has_not_and_names_the_command():
    spec = get_space("proxy-ofa-digits").largest()
    with pytest.raises(ValueError, match="profiled on space 'proxy-digits'") as e:
        load_target("host").predict(spec)
    message = str(e.value)
    assert (
        "\n" not in message and "python -m hw_models.profile --target-name host-ofa --space proxy-ofa-digits" in message
    )
