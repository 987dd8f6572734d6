"""Weight-sharing supernet over a search space.

One network holds the largest choice of every stage. Any ``ArchSpec`` of the space runs through
it: a block uses the leading channels of each weight (width and expansion), a smaller depthwise
kernel is the centre of the largest one, a stage with fewer repeats drops its trailing blocks,
and a lower resolution is the caller's resized input. The active architecture is an argument of
``forward(x, spec)``; nothing about it is stored on the modules between calls.

:meth:`Supernet.extract` returns the standalone ``build_model(spec)`` network with the inherited
weights: in eval mode it computes exactly what the supernet computes for that spec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import ArchSpec, BlockPlan, StageSpec, block_plan, se_channels
from .builder import (
    ConvBNAct,
    InvertedResidualNet,
    MobileNetV3Head,
    SqueezeExcite,
    build_model,
    depthwise_conv,
    init_weights,
    pointwise_conv,
)
from .space import SearchSpace, StageChoices

_MAX_FROZEN_SLICES = 8  # per layer: bounds the memory of the inference cache


def activate(y: Tensor, name: str | None) -> Tensor:
    """The block activations of :func:`search_spaces.builder.make_activation`, in place (``None``:
    linear)."""
    if name is None:
        return y
    if name == "relu6":
        return F.relu6(y, inplace=True)
    if name == "relu":
        return F.relu(y, inplace=True)
    if name == "hswish":
        return F.hardswish(y, inplace=True)
    raise ValueError(f"unknown activation {name!r}; use one of ('relu', 'relu6', 'hswish')")


class ElasticConvBN(nn.Module):
    """Conv (no bias, SAME padding) + batch norm at the largest size, run on a leading slice.

    ``depthwise`` convs slice channels (``groups`` = channels) and take the centre of the kernel;
    the others slice output and input channels. Batch norm uses the matching slice of its
    parameters and running statistics (which training updates in place, through the slice).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, depthwise: bool) -> None:
        super().__init__()
        groups = out_channels if depthwise else 1
        assert not depthwise or in_channels == out_channels
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.depthwise = depthwise
        # Inference only: contiguous copies of active slices, keyed by the size and by the
        # identity and version of the tensors they were copied from (any update invalidates them).
        self._frozen_slices: dict[tuple, tuple[tuple, tuple[Tensor, ...]]] = {}

    def _inference_slices(self, in_channels: int, out_channels: int, kernel_size: int) -> tuple[Tensor, ...]:
        sources = (self.conv.weight, self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var)
        stamp = tuple((id(t), t._version) for t in sources)
        key = (in_channels, out_channels, kernel_size)
        cached = self._frozen_slices.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        slices = tuple(t.contiguous() for t in self._active(in_channels, out_channels, kernel_size))
        if len(self._frozen_slices) >= _MAX_FROZEN_SLICES:
            self._frozen_slices.pop(next(iter(self._frozen_slices)))
        self._frozen_slices[key] = (stamp, slices)
        return slices

    def sliced_weight(self, in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
        """The active conv weight: leading channels, centre ``kernel_size`` x ``kernel_size`` taps."""
        weight = self.conv.weight
        largest = weight.shape[-1]
        if kernel_size > largest or kernel_size % 2 == 0:
            raise ValueError(f"kernel size {kernel_size} is not available (largest {largest}, odd sizes only)")
        lo = (largest - kernel_size) // 2
        in_channels = 1 if self.depthwise else in_channels
        if (out_channels, in_channels, kernel_size) == (weight.shape[0], weight.shape[1], largest):
            return weight
        return weight[:out_channels, :in_channels, lo : lo + kernel_size, lo : lo + kernel_size]

    def sliced_norm(self, channels: int) -> dict[str, Tensor]:
        """The active slice of the batch norm's parameters and buffers, by ``BatchNorm2d`` name."""
        bn = self.bn
        names = ("weight", "bias", "running_mean", "running_var")
        if channels == bn.num_features:
            return {name: getattr(bn, name) for name in names}
        return {name: getattr(bn, name)[:channels] for name in names}

    def _active(self, in_channels: int, out_channels: int, kernel_size: int) -> tuple[Tensor, ...]:
        """Views of the active conv weight and batch-norm weight, bias, mean and variance."""
        norm = self.sliced_norm(out_channels)
        weight = self.sliced_weight(in_channels, out_channels, kernel_size)
        return weight, norm["weight"], norm["bias"], norm["running_mean"], norm["running_var"]

    def forward(self, x: Tensor, out_channels: int, kernel_size: int, activation: str | None) -> Tensor:
        in_channels = x.shape[1]
        if self.training or torch.is_grad_enabled():  # views: gradients and running statistics flow back
            weight, gamma, beta, mean, var = self._active(in_channels, out_channels, kernel_size)
        else:
            weight, gamma, beta, mean, var = self._inference_slices(in_channels, out_channels, kernel_size)
        if self.depthwise:
            y = depthwise_conv(x, weight, self.conv.stride[0])
        elif kernel_size == 1 and self.conv.stride[0] == 1 and torch.is_grad_enabled():
            y = pointwise_conv(x, weight)
        else:
            y = F.conv2d(x, weight, None, self.conv.stride, kernel_size // 2)
        y = F.batch_norm(y, mean, var, gamma, beta, self.training, self.bn.momentum, self.bn.eps)
        return activate(y, activation)

    def copy_into(self, target: ConvBNAct, in_channels: int, out_channels: int, kernel_size: int) -> None:
        """Write the active slice into a standalone ``ConvBNAct`` of exactly that size."""
        conv, bn = target[0], target[1]
        conv.weight.copy_(self.sliced_weight(in_channels, out_channels, kernel_size))
        for name, value in self.sliced_norm(out_channels).items():
            getattr(bn, name).copy_(value)
        bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excitation at its largest size (``channels`` hidden, ``squeeze`` reduced), run on
    the active hidden width with the leading ``squeeze`` reduced channels, as Once-for-All's
    dynamic SE does: reduce weight ``[:squeeze, :channels]``, expand weight ``[:channels, :squeeze]``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def _active(self, channels: int, squeeze: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if squeeze > self.reduce.out_channels or channels > self.reduce.in_channels:
            raise ValueError(
                f"squeeze-excitation of {channels} channels reduced to {squeeze} is not available "
                f"(largest {self.reduce.in_channels} reduced to {self.reduce.out_channels})"
            )
        return (
            self.reduce.weight[:squeeze, :channels],
            self.reduce.bias[:squeeze],
            self.expand.weight[:channels, :squeeze],
            self.expand.bias[:channels],
        )

    def forward(self, x: Tensor, squeeze: int, gate: str) -> Tensor:
        w_reduce, b_reduce, w_expand, b_expand = self._active(x.shape[1], squeeze)
        s = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), w_reduce, b_reduce))
        s = F.conv2d(s, w_expand, b_expand)
        return x * (F.hardsigmoid(s) if gate == "hard_sigmoid" else torch.sigmoid(s))

    def copy_into(self, target: SqueezeExcite, channels: int, squeeze: int) -> None:
        w_reduce, b_reduce, w_expand, b_expand = self._active(channels, squeeze)
        target.reduce.weight.copy_(w_reduce)
        target.reduce.bias.copy_(b_reduce)
        target.expand.weight.copy_(w_expand)
        target.expand.bias.copy_(b_expand)


