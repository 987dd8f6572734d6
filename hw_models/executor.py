"""Memory-efficient inference of a built network, the way MobileNetV2 Section 5 describes it.

An inverted-residual block is ``F(x) = A(N(B(x)))`` with ``B`` the 1x1 expansion, ``N`` =
ReLU6 . depthwise . ReLU6 (per channel) and ``A`` the 1x1 projection. Because ``N`` works per
channel, the expanded tensor can be computed in ``t`` slices of its channels and the projections
of the slices summed into the output: only the block input, its output and one slice (expansion
output + depthwise output) are alive, never the whole expanded tensor.

:class:`SplitExecutor` runs a network built by :func:`search_spaces.build_model` that way, with
batch norm folded into the conv weights (inference). Its live tensors are exactly those that
``peak_memory_bytes(spec, policy="split", t=t)`` accounts for, step by step; tests measure them
with :func:`hw_models.memtrace.measure_peak_bytes` and compare. :class:`NaiveExecutor` is the
baseline: the same folded network run plainly, one layer at a time, whose live tensors are those
of ``peak_memory_bytes(spec, policy="naive")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.arch import BlockPlan, block_plan, require_mobilenet_v2_ops
from search_spaces.builder import ConvBNAct, InvertedResidualNet

from .analytic import _stem_fused, chunk_width


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Conv weight and bias equal to ``bn(conv(x))`` in eval mode (computed in float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    dtype = conv.weight.dtype
    return weight.to(dtype).contiguous(), bias.to(dtype).contiguous()


@dataclass(frozen=True)
class _Slice:
    """Folded weights of one slice ``[lo, hi)`` of a block's expanded channels."""

    lo: int
    hi: int
    expand_w: Tensor | None  # (c, C_in) 1x1 expansion, (c, 3, k, k) stem conv when fused, None for t=1
    expand_b: Tensor | None  # (c, 1) for the 1x1 expansion, (c,) for the stem conv
    dw_w: Tensor  # (c, 1, k, k)
    dw_b: Tensor  # (c,)
    project_w: Tensor  # (C_out, c)


@dataclass(frozen=True)
class _Block:
    plan: BlockPlan
    slices: tuple[_Slice, ...]
    expand_w: Tensor | None  # whole (hidden, C_in) expansion, for a wide tensor computed whole
    expand_b: Tensor | None
    project_b: Tensor  # (C_out, 1)
    relu6_out: bool  # bottleneck_activation == "relu6"
    feeds_wide: bool  # the next block adds this block's expanded tensor to its own
    stem_stride: int = 0  # > 0: the slices' expansion is the stem conv (fused first block)


def _relu6_(x: Tensor) -> Tensor:
    return x.clamp_(0.0, 6.0)


