"""Build a ``torch.nn.Module`` from an ``ArchSpec``.

Blocks are dumb: they are told their channels, stride, kernel and which shortcuts they carry.
Network-level decisions (channel rounding, where shortcuts go) come from the spec and
:func:`search_spaces.arch.block_plan`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import ArchSpec, BlockPlan, block_plan


def make_activation(name: str) -> nn.Module:
    """``"relu"``, ``"relu6"`` or ``"hswish"`` (MobileNetV3 eq. (2): x * ReLU6(x + 3) / 6)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; use one of ('relu', 'relu6', 'hswish')")


def depthwise_conv(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """Depthwise convolution with SAME padding (``kernel // 2``), as ``F.conv2d`` computes it.

    Where the image is smaller than the kernel (the last stages of a small-input network) the
    taps that can only ever meet padding are dropped and the remaining padding is added
    explicitly: the same sums, without zero terms. oneDNN's weight gradient takes a slow path when
    its padding reaches across the image (on AVX2 CPUs 3-20x slower: 12 ms instead of 3.4 ms for
    32 x 144 channels of 3 x 3 pixels with a 5 x 5 kernel).
    """
    kernel = weight.shape[-1]
    height, width = x.shape[-2:]
    if min(height, width) >= kernel:
        return F.conv2d(x, weight, None, stride, kernel // 2, 1, x.shape[1])
    # Only offsets within +-(size - 1) of the centre reach the image (for any stride).
    kh, kw = min(kernel, 2 * height - 1), min(kernel, 2 * width - 1)
    top, left = (kernel - kh) // 2, (kernel - kw) // 2
    weight = weight[:, :, top : top + kh, left : left + kw]
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2)).contiguous(memory_format=layout)
    return F.conv2d(x, weight, None, stride, 0, 1, x.shape[1])


def pointwise_conv(x: Tensor, weight: Tensor) -> Tensor:
    """1x1 convolution (stride 1, no padding, no bias), as ``F.conv2d`` computes it.

    On a channels-last input it is one matrix product over the pixels (the input already is the
    pixels x channels matrix: no copy). On the CPU that skips oneDNN's set-up of every call, a cost
    that does not shrink with the batch (the default supernet trains ~20% faster; see the README).
    Other layouts go to ``F.conv2d``.
    """
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1)).permute(0, 3, 1, 2)
    return F.conv2d(x, weight)


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a 1x1 kernel (stride 1) that trains through :func:`pointwise_conv` (the
    same values) when it has no bias. In eval mode, and without gradients, it is the plain
    convolution, so exported graphs are ``nn.Conv2d``'s."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and self.bias is None:
            return pointwise_conv(x, self.weight)
        return super().forward(x)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with one group per channel that trains through :func:`depthwise_conv` (the
    same values; faster on the CPU for images smaller than the kernel). In eval mode, and without
    gradients, it is the plain convolution, so exported graphs are ``nn.Conv2d``'s."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            return depthwise_conv(x, self.weight, self.stride[0])
        return super().forward(x)


class ConvBNAct(nn.Sequential):
    """Conv (no bias, SAME padding) -> BatchNorm -> optional activation (ReLU6 by default)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool | str | None = True,
    ) -> None:
        depthwise = groups > 1 and groups == in_channels == out_channels
        pointwise = kernel_size == 1 and stride == 1 and groups == 1
        layers: list[nn.Module] = [
            (DepthwiseConv2d if depthwise else PointwiseConv2d if pointwise else nn.Conv2d)(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(make_activation("relu6" if activation is True else activation))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 Section 5.3 / MnasNet squeeze-excitation on the hidden tensor: global average
    pool -> 1x1 conv (with bias) to ``squeeze`` channels -> ReLU -> 1x1 conv (with bias) back ->
    gate (hard sigmoid ReLU6(x + 3) / 6, or sigmoid) -> channel-wise scale of the input."""

    def __init__(self, channels: int, squeeze: int, gate: str = "hard_sigmoid") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        s = torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        s = self.expand(s)
        s = F.hardsigmoid(s) if self.gate == "hard_sigmoid" else torch.sigmoid(s)
        return x * s