class ElasticInvertedResidual(nn.Module):
    """An inverted-residual block at its largest size (no expansion conv if every choice is t=1;
    squeeze-excitation of width ``squeeze`` when > 0)."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int, kernel_size: int, stride: int, squeeze: int = 0
    ) -> None:
        super().__init__()
        self.expand = ElasticConvBN(in_channels, hidden, 1, 1, depthwise=False) if hidden > in_channels else None
        self.depthwise = ElasticConvBN(hidden, hidden, kernel_size, stride, depthwise=True)
        self.se = ElasticSqueezeExcite(hidden, squeeze) if squeeze else None
        self.project = ElasticConvBN(hidden, out_channels, 1, 1, depthwise=False)

    def forward(
        self, x: Tensor, plan: BlockPlan, bottleneck_activation: str | None, wide: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Returns the block output and its (post-shortcut) expanded tensor, for a wide shortcut."""
        if plan.hidden != plan.in_channels:
            assert self.expand is not None, "expansion > 1 in a block built without an expansion conv"
            h = self.expand(x, plan.hidden, 1, plan.activation)
        else:
            h = x
        if plan.wide_shortcut:
            h = h + wide
        d = self.depthwise(h, plan.hidden, plan.kernel_size, plan.activation)
        if plan.se_channels:
            assert self.se is not None, "squeeze-excitation in a block built without it"
            d = self.se(d, plan.se_channels, plan.se_gate)
        out = self.project(d, plan.out_channels, 1, bottleneck_activation)
        return (out + x if plan.residual else out), h


