"""Trial evaluation: `evaluate(graph, task, budget, seed) -> metrics`.

A campaign names its task as a `TaskSpec` (name + params, stored in the run's config). Two
names are evaluators without a task behind them:

- `null`: no training. A deterministic pseudo-metric from the architecture hash, returned at
  once (for overhead benchmarks and fast tests). With a seconds budget it sleeps that long
  first, which stands in for training time when testing interruption and timeouts.
- `null-faulty`: `null`, but some architectures raise or give NaN (failure-handling tests).

A suite (a `.toml` file, a shipped suite's name, or the `suite` spec a campaign stores) is
evaluated by `SuiteEvaluator`: one proxy training per member task, their scores combined.

Every other name is a task of `gatesearch.tasks` (built-in, `module:function` or entry
point), evaluated by the proxy trainer (`gatesearch.proxy.proxy_evaluate`) with the
campaign's proxy options (a run config's `proxy` table, `--proxy-option key=value`; a new
campaign's table names `self_tuning=false` unless asked otherwise).

Metrics are JSON: floats (`loss`, `metric`, `params`, `flops`, `latency`, ...), plus, from the
proxy, `metric_name`, `hyperparameters` and `trajectory`. A trial that diverges raises (the
proxy's `TrialDiverged`, or `TrialFailure` here); the campaign stores it as failed.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import networkx as nx

from gatesearch.arch.graph import arch_hash
from gatesearch.budget import Budget, parse_budget
from gatesearch.formats import objective_name
from gatesearch.tasks import TaskError, TaskSpec, task_label
from gatesearch.tasks.suite import (
    SUITE_TASK,
    Suite,
    SuiteError,
    chance_loss,
    load_suite,
    member_budget,
    member_objective,
    member_score,
    suite_path,
)

if TYPE_CHECKING:
    from gatesearch.proxy.stint import Stint
    from gatesearch.registry import Context


class TrialFailure(RuntimeError):
    """An evaluation that ran but produced no usable result (divergence, non-finite loss)."""


# Kept for callers that caught the old name; task lookup errors are TaskErrors now.
UnknownTaskError = TaskError

# Metrics a campaign may name as objectives. `metric` is the task's own metric (accuracy,
# nats/char, ...) and is maximised when the task says higher is better; the rest are minimised.
# A suite adds `member:NAME` per member (its normalised score, maximised; tasks/suite.py).
OBJECTIVES: dict[str, str] = {
    "loss": "validation loss",
    "metric": "the task's validation metric",
    "params": "parameter count (after pruning, when the model has pruning gates)",
    "flops": "forward FLOPs per token (after pruning, when the model has pruning gates)",
    "latency": "forward milliseconds per batch, measured",
    "state": (
        "decode state per sequence in bytes at the task's length: KV caches, recurrent "
        "states, convolution buffers (float32; causal tasks)"
    ),
}

# The objectives a pruned model reports smaller figures for: the size that would ship.
_PRUNED = {"params": "pruned_params", "flops": "pruned_flops", "state": "pruned_state"}


def objective_value(metrics: dict[str, Any], objective: str) -> float | None:
    """The value of `objective` in a trial's metrics; None when the metrics lack it."""
    key = _PRUNED.get(objective)
    if key is not None and key in metrics:
        return float(metrics[key])
    value = metrics.get(objective)
    return None if value is None or isinstance(value, bool) else float(value)


def objective_label(objective: str, metric_name: str) -> str:
    """An objective in words: `metric` shows as the task's metric name (formats.objective_name;
    a table's head adds the direction, formats.objective_header)."""
    return objective_name(objective, metric_name)


class Evaluator(ABC):
    """What trains and scores one architecture for a campaign's task."""

    spec: TaskSpec
    metric_name: str
    higher_is_better: bool
    causal: bool | None  # None: works for either causality
    needs_torch: ClassVar[bool] = True  # the trial sets torch's thread count when true
    trains: ClassVar[bool] = True  # False: no model is trained (retrain has nothing to do)

    @property
    def default_budget(self) -> str:
        return DEFAULT_BUDGET

    @abstractmethod
    def evaluate(
        self, graph: nx.DiGraph, budget: Budget, seed: int, stint: Stint | None = None
    ) -> dict[str, Any]:
        """Train and score `graph`. With `stint` (a multi-fidelity schedule), train the
        schedule of `budget` up to `stint.stop` only, continuing the state saved in
        `stint.resume` and saving the state reached in `stint.save`."""

    def context(self, graph: nx.DiGraph) -> Context:
        """The build context of `graph` for this evaluator's task (its width and causality,
        the task's input and output ends)."""
        from gatesearch.arch.space import graph_context

        return graph_context(graph)

    def count_params(self, graph: nx.DiGraph) -> int:
        """Parameters of the model `graph` builds for this task, before any training.

        Built on the meta device: shapes only, no memory and no initialisation, so the
        campaign driver can check a parameter limit on every proposal in milliseconds."""
        import torch

        from gatesearch.arch.build import build_model, count_params

        with torch.device("meta"):
            model = build_model(graph, self.context(graph))
        return count_params(model)


