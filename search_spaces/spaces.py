"""Named search spaces shipped with the package."""

from __future__ import annotations

import os
from dataclasses import replace

from .space import SearchSpace, StageChoices


def mobilenetv2_imagenet() -> SearchSpace:
    """Around MobileNetV2 (Table 2) for ImageNet-size inputs on phone targets.

    Contains MobileNetV2 1.0 at 128-224 px (t=6, Table 2 widths and repeats, 3x3 kernels); each
    stage can shrink or grow its width, depth and expansion, and use 5x5 depthwise kernels.
    """
    return SearchSpace(
        name="mobilenetv2-imagenet",
        resolutions=(128, 160, 192, 224),
        stem_channels=32,
        stages=(
            StageChoices(expansions=(1,), channels=(16,), repeats=(1,), kernel_sizes=(3,), stride=1),
            StageChoices(expansions=(3, 4, 6), channels=(16, 24, 32), repeats=(1, 2, 3), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(3, 4, 6), channels=(24, 32, 40), repeats=(2, 3, 4), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(3, 4, 6), channels=(48, 64, 80), repeats=(2, 3, 4), kernel_sizes=(3, 5), stride=2),
            StageChoices(
                expansions=(3, 4, 6), channels=(72, 96, 112), repeats=(2, 3, 4), kernel_sizes=(3, 5), stride=1
            ),
            StageChoices(
                expansions=(3, 4, 6), channels=(128, 160, 192), repeats=(2, 3, 4), kernel_sizes=(3, 5), stride=2
            ),
            StageChoices(expansions=(3, 4, 6), channels=(256, 320), repeats=(1,), kernel_sizes=(3, 5), stride=1),
        ),
        last_channels=1280,
        num_classes=1001,
    )


def mobilenetv2_cifar() -> SearchSpace:
    """Around MobileNetV2 for CIFAR-size inputs (32x32, 10 classes), as the common
    MobileNetV2-on-CIFAR recipes adapt it: the stem and the 24-channel stage keep stride 1 instead
    of 2, so the network downsamples 8x (32 -> 4 px) rather than 32x. Contains that network
    (t=6, Table 2 widths and repeats, 3x3 kernels) at 32 px; the choices per stage are those of
    ``mobilenetv2-imagenet`` at 24-32 px, except that the stride-1 24-channel stage chooses from
    24-40 channels: with 16 (its input's width) its first block would gain a residual connection
    when narrowed, and costs would no longer grow with every choice."""
    imagenet = mobilenetv2_imagenet()
    first, second, *rest = imagenet.stages
    return replace(
        imagenet,
        name="mobilenetv2-cifar",
        resolutions=(24, 28, 32),
        stem_stride=1,
        stages=(first, replace(second, channels=(24, 32, 40), stride=1), *rest),
        num_classes=10,
    )


def proxy_digits() -> SearchSpace:
    """A small proxy space that trains in minutes on a CPU on the embedded cluttered-digits
    dataset (24x24 canvases, 10 classes). Same block structure as MobileNetV2, fewer and
    narrower stages; resolutions from 12 px (the digit barely legible) to the full 24 px, so
    that every dimension trades accuracy for cost."""
    return SearchSpace(
        name="proxy-digits",
        resolutions=(12, 16, 20, 24),
        stem_channels=8,
        stem_stride=2,
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), stride=1),
            StageChoices(expansions=(2, 4, 6), channels=(8, 12, 16), repeats=(1, 2), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 4, 6), channels=(16, 24), repeats=(1, 2, 3), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 4, 6), channels=(24, 32, 48), repeats=(1, 2), kernel_sizes=(3, 5), stride=1),
        ),
        last_channels=96,
        num_classes=10,
    )


def _ofa_stage(
    channels: int, stride: int, depths: tuple[int, ...], kernels: tuple[int, ...], **options
) -> StageChoices:
    return StageChoices(
        expansions=(3, 4, 6),
        channels=(channels,),
        repeats=depths,
        kernel_sizes=kernels,
        stride=stride,
        per_block=True,
        **options,
    )


