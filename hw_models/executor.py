"""Memory-efficient inference of a built network, the way MobileNetV2 Section 5 describes it.

An inverted-residual block is ``F(x) = A(N(B(x)))`` with ``B`` the 1x1 expansion, ``N`` =
act . depthwise . act (per channel) and ``A`` the 1x1 projection. Because ``N`` works per
channel, the expanded tensor can be computed in ``t`` slices of its channels and the projections
of the slices summed into the output: only the block input, its output and one slice (expansion
output + depthwise output) are alive, never the whole expanded tensor.

Squeeze-excitation (MobileNetV3 Section 5.3) breaks that: the gate of every channel depends on
the global mean of the whole depthwise output, so no slice can be projected before all of them
are computed. A block with SE therefore computes its expansion and depthwise slice by slice into
one whole depthwise tensor, pools it, scales it in place by the gate, and then projects it; the
block input is freed once nothing needs it (after the depthwise slices unless a residual
addition still does). The alternative, pooling per slice and recomputing every slice in a second
pass, would keep the slice-sized peak at the price of running the expansion and depthwise convs
twice; the MAdds and latency figures of this package count every op once, so the executor does
not recompute (and its peak is what ``policy="bottleneck"`` also says: an SE block's depthwise
output exists whole).

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

from search_spaces.arch import BlockPlan, block_plan
from search_spaces.builder import ConvBNAct, InvertedResidualNet, SqueezeExcite

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


def _activate_(x: Tensor, activation: str | None) -> Tensor:
    """The activation in place (None: identity); values equal to the builder's modules."""
    if activation == "relu6":
        return x.clamp_(0.0, 6.0)
    if activation == "relu":
        return x.relu_()
    if activation == "hswish":
        return F.hardswish(x, inplace=True)
    assert activation is None, activation
    return x


_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish"}


def _layer_activation(layer: nn.Sequential) -> str | None:
    return _ACTIVATION_MODULES.get(type(layer[-1]))


