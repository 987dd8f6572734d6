"""``python -m hw_models.calibration_kit --space mobilenetv2-imagenet --count 20 --out kit/``: a set of
networks to time on your phone, and how.

Writes ``COUNT`` ``.tflite`` networks of the space (float32, LiteRT; needs the ``[litert]`` extra)
chosen to spread over its latency range, a ``manifest.csv`` (file, arch, MAdds, params, the
latency the base target predicts) and ``run_on_phone.sh``, which times each network with TFLite's
``benchmark_model`` over adb and saves its log in ``logs/``. Then
``python -m hw_models.calibrate kit/ --name myphone`` reads the logs (their "Inference timings in
us" lines) and fits a target for ``--target myphone``, with its leave-one-out error.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from invres_utils.atomic_files import atomic_folder, atomic_write_text
from invres_utils.cli import OneLineParser
from search_spaces.arch import ArchSpec
from search_spaces.builder import build_model
from search_spaces.space import SearchSpace
from search_spaces.spaces import get_space

from .analytic import count_madds, count_params
from .targets import LatencyTarget, load_target

MANIFEST = "manifest.csv"
SCRIPT = "run_on_phone.sh"
NETS = "nets"
LOGS = "logs"
MANIFEST_COLUMNS = ("file", "arch", "madds", "params", "predicted_ms")
DEVICE_DIR = "/data/local/tmp/invres-kit"
POOL = 2000


def diverse_networks(space: SearchSpace, count: int, base: LatencyTarget, seed: int = 0) -> list[ArchSpec]:
    """``count`` distinct networks of ``space`` at evenly spaced quantiles of ``base``'s predicted
    latency over a seeded pool of random ones (the fastest and the slowest included), so that a
    fit sees the whole range and, through the pool's randomness, every kind of block."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 3:
        raise ValueError(f"--count must be an integer >= 3 (a calibration needs 3 rows), but got {count!r}")
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(space.decode(c) for c in space.sample_codes(rng, POOL)))
    if len(pool) < count:
        raise ValueError(f"space {space.name!r} has fewer than {count} distinct networks in a pool of {POOL}")
    predicted = np.array([base.predict(s) for s in pool])
    order = np.argsort(predicted, kind="stable")
    chosen: list[ArchSpec] = []
    for q in np.linspace(0, len(pool) - 1, count):
        i = int(round(q))
        while pool[order[i]] in chosen:  # only when the pool is barely larger than count
            i = (i + 1) % len(pool)
        chosen.append(pool[order[i]])
    return chosen


def phone_script(files: list[str], threads: int) -> str:
    """The shell script that times every network with ``benchmark_model`` over adb."""
    names = " ".join(Path(f).stem for f in files)
    return f"""#!/bin/sh
# Time every network of this kit on an Android phone with TFLite's benchmark_model.
# Needs adb (phone in developer mode, USB debugging on) and benchmark_model for the phone's CPU
# (e.g. the prebuilt android_aarch64_benchmark_model linked from the LiteRT / TensorFlow Lite
# "Performance measurement" guide, or built with bazel from tensorflow/lite/tools/benchmark),
# saved as ./benchmark_model next to this script.
# Keep the phone cool, charged and idle; one thread on a big core is what the pixel target models.
set -e
cd "$(dirname "$0")"
adb push benchmark_model /data/local/tmp/benchmark_model
adb shell chmod +x /data/local/tmp/benchmark_model
adb shell mkdir -p {DEVICE_DIR}
mkdir -p {LOGS}
for name in {names}; do
  adb push {NETS}/$name.tflite {DEVICE_DIR}/$name.tflite
  adb shell /data/local/tmp/benchmark_model --graph={DEVICE_DIR}/$name.tflite \\
    --num_threads={threads} --warmup_runs=10 --num_runs=100 > {LOGS}/$name.log 2>&1
  grep "Inference timings" {LOGS}/$name.log
done
echo "now: python -m hw_models.calibrate $(pwd) --name myphone"
"""


def write_kit(
    out: str | os.PathLike[str],
    space: SearchSpace | str = "mobilenetv2-imagenet",
    count: int = 20,
    base: str | LatencyTarget = "pixel",
    threads: int = 1,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the kit (networks, manifest, phone script) into ``out``, a new or empty folder, whole
    or not at all (built beside it, renamed at the end); returns the manifest path."""
    from . import litert

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the kit")
    if (out / MANIFEST).exists():
        raise ValueError(f"--out {out} already holds a kit ({MANIFEST}); choose a new folder")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be an integer >= 1, but got {threads!r}")
    space = get_space(space)
    base_target = load_target(base)
    specs = diverse_networks(space, count, base_target, seed)
    rows = []
    with atomic_folder(out) as building:
        litert.require_litert("the calibration kit")
        (building / NETS).mkdir()
        for i, spec in enumerate(tqdm(specs, desc="converting networks", disable=None if progress else True)):
            file = f"{NETS}/net_{i:03d}.tflite"
            shape = (1, 3, spec.resolution, spec.resolution)
            litert.convert(litert.with_random_statistics(build_model(spec), shape, seed + i), building / file, shape)
            rows.append(
                [file, spec.to_string(), count_madds(spec), count_params(spec), round(base_target.predict(spec), 4)]
            )
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        atomic_write_text(building / SCRIPT, phone_script([r[0] for r in rows], threads))
        os.chmod(building / SCRIPT, 0o755)
        atomic_write_text(building / MANIFEST, buffer.getvalue())
    manifest = out / MANIFEST
    if log is not None:
        log(
            f"wrote {len(rows)} networks of {space.name} ({base_target.name} predicts "
            f"{min(r[4] for r in rows):.1f}-{max(r[4] for r in rows):.1f} ms) and {manifest}"
        )
    return manifest


def instructions(out: Path) -> str:
    return f"""To calibrate a target for your phone:
  1. put TFLite's benchmark_model for your phone (Android aarch64) at {out / "benchmark_model"}
  2. connect the phone (adb devices lists it) and run: sh {out / SCRIPT}
     (it pushes each network and runs: adb shell /data/local/tmp/benchmark_model \\
      --graph={DEVICE_DIR}/net_000.tflite --num_threads=1 --warmup_runs=10 --num_runs=100 > {out / LOGS}/net_000.log)
  3. python -m hw_models.calibrate {out} --name myphone      # reads {out / LOGS}/*.log and {out / MANIFEST}
  4. python -m nas.search --target myphone ..."""


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hw_models.calibration_kit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="new folder for the kit")
    parser.add_argument("--space", default="mobilenetv2-imagenet", help="search space name or JSON path")
    parser.add_argument("--count", type=int, default=20, help="networks in the kit (>= 3; refit needs >= 8)")
    parser.add_argument("--base", default="pixel", help="target whose predictions spread the networks (name or path)")
    parser.add_argument("--threads", type=int, default=1, help="threads benchmark_model uses on the phone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        write_kit(args.out, args.space, args.count, args.base, args.threads, args.seed, not args.no_progress, print)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(instructions(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