class SplitExecutor:
    """Run ``model`` (an ``InvertedResidualNet``) computing each block's expanded tensor in ``t``
    chunks; outputs equal ``model.eval()(x)`` up to float rounding.

    Supports every ``ArchSpec`` block option: shortcut "bottleneck", "none" and "expansion"
    (blocks joined by a wide shortcut hold their whole expanded tensor, as the memory model
    says) and bottleneck activation "linear" or "relu6". Weights are folded and sliced once,
    here; batch norm uses its running statistics, whatever the model's train/eval mode.
    """

    def __init__(self, model: InvertedResidualNet, t: int = 1) -> None:
        if not isinstance(model, InvertedResidualNet):
            raise ValueError(
                f"SplitExecutor needs a model from search_spaces.build_model, but got {type(model).__name__}"
            )
        require_mobilenet_v2_ops(model.spec, "SplitExecutor")
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"t (number of chunks) must be an integer >= 1, but got {t!r}")
        self.spec = model.spec
        self.t = t
        plans = block_plan(self.spec)
        self.fused_stem = _stem_fused(plans)
        with torch.no_grad():
            stem_w, stem_b = fold_bn(model.stem[0], model.stem[1])
            self._stem = (stem_w, stem_b)
            self._blocks = tuple(
                self._prepare_block(i, plans, module, stem_w, stem_b) for i, module in enumerate(model.blocks)
            )
            head_w, head_b = fold_bn(model.head[0], model.head[1])
            self._head = (head_w.flatten(1).contiguous(), head_b.view(-1, 1))
            self._classifier = (model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone())

    def _prepare_block(
        self, i: int, plans: tuple[BlockPlan, ...], module: nn.Module, stem_w: Tensor, stem_b: Tensor
    ) -> _Block:
        p = plans[i]
        fused = i == 0 and self.fused_stem
        dw_w, dw_b = fold_bn(module.depthwise[0], module.depthwise[1])
        pw, pb = fold_bn(module.project[0], module.project[1])
        pw = pw.flatten(1)
        if module.expand is not None:
            ew, eb = fold_bn(module.expand[0], module.expand[1])
            ew, eb = ew.flatten(1), eb.view(-1, 1)
        elif fused:
            ew, eb = stem_w, stem_b
        else:
            ew = eb = None
        width = chunk_width(p.hidden, self.t)
        slices = tuple(
            _Slice(
                lo,
                min(lo + width, p.hidden),
                None if ew is None else ew[lo : lo + width].contiguous(),
                None if eb is None else eb[lo : lo + width].contiguous(),
                dw_w[lo : lo + width].contiguous(),
                dw_b[lo : lo + width].contiguous(),
                pw[:, lo : lo + width].contiguous(),
            )
            for lo in range(0, p.hidden, width)
        )
        return _Block(
            plan=p,
            slices=slices,
            expand_w=None if fused else ew,
            expand_b=None if fused else eb,
            project_b=pb.view(-1, 1),
            relu6_out=self.spec.bottleneck_activation == "relu6",
            feeds_wide=i + 1 < len(plans) and plans[i + 1].wide_shortcut,
            stem_stride=self.spec.stem_stride if fused else 0,
        )

    # ---- running -----------------------------------------------------------------------------
    def __call__(self, x: Tensor) -> Tensor:
        """Logits for a batch ``x`` of shape (N, 3, H, W); images run one at a time (the memory
        figures are per image)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), but got {tuple(x.shape)}")
        with torch.no_grad():
            return torch.cat([self.run([x[n : n + 1]]) for n in range(x.shape[0])])

    def run(self, inputs: list[Tensor]) -> Tensor:
        """Logits (1, classes) for the single image in ``inputs``, which is emptied so that the
        executor holds the only reference and frees the image once the stem has read it. Use this
        (with the image created inside the measured function) to measure peak memory."""
        if len(inputs) != 1 or inputs[0].dim() != 4 or inputs[0].shape[:2] != (1, 3):
            raise ValueError("run() takes a list holding one image of shape (1, 3, H, W)")
        with torch.no_grad():
            return self._run(inputs)

    def _run(self, inputs: list[Tensor]) -> Tensor:
        image = inputs.pop()
        if self.fused_stem:
            x, wide = self._fused_block(self._blocks[0], image)
            blocks = self._blocks[1:]
        else:
            w, b = self._stem
            x = _relu6_(F.conv2d(image, w, b, self.spec.stem_stride, padding=w.shape[-1] // 2))
            wide, blocks = None, self._blocks
        del image
        for block in blocks:
            x, wide = self._block(block, x, wide)
        head_w, head_b = self._head
        h = _relu6_(torch.addmm(head_b, head_w, x.view(x.shape[1], -1)))
        del x
        pooled = h.mean(dim=1)
        del h
        cls_w, cls_b = self._classifier
        return torch.addmm(cls_b, pooled.unsqueeze(0), cls_w.t())

    @staticmethod
    def _new_output(block: _Block, x2d: Tensor) -> Tensor:
        p = block.plan
        if p.residual and not block.relu6_out:
            return torch.add(x2d, block.project_b)  # the shortcut is added up front, for free
        y = torch.empty(p.out_channels, p.out_size * p.out_size, dtype=x2d.dtype)
        return y.copy_(block.project_b)  # never .contiguous(): at 1x1 that would alias the bias

    @staticmethod
    def _finish(block: _Block, y: Tensor, x2d: Tensor | None) -> Tensor:
        p = block.plan
        if block.relu6_out:
            _relu6_(y)
            if p.residual:
                y.add_(x2d)
        return y.view(1, p.out_channels, p.out_size, p.out_size)

    def _depthwise(self, block: _Block, s: _Slice, h: Tensor) -> Tensor:
        p = block.plan
        return _relu6_(F.conv2d(h, s.dw_w, s.dw_b, p.stride, p.kernel_size // 2, 1, s.hi - s.lo))

    def _fused_block(self, block: _Block, image: Tensor) -> tuple[Tensor, None]:
        """First t=1 block whose 'expansion' is the stem conv, computed slice by slice."""
        p = block.plan
        y = self._new_output(block, image)
        for s in block.slices:
            e = _relu6_(F.conv2d(image, s.expand_w, s.expand_b, block.stem_stride, s.expand_w.shape[-1] // 2))
            d = self._depthwise(block, s, e)
            del e
            y.addmm_(s.project_w, d.view(s.hi - s.lo, -1))
            del d
        assert not p.residual
        return self._finish(block, y, None), None

    def _block(self, block: _Block, x: Tensor, wide: Tensor | None) -> tuple[Tensor, Tensor | None]:
        p = block.plan
        x2d = x.view(p.in_channels, -1)
        y = self._new_output(block, x2d)
        h: Tensor | None = None
        if p.wide_shortcut:
            assert wide is not None and wide.shape[1] == p.hidden
            h = wide
            h2d = h.view(p.hidden, -1)
            if block.expand_w is None:
                h2d.add_(x2d)
            else:
                for s in block.slices:
                    e = _relu6_(torch.addmm(s.expand_b, s.expand_w, x2d))
                    h2d[s.lo : s.hi].add_(e)
                    del e
        elif block.feeds_wide:
            if block.expand_w is None:
                h = x
            else:
                h = _relu6_(torch.addmm(block.expand_b, block.expand_w, x2d)).view(1, p.hidden, p.in_size, p.in_size)
        for s in block.slices:
            if h is not None:
                e = h[:, s.lo : s.hi]
            elif s.expand_w is None:
                e = x[:, s.lo : s.hi]
            else:
                e = _relu6_(torch.addmm(s.expand_b, s.expand_w, x2d)).view(1, s.hi - s.lo, p.in_size, p.in_size)
            d = self._depthwise(block, s, e)
            del e
            y.addmm_(s.project_w, d.view(s.hi - s.lo, -1))
            del d
        return self._finish(block, y, x2d), (h if block.feeds_wide else None)


@dataclass(frozen=True)
class _Conv:
    """A conv with batch norm folded in, and its ReLU6 (applied in place) if the layer has one."""

    weight: Tensor
    bias: Tensor
    stride: int
    groups: int
    relu6: bool

    @classmethod
    def fold(cls, layer: ConvBNAct) -> _Conv:
        conv, bn = layer[0], layer[1]
        weight, bias = fold_bn(conv, bn)
        return cls(weight, bias, conv.stride[0], conv.groups, isinstance(layer[-1], nn.ReLU6))

    def __call__(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.weight.shape[-1] // 2, 1, self.groups)
        return _relu6_(y) if self.relu6 else y


@dataclass(frozen=True)
class _Layers:
    plan: BlockPlan
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv
    feeds_wide: bool


class NaiveExecutor:
    """Plain layer-by-layer inference of ``model`` (an ``InvertedResidualNet``), the baseline of
    ``peak_memory_bytes(spec, policy="naive")``; outputs equal ``model.eval()(x)`` up to float
    rounding.

    The inference graph, run one op at a time: every conv (batch norm folded into it) and every
    shortcut addition allocates its output, ReLU6 runs in place, and each tensor is freed after
    its last consumer: the block input after the expansion conv (or after the residual addition),
    the previous block's expanded tensor after it is added to this block's (shortcut="expansion").
    The input image belongs to the caller and stays alive for the whole run.
    """

    def __init__(self, model: InvertedResidualNet) -> None:
        if not isinstance(model, InvertedResidualNet):
            raise ValueError(
                f"NaiveExecutor needs a model from search_spaces.build_model, but got {type(model).__name__}"
            )
        require_mobilenet_v2_ops(model.spec, "NaiveExecutor")
        self.spec = model.spec
        plans = block_plan(self.spec)
        with torch.no_grad():
            self._stem = _Conv.fold(model.stem)
            self._blocks = tuple(
                _Layers(
                    p,
                    None if m.expand is None else _Conv.fold(m.expand),
                    _Conv.fold(m.depthwise),
                    _Conv.fold(m.project),
                    feeds_wide=i + 1 < len(plans) and plans[i + 1].wide_shortcut,
                )
                for i, (p, m) in enumerate(zip(plans, model.blocks, strict=True))
            )
            self._head = _Conv.fold(model.head)
            self._classifier = (model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone())

    def __call__(self, x: Tensor) -> Tensor:
        """Logits for a batch ``x`` of shape (N, 3, H, W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"input must have shape (N, 3, H, W), but got {tuple(x.shape)}")
        with torch.no_grad():
            return self._run(x)

    def _run(self, image: Tensor) -> Tensor:
        # Names are rebound to None rather than reused so that no tensor outlives its last use.
        x = self._stem(image)
        wide: Tensor | None = None
        for b in self._blocks:
            h = x if b.expand is None else b.expand(x)
            shortcut = x if b.plan.residual else None
            x = None
            if b.plan.wide_shortcut:
                h = torch.add(h, wide)
            wide = None
            d = b.depthwise(h)
            wide = h if b.feeds_wide else None
            h = None
            x = b.project(d)
            d = None
            if shortcut is not None:
                x = torch.add(x, shortcut)
                shortcut = None
        x = self._head(x)
        pooled = x.mean(dim=(2, 3))
        x = None
        weight, bias = self._classifier
        return F.linear(pooled, weight, bias)


__all__ = ["NaiveExecutor", "SplitExecutor", "fold_bn"]
