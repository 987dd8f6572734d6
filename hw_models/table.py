"""Per-layer cost table of an ``ArchSpec`` (for reports and for checking the totals)."""

from __future__ import annotations

import pandas as pd

from search_spaces.arch import ArchSpec, block_plan, conv_out_size, final_size

from .analytic import IMAGE_CHANNELS, STEM_KERNEL, conv_madds, conv_params, head_width

COLUMNS = ["layer", "op", "input", "output", "kernel", "stride", "madds", "params", "bn_params", "activation_bytes"]


def _shape(size: int, channels: int) -> str:
    return f"{size}x{size}x{channels}"


def layer_table(spec: ArchSpec, bytes_per_element: int = 2) -> pd.DataFrame:
    """One row per conv / linear layer: shapes (HxWxC), MAdds, parameters (BN folded; BN params in
    their own column), and the bytes of the layer's output tensor."""
    rows: list[dict] = []

    def add(layer, op, in_size, in_c, out_size, out_c, k, stride, groups=1, bn=True, bias=False):
        rows.append(
            {
                "layer": layer,
                "op": op,
                "input": _shape(in_size, in_c),
                "output": _shape(out_size, out_c),
                "kernel": k,
                "stride": stride,
                "madds": conv_madds(out_size, in_c, out_c, k, groups),
                "params": conv_params(in_c, out_c, k, groups) + (out_c if bias else 0),
                "bn_params": 2 * out_c if bn else 0,
                "activation_bytes": out_size * out_size * out_c * bytes_per_element,
            }
        )

    stem_size = conv_out_size(spec.resolution, spec.stem_stride)
    add("stem", "conv", spec.resolution, IMAGE_CHANNELS, stem_size, spec.stem_channels, STEM_KERNEL, spec.stem_stride)
    for p in block_plan(spec):
        name = f"s{p.stage}.b{p.index}"
        if p.hidden != p.in_channels:
            add(f"{name}.expand", "conv1x1", p.in_size, p.in_channels, p.in_size, p.hidden, 1, 1)
        add(f"{name}.depthwise", "dwconv", p.in_size, p.hidden, p.out_size, p.hidden, p.kernel_size, p.stride, p.hidden)
        if p.se_channels:  # on the pooled 1x1 vector, with biases, no BN
            add(f"{name}.se_reduce", "se_fc", 1, p.hidden, 1, p.se_channels, 1, 1, bn=False, bias=True)
            add(f"{name}.se_expand", "se_fc", 1, p.se_channels, 1, p.hidden, 1, 1, bn=False, bias=True)
        add(f"{name}.project", "conv1x1", p.out_size, p.hidden, p.out_size, p.out_channels, 1, 1)
    size = final_size(spec)
    width = head_width(spec)
    add("head", "conv1x1", size, spec.stages[-1].channels, size, width, 1, 1)
    if spec.head == "mbv3":
        add("last_conv", "conv1x1", 1, width, 1, spec.last_channels, 1, 1, bn=False, bias=True)
    rows.append(
        {
            "layer": "classifier",
            "op": "linear",
            "input": str(spec.last_channels),
            "output": str(spec.num_classes),
            "kernel": 1,
            "stride": 1,
            "madds": spec.last_channels * spec.num_classes,
            "params": spec.last_channels * spec.num_classes + spec.num_classes,
            "bn_params": 0,
            "activation_bytes": spec.num_classes * bytes_per_element,
        }
    )
    return pd.DataFrame(rows, columns=COLUMNS)