class NullEvaluator(Evaluator):
    name: ClassVar[str] = "null"
    description: ClassVar[str] = (
        "no training: a pseudo-metric from the architecture hash (benchmarks, tests)"
    )
    needs_torch = False
    trains = False
    metric_name = "loss"
    higher_is_better = False
    causal = None

    def __init__(self) -> None:
        self.spec = TaskSpec(self.name, {})

    @property
    def default_budget(self) -> str:
        return "1steps"  # at once; a seconds budget makes it sleep that long

    def evaluate(
        self, graph: nx.DiGraph, budget: Budget, seed: int, stint: Stint | None = None
    ) -> dict[str, Any]:
        stop = stint.stop if stint is not None else budget
        if stop.seconds is not None:
            time.sleep(stop.seconds)
        digest = hashlib.sha256(arch_hash(graph).encode()).digest()
        unit = [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (0, 4, 8, 12, 16, 20)]
        # At a lower rung the score is the final one blurred by a second draw, less the
        # further below the top: enough for a schedule's tests to see rankings change.
        loss = 1.0 + unit[0] + 0.5 * unit[4] * (1.0 - stop.amount / budget.amount)
        if stint is not None:
            _null_stint(stint, stop)
        return {
            "loss": loss,
            "metric": loss,
            "params": float(int(1e4 + 1e6 * unit[1])),
            "flops": float(int(2e4 + 2e6 * unit[2])),
            "latency": 1.0 + 10.0 * unit[3],
            "state": float(int(1e3 + 1e6 * unit[5])),
        }


def _null_stint(stint: Stint, stop: Budget) -> None:
    """The null task's stand-in for a training state: a state folder is still checked and
    written, so a schedule's bookkeeping (saved, continued, deleted) runs for real."""
    from gatesearch.proxy.stint import load_state, save_state

    if stint.resume is not None:
        load_state(stint.resume)  # raises when the state a promotion continues is missing
    if stint.save is not None:
        save_state(stint.save, {}, {"task": "null", "stop": str(stop)})


class FaultyNullEvaluator(NullEvaluator):
    """The null evaluator with faults, for testing failure handling: by architecture hash, one
    in four raises, one in eight reports a NaN loss."""

    name = "null-faulty"
    description = "null, but some architectures raise or give NaN (failure-handling tests)"

    def evaluate(
        self, graph: nx.DiGraph, budget: Budget, seed: int, stint: Stint | None = None
    ) -> dict[str, Any]:
        metrics = super().evaluate(graph, budget, seed, stint)
        bucket = int(arch_hash(graph)[-2:], 16) % 8
        if bucket < 2:
            raise RuntimeError(f"injected fault for {arch_hash(graph)}")
        if bucket == 2:
            metrics["loss"] = metrics["metric"] = math.nan
        return metrics


NULL_EVALUATORS: dict[str, type[NullEvaluator]] = {
    e.name: e for e in (NullEvaluator, FaultyNullEvaluator)
}

# A real task's per-trial budget when none is given: wall-clock, so a campaign's length does
# not depend on which architectures it samples (an 8-block LSTM stack costs 20x a 1-block GCNN
# per step on a CPU). Pass `--budget 200steps` for budgets that repeat exactly.
DEFAULT_BUDGET = "20s"


class ProxyEvaluator(Evaluator):
    """A `gatesearch.tasks` task, trained and scored by the proxy trainer (self-tuning or
    fixed hyperparameters, as the proxy options say)."""

    def __init__(self, spec: TaskSpec, proxy: Mapping[str, Any] | None = None) -> None:
        from gatesearch.proxy.config import proxy_config
        from gatesearch.tasks import make_task

        # Both checked before anything runs: the params (and data files), the proxy options.
        task = make_task(spec)
        self.proxy = proxy_config(proxy)
        self.task = task
        self.spec = task.spec
        self.metric_name = task.metric_name
        self.higher_is_better = bool(task.higher_is_better)
        self.causal = bool(task.causal)

    def evaluate(
        self, graph: nx.DiGraph, budget: Budget, seed: int, stint: Stint | None = None
    ) -> dict[str, Any]:
        from gatesearch.proxy import proxy_evaluate

        return proxy_evaluate(graph, self.spec, budget, seed, self.proxy, stint=stint)

    def context(self, graph: nx.DiGraph) -> Context:
        from gatesearch.proxy.trainer import task_context

        return task_context(graph, self.task)


