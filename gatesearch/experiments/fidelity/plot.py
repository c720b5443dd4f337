"""fidelity.png: full-budget score against each proxy's, one panel per proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatesearch.experiments.fidelity.config import PROXY_TITLES, REPEAT, FidelityConfig


def plot(config: FidelityConfig, result: dict[str, Any], path: Path) -> None:
    """Full-budget metric against each proxy's score (and the repeated full run's), one panel
    each, τ in each title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metric_name = config.metric_name
    rows = result["archs"]

    def value(row: dict[str, Any], kind: str) -> float | None:
        if kind == "params":
            return row["params"]
        run = row["runs"].get(kind) or {}
        return (run.get("metrics") or {}).get("metric")

    kinds = config.compared
    fig = Figure(figsize=(4 * len(kinds), 4), constrained_layout=True)
    axes = fig.subplots(1, len(kinds), sharey=True)
    for ax, proxy in zip(axes, kinds):
        xy = [(value(r, proxy), value(r, "full")) for r in rows]
        xy = [(x, y) for x, y in xy if x is not None and y is not None]
        if xy:
            xs, ys = zip(*xy)
            ax.scatter(xs, ys, s=22, alpha=0.8, color="#1f77b4", edgecolors="none")
        stats = result["correlations"]["metric"][proxy]
        tau = "n/a" if stats["tau"] is None else f"{stats['tau']:.2f}"
        rho = "n/a" if stats["rho"] is None else f"{stats['rho']:.2f}"
        ax.set_title(f"{PROXY_TITLES[proxy]}\nτ = {tau}, ρ = {rho} (n = {stats['n']})", fontsize=10)
        if proxy == "params":
            ax.set_xscale("log")
            ax.set_xlabel("parameters")
        elif proxy == REPEAT:
            ax.set_xlabel(f"{metric_name} at {config.full_budget}, another seed")
        else:
            ax.set_xlabel(f"{metric_name} at {config.proxy_budget}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"{metric_name} at {config.full_budget} ({config.full_trainer})")
    fig.suptitle(f"proxy fidelity on {config.task.name}: {len(rows)} architectures", fontsize=11)
    fig.savefig(path, dpi=120)
