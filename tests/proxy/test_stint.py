"""Training in stints: a proxy run stopped at a rung, saved, and continued in a fresh run equals
one uninterrupted run of the same budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from proxydata import NoisyLookup
from stackgraph import stack_graph

from gatesearch.budget import BudgetError, parse_budget
from gatesearch.proxy import ProxyConfig, train_proxy
from gatesearch.proxy.stint import META, TENSORS, Stint, StintStateError

CONFIG = ProxyConfig(batch_size=8, eval_batch_size=64, trajectory_every=5, latency_runs=1)
# Annealed modules (an MoE router's temperature, a pruning gate's) and dropout: everything
# that reads the schedule's progress or the random generator.
GRAPH = stack_graph(
    16,
    [
        ("attention", {"heads": 2}),
        ("glu", {"expand": 2.0, "prune": "trainable"}),
        (
            "moe",
            {
                "router": "softmax_d2s",
                "experts": 2,
                "tau_start": 2.0,
                "tau_end": 0.01,
                "expert": {"op": "glu", "params": {"expand": 2.0}},
            },
        ),
    ],
)
SCALARS = ("loss", "metric", "steps", "tokens", "hyper_steps", "train_loss_mean", "train_loss_tail")


def task() -> NoisyLookup:
    return NoisyLookup(vocab=11, length=8, n_train=8)


def in_stints(tmp_path: Path, config: ProxyConfig, budget: str, stops: list[str]) -> object:
    """Train `budget` in stints ending at `stops` (the last is the budget), each a new run
    continuing the state the previous one saved."""
    result = None
    previous = None
    for i, stop in enumerate(stops):
        folder = tmp_path / f"rung{i}"
        stint = Stint(parse_budget(stop), resume=previous, save=folder)
        result = train_proxy(GRAPH, task(), budget, seed=3, config=config, stint=stint)
        previous = folder
    return result


@pytest.mark.parametrize("self_tuning", [True, False], ids=["self-tuning", "fixed"])
def test_a_run_continued_over_rungs_equals_one_uninterrupted_run(
    tmp_path: Path, self_tuning: bool
) -> None:
    config = replace(CONFIG, self_tuning=self_tuning, lr_schedule="cosine", train_per_hyper=3)
    whole = train_proxy(GRAPH, task(), "40steps", seed=3, config=config)
    parts = in_stints(tmp_path, config, "40steps", ["7steps", "20steps", "40steps"])
    for key in SCALARS:
        assert parts.metrics[key] == whole.metrics[key], key
    assert parts.hyperparameters == whole.hyperparameters
    if self_tuning:
        assert whole.metrics["hyper_steps"] > 5  # the STN's own state crossed the rungs too
    mine, theirs = parts.model.state_dict(), whole.model.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(mine[name], tensor, rtol=0, atol=0, msg=name)


def test_a_stint_scores_the_model_where_it_stopped(tmp_path: Path) -> None:
    """The first rung's score is the model after 7 of 40 steps: fewer steps than the whole run
    and, at that point, the same training as the whole run's first 7 steps."""
    first = train_proxy(
        GRAPH, task(), "40steps", seed=3, config=CONFIG,
        stint=Stint(parse_budget("7steps"), save=tmp_path / "r0"),
    )  # fmt: skip
    assert first.metrics["steps"] == 7
    assert sorted(p.name for p in (tmp_path / "r0").iterdir()) == [META, TENSORS]


def test_state_saved_by_another_trial_or_setting_is_refused(tmp_path: Path) -> None:
    stint = Stint(parse_budget("5steps"), save=tmp_path / "r0")
    train_proxy(GRAPH, task(), "20steps", seed=3, config=CONFIG, stint=stint)
    go_on = Stint(parse_budget("10steps"), resume=tmp_path / "r0")
    for seed, config, budget in [
        (4, CONFIG, "20steps"),  # another seed
        (3, replace(CONFIG, lr=1e-2), "20steps"),  # another setting
        (3, CONFIG, "30steps"),  # another schedule
    ]:
        with pytest.raises(StintStateError, match="another trial or another setting"):
            train_proxy(GRAPH, task(), budget, seed=seed, config=config, stint=go_on)
    with pytest.raises(StintStateError, match="no saved stint state"):
        missing = Stint(parse_budget("10steps"), resume=tmp_path / "nowhere")
        train_proxy(GRAPH, task(), "20steps", seed=3, config=CONFIG, stint=missing)


@pytest.mark.parametrize("stop", ["30steps", "5s"], ids=["beyond", "other-unit"])
def test_a_stop_outside_the_budget_is_refused(stop: str) -> None:
    with pytest.raises(BudgetError, match="within it"):
        train_proxy(
            GRAPH, task(), "20steps", seed=3, config=CONFIG, stint=Stint(parse_budget(stop))
        )
