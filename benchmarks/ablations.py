"""MobileNetV2's ablations (Figure 6) on the embedded dataset: ``python -m benchmarks.ablations``.

Trains the default proxy architecture (the space's MobileNetV2 x1.0 member at full resolution)
from scratch with several seeds under each block option and prints test accuracy mean +- std:

(a) the bottleneck's non-linearity: linear (the paper's choice) vs ReLU6 after the projection;
(b) where the shortcut goes: between bottlenecks (inverted residual, the paper's choice),
    between the expanded tensors (conventional residual), or none.

``--plot PATH`` also draws the validation accuracy during training, as the paper's figure does.
The paper (ImageNet) finds linear bottlenecks and bottleneck shortcuts best; what a small proxy
task finds is reported as it comes out.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np

from invres_utils.atomic_files import atomic_write_bytes, check_writable_file
from nas.baselines import mobilenet_v2_family
from nas.train import TrainConfig
from search_spaces import DEFAULT_PROXY_SPACE, ArchSpec, block_plan, get_space

try:
    from benchmarks._cli import Parser, positive_int
    from benchmarks._training import Job, Outcome, run_jobs
except ImportError:  # run as a script, python benchmarks/ablations.py: its folder is on sys.path
    from _cli import Parser, positive_int
    from _training import Job, Outcome, run_jobs

# (panel, label, bottleneck activation, shortcut); the first row of each panel is the paper's choice
VARIANTS = (
    ("a", "linear bottleneck", "linear", "bottleneck"),
    ("a", "relu6 in bottleneck", "relu6", "bottleneck"),
    ("b", "shortcut between bottlenecks", "linear", "bottleneck"),
    ("b", "shortcut between expansions", "linear", "expansion"),
    ("b", "no residual", "linear", "none"),
)


def reference_architecture(space_name: str) -> ArchSpec:
    """The space's MobileNetV2 x1.0 member at its largest resolution."""
    space = get_space(space_name)
    family = [spec for label, spec in mobilenet_v2_family(space) if label.startswith("MobileNetV2 x1 ")]
    return max(family, key=lambda spec: spec.resolution)


def plot_curves(path: str, results: dict[tuple[str, str], list[Outcome]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120, sharey=True)
    titles = {"a": "(a) impact of the bottleneck non-linearity", "b": "(b) impact of the residual"}
    for panel, label, _, _ in VARIANTS:
        ax = axes[0 if panel == "a" else 1]
        curves = np.array([o.val_curve for o in results[(panel, label)]])
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, curves.mean(0), label=label)
        ax.fill_between(epochs, curves.min(0), curves.max(0), alpha=0.15)
        ax.set_title(titles[panel], fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("validation accuracy (mean, min-max over seeds)")
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=DEFAULT_PROXY_SPACE)
    parser.add_argument("--data", default="cluttered-digits")
    parser.add_argument("--seeds", type=positive_int, default=3, help="training runs per variant")
    parser.add_argument("--epochs", type=positive_int, default=TrainConfig().epochs)
    parser.add_argument("--jobs", type=positive_int, default=2, help="trainings in parallel (1 thread each)")
    parser.add_argument("--plot", default=None, help="write the training curves to this PNG")
    args = parser.parse_args(argv)
    if args.plot is not None and not args.plot.endswith(".png"):
        print(f"error: --plot must name a .png file, but got {args.plot!r}", file=sys.stderr)
        return 2
    try:
        if args.plot is not None:
            check_writable_file(args.plot)  # before hours of training
        base = reference_architecture(args.space)
        resolution = max(get_space(args.space).resolutions)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"architecture: {base.replace(shortcut='bottleneck', bottleneck_activation='linear')}")
    print(f"data {args.data}, {args.epochs} epochs, seeds 0..{args.seeds - 1}\n")

    distinct = {(act, sc) for _, _, act, sc in VARIANTS}
    keys = sorted(distinct)
    jobs = [
        Job(base.replace(bottleneck_activation=act, shortcut=sc), args.data, resolution, args.epochs, seed)
        for act, sc in keys
        for seed in range(args.seeds)
    ]
    started = time.perf_counter()
    try:
        outcomes = run_jobs(jobs, args.jobs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    by_option = {key: outcomes[i * args.seeds : (i + 1) * args.seeds] for i, key in enumerate(keys)}
    results = {(panel, label): by_option[(act, sc)] for panel, label, act, sc in VARIANTS}
    print(f"{len(jobs)} trainings in {time.perf_counter() - started:.0f} s\n")

    for panel, title in (("a", "(a) bottleneck non-linearity"), ("b", "(b) shortcut placement")):
        print(title)
        for p, label, act, sc in VARIANTS:
            if p != panel:
                continue
            accuracies = np.array([o.test_accuracy for o in results[(p, label)]])
            spread = accuracies.std(ddof=1) if len(accuracies) > 1 else 0.0
            plans = block_plan(base.replace(bottleneck_activation=act, shortcut=sc))
            shortcuts = sum(plan.residual or plan.wide_shortcut for plan in plans)
            print(
                f"  {label:<30} test accuracy {accuracies.mean():.4f} +- {spread:.4f}  "
                f"[{shortcuts} shortcuts] ({', '.join(f'{a:.4f}' for a in accuracies)})"
            )
    if args.plot:
        plot_curves(args.plot, results)
        print(f"\ncurves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
