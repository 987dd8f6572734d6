"""``python -m nas.experiments.manifold``: MobileNetV2 Figure 1, ReLU collapses low-dimensional
manifolds unless they are embedded in enough dimensions.

A 2-D spiral ``X`` (m points) is embedded into n dimensions by a random Gaussian matrix ``T``
(n x 2), passed through ReLU and projected back with the pseudo-inverse:
``X_hat = pinv(T) @ ReLU(T @ x)``. For small n ReLU zeroes whole coordinates of many points and
the spiral collapses; for large n every point keeps about half of its n coordinates and the
spiral survives.

Errors, each relative to the spiral's total variance ``mean ||x - mean(x)||^2`` and averaged over
``trials`` independent ``T``:

- ``error`` (primary): ``min_s mean ||s * x_hat - x||^2 / var``, what is lost beyond one global
  rescaling. Rescaling is factored out because ReLU on a symmetric random projection keeps half
  of the energy, so ``x_hat`` tends to ``x / 2`` as n grows (the paper's panels are autoscaled).
- ``raw_error``: ``mean ||x_hat - x||^2 / var``, reported as the median over trials (an
  ill-conditioned ``T`` at n = 2 makes its mean explode); it tends to 0.25 for the reason above.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from invres_utils.atomic_files import atomic_write_bytes, atomic_write_text, check_writable_file
from invres_utils.cli import OneLineParser

DEFAULT_DIMS = (2, 3, 5, 15, 30)
DEFAULT_NAME = "figure1"
DEFAULT_OUT = os.path.join("runs", "manifold", DEFAULT_NAME + ".png")


def spiral(num_points: int, rng: np.random.Generator, turns: float = 1.75) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(num_points, 2)`` of an Archimedean spiral around the origin (radius <= 1) and their
    angles; angles are drawn uniformly with ``rng``."""
    theta = np.sort(rng.uniform(0.25 * np.pi, 2 * np.pi * turns, num_points))
    radius = theta / theta.max()
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1), theta


def relu_roundtrip(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``pinv(T) @ ReLU(T @ x)`` for every row ``x`` of ``points``; ``T`` has shape (n, 2)."""
    return np.maximum(points @ transform.T, 0.0) @ np.linalg.pinv(transform).T


def reconstruction_errors(points: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """(scale-corrected error, raw error), both relative to the total variance of ``points``."""
    variance = float(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean())
    raw = float(((recon - points) ** 2).sum(axis=1).mean()) / variance
    denom = float((recon * recon).sum())
    scale = float((recon * points).sum()) / denom if denom > 0 else 0.0
    scaled = float(((scale * recon - points) ** 2).sum(axis=1).mean()) / variance
    return scaled, raw


@dataclass(frozen=True)
class ManifoldResult:
    dims: tuple[int, ...]
    points: np.ndarray  # (m, 2) the spiral
    theta: np.ndarray  # (m,) angle of each point, for colouring
    examples: tuple[np.ndarray, ...]  # one reconstruction per n, from the first trial's T
    error: tuple[float, ...]  # mean over trials of the scale-corrected error, per n
    error_std: tuple[float, ...]
    raw_error_median: tuple[float, ...]
    trials: int
    seed: int

    def rows(self) -> list[dict[str, float]]:
        return [
            {"n": n, "error": e, "error_std": s, "raw_error_median": r}
            for n, e, s, r in zip(self.dims, self.error, self.error_std, self.raw_error_median)
        ]


def manifold_collapse(
    dims: Sequence[int] = DEFAULT_DIMS,
    num_points: int = 1000,
    trials: int = 100,
    seed: int = 0,
) -> ManifoldResult:
    """Run the Figure 1 experiment; one ``numpy.random.Generator(seed)`` draws the spiral and
    every ``T``, so results reproduce exactly."""
    dims = tuple(dims)
    if not dims or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in dims):
        raise ValueError(f"dims must be a non-empty list of integers >= 1, but got {list(dims)}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 10:
        raise ValueError(f"num_points must be an integer >= 10, but got {num_points!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, but got {trials!r}")
    rng = np.random.default_rng(seed)
    points, theta = spiral(num_points, rng)
    examples, means, stds, raws = [], [], [], []
    for n in dims:
        scaled, raw = [], []
        for trial in range(trials):
            recon = relu_roundtrip(points, rng.standard_normal((n, 2)))
            if trial == 0:
                examples.append(recon)
            s, r = reconstruction_errors(points, recon)
            scaled.append(s)
            raw.append(r)
        means.append(float(np.mean(scaled)))
        stds.append(float(np.std(scaled)))
        raws.append(float(np.median(raw)))
    return ManifoldResult(dims, points, theta, tuple(examples), tuple(means), tuple(stds), tuple(raws), trials, seed)


def output_paths(out: str | os.PathLike[str]) -> tuple[str, str]:
    """(figure, numbers) written for ``--out``: an existing directory (or a path ending in a
    separator) gets ``figure1.png`` and ``figure1.json`` inside it; otherwise ``out`` must be a
    ``.png`` path and the numbers go to the ``.json`` next to it. Both are checked writable."""
    out = os.fspath(out)
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        png = os.path.join(out, DEFAULT_NAME + ".png")
    elif os.path.splitext(out)[1].lower() == ".png":
        png = out
    else:
        raise ValueError(f"--out must be a .png file or a directory, but got {out!r}")
    numbers = os.path.splitext(png)[0] + ".json"
    check_writable_file(png)
    check_writable_file(numbers)
    return png, numbers


def plot(result: ManifoldResult, path: str | os.PathLike[str]) -> None:
    """PNG grid: the input spiral, then ``pinv(T) ReLU(T x)`` for each n (first trial's T),
    written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("Input", result.points, None)] + [
        (f"Output/dim={n}", recon, err) for n, recon, err in zip(result.dims, result.examples, result.error)
    ]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (title, xy, err) in zip(axes.flat, panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=result.theta, cmap="viridis", s=3)
        ax.set_title(title if err is None else f"{title}\nmean error {err:.2f}", fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"pinv(T) ReLU(T x), mean error over {result.trials} random T", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def format_table(result: ManifoldResult) -> str:
    lines = [f"{'n':>4}  {'error':>7}  {'+/- std':>7}  {'raw (median)':>12}"]
    for row in result.rows():
        lines.append(f"{row['n']:>4}  {row['error']:7.3f}  {row['error_std']:7.3f}  {row['raw_error_median']:12.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m nas.experiments.manifold",
        description="MobileNetV2 Figure 1: a 2-D spiral through ReLU(T x) in n dimensions and back with pinv(T).",
    )
    parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS), help="embedding dimensions n")
    parser.add_argument("--points", type=int, default=1000, help="points on the spiral")
    parser.add_argument("--trials", type=int, default=100, help="random matrices T averaged per n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"PNG path (the numbers go to a .json next to it) or a directory ({DEFAULT_NAME}.png/.json inside it)",
    )
    args = parser.parse_args(argv)
    try:
        png, numbers = output_paths(args.out)
        result = manifold_collapse(args.dims, args.points, args.trials, args.seed)
        plot(result, png)
        record = {
            "config": {"dims": list(result.dims), "points": args.points, "trials": args.trials, "seed": args.seed},
            "errors": result.rows(),
        }
        atomic_write_text(numbers, json.dumps(record, indent=2) + "\n")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("error = min_s mean||s*x_hat - x||^2 / var(x), mean over trials; raw = mean||x_hat - x||^2 / var(x)")
    print(format_table(result))
    print(f"figure: {png}")
    print(f"numbers: {numbers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
