"""``python -m hw_models.report --arch mobilenet_v2``: per-layer costs and totals of an architecture."""

from __future__ import annotations

import os
import sys

from invres_utils.cli import OneLineParser, positive_int
from search_spaces import REFERENCE_NAMES, ArchSpec, parse_arch, reference_arch

from .analytic import MEMORY_POLICIES, count_madds, count_params, peak_memory_bytes
from .table import layer_table


def resolve_arch(value: str, width_mult: float = 1.0, resolution: int | None = None) -> ArchSpec:
    """A reference-zoo name (``mobilenet_v2`` with ``--width-mult``; every one with
    ``--resolution``), a JSON file or a compact string."""
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
        raise ValueError(f"--resolution must be an integer >= 1, but got {resolution!r}")
    if value in REFERENCE_NAMES:
        return reference_arch(value, width_mult, 224 if resolution is None else resolution)
    try:
        spec = parse_arch(value)
    except ValueError as e:
        if os.path.isfile(value) and value not in str(e):  # name the file the message is about
            raise ValueError(f"architecture file {value}: {e}") from None
        raise
    return spec if resolution is None else spec.replace(resolution=resolution)


def format_report(spec: ArchSpec, bytes_per_element: int = 2, split_t: int = 4) -> str:
    table = layer_table(spec, bytes_per_element)
    madds, params = count_madds(spec), count_params(spec)
    lines = [
        f"architecture: {spec.to_string()}",
        "",
        table.to_string(index=False),
        "",
        f"MAdds:      {madds:,} ({madds / 1e6:.1f} M)",
        f"params:     {params:,} ({params / 1e6:.2f} M, BN folded; {count_params(spec, include_bn=True):,} with BN)",
    ]
    for policy in MEMORY_POLICIES:
        label = f"split t={split_t}" if policy == "split" else policy
        value = peak_memory_bytes(spec, policy, bytes_per_element, t=split_t)
        lines.append(f"peak memory ({label}, {bytes_per_element} B/element): {value:,} bytes ({value / 1024:.0f} KiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hw_models.report", description=__doc__)
    parser.add_argument(
        "--arch",
        default="mobilenet_v2",
        help=f"a reference network ({', '.join(REFERENCE_NAMES)}), an arch.json path or a compact string",
    )
    parser.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for --arch mobilenet_v2")
    parser.add_argument("--resolution", type=int, default=None, help="override the input resolution")
    parser.add_argument(
        "--bytes-per-element", type=positive_int, default=2, help="activation precision (2 = fp16, as the paper)"
    )
    parser.add_argument(
        "--split-t", type=positive_int, default=4, help="number of chunks for the 'split' memory policy"
    )
    args = parser.parse_args(argv)
    try:
        spec = resolve_arch(args.arch, args.width_mult, args.resolution)
        print(format_report(spec, args.bytes_per_element, args.split_t))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
