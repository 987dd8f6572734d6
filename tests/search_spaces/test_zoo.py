"""Reference zoo: published networks rebuilt from their papers' tables, checked against the
figures the papers report (golden values: MobileNetV3 Table 3, MnasNet Table 1, ProxylessNAS)."""

from __future__ import annotations

import pytest

from hw_models.analytic import count_madds, count_params
from search_spaces import PUBLISHED, REFERENCE_NAMES, build_model, mobilenet_v2, reference_arch

GOLDEN = {  # name: (MAdds in millions, params in millions), as published
    "mobilenet_v3_large": (219, 5.4),
    "mobilenet_v3_small": (56, 2.5),
    "mnasnet_a1": (312, 3.9),
    "proxylessnas_mobile": (320, 4.1),
    "proxylessnas_gpu": (465, 7.1),
    "proxylessnas_cpu": (439, 4.4),
    "mobilenet_v2": (300, 3.4),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_zoo_network_has_its_published_madds_and_params(name):
    spec = reference_arch(name)
    madds_m, params_m = GOLDEN[name]
    include_bn = PUBLISHED[name].params_include_bn
    assert abs(count_madds(spec) / 1e6 - madds_m) <= 0.02 * madds_m
    assert abs(count_params(spec, include_bn=include_bn) / 1e6 - params_m) <= 0.1
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec, include_bn=True)


def test_torch_parameter_counts_of_the_reference_implementations():
    """torchvision's MobileNetV3 (BN counted, 1000 classes): 5,483,032 and 2,542,856 parameters;
    timm's mnasnet_a1: 3,887,038."""
    counts = {n: count_params(reference_arch(n), include_bn=True) for n in ("mobilenet_v3_large", "mobilenet_v3_small")}
    assert counts == {"mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}
    assert count_params(reference_arch("mnasnet_a1"), include_bn=True) == 3_887_038


def test_mobilenet_v2_takes_width_and_resolution():
    assert reference_arch("mobilenet_v2", 0.5, 160) == mobilenet_v2(0.5, 160)
    assert reference_arch("mobilenet_v3_large", resolution=160).resolution == 160
    assert set(REFERENCE_NAMES) == set(GOLDEN)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "resnet50"}, r"unknown reference network 'resnet50'; use one of \['mobilenet_v2'"),
        ({"name": "mnasnet_a1", "width_mult": 1.4}, "width_mult applies to mobilenet_v2 only"),
    ],
)
def test_bad_zoo_requests_say_what_is_available(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reference_arch(**kwargs)
