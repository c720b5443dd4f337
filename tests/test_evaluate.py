"""Task resolution for campaigns: objectives read from proxy metrics, directions that follow
the task, task params from the command line, the null evaluators."""

from __future__ import annotations

import math

import pytest

from gatesearch.arch.space import DEFAULT_SPACE, load_space, sample_architectures
from gatesearch.budget import parse_budget
from gatesearch.evaluate import (
    NullEvaluator,
    ProxyEvaluator,
    TrialFailure,
    evaluate,
    objective_value,
    parse_task_params,
    resolve_task,
    spec_of,
)
from gatesearch.runs.config import Direction
from gatesearch.runs.request import RunRequest, prepare_run
from gatesearch.tasks import TaskError, TaskSpec

PROXY_METRICS = {
    "loss": 2.5,
    "metric": 0.75,
    "accuracy": 0.75,
    "metric_name": "accuracy",
    "higher_is_better": True,
    "params": 1000.0,
    "flops": 2000.0,
    "latency": 3.0,
    "pruned_params": 600.0,
    "pruned_flops": 1500.0,
    "state": 4096.0,
    "pruned_state": 2048.0,
    "hyperparameters": {"lr": 0.003},
}


@pytest.mark.parametrize(
    ("objective", "value"),
    [
        ("loss", 2.5),
        ("metric", 0.75),
        ("params", 600.0),
        ("flops", 1500.0),
        ("latency", 3.0),
        ("state", 2048.0),
    ],
    ids=lambda v: str(v),
)
def test_objectives_read_proxy_metrics_pruned_sizes_first(objective, value):
    assert objective_value(PROXY_METRICS, objective) == value


def test_objectives_without_pruning_and_missing():
    plain = {k: v for k, v in PROXY_METRICS.items() if not k.startswith("pruned")}
    assert objective_value(plain, "params") == 1000.0
    assert objective_value({"loss": 1.0}, "metric") is None
    assert objective_value({"higher_is_better": True}, "higher_is_better") is None


def test_directions_follow_the_task():
    assert Direction.of("metric", higher_is_better=True) == "maximize"
    assert Direction.of("metric", higher_is_better=False) == "minimize"
    assert Direction.of("loss", higher_is_better=True) == "minimize"
    config = prepare_run(RunRequest(task="mqar", objectives="metric,params,loss"))[0].to_dict()
    assert config["directions"] == ["maximize", "minimize", "minimize"]
    assert config["metric_name"] == "accuracy" and config["higher_is_better"] is True
    config = prepare_run(RunRequest(task="charlm", objectives="metric"))[0].to_dict()
    assert config["directions"] == ["minimize"] and config["metric_name"] == "loss"


def test_the_default_campaign_is_a_small_mqar():
    config = prepare_run(RunRequest())[0].to_dict()
    assert config["task"]["name"] == "mqar" and config["task"]["params"]["vocab"] == 64
    assert config["budget"] == "400steps" and config["objectives"] == ["metric"]
    assert config["max_params"] == 200_000  # a CPU campaign finds something under a limit
    # --task-param without --task adjusts the default task.
    config = prepare_run(RunRequest(task_params={"pairs": 2}))[0].to_dict()
    assert config["task"]["params"]["pairs"] == 2 and config["task"]["params"]["vocab"] == 64
    # --task alone takes the task's own defaults.
    config = prepare_run(RunRequest(task="mqar"))[0].to_dict()
    assert config["task"]["params"]["vocab"] == 256
    assert config.get("max_params") is None  # a task of the user's: no limit unless asked
    config = prepare_run(RunRequest(max_params=5000))[0].to_dict()
    assert config["max_params"] == 5000


@pytest.mark.parametrize(
    ("items", "params"),
    [
        (
            ["vocab=64", "alpha=0.5", "path=data/x.parquet"],
            {"vocab": 64, "alpha": 0.5, "path": "data/x.parquet"},
        ),
        (["n=1e3", "flag=true", "name= a b "], {"n": 1000.0, "flag": True, "name": "a b"}),
        ([], {}),
    ],
    ids=["int-float-str", "exp-bool-spaces", "none"],
)
def test_task_params_parse(items, params):
    assert parse_task_params(items) == params


@pytest.mark.parametrize(
    ("items", "needle"),
    [(["vocab"], "key=value"), (["=3"], "key=value"), (["a=1", "a=2"], "twice")],
    ids=["no-equals", "no-key", "twice"],
)
def test_bad_task_params(items, needle):
    with pytest.raises(TaskError, match=needle):
        parse_task_params(items)


def test_resolution():
    assert isinstance(resolve_task("null"), NullEvaluator)
    mqar = resolve_task(TaskSpec("mqar", {"vocab": 16, "length": 16, "pairs": 2}))
    assert isinstance(mqar, ProxyEvaluator) and mqar.spec.params["alpha"] == 0.1
    with pytest.raises(TaskError, match="no params"):
        resolve_task(TaskSpec("null", {"x": 1}))
    with pytest.raises(TaskError, match="mqar9"):
        resolve_task("mqar9")
    # Runs created before task params stored the bare name.
    assert spec_of("null") == TaskSpec("null", {})
    assert spec_of({"name": "mqar", "params": {"vocab": 16}}) == TaskSpec("mqar", {"vocab": 16})


def test_null_evaluators_are_deterministic_and_faults_fail():
    archs = sample_architectures(load_space(DEFAULT_SPACE), 16, seed=0)
    budget = parse_budget("1steps")
    a = evaluate(archs[0].graph, "null", budget, 0)
    assert a == evaluate(archs[0].graph, "null", budget, 1) and a["metric"] == a["loss"]
    outcomes = set()
    for arch in archs:
        try:
            m = evaluate(arch.graph, "null-faulty", budget, 0)
            outcomes.add("ok" if math.isfinite(m["loss"]) else "nan")
        except TrialFailure:
            outcomes.add("non-finite")
        except RuntimeError:
            outcomes.add("raised")
    assert {"ok", "raised"} <= outcomes
