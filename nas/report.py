"""The run's human-facing outputs: choosing the best front member, pareto.png and report.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import common_reference, hypervolume, non_dominated, pareto_front

FRONT_COLUMNS = ["trial", "accuracy", "latency_ms", "madds", "params", "peak_memory_bytes", "arch"]


def select_best(front: pd.DataFrame, objectives: Mapping[str, str], select: str) -> pd.Series | None:
    """The front member to export: ``accuracy`` (most accurate; default), a cost name (the
    cheapest on it), or ``knee`` (closest to the ideal point after scaling each objective to
    [0, 1])."""
    if front.empty:
        return None
    if select == "accuracy":
        return front.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0]
    if select == "knee":
        cols = list(objectives)
        values = front[cols].to_numpy(dtype=float)
        lo, hi = values.min(axis=0), values.max(axis=0)
        scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
        for j, name in enumerate(cols):
            if objectives[name] == "max":
                scaled[:, j] = 1.0 - scaled[:, j]
        return front.iloc[int(np.argmin(np.linalg.norm(scaled, axis=1)))]
    return front.sort_values([select, "accuracy"], ascending=[True, False]).iloc[0]


@dataclass(frozen=True)
class Comparison:
    """Searched front vs the MobileNetV2 family on the same axes and reference point."""

    reference: dict[str, float]
    hv_search: float
    hv_baseline: float
    baselines_dominated: int
    baselines_total: int

    @property
    def front_dominates(self) -> bool:
        return self.baselines_dominated == self.baselines_total and self.hv_search >= self.hv_baseline


def compare_with_baselines(
    trials: pd.DataFrame, baselines: pd.DataFrame, objectives: Mapping[str, str]
) -> Comparison | None:
    usable = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]
    if usable.empty or baselines.empty:
        return None
    reference = common_reference([usable, baselines], objectives)
    front = pareto_front(usable, objectives)
    dominated = 0
    for _, b in baselines.iterrows():
        weakly = np.ones(len(front), dtype=bool)
        for name, direction in objectives.items():
            weakly &= (front[name] >= b[name]).to_numpy() if direction == "max" else (front[name] <= b[name]).to_numpy()
        dominated += bool(weakly.any())
    return Comparison(
        reference=reference,
        hv_search=hypervolume(usable, objectives, reference),
        hv_baseline=hypervolume(baselines.assign(state="COMPLETE", feasible=True), objectives, reference),
        baselines_dominated=dominated,
        baselines_total=len(baselines),
    )


def plot_pareto(
    trials: pd.DataFrame, baselines: pd.DataFrame, path: Path, title: str, verified: pd.DataFrame | None = None
) -> None:
    """Accuracy vs latency: every trial, the accuracy/latency front highlighted, the MobileNetV2
    family as a baseline line, and (after ``--verify-top``) each verified member's trained
    validation accuracy joined to its inherited one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    done = trials[trials["state"] == "COMPLETE"]
    feasible = done[done["feasible"].astype(bool)]
    infeasible = done[~done["feasible"].astype(bool)]
    ax.scatter(feasible["latency_ms"], feasible["accuracy"], s=14, c="#9ab", label="trials")
    if not infeasible.empty:
        ax.scatter(infeasible["latency_ms"], infeasible["accuracy"], s=14, c="#ddd", marker="x", label="infeasible")
    if not feasible.empty:
        points = np.column_stack([feasible["latency_ms"], -feasible["accuracy"]])
        front = feasible[non_dominated(points)].sort_values("latency_ms")
        ax.step(front["latency_ms"], front["accuracy"], where="post", c="#c33", lw=1.5)
        ax.scatter(front["latency_ms"], front["accuracy"], s=30, c="#c33", label="Pareto front", zorder=3)
    if not baselines.empty:
        for _, group in baselines.groupby("width_mult"):
            g = group.sort_values("latency_ms")
            ax.plot(g["latency_ms"], g["accuracy"], "--", c="#36c", lw=1, marker="s", ms=4)
        ax.plot([], [], "--s", c="#36c", ms=4, label="MobileNetV2 width x resolution family")
    if verified is not None:
        trained = verified.dropna(subset=["trained_val_accuracy"])
        for _, member in trained.iterrows():
            ax.plot([member["latency_ms"]] * 2, [member["inherited_accuracy"], member["trained_val_accuracy"]],
                    c="#393", lw=1, alpha=0.7)  # fmt: skip
        pruned = trained["pruned"].astype(bool)
        ax.scatter(trained.loc[~pruned, "latency_ms"], trained.loc[~pruned, "trained_val_accuracy"], s=40,
                   marker="D", c="#393", label="verified: trained standalone (val)", zorder=4)  # fmt: skip
        if pruned.any():
            ax.scatter(trained.loc[pruned, "latency_ms"], trained.loc[pruned, "trained_val_accuracy"], s=40,
                       marker="D", facecolors="none", edgecolors="#393", label="verified: pruned early", zorder=4)  # fmt: skip
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("val accuracy (supernet, BN recalibrated)" if verified is None else "val accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.parent / f".{path.name}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def format_front(front: pd.DataFrame) -> str:
    """Console table of the front."""
    cols = [c for c in FRONT_COLUMNS if c in front.columns and c != "arch"]
    shown = front[cols].copy()
    if "peak_memory_bytes" in shown:
        shown["peak_memory_bytes"] = (shown["peak_memory_bytes"] / 1024).round(1)
        shown = shown.rename(columns={"peak_memory_bytes": "peak_mem_KiB"})
    if "madds" in shown:
        shown["madds"] = (shown["madds"] / 1e6).round(2)
        shown = shown.rename(columns={"madds": "MAdds_M"})
    if "params" in shown:
        shown["params"] = (shown["params"] / 1e6).round(3)
        shown = shown.rename(columns={"params": "params_M"})
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def write_report(
    path: Path,
    *,
    title: str,
    config_lines: list[str],
    counts: Mapping[str, int],
    front: pd.DataFrame,
    best: pd.Series | None,
    comparison: Comparison | None,
    objectives: Mapping[str, str],
    baselines: pd.DataFrame,
    usage: list[str],
    extra_sections: list[str] | None = None,
) -> str:
    lines = [f"# {title}", "", "## Setup", "", *[f"- {line}" for line in config_lines], ""]
    lines += ["## Trials", "", ", ".join(f"{k}: {v}" for k, v in counts.items()), ""]
    lines += ["## Pareto front", ""]
    if front.empty:
        lines += ["No completed trial meets the constraints, so there is no front and nothing was exported.", ""]
    else:
        lines += ["```", format_front(front), "```", ""]
    if best is not None:
        lines += ["## Selected architecture", "", f"Trial {int(best['trial'])}: `{best['arch']}`", ""]
        lines += [
            f"accuracy {best['accuracy']:.4f}, predicted latency {best['latency_ms']:.3f} ms, "
            f"{best['madds'] / 1e6:.2f} M MAdds, {best['params'] / 1e6:.3f} M params, "
            f"peak memory {best['peak_memory_bytes'] / 1024:.1f} KiB",
            "",
        ]
    lines += ["## Against the MobileNetV2 family", ""]
    if comparison is None:
        lines += ["Not compared (no feasible trial or no baseline).", ""]
    else:
        ref = ", ".join(f"{k} = {v:.4g}" for k, v in comparison.reference.items())
        lines += [
            f"Hypervolume on ({', '.join(f'{k} {d}' for k, d in objectives.items())}), reference point ({ref}):",
            "",
            f"- searched front: **{comparison.hv_search:.6g}**",
            f"- MobileNetV2 width x resolution family: **{comparison.hv_baseline:.6g}**",
            f"- baselines weakly dominated by the front: {comparison.baselines_dominated} of {comparison.baselines_total}",
            f"- verdict: the searched front {'dominates' if comparison.front_dominates else 'does NOT dominate'} the baselines",
            "",
            "Baselines, evaluated exactly like the trials:",
            "",
            "```",
            baselines[["label", "accuracy", "latency_ms", "madds", "params", "peak_memory_bytes"]].to_string(
                index=False, float_format=lambda v: f"{v:.4g}"
            ),
            "```",
            "",
        ]
    lines += extra_sections or []
    lines += ["## Use it", "", "```bash", *usage, "```", "", "![Pareto front](pareto.png)", ""]
    text = "\n".join(lines)
    from invres_utils.atomic_files import atomic_write_text

    atomic_write_text(path, text)
    return text