class SuiteEvaluator(Evaluator):
    """A suite (gatesearch/tasks/suite.py): one model per member task, trained one after the
    other in the same trial — the graph is the same, its embedding and head follow each
    member's task. Each member trains an equal share of the trial's budget
    (`member_budget`).

    Metrics (docs/tasks.md, "Suites"): `metric` is the weighted mean of the members'
    normalised scores (`member_score`, on [0, 1], higher better) and `metric_name` "score";
    `loss` the weighted mean of each member's validation loss over its chance loss (1: no
    better than a uniform guess); `params`, `flops`, `latency` and `state` the largest
    member model's (the one a parameter limit turns a proposal down for); steps, tokens and
    seconds the sums. `members` holds each member's own figures, and `member:NAME` its
    normalised score, flat, for objectives and tables.
    """

    metric_name = "score"
    higher_is_better = True

    def __init__(self, suite: Suite, proxy: Mapping[str, Any] | None = None) -> None:
        self.suite = suite
        # Each member built now: its params and data files checked before anything runs.
        self.members = [ProxyEvaluator(m.spec, proxy) for m in suite.members]
        self.proxy = self.members[0].proxy
        self.spec = suite.to_spec()
        # One graph serves every member: causal when any member needs it (a causal model
        # may still learn a task that would allow looking ahead).
        self.causal = any(e.causal for e in self.members)

    @property
    def member_names(self) -> tuple[str, ...]:
        return self.suite.member_names

    @property
    def default_budget(self) -> str:
        # Each member gets what a one-task campaign's trial gets by default.
        default = parse_budget(DEFAULT_BUDGET)
        return str(Budget(default.amount * len(self.members), default.unit))

    def share(self, budget: Budget) -> Budget:
        """Each member's training budget; SuiteError when the budget is too small to split."""
        return member_budget(budget, len(self.members))

    def evaluate(
        self, graph: nx.DiGraph, budget: Budget, seed: int, stint: Stint | None = None
    ) -> dict[str, Any]:
        if stint is not None:  # refused when the campaign is made; a guard, not a path
            raise TaskError("a suite trains its members whole: multi-fidelity does not apply")
        from gatesearch.proxy.lr import peak_lr

        share = self.share(budget)
        members: dict[str, dict[str, Any]] = {}
        for member, evaluator in zip(self.suite.members, self.members):
            try:
                metrics = evaluator.evaluate(graph, share, seed)
                _check_finite(metrics)
            except Exception as exc:  # the trial fails; its reason says which member
                raise TrialFailure(f"member {member.name}: {exc}") from exc
            task = evaluator.task
            members[member.name] = {
                "task": task_label(member.spec),
                "weight": member.weight,
                "score": member_score(task, float(metrics["metric"])),
                "metric": float(metrics["metric"]),
                "metric_name": task.metric_name,
                "higher_is_better": bool(task.higher_is_better),
                "loss": float(metrics["loss"]),
                "chance_loss": chance_loss(task),
                **{k: metrics[k] for k in _MEMBER_KEEPS if k in metrics},
            }
            # `retrain` starts a member at its highest rate, as it does a one-task trial
            # (a self-tuning proxy may have lowered it); the trajectory it is read from is
            # not kept for members.
            peak = peak_lr(metrics.get("hyperparameters") or {}, metrics.get("trajectory"))
            if peak is not None:
                members[member.name]["peak_lr"] = peak
        return self._combine(members)

    def _combine(self, members: dict[str, dict[str, Any]]) -> dict[str, Any]:
        rows = list(members.values())
        out: dict[str, Any] = {
            "metric": self.suite.combine({n: r["score"] for n, r in members.items()}),
            "loss": self.suite.combine(
                {n: r["loss"] / r["chance_loss"] for n, r in members.items()}
            ),
            "metric_name": self.metric_name,
            "higher_is_better": True,
            "self_tuning": self.proxy.self_tuning,
        }
        for key in _LARGEST:  # only when every member reports it (state: causal models)
            if all(key in r for r in rows):
                out[key] = max(float(r[key]) for r in rows)
        for key in _SUMMED:
            if all(key in r for r in rows):
                out[key] = sum(float(r[key]) for r in rows)
        out |= {member_objective(name): r["score"] for name, r in members.items()}
        out["members"] = members
        return out

    def count_params(self, graph: nx.DiGraph) -> int:
        """The largest member model's: a proposal is turned down when any member's model is
        over the limit."""
        return max(e.count_params(graph) for e in self.members)

    def context(self, graph: nx.DiGraph) -> Context:
        """The first member's context (each member builds its own when it trains)."""
        return self.members[0].context(graph)


