"""MobileNetV2's own scaling knobs inside a search space: the baseline a search must beat."""

from __future__ import annotations

from search_spaces import ArchSpec, SearchSpace

WIDTH_MULTIPLIERS = (0.5, 0.75, 1.0, 1.4)


def _closest(choices: tuple[int, ...], value: float) -> int:
    return min(choices, key=lambda c: (abs(c - value), -c))


def _median(choices: tuple[int, ...]) -> int:
    """The middle choice (the upper one of two)."""
    ordered = sorted(choices)
    return ordered[len(ordered) // 2]


def mobilenet_v2_family(
    space: SearchSpace, width_multipliers: tuple[float, ...] = WIDTH_MULTIPLIERS
) -> list[tuple[str, ArchSpec]]:
    """The MobileNetV2 width-multiplier x resolution family, snapped to the space's choices.

    The reference network (multiplier 1.0) has MobileNetV2's block settings: expansion 6 (the
    nearest choice), 3x3 depthwise kernels (the nearest), and the middle choice of each stage's
    depth and width (in ``mobilenetv2-imagenet`` that is MobileNetV2's Table 2 but for one stage's
    depth). A width multiplier scales every stage's width to the nearest available choice. Every
    member is evaluated exactly like a searched architecture (same supernet, same cost model).
    """
    family: dict[ArchSpec, str] = {}
    for mult in width_multipliers:
        for resolution in sorted(space.resolutions):
            params: dict[str, object] = {"resolution": resolution}
            for i, st in enumerate(space.stages):
                params.update(
                    space.stage_params(
                        i,
                        expansion=_closest(st.expansions, 6),
                        channels=_closest(st.channels, mult * _median(st.channels)),
                        repeats=_median(st.repeats),
                        kernel_size=_closest(st.kernel_sizes, 3),
                    )
                )
            spec = space.spec_from_params(params)
            family.setdefault(spec, f"MobileNetV2 x{mult:g} @{resolution}")
    return [(label, spec) for spec, label in family.items()]
