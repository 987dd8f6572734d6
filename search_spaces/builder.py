"""Build a ``torch.nn.Module`` from an ``ArchSpec``.

Blocks are dumb: they are told their channels, stride, kernel and which shortcuts they carry.
Network-level decisions (channel rounding, where shortcuts go) come from the spec and
:func:`search_spaces.arch.block_plan`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .arch import ArchSpec, BlockPlan, block_plan


class ConvBNAct(nn.Sequential):
    """Conv (no bias, SAME padding) -> BatchNorm -> optional ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
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
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion + ReLU6 -> kxk depthwise + ReLU6 -> 1x1 projection (linear by default).

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
    ) -> None:
        super().__init__()
        self.expand = ConvBNAct(in_channels, hidden, 1) if hidden != in_channels else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=bottleneck_activation)
        self.residual = residual
        self.wide_shortcut = wide_shortcut

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(h))
        return out + x if self.residual else out

    def forward_wide(self, x: Tensor, wide: Tensor | None) -> tuple[Tensor, Tensor]:
        """Forward that also returns the (post-shortcut) expanded tensor for the next block."""
        h = self.expand(x) if self.expand is not None else x
        if self.wide_shortcut:
            assert wide is not None and wide.shape == h.shape
            h = h + wide
        out = self.project(self.depthwise(h))
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
        )


class InvertedResidualNet(nn.Module):
    """Stem -> inverted-residual blocks -> 1x1 head conv -> global average pool -> classifier."""

    def __init__(self, spec: ArchSpec, dropout: float = 0.2) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBNAct(3, spec.stem_channels, 3, spec.stem_stride)
        self.blocks = nn.ModuleList(InvertedResidual.from_plan(p, spec.bottleneck_activation) for p in block_plan(spec))
        self.head = ConvBNAct(spec.stages[-1].channels, spec.last_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
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
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


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
