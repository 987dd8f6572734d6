"""Reference zoo: published mobile networks as ``ArchSpec`` s, with the figures their papers report.

Each network is written in the compact string form (timm's arch-def notation: ``_se0.25`` squeeze-
excitation ratio, ``_nre`` / ``_nhs`` ReLU / h-swish, per-block values joined by ``:``), from the
layer tables of its paper:

- ``mobilenet_v2``: MobileNetV2 (arXiv 1801.04381) Table 2, any width multiplier and resolution.
- ``mobilenet_v3_large`` / ``mobilenet_v3_small``: MobileNetV3 (arXiv 1905.02244) Tables 1 and 2;
  the expansion sizes of the tables (e.g. 200 and 184 on 80 channels) as fractional expansion
  rates (2.5, 2.3) whose hidden widths round back to them; SE squeeze width
  ``make_divisible(hidden / 4, 8)``, hard-sigmoid gate; the head of Section 5.4. (Table 2 marks SE
  on Small's 576-channel head conv; the reference implementations and the published 2.5M
  parameters have none there, nor has this one.)
- ``mnasnet_a1``: MnasNet (arXiv 1807.11626) Figure 7(a); SE squeeze width ``int(input / 4)``,
  sigmoid gate, ReLU throughout (the TF reference ``mnasnet_models.py``).
- ``proxylessnas_mobile`` / ``_gpu`` / ``_cpu``: ProxylessNAS (arXiv 1812.00332) Figure 4, one
  single-block stage per searched block, ReLU6.
"""

from __future__ import annotations

from typing import NamedTuple

from .arch import ArchSpec
from .mobilenet import mobilenet_v2


class PublishedFigures(NamedTuple):
    """What a paper reports for a network at 224 px: multiply-adds and parameters (millions), and
    whether its parameter count includes the batch-norm scales and shifts."""

    madds_m: float
    params_m: float
    params_include_bn: bool
    source: str


_MOBILENET_V3_LARGE = (
    "in224_c16_s2_nhs"
    "-ir_r1_k3_s1_e1_c16_nre"
    "-ir_r2_k3_s2_e4:3_c24_nre"
    "-ir_r3_k5_s2_e3_c40_se0.25_nre"
    "-ir_r4_k3_s2_e6:2.5:2.3:2.3_c80_nhs"
    "-ir_r2_k3_s1_e6_c112_se0.25_nhs"
    "-ir_r3_k5_s2_e6_c160_se0.25_nhs"
    "-head_c1280_n1000_h960_nhs"
)
_MOBILENET_V3_SMALL = (
    "in224_c16_s2_nhs"
    "-ir_r1_k3_s2_e1_c16_se0.25_nre"
    "-ir_r2_k3_s2_e4.5:3.67_c24_nre"
    "-ir_r3_k5_s2_e4:6:6_c40_se0.25_nhs"
    "-ir_r2_k5_s1_e3_c48_se0.25_nhs"
    "-ir_r3_k5_s2_e6_c96_se0.25_nhs"
    "-head_c1024_n1000_h576_nhs"
)
_MNASNET_A1 = (
    "in224_c32_s2_nre"
    "-ir_r1_k3_s1_e1_c16_nre"
    "-ir_r2_k3_s2_e6_c24_nre"
    "-ir_r3_k5_s2_e3_c40_se0.25_sei_gsig_nre"
    "-ir_r4_k3_s2_e6_c80_nre"
    "-ir_r2_k3_s1_e6_c112_se0.25_sei_gsig_nre"
    "-ir_r3_k5_s2_e6_c160_se0.25_sei_gsig_nre"
    "-ir_r1_k3_s1_e6_c320_nre"
    "-head_c1280_n1000_nre"
)
_PROXYLESSNAS = {
    "proxylessnas_mobile": (
        "in224_c32_s2-ir_r1_k3_s1_e1_c16-ir_r1_k5_s2_e3_c32-ir_r1_k3_s1_e3_c32-ir_r1_k7_s2_e3_c40"
        "-ir_r1_k3_s1_e3_c40-ir_r1_k5_s1_e3_c40-ir_r1_k5_s1_e3_c40-ir_r1_k7_s2_e6_c80-ir_r1_k5_s1_e3_c80"
        "-ir_r1_k5_s1_e3_c80-ir_r1_k5_s1_e3_c80-ir_r1_k5_s1_e6_c96-ir_r1_k5_s1_e3_c96-ir_r1_k5_s1_e3_c96"
        "-ir_r1_k5_s1_e3_c96-ir_r1_k7_s2_e6_c192-ir_r1_k7_s1_e6_c192-ir_r1_k7_s1_e3_c192-ir_r1_k7_s1_e3_c192"
        "-ir_r1_k7_s1_e6_c320-head_c1280_n1000"
    ),
    "proxylessnas_gpu": (
        "in224_c40_s2-ir_r1_k3_s1_e1_c24-ir_r1_k5_s2_e3_c32-ir_r1_k7_s2_e3_c56-ir_r1_k3_s1_e3_c56"
        "-ir_r1_k7_s2_e6_c112-ir_r1_k5_s1_e3_c112-ir_r1_k5_s1_e6_c128-ir_r1_k3_s1_e3_c128-ir_r1_k5_s1_e3_c128"
        "-ir_r1_k7_s2_e6_c256-ir_r1_k7_s1_e6_c256-ir_r1_k7_s1_e6_c256-ir_r1_k5_s1_e6_c256-ir_r1_k7_s1_e6_c432"
        "-head_c1728_n1000"
    ),
    "proxylessnas_cpu": (
        "in224_c40_s2-ir_r1_k3_s1_e1_c24-ir_r1_k3_s2_e6_c32-ir_r1_k3_s1_e3_c32-ir_r1_k3_s1_e3_c32"
        "-ir_r1_k3_s1_e3_c32-ir_r1_k3_s2_e6_c48-ir_r1_k3_s1_e3_c48-ir_r1_k3_s1_e3_c48-ir_r1_k5_s1_e3_c48"
        "-ir_r1_k3_s2_e6_c88-ir_r1_k3_s1_e3_c88-ir_r1_k5_s1_e6_c104-ir_r1_k3_s1_e3_c104-ir_r1_k3_s1_e3_c104"
        "-ir_r1_k3_s1_e3_c104-ir_r1_k5_s2_e6_c216-ir_r1_k5_s1_e3_c216-ir_r1_k5_s1_e3_c216-ir_r1_k3_s1_e3_c216"
        "-ir_r1_k5_s1_e6_c360-head_c1432_n1000"
    ),
}
_FIXED = {
    "mobilenet_v3_large": _MOBILENET_V3_LARGE,
    "mobilenet_v3_small": _MOBILENET_V3_SMALL,
    "mnasnet_a1": _MNASNET_A1,
    **_PROXYLESSNAS,
}

