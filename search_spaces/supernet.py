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

from .arch import ArchSpec, BlockPlan, block_plan
from .builder import ConvBNAct, InvertedResidualNet, build_model, init_weights
from .space import SearchSpace

_MAX_FROZEN_SLICES = 8  # per layer: bounds the memory of the inference cache


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

    def forward(self, x: Tensor, out_channels: int, kernel_size: int, activation: bool) -> Tensor:
        in_channels = x.shape[1]
        if self.training or torch.is_grad_enabled():  # views: gradients and running statistics flow back
            weight, gamma, beta, mean, var = self._active(in_channels, out_channels, kernel_size)
        else:
            weight, gamma, beta, mean, var = self._inference_slices(in_channels, out_channels, kernel_size)
        groups = out_channels if self.depthwise else 1
        y = F.conv2d(x, weight, None, self.conv.stride, kernel_size // 2, 1, groups)
        y = F.batch_norm(y, mean, var, gamma, beta, self.training, self.bn.momentum, self.bn.eps)
        return F.relu6(y, inplace=True) if activation else y

    def copy_into(self, target: ConvBNAct, in_channels: int, out_channels: int, kernel_size: int) -> None:
        """Write the active slice into a standalone ``ConvBNAct`` of exactly that size."""
        conv, bn = target[0], target[1]
        conv.weight.copy_(self.sliced_weight(in_channels, out_channels, kernel_size))
        for name, value in self.sliced_norm(out_channels).items():
            getattr(bn, name).copy_(value)
        bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class ElasticInvertedResidual(nn.Module):
    """An inverted-residual block at its largest size (no expansion conv if every choice is t=1)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.expand = ElasticConvBN(in_channels, hidden, 1, 1, depthwise=False) if hidden > in_channels else None
        self.depthwise = ElasticConvBN(hidden, hidden, kernel_size, stride, depthwise=True)
        self.project = ElasticConvBN(hidden, out_channels, 1, 1, depthwise=False)

    def forward(self, x: Tensor, plan: BlockPlan, relu6_bottleneck: bool, wide: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns the block output and its (post-shortcut) expanded tensor, for a wide shortcut."""
        if plan.hidden != plan.in_channels:
            assert self.expand is not None, "expansion > 1 in a block built without an expansion conv"
            h = self.expand(x, plan.hidden, 1, activation=True)
        else:
            h = x
        if plan.wide_shortcut:
            h = h + wide
        out = self.project(
            self.depthwise(h, plan.hidden, plan.kernel_size, True), plan.out_channels, 1, relu6_bottleneck
        )
        return (out + x if plan.residual else out), h


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
                blocks.append(ElasticInvertedResidual(block_in, out_channels, hidden, kernel, stride))
            stages.append(nn.ModuleList(blocks))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.head = ElasticConvBN(in_channels, space.last_channels, 1, 1, depthwise=False)
        self.classifier = nn.Linear(space.last_channels, space.num_classes)
        init_weights(self)

    def check(self, spec: ArchSpec) -> None:
        """``ValueError`` naming the first choice of ``spec`` that the space does not have."""
        self.space.encode(spec)

    def forward(self, x: Tensor, spec: ArchSpec) -> Tensor:
        return self.classifier(self.features(x, spec).mean((2, 3)))

    def features(self, x: Tensor, spec: ArchSpec) -> Tensor:
        """Head-conv output of ``spec`` for input ``x`` (the caller resizes ``x`` to the spec's
        resolution; the network itself is resolution-agnostic)."""
        x = self.stem(x, self.space.stem_channels, 3, activation=True)
        relu6_bottleneck = spec.bottleneck_activation == "relu6"
        wide: Tensor | None = None
        for plan in block_plan(spec):
            x, wide = self.stages[plan.stage][plan.index](x, plan, relu6_bottleneck, wide)
        return self.head(x, self.space.last_channels, 1, activation=True)

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
            source.project.copy_into(block.project, plan.hidden, plan.out_channels, 1)
        self.head.copy_into(model.head, spec.stages[-1].channels, spec.last_channels, 1)
        model.classifier.load_state_dict(self.classifier.state_dict())
        return model.train(self.training)
