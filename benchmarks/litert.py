"""LiteRT export and speed: ``python -m benchmarks.litert`` (needs the ``[litert]`` extra).

Prints for MobileNetV2 1.0@224 (and ``--arch`` networks): the conversion time and size of the
``.tflite``, its max abs difference from torch, and the latency of torch eager, ONNX Runtime and
LiteRT (XNNPACK) at ``--threads`` threads, measured interleaved, with the ratios to torch.
``--int8`` adds the int8 post-training quantized file (calibrated on random images). Weights are
freshly initialised, batch-norm statistics estimated on random images so that outputs are O(1).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from hw_models import measure_many
from hw_models.litert import export_checked, require_litert, with_random_statistics
from search_spaces import build_model, mobilenet_v2, parse_arch

try:
    from benchmarks._cli import Parser, positive_int
except ImportError:  # run as a script, python benchmarks/litert.py: its folder is on sys.path
    from _cli import Parser, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmarks.litert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", default=[], help="more architectures (compact strings)")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--repeats", type=positive_int, default=50)
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--int8", action="store_true", help="also convert with int8 post-training quantization")
    args = parser.parse_args(argv)
    try:
        require_litert("benchmarks.litert")
        specs = [mobilenet_v2(1.0, 224)] + [parse_arch(a) for a in args.arch]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            shape = (1, 3, spec.resolution, spec.resolution)
            modes = ["none", "int8"] if args.int8 else ["none"]
            for mode in modes:
                model = with_random_statistics(build_model(spec), shape)  # O(1) outputs: a real comparison
                check = export_checked(model, shape, Path(tmp) / f"m{i}_{mode}.tflite", mode)
                print(f"{spec}\n  {check.summary()}")
        timed = {rt: measure_many(specs, rt, threads=args.threads, repeats=args.repeats, rounds=args.rounds)
                 for rt in ("torch", "onnxruntime", "litert")}  # fmt: skip
    for i, spec in enumerate(specs):
        torch_ms = timed["torch"][i].median_ms
        line = ", ".join(
            f"{rt} {timed[rt][i].median_ms:.2f} ms (p10 {timed[rt][i].p10_ms:.2f}; {torch_ms / timed[rt][i].median_ms:.2f}x torch)"
            for rt in timed
        )
        print(f"{spec.resolution}px {str(spec)[:60]}...: {args.threads} thread(s): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