def ofa_mbv3() -> SearchSpace:
    """Once-for-All's MobileNetV3 space (arXiv 1908.09791, ``ofa_mbv3_d234_e346_k357_w1.0``):
    MobileNetV3-Large's widths, strides, SE and h-swish placement (arXiv 1905.02244 Table 1),
    and for each of the five searched stages a depth in {2, 3, 4} and, per block, a depthwise
    kernel in {3, 5, 7} and an expansion in {3, 4, 6}; resolutions 128-224. The first block (16
    channels, t=1) and the head (960 -> pool -> 1280, h-swish) are fixed, as in Once-for-All."""
    depths, kernels = (2, 3, 4), (3, 5, 7)
    return SearchSpace(
        name="ofa-mbv3",
        resolutions=(128, 160, 192, 224),
        stem_channels=16,
        stem_activation="hswish",
        stages=(
            StageChoices(expansions=(1,), channels=(16,), repeats=(1,), kernel_sizes=(3,), activation="relu"),
            _ofa_stage(24, 2, depths, kernels, activation="relu"),
            _ofa_stage(40, 2, depths, kernels, se_ratio=0.25, activation="relu"),
            _ofa_stage(80, 2, depths, kernels, activation="hswish"),
            _ofa_stage(112, 1, depths, kernels, se_ratio=0.25, activation="hswish"),
            _ofa_stage(160, 2, depths, kernels, se_ratio=0.25, activation="hswish"),
        ),
        head="mbv3",
        head_channels=960,
        last_channels=1280,
        head_activation="hswish",
        num_classes=1000,
    )


def proxy_ofa_digits() -> SearchSpace:
    """``ofa-mbv3`` at the size of ``proxy-digits`` (24x24 digits, 10 classes), within the default
    run's time on a CPU: per-block kernels and expansions {3, 4, 6}, a depth per stage,
    squeeze-excitation and h-swish where MobileNetV3 puts them (SE from the second searched stage,
    h-swish in the last), the MobileNetV3 head. Kernels are {3, 5}: the feature maps here are 3-12
    px, where a 7x7 depthwise kernel sees the whole map, and 7x7 is the slowest depthwise conv on
    a CPU (with it, supernet steps take 1.4x those of ``proxy-digits``; without, 0.9x)."""
    kernels = (3, 5)
    return SearchSpace(
        name="proxy-ofa-digits",
        resolutions=(12, 16, 20, 24),
        stem_channels=8,
        stem_activation="hswish",
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), activation="relu"),
            _ofa_stage(16, 2, (1, 2), kernels, activation="relu"),
            _ofa_stage(24, 2, (1, 2), kernels, se_ratio=0.25, activation="relu"),
            _ofa_stage(32, 1, (1, 2), kernels, se_ratio=0.25, activation="hswish"),
        ),
        head="mbv3",
        head_channels=96,
        last_channels=128,
        head_activation="hswish",
        num_classes=10,
    )


SPACES = {
    "mobilenetv2-imagenet": mobilenetv2_imagenet,
    "proxy-digits": proxy_digits,
    "mobilenetv2-cifar": mobilenetv2_cifar,
    "ofa-mbv3": ofa_mbv3,
    "proxy-ofa-digits": proxy_ofa_digits,
}
DEFAULT_PROXY_SPACE = "proxy-digits"


def get_space(name_or_path: str | os.PathLike[str] | SearchSpace) -> SearchSpace:
    """A shipped space by name, or a space from a JSON file."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    key = os.fspath(name_or_path)
    if key in SPACES:
        return SPACES[key]()
    if key.endswith(".json") or os.path.sep in key or os.path.exists(key):
        return SearchSpace.from_json(key)
    raise ValueError(f"unknown search space {key!r}; use one of {sorted(SPACES)} or a path to a JSON file")