@dataclass(frozen=True)
class _SqueezeExcite:
    """A block's squeeze-excitation as matrices: reduce (S, hidden) + bias, expand (hidden, S) +
    bias, and the gate."""

    reduce_w: Tensor
    reduce_b: Tensor
    expand_w: Tensor
    expand_b: Tensor
    gate: str

    @classmethod
    def of(cls, se: SqueezeExcite) -> _SqueezeExcite:
        def matrix(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
            return conv.weight.detach().flatten(1).clone(), conv.bias.detach().clone()

        (rw, rb), (ew, eb) = matrix(se.reduce), matrix(se.expand)
        return cls(rw, rb, ew, eb, se.gate)

    def gate_(self, g: Tensor) -> Tensor:
        return F.hardsigmoid(g, inplace=True) if self.gate == "hard_sigmoid" else g.sigmoid_()

    def channel_scale(self, d2d: Tensor) -> Tensor:
        """Gate values (hidden,) of the whole depthwise output ``d2d`` (hidden, H*W): its mean,
        squeezed (freeing the mean), expanded (freeing the squeezed vector), gated in place."""
        pooled = d2d.mean(dim=1)
        squeezed = torch.addmv(self.reduce_b, self.reduce_w, pooled).relu_()
        del pooled
        return self.gate_(torch.addmv(self.expand_b, self.expand_w, squeezed))


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
    expand_activation: str = "relu6"  # after the slices' expansion (the stem's when fused)
    se: _SqueezeExcite | None = None
    project_w: Tensor | None = None  # whole (C_out, hidden) projection, for a block with SE


class SplitExecutor:
    """Run ``model`` (an ``InvertedResidualNet``) computing each block's expanded tensor in ``t``
    chunks; outputs equal ``model.eval()(x)`` up to float rounding.

    Supports every ``ArchSpec`` option: shortcut "bottleneck", "none" and "expansion" (blocks
    joined by a wide shortcut hold their whole expanded tensor, as the memory model says),
    bottleneck activation "linear" or "relu6", ReLU / ReLU6 / h-swish in the stem, blocks and
    head, squeeze-excitation (the block's depthwise output is made whole, see the module doc)
    and the MobileNetV3 head. Weights are folded and sliced once, here; batch norm uses its
    running statistics, whatever the model's train/eval mode.
    """

    def __init__(self, model: InvertedResidualNet, t: int = 1) -> None:
        if not isinstance(model, InvertedResidualNet):
            raise ValueError(
                f"SplitExecutor needs a model from search_spaces.build_model, but got {type(model).__name__}"
            )
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
            last = model.last_conv
            self._last = (
                None
                if last is None
                else (last.conv.weight.detach().flatten(1).clone(), last.conv.bias.detach().clone())
            )
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
            expand_activation=self.spec.stem_activation if fused else p.activation,
            se=None if module.se is None else _SqueezeExcite.of(module.se),
            project_w=None if module.se is None else pw.contiguous(),
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
        # Tensors pass between blocks in a list ("carry": the block input and the wide shortcut)
        # that the block empties, so that it holds the only references and can free its input.
        if self.fused_stem:
            carry = self._fused_block(self._blocks[0], inputs)
            blocks = self._blocks[1:]
        else:
            image = inputs.pop()
            w, b = self._stem
            x = _activate_(
                F.conv2d(image, w, b, self.spec.stem_stride, padding=w.shape[-1] // 2), self.spec.stem_activation
            )
            del image
            carry, blocks = [x, None], self._blocks
            del x
        for block in blocks:
            carry = self._se_block(block, carry) if block.se is not None else self._block(block, carry)
        x = carry.pop(0)
        carry.clear()
        head_w, head_b = self._head
        h = _activate_(torch.addmm(head_b, head_w, x.view(x.shape[1], -1)), self.spec.head_activation)
        del x
        pooled = h.mean(dim=1)
        del h
        if self._last is not None:
            last_w, last_b = self._last
            pooled = _activate_(torch.addmv(last_b, last_w, pooled), self.spec.head_activation)
        cls_w, cls_b = self._classifier
        return torch.addmm(cls_b, pooled.unsqueeze(0), cls_w.t())

    @staticmethod
    def _new_output(block: _Block, x2d: Tensor | None, dtype: torch.dtype) -> Tensor:
        p = block.plan
        if p.residual and not block.relu6_out:
            return torch.add(x2d, block.project_b)  # the shortcut is added up front, for free
        y = torch.empty(p.out_channels, p.out_size * p.out_size, dtype=dtype)
        return y.copy_(block.project_b)  # never .contiguous(): at 1x1 that would alias the bias

    @staticmethod
    def _finish(block: _Block, y: Tensor, x2d: Tensor | None) -> Tensor:
        p = block.plan
        if block.relu6_out:
            y.clamp_(0.0, 6.0)
            if p.residual:
                y.add_(x2d)
        return y.view(1, p.out_channels, p.out_size, p.out_size)

    def _depthwise(self, block: _Block, s: _Slice, h: Tensor) -> Tensor:
        p = block.plan
        d = F.conv2d(h, s.dw_w, s.dw_b, p.stride, p.kernel_size // 2, 1, s.hi - s.lo)
        return _activate_(d, p.activation)

    def _stem_slice(self, block: _Block, s: _Slice, image: Tensor) -> Tensor:
        e = F.conv2d(image, s.expand_w, s.expand_b, block.stem_stride, s.expand_w.shape[-1] // 2)
        return _activate_(e, block.expand_activation)

    def _fused_block(self, block: _Block, inputs: list[Tensor]) -> list[Tensor | None]:
        """First t=1 block whose 'expansion' is the stem conv, computed slice by slice."""
        if block.se is not None:
            return self._se_block(block, [inputs.pop(), None])
        image = inputs.pop()
        p = block.plan
        y = self._new_output(block, None, image.dtype)
        for s in block.slices:
            e = self._stem_slice(block, s, image)
            d = self._depthwise(block, s, e)
            del e
            y.addmm_(s.project_w, d.view(s.hi - s.lo, -1))
            del d
        assert not p.residual
        return [self._finish(block, y, None), None]

    def _wide_tensor(self, block: _Block, x: Tensor, x2d: Tensor, wide: Tensor | None) -> Tensor | None:
        """The whole expanded tensor of a block joined to a neighbour by a wide shortcut: the
        incoming one with this block's expansion summed into it in place (slice by slice), or
        this block's own, computed whole (the block input itself when t = 1); None otherwise."""
        p = block.plan
        if p.wide_shortcut:
            assert wide is not None and wide.shape[1] == p.hidden
            h2d = wide.view(p.hidden, -1)
            if block.expand_w is None:
                h2d.add_(x2d)
            else:
                for s in block.slices:
                    e = _activate_(torch.addmm(s.expand_b, s.expand_w, x2d), p.activation)
                    h2d[s.lo : s.hi].add_(e)
                    del e
            return wide
        if block.feeds_wide:
            if block.expand_w is None:
                return x
            h = _activate_(torch.addmm(block.expand_b, block.expand_w, x2d), p.activation)
            return h.view(1, p.hidden, p.in_size, p.in_size)
        return None

    def _expanded_slice(self, block: _Block, s: _Slice, x: Tensor, x2d: Tensor, h: Tensor | None) -> Tensor:
        p = block.plan
        if h is not None:
            return h[:, s.lo : s.hi]
        if s.expand_w is None:
            return x[:, s.lo : s.hi]
        e = _activate_(torch.addmm(s.expand_b, s.expand_w, x2d), p.activation)
        return e.view(1, s.hi - s.lo, p.in_size, p.in_size)

    def _block(self, block: _Block, carry: list[Tensor | None]) -> list[Tensor | None]:
        x, wide = carry
        carry.clear()
        p = block.plan
        x2d = x.view(p.in_channels, -1)
        y = self._new_output(block, x2d, x.dtype)
        h = self._wide_tensor(block, x, x2d, wide)
        del wide
        for s in block.slices:
            e = self._expanded_slice(block, s, x, x2d, h)
            d = self._depthwise(block, s, e)
            del e
            y.addmm_(s.project_w, d.view(s.hi - s.lo, -1))
            del d
        return [self._finish(block, y, x2d), h if block.feeds_wide else None]

    def _se_block(self, block: _Block, carry: list[Tensor | None]) -> list[Tensor | None]:
        """A block with squeeze-excitation: depthwise slices into one whole tensor (the slice's
        own output when there is one slice), then pool, gate in place, project whole."""
        x, wide = carry
        carry.clear()
        p = block.plan
        fused = block.stem_stride > 0
        x2d = None if fused else x.view(p.in_channels, -1)
        h = None if fused else self._wide_tensor(block, x, x2d, wide)
        del wide
        d_all = torch.empty(p.hidden, p.out_size * p.out_size, dtype=x.dtype) if len(block.slices) > 1 else None
        for s in block.slices:
            e = self._stem_slice(block, s, x) if fused else self._expanded_slice(block, s, x, x2d, h)
            d = self._depthwise(block, s, e)
            del e
            if d_all is None:
                d_all = d.view(p.hidden, -1)
            else:
                d_all[s.lo : s.hi].copy_(d.view(s.hi - s.lo, -1))
            del d
        if not block.feeds_wide:
            h = None
        if not p.residual:  # the input is no longer needed (or lives on only as h, when t = 1)
            x = x2d = None
        d_all.mul_(block.se.channel_scale(d_all).unsqueeze(1))
        y = self._new_output(block, x2d, d_all.dtype)
        if not block.relu6_out:  # a linear bottleneck's shortcut is already in y
            x = x2d = None
        y.addmm_(block.project_w, d_all)
        del d_all
        return [self._finish(block, y, x2d), h]


@dataclass(frozen=True)
class _Conv:
    """A conv with batch norm folded in, and its activation (applied in place) if the layer has one."""

    weight: Tensor
    bias: Tensor
    stride: int
    groups: int
    activation: str | None

    @classmethod
    def fold(cls, layer: ConvBNAct) -> _Conv:
        conv, bn = layer[0], layer[1]
        weight, bias = fold_bn(conv, bn)
        return cls(weight, bias, conv.stride[0], conv.groups, _layer_activation(layer))

    def __call__(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.weight.shape[-1] // 2, 1, self.groups)
        return _activate_(y, self.activation)


@dataclass(frozen=True)
class _Layers:
    plan: BlockPlan
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv
    feeds_wide: bool
    se: _SqueezeExcite | None = None


class NaiveExecutor:
    """Plain layer-by-layer inference of ``model`` (an ``InvertedResidualNet``), the baseline of
    ``peak_memory_bytes(spec, policy="naive")``; outputs equal ``model.eval()(x)`` up to float
    rounding.

    The inference graph, run one op at a time: every conv (batch norm folded into it), every
    shortcut addition and the squeeze-excitation's channel-wise scale (binary elementwise ops)
    allocate their output, activations and the gate run in place, the pooled vectors of SE and
    of the head are tensors of their own, and each tensor is freed after its last consumer: the
    block input after the expansion conv (or after the residual addition), the previous block's
    expanded tensor after it is added to this block's (shortcut="expansion"). The input image
    belongs to the caller and stays alive for the whole run.
    """

    def __init__(self, model: InvertedResidualNet) -> None:
        if not isinstance(model, InvertedResidualNet):
            raise ValueError(
                f"NaiveExecutor needs a model from search_spaces.build_model, but got {type(model).__name__}"
            )
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
                    se=None if m.se is None else _SqueezeExcite.of(m.se),
                )
                for i, (p, m) in enumerate(zip(plans, model.blocks, strict=True))
            )
            self._head = _Conv.fold(model.head)
            last = model.last_conv
            self._last = (
                None
                if last is None
                else (last.conv.weight.detach().flatten(1).clone(), last.conv.bias.detach().clone())
            )
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
            if b.se is not None:
                d = self._squeeze_excite(b.se, d)
            x = b.project(d)
            d = None
            if shortcut is not None:
                x = torch.add(x, shortcut)
                shortcut = None
        x = self._head(x)
        pooled = x.mean(dim=(2, 3))
        x = None
        if self._last is not None:
            last_w, last_b = self._last
            pooled = _activate_(F.linear(pooled, last_w, last_b), self.spec.head_activation)
        weight, bias = self._classifier
        return F.linear(pooled, weight, bias)

    @staticmethod
    def _squeeze_excite(se: _SqueezeExcite, d: Tensor) -> Tensor:
        """Pool -> reduce + ReLU -> expand + gate -> ``d * gate``, each op its own output."""
        pooled = d.mean(dim=(2, 3))
        squeezed = F.linear(pooled, se.reduce_w, se.reduce_b).relu_()
        pooled = None
        gate = se.gate_(F.linear(squeezed, se.expand_w, se.expand_b))
        squeezed = None
        return torch.mul(d, gate[:, :, None, None])


__all__ = ["NaiveExecutor", "SplitExecutor", "fold_bn"]