class InvertedResidual(nn.Module):
    """1x1 expansion + act -> kxk depthwise + act -> [squeeze-excitation] -> 1x1 projection
    (linear by default); act is ReLU6 unless the stage says otherwise.

    ``residual`` adds the block input to its output (shortcut between bottlenecks).
    ``wide_shortcut`` adds the previous block's expanded tensor to this block's expanded tensor
    (conventional residual between expansions); use :meth:`forward_wide` for that.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        kernel_size: int,
        stride: int,
        residual: bool,
        wide_shortcut: bool = False,
        bottleneck_activation: bool = False,
        activation: str = "relu6",
        se_channels: int = 0,
        se_gate: str = "hard_sigmoid",
    ) -> None:
        super().__init__()
        self.expand = ConvBNAct(in_channels, hidden, 1, activation=activation) if hidden != in_channels else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, activation=activation)
        self.se = SqueezeExcite(hidden, se_channels, se_gate) if se_channels else None
        self.project = ConvBNAct(hidden, out_channels, 1, activation=bottleneck_activation)
        self.residual = residual
        self.wide_shortcut = wide_shortcut

    def _after_expansion(self, h: Tensor) -> Tensor:
        h = self.depthwise(h)
        if self.se is not None:
            h = self.se(h)
        return self.project(h)

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        out = self._after_expansion(h)
        return out + x if self.residual else out

    def forward_wide(self, x: Tensor, wide: Tensor | None) -> tuple[Tensor, Tensor]:
        """Forward that also returns the (post-shortcut) expanded tensor for the next block."""
        h = self.expand(x) if self.expand is not None else x
        if self.wide_shortcut:
            assert wide is not None and wide.shape == h.shape
            h = h + wide
        out = self._after_expansion(h)
        return (out + x if self.residual else out), h

    @classmethod
    def from_plan(cls, plan: BlockPlan, bottleneck_activation: str = "linear") -> InvertedResidual:
        return cls(
            plan.in_channels,
            plan.out_channels,
            plan.hidden,
            plan.kernel_size,
            plan.stride,
            residual=plan.residual,
            wide_shortcut=plan.wide_shortcut,
            bottleneck_activation=bottleneck_activation == "relu6",
            activation=plan.activation,
            se_channels=plan.se_channels,
            se_gate=plan.se_gate,
        )


class MobileNetV3Head(nn.Module):
    """MobileNetV3 Section 5.4 head, from the pooled features: 1x1 conv with bias and no batch
    norm (the "last" conv, moved after the pooling) + activation."""

    def __init__(self, in_channels: int, out_channels: int, activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class InvertedResidualNet(nn.Module):
    """Stem -> inverted-residual blocks -> 1x1 head conv -> global average pool ->
    [MobileNetV3: 1x1 conv] -> classifier."""

    def __init__(self, spec: ArchSpec, dropout: float = 0.2) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBNAct(3, spec.stem_channels, 3, spec.stem_stride, activation=spec.stem_activation)
        self.blocks = nn.ModuleList(InvertedResidual.from_plan(p, spec.bottleneck_activation) for p in block_plan(spec))
        head_width = spec.head_channels if spec.head == "mbv3" else spec.last_channels
        self.head = ConvBNAct(spec.stages[-1].channels, head_width, 1, activation=spec.head_activation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.last_conv = (
            MobileNetV3Head(head_width, spec.last_channels, spec.head_activation) if spec.head == "mbv3" else None
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(spec.last_channels, spec.num_classes)
        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.spec.shortcut == "expansion":
            wide: Tensor | None = None
            for block in self.blocks:
                x, wide = block.forward_wide(x, wide)
        else:
            for block in self.blocks:
                x = block(x)
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        if self.last_conv is not None:
            x = self.last_conv(x)
        return self.classifier(self.dropout(x.flatten(1)))


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec: ArchSpec, dropout: float = 0.2) -> InvertedResidualNet:
    """Build the network an ``ArchSpec`` describes (randomly initialised, train mode)."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"build_model expects an ArchSpec, but got {type(spec).__name__}")
    return InvertedResidualNet(spec, dropout=dropout)


def example_input(spec: ArchSpec, batch_size: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """A random NCHW input at the spec's resolution."""
    return torch.randn(batch_size, 3, spec.resolution, spec.resolution, generator=generator)
