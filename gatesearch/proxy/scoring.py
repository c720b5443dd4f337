"""Scoring a trained proxy model: the best validation point of a run, and the final scores
and costs of the model (with its pruned form when it has pruning gates)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from gatesearch.arch.build import (
    GraphModel,
    count_params,
    decode_state_bytes,
    flops_per_token,
    model_costs,
    prune_model,
)
from gatesearch.arch.graph import arch_hash
from gatesearch.primitives.pruning import PruningGate
from gatesearch.proxy.config import ProxyConfig
from gatesearch.registry import Context
from gatesearch.tasks import Split, Task, split_scores


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial has no score. `step` and `reason` say
    where, for the campaign to store as a failed trial's reason."""

    def __init__(self, step: int, what: str, value: float) -> None:
        self.step = step
        self.reason = f"{what} is {value} at step {step}"
        super().__init__(f"trial diverged: {self.reason}")


@dataclass
class ProxyResult:
    """A finished proxy trial. `model` is a plain GraphModel (no STN layers, no hooks) with the
    tuned hyperparameters' best-response weights folded in; unpruned."""

    model: GraphModel
    metrics: dict[str, Any]
    hyperparameters: dict[str, float | int]
    trajectory: list[dict[str, Any]]
    pruned_graph: nx.DiGraph | None = None
    config: ProxyConfig = field(default_factory=ProxyConfig)
    # The validation points (config.eval_points): step, tokens, seconds, valid loss and metric.
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Metrics at the top level plus `hyperparameters`, `trajectory` and, when validation
        points were asked for, `curve`; JSON-able."""
        out = {
            **self.metrics,
            "hyperparameters": dict(self.hyperparameters),
            "trajectory": list(self.trajectory),
        }
        if self.curve:
            out["curve"] = list(self.curve)
        return out


@dataclass
class BestPoint:
    """The best validation point so far and what restores the model to it."""

    point: dict[str, Any]
    weights: dict[str, torch.Tensor] | None  # None unless keep_best
    u: torch.Tensor
    s: torch.Tensor
    lr: float
    progress: float  # of the budget, where the point was scored


def better_point(a: dict[str, Any], b: dict[str, Any], higher_is_better: bool) -> bool:
    """Whether validation point `a` beats `b`: by the task's metric, ties by the loss (an
    accuracy on a small split ties often). A non-finite score never wins."""

    def finite(p: dict[str, Any]) -> bool:
        return math.isfinite(p["valid_metric"]) and math.isfinite(p["valid_loss"])

    if not finite(a):
        return False
    if not finite(b):
        return True
    sign = -1.0 if higher_is_better else 1.0
    return (sign * a["valid_metric"], a["valid_loss"]) < (sign * b["valid_metric"], b["valid_loss"])


def score_model(
    model: GraphModel,
    task: Task,
    ctx: Context,
    config: ProxyConfig,
    run: dict[str, float | None],
    final: dict[str, float | int],
    trajectory: list[dict[str, Any]],
) -> ProxyResult:
    """Score the trained `model` on the validation split; `run` holds what the loop counted
    (train_seconds, tokens, steps, hyper_steps, the training-loss means)."""
    valid_loss, metric = split_scores(model, task, Split.VALID, config.eval_batch_size)
    if not torch.isfinite(torch.tensor(valid_loss)):
        raise TrialDiverged(int(run["steps"] or 0), "the validation loss", valid_loss)
    costs = model_costs(model, ctx, task.seq_len, config.batch_size, config.latency_runs)
    metrics: dict[str, Any] = {
        "loss": valid_loss,
        "metric": metric,
        task.metric_name: metric,
        "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        **costs,
        "latency_per_sequence": costs["latency"] / config.batch_size,
        **run,
        "self_tuning": config.self_tuning,
    }
    pruned_graph = None
    if any(isinstance(m, PruningGate) for m in model.modules()):
        pruned_model = copy.deepcopy(model)
        pruned_graph = prune_model(pruned_model)
        metrics["pruned_params"] = float(count_params(pruned_model))
        metrics["pruned_flops"] = float(flops_per_token(pruned_model, ctx, seq_len=task.seq_len))
        pruned_state = decode_state_bytes(pruned_model, ctx, task.seq_len)
        if pruned_state is not None:  # pruned attention heads no longer cache keys and values
            metrics["pruned_state"] = float(pruned_state)
        metrics["pruned_arch_hash"] = arch_hash(pruned_graph)
    return ProxyResult(model, metrics, final, trajectory, pruned_graph, config)