# What each member's record keeps of its proxy metrics, beside its scores.
_MEMBER_KEEPS = (
    "params",
    "flops",
    "latency",
    "state",
    "pruned_params",
    "pruned_flops",
    "pruned_state",
    "steps",
    "tokens",
    "train_seconds",
    "hyperparameters",
)
# A suite trial's costs: the largest member model's. Its training: the members' sum.
_LARGEST = ("params", "flops", "latency", "state", "pruned_params", "pruned_flops", "pruned_state")
_SUMMED = ("steps", "tokens", "train_seconds")


def resolve_task(spec: TaskSpec | str, proxy: Mapping[str, Any] | None = None) -> Evaluator:
    """The evaluator for a task spec and the proxy's options; TaskError (one line) for an
    unknown task or bad params, ProxyOptionError for a bad proxy option.

    A suite is a file ending in `.toml`, a shipped suite's name (`mad`), or the `suite` spec a
    campaign stores (the suite written out); a file takes no params: they are in it."""
    if isinstance(spec, str):
        spec = TaskSpec(spec, {})
    if spec.name == SUITE_TASK:
        return SuiteEvaluator(Suite.from_spec(spec), proxy)
    path = suite_path(spec.name)
    if path is not None:
        if spec.params:
            raise SuiteError(
                f"suite {path}: task params ({', '.join(spec.params)}) do not apply to a "
                "suite; set each member's params in its file"
            )
        return SuiteEvaluator(load_suite(path), proxy)
    null = NULL_EVALUATORS.get(spec.name)
    if null is not None:
        if spec.params:
            raise TaskError(f"task {spec.name} takes no params, got {', '.join(spec.params)}")
        if proxy:
            raise TaskError(f"task {spec.name} trains no model: proxy options do not apply")
        return null()
    return ProxyEvaluator(spec, proxy)


def spec_of(config_task: Any) -> TaskSpec:
    """The TaskSpec a run config holds (runs made before task params held a bare name)."""
    if isinstance(config_task, str):
        return TaskSpec(config_task, {})
    return TaskSpec.from_dict(config_task)


def parse_task_params(
    items: list[str], flag: str = "--task-param", example: str = "vocab=64"
) -> dict[str, Any]:
    """`key=value` strings into params: int when the value reads as one, then float, then
    `true`/`false`, else the string. TaskError naming `flag` and an item without `=`."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise TaskError(f"{flag} {item!r}: expected key=value, e.g. {example}")
        if key in params:
            raise TaskError(f"{flag} {key} is given twice")
        params[key] = _param_value(text.strip())
    return params


def parse_proxy_options(items: list[str]) -> dict[str, Any]:
    """`--proxy-option key=value` strings, read as task params are; the keys and values are
    checked when the evaluator is built (`proxy_config`)."""
    return parse_task_params(items, "--proxy-option", "batch_size=16")


def _param_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _check_finite(metrics: dict[str, Any]) -> None:
    bad = [
        k
        for k, v in metrics.items()
        if isinstance(v, float) and not isinstance(v, bool) and not math.isfinite(v)
    ]
    if bad:
        raise TrialFailure(f"non-finite {', '.join(sorted(bad))}")


def evaluate(
    graph: nx.DiGraph,
    task: TaskSpec | str | Evaluator,
    budget: Budget,
    seed: int,
    stint: Stint | None = None,
) -> dict[str, Any]:
    """Train and score `graph` on `task` within `budget`; JSON metrics.

    Raises TrialFailure on a non-finite metric; the proxy's TrialDiverged when training
    diverges; any other exception is a failed trial too.
    """
    evaluator = task if isinstance(task, Evaluator) else resolve_task(task)
    metrics = evaluator.evaluate(graph, budget, seed, stint)
    _check_finite(metrics)
    return metrics


__all__ = [
    "DEFAULT_BUDGET",
    "NULL_EVALUATORS",
    "OBJECTIVES",
    "Evaluator",
    "NullEvaluator",
    "ProxyEvaluator",
    "SuiteEvaluator",
    "TrialFailure",
    "UnknownTaskError",
    "evaluate",
    "objective_label",
    "objective_value",
    "parse_proxy_options",
    "parse_task_params",
    "resolve_task",
    "spec_of",
]