def _largest_squeeze(choices: StageChoices, in_channels: int, hidden: int) -> int:
    """The widest squeeze any architecture gives a block of this stage (0: no SE)."""
    options = StageSpec(expansion=1, channels=1, repeats=1, **choices.block_options())
    return se_channels(options, in_channels, hidden)


class Supernet(nn.Module):
    """Every architecture of ``space`` in one set of shared weights.

    ``forward(x, spec)`` runs ``spec`` (which must be in the space) on ``x`` at ``spec``'s
    resolution. ``extract(spec)`` returns the standalone network with the inherited weights.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        space.validate()
        self.space = space
        self.stem = ElasticConvBN(3, space.stem_channels, 3, space.stem_stride, depthwise=False)
        stages = []
        in_channels = space.stem_channels
        for choices in space.stages:
            out_channels, kernel = max(choices.channels), max(choices.kernel_sizes)
            blocks = []
            for index in range(max(choices.repeats)):
                block_in = in_channels if index == 0 else out_channels
                stride = choices.stride if index == 0 else 1
                hidden = block_in * max(choices.expansions)
                squeeze = _largest_squeeze(choices, block_in, hidden)
                blocks.append(ElasticInvertedResidual(block_in, out_channels, hidden, kernel, stride, squeeze))
            stages.append(nn.ModuleList(blocks))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        head_width = space.head_channels if space.head == "mbv3" else space.last_channels
        self.head = ElasticConvBN(in_channels, head_width, 1, 1, depthwise=False)
        # MobileNetV3's last conv (after the pooling, bias, no batch norm) is fixed-size: the head
        # conv's width is not searched.
        self.last_conv = (
            MobileNetV3Head(head_width, space.last_channels, space.head_activation) if space.head == "mbv3" else None
        )
        self.classifier = nn.Linear(space.last_channels, space.num_classes)
        init_weights(self)

    def check(self, spec: ArchSpec) -> None:
        """``ValueError`` naming the first choice of ``spec`` that the space does not have."""
        self.space.encode(spec)

    def forward(self, x: Tensor, spec: ArchSpec) -> Tensor:
        features = self.features(x, spec)
        if self.last_conv is None:
            return self.classifier(features.mean((2, 3)))
        return self.classifier(self.last_conv(features.mean((2, 3), keepdim=True)).flatten(1))

    def features(self, x: Tensor, spec: ArchSpec) -> Tensor:
        """Head-conv output of ``spec`` for input ``x`` (the caller resizes ``x`` to the spec's
        resolution; the network itself is resolution-agnostic)."""
        x = self.stem(x, self.space.stem_channels, 3, spec.stem_activation)
        bottleneck_activation = "relu6" if spec.bottleneck_activation == "relu6" else None
        wide: Tensor | None = None
        for plan in block_plan(spec):
            x, wide = self.stages[plan.stage][plan.index](x, plan, bottleneck_activation, wide)
        return self.head(x, self.head.bn.num_features, 1, spec.head_activation)

    @torch.no_grad()
    def extract(self, spec: ArchSpec, dropout: float = 0.0) -> InvertedResidualNet:
        """The standalone ``build_model(spec)`` network with the weights and batch-norm statistics
        this supernet holds for ``spec`` (same mode as the supernet: train or eval)."""
        self.check(spec)
        with torch.random.fork_rng(devices=[]):  # build_model's random init is overwritten anyway
            model = build_model(spec, dropout=dropout)
        self.stem.copy_into(model.stem, 3, spec.stem_channels, 3)
        for plan, block in zip(block_plan(spec), model.blocks):
            source = self.stages[plan.stage][plan.index]
            if block.expand is not None:
                source.expand.copy_into(block.expand, plan.in_channels, plan.hidden, 1)
            source.depthwise.copy_into(block.depthwise, plan.hidden, plan.hidden, plan.kernel_size)
            if block.se is not None:
                source.se.copy_into(block.se, plan.hidden, plan.se_channels)
            source.project.copy_into(block.project, plan.hidden, plan.out_channels, 1)
        self.head.copy_into(model.head, spec.stages[-1].channels, self.head.bn.num_features, 1)
        if self.last_conv is not None:
            model.last_conv.load_state_dict(self.last_conv.state_dict())
        model.classifier.load_state_dict(self.classifier.state_dict())
        return model.train(self.training)
