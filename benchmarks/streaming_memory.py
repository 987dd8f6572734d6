"""Memory of training on an image folder: ``python -m benchmarks.streaming_memory`` (repository root).

Writes ``--images`` (default 10,000) 96x96 PNG files in 10 class folders to a temporary folder,
then, in a fresh process, imports torch and invres-nas (the baseline), loads the folder and trains
a supernet on it for ``--epochs`` epochs, including the per-epoch validation. Prints that
process's peak resident memory above the baseline (``VmHWM`` at the end minus ``VmRSS`` after the
imports) next to the float32 size of the images (N x 3 x 96 x 96 x 4 bytes, what holding the
folder decoded in memory would take) and checks the goal: under 1/8 of it. With
``--data-workers N`` the loader processes count too: their private memory (pages not shared with
the trainer they were forked from, sampled every 50 ms, all workers summed) at its peak is added
to the trainer's, an upper bound since the two peaks need not coincide.

The network trains on random-resized crops of the 96 px images at 32-48 px (as ImageNet
networks train at 224 px on larger photos), in a small proxy space, so that the figure is about
the data pipeline rather than a large network's activations. The baseline includes the
libraries the run imports (torch, Pillow, scikit-learn, invres-nas, and the modules torch imports
the first time an optimizer is built, about 70 MB): code, not data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from invres_utils.atomic_files import atomic_folder

try:
    from benchmarks._cli import Parser, non_negative_int, positive_int
except ImportError:  # run as a script, python benchmarks/streaming_memory.py: its folder is on sys.path
    from _cli import Parser, non_negative_int, positive_int

SIDE = 96
CLASSES = 10
GOAL_FRACTION = 1 / 8
ROOT = Path(__file__).resolve().parents[1]

# The training process: baseline after the imports, then load, train, report.
CHILD = r"""
import json, os, sys, threading, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def private_bytes(pid):
    # Pages of a loader worker not shared with the trainer it forked from (its USS): what it adds.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(l.split()[1]) * 1024 for l in f if l.startswith(("Private_Clean:", "Private_Dirty:")))
    except OSError:  # the worker has just ended
        return 0
def worker_pids():
    pids = set()
    for task in os.listdir("/proc/self/task"):
        try:
            pids.update(int(p) for p in open(f"/proc/self/task/{task}/children").read().split())
        except OSError:
            pass
    return pids
workers_peak, done = [0], threading.Event()
def watch_workers():
    while not done.wait(0.05):
        workers_peak[0] = max(workers_peak[0], sum(private_bytes(p) for p in worker_pids()))
import torch, PIL.Image, sklearn.model_selection, tqdm.auto
import nas.data, nas.train, nas.evaluate, search_spaces
torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)  # its first use imports torch._dynamo (~70 MB)
baseline = status("VmRSS")
from nas.data import load_data
from nas.train import SupernetTrainConfig, train_supernet
from search_spaces import SearchSpace
args = json.loads(sys.argv[1])
if args["data_workers"]:
    threading.Thread(target=watch_workers, daemon=True).start()
space = SearchSpace.from_dict(args["space"])
data = load_data(args["folder"], resolution=max(space.resolutions), seed=0)
config = SupernetTrainConfig(epochs=args["epochs"], batch_size=args["batch_size"])
result = train_supernet(space, data, config, progress=False, data_workers=args["data_workers"])
done.set()
print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "workers": workers_peak[0], "train": data.size("train"),
                  "history": result.history, "source": data.source}))
"""


def benchmark_space(num_classes: int = CLASSES):
    from search_spaces import SearchSpace, StageChoices

    return SearchSpace(
        name="stream-48",
        resolutions=(32, 40, 48),
        stem_channels=8,
        stem_stride=2,
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), kernel_sizes=(3,), stride=2),
            StageChoices(expansions=(2, 4), channels=(12, 16), repeats=(1, 2), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 4), channels=(24, 32), repeats=(1, 2), kernel_sizes=(3, 5), stride=2),
            StageChoices(expansions=(2, 4), channels=(32, 48), repeats=(1, 2), kernel_sizes=(3,), stride=1),
        ),
        last_channels=96,
        num_classes=num_classes,
    )


def write_folder(root: Path, images: int, seed: int = 0) -> int:
    """``images`` PNGs (96x96 RGB) in ``CLASSES`` folders: a class-coloured disc at a random spot
    on a noisy background. Returns the bytes written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    colours = rng.integers(40, 256, size=(CLASSES, 3))
    written = 0
    for i in range(images):
        label = i % CLASSES
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 40, size=(SIDE, SIDE, 3), dtype=np.uint8)
        cy, cx, radius = rng.integers(20, 76), rng.integers(20, 76), rng.integers(10, 24)
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = colours[label]
        path = folder / f"{i:05d}.png"
        Image.fromarray(pixels).save(path)
        written += path.stat().st_size
    return written


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive_int, default=10_000, help="PNG files to write (default 10,000)")
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--data-workers", type=non_negative_int, default=0, help="DataLoader worker processes (default 0)"
    )
    parser.add_argument("--keep", default=None, help="write the folder here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stream-images-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp) / "images"
        if folder.is_dir() and any(folder.iterdir()):
            print(f"error: --keep {folder} exists and is not empty; choose a new folder", file=sys.stderr)
            return 2
        try:
            with atomic_folder(folder) as building:  # a kept folder is whole or absent
                size_on_disk = write_folder(building, args.images)
        except ValueError as e:
            print(f"error: --keep: {e}", file=sys.stderr)
            return 2
        float32 = args.images * 3 * SIDE * SIDE * 4
        print(
            f"{args.images:,} PNG images, {SIDE}x{SIDE}, {size_on_disk / 1e6:.0f} MB on disk; "
            f"decoded as float32 they would take {float32 / 1e6:,.0f} MB"
        )
        request = {
            "folder": str(folder),
            "space": benchmark_space().to_dict(),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "data_workers": args.data_workers,
        }
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(request)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(
                f"error: the training process failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}",
                file=sys.stderr,
            )
            return 1
    report = json.loads(done.stdout.strip().splitlines()[-1])
    trainer = report["peak"] - report["baseline"]
    above = trainer + report["workers"]
    goal = GOAL_FRACTION * float32
    last = report["history"][-1]
    print(f"data: {report['source']}")
    print(
        f"trained {args.epochs} epoch(s) on {report['train']:,} images in {sum(h['seconds'] for h in report['history']):.0f} s "
        f"({last['images_per_second']:.0f} images/s, val accuracy largest {last['val_largest']:.3f})"
    )
    print(
        f"trainer: peak RSS {report['peak'] / 1e6:.0f} MB, after the imports {report['baseline'] / 1e6:.0f} MB: "
        f"{trainer / 1e6:.0f} MB above them"
    )
    if args.data_workers:
        print(
            f"{args.data_workers} loader worker(s): {report['workers'] / 1e6:.0f} MB private memory at their peak "
            "(pages shared with the trainer not counted again)"
        )
    print(
        f"memory above the imports {above / 1e6:.0f} MB = {above / float32:.3f} of the float32 size = "
        f"{above / goal:.2f} of the goal of < 1/8 = {goal / 1e6:.0f} MB ({'meets' if above < goal else 'MISSES'} it)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