PUBLISHED: dict[str, PublishedFigures] = {
    "mobilenet_v2": PublishedFigures(300, 3.4, False, "MobileNetV2 Table 4 (1.0, 224 px, 1001 classes)"),
    "mobilenet_v3_large": PublishedFigures(219, 5.4, False, "MobileNetV3 Table 3 (Large 1.0)"),
    "mobilenet_v3_small": PublishedFigures(56, 2.5, False, "MobileNetV3 Table 3 (Small 1.0)"),
    "mnasnet_a1": PublishedFigures(312, 3.9, False, "MnasNet Table 1 (MnasNet-A1)"),
    "proxylessnas_mobile": PublishedFigures(320, 4.1, True, "ProxylessNAS Table 2 / the authors' configs"),
    "proxylessnas_gpu": PublishedFigures(465, 7.1, True, "ProxylessNAS Table 3 / the authors' configs"),
    "proxylessnas_cpu": PublishedFigures(439, 4.4, True, "ProxylessNAS Table 3 / the authors' configs"),
}
REFERENCE_NAMES: tuple[str, ...] = tuple(PUBLISHED)


def reference_arch(
    name: str, width_mult: float = 1.0, resolution: int = 224, num_classes: int | None = None
) -> ArchSpec:
    """The published network ``name`` (one of :data:`REFERENCE_NAMES`) as an ``ArchSpec``.

    ``width_mult`` applies to ``mobilenet_v2`` only (its TF-slim channel rounding); every network
    takes another ``resolution`` and ``num_classes`` (default: the published 1001 for MobileNetV2,
    1000 for the others)."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown reference network {name!r}; use one of {list(REFERENCE_NAMES)}")
    if name == "mobilenet_v2":
        return mobilenet_v2(width_mult, resolution, 1001 if num_classes is None else num_classes)
    if width_mult != 1.0:
        raise ValueError(f"width_mult applies to mobilenet_v2 only; {name} is published at width 1.0")
    spec = ArchSpec.from_string(_FIXED[name])
    return spec.replace(resolution=resolution, num_classes=spec.num_classes if num_classes is None else num_classes)


__all__ = ["PUBLISHED", "REFERENCE_NAMES", "PublishedFigures", "reference_arch"]
