"""What `gatesearch run` is asked, checked and resolved into a RunConfig before anything is
written."""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gatesearch.arch.space import default_space, load_space
from gatesearch.budget import Budget, parse_budget
from gatesearch.errors import GatesearchError
from gatesearch.evaluate import (
    OBJECTIVES,
    Evaluator,
    SuiteEvaluator,
    resolve_task,
)
from gatesearch.grammar import DerivationError, Grammar, replay
from gatesearch.proxy.config import SELF_TUNING_OPTIONS
from gatesearch.runs.config import Direction, RunConfig
from gatesearch.runs.schedule import Schedule, ScheduleError
from gatesearch.strategies.presets import Preset, load_preset, resolve_preset_path
from gatesearch.tasks import TaskSpec
from gatesearch.tasks.suite import member_objective, objective_member

# `gatesearch run` with no --task: MQAR shrunk so that 12 trials on 2 cores find a model that
# has learnt it within about three minutes. 32 tokens with 4 key-value pairs over a 64-token
# vocabulary is the smallest MQAR that still needs recall (a model must look back up to 24
# positions); the held-out sets are cut to 256 sequences because scoring 1024 would cost a
# fifth of a trial on a CPU. `--task mqar` alone gives MQAR's full defaults (vocabulary 256,
# length 64, 4 pairs).
DEFAULT_TASK = TaskSpec(
    "mqar", {"vocab": 64, "length": 32, "pairs": 4, "n_valid": 256, "n_test": 256}
)
# The default campaign's budget and parameter limit, chosen by measurement (benchmarks/
# RESULTS.md, "The default campaign"): with no limit its winner had 2.5M parameters, got 12
# weight steps in a 20 s budget and reached 0.057 (chance 0.016). At most 200k parameters and
# 400 steps each, seeds 0-2 each end at >= 0.99; at 100k the sampled models that fit are mostly
# one block deep and seed 1 ended at 0.26, at 400 steps and at 800. Steps, not seconds: the
# result then does not depend on the machine's speed or load, only the time does.
DEFAULT_CAMPAIGN_BUDGET = "400steps"
DEFAULT_CAMPAIGN_MAX_PARAMS = 200_000
DEFAULT_TASK_LABEL = "mqar-small"  # in the default campaign's run name
# What a new campaign's proxy changes from the trainer's defaults, before --proxy-option: fixed
# hyperparameters. Measured on six tasks (benchmarks/RESULTS.md, "The self-tuning proxy against
# a per-architecture grid", "OSULeaf" and "The campaign default: fixed hyperparameters"), the
# self-tuning proxy never ranked architectures better than fixed hyperparameters and cost
# 1.6-1.8x as much a trial; where regularisation decides (a retrain 10x longer on small data), `retrain`
# chooses the dropout on validation. `--proxy-option self_tuning=true` brings the STN back.
# Stored in each run's config.json, so a run made before this default resumes as it began.
CAMPAIGN_PROXY_DEFAULTS: dict[str, Any] = {"self_tuning": False}


class CampaignError(GatesearchError):
    """A campaign that cannot start or go on as asked (user input, Ray address)."""


# ------------------------------------------------------------------------------- the config


def trial_seed(campaign_seed: int, slot: int, stream: int = 0) -> int:
    """Independent 32-bit seeds per (campaign seed, slot, stream)."""
    return int(np.random.SeedSequence([campaign_seed, slot, stream]).generate_state(1)[0])


def parse_objectives(
    text: str, metric_name: str = "metric", members: Sequence[str] = ()
) -> list[str]:
    """The objective names of `--objectives`; the task's own metric name (e.g. `accuracy`)
    stands for `metric`, as the leaderboard labels it so. A suite's `members` each add
    `member:NAME`, that member's normalised score."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CampaignError("--objectives needs at least one name")
    names = ["metric" if n == metric_name and n not in OBJECTIVES else n for n in names]
    for n in names:
        member = objective_member(n)
        if member is not None:
            if not members:
                raise CampaignError(
                    f"objective {n!r}: member:NAME objectives are a suite's "
                    "(--task suites/mad.toml); this task is not one"
                )
            if member not in members:
                raise CampaignError(
                    f"objective {n!r}: the suite has no member {member!r} "
                    f"(its members: {', '.join(members)})"
                )
            continue
        if n not in OBJECTIVES:
            choices = ", ".join(
                f"metric ({metric_name})" if o == "metric" and metric_name != o else o
                for o in OBJECTIVES
            )
            if members:
                choices += ", " + ", ".join(member_objective(m) for m in members)
            raise CampaignError(f"unknown objective {n!r}: choose from {choices}")
    if len(set(names)) != len(names):
        raise CampaignError(f"--objectives {text!r} names an objective twice")
    return names


RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "host": platform.node()}
    for pkg in ("gatesearch", "torch", "optuna", "ray", "numpy", "networkx", "pyarrow", "lark"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    return versions


@dataclass
class RunRequest:
    """What `gatesearch run` was asked, before it is resolved into a config."""

    space: Path | None = None
    strategy: str | None = None
    task: str | None = None  # None: DEFAULT_TASK
    task_params: dict[str, Any] = field(default_factory=dict)
    trials: int = 12
    workers: int = 2
    address: str | None = None
    name: str | None = None
    runs_dir: Path = Path("runs")
    budget: str | None = None  # None: the task's default
    seed: int = 0
    objectives: str = "metric"
    seed_archs: list[Path] = field(default_factory=list)
    storage: str | None = None
    timeout: float | None = None
    max_params: int | None = None  # larger proposals are turned down untrained (None: the default)
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields to change
    # Multi-fidelity, over the preset's [schedule]: none | asha | hyperband, the lowest rung,
    # the reduction factor η.
    schedule: str | None = None
    min_budget: str | None = None
    eta: int | None = None


def task_spec_of(req: RunRequest) -> TaskSpec:
    """The task a request names: `--task` with its `--task-param`s, or the default task."""
    if req.task is None:
        return TaskSpec(DEFAULT_TASK.name, {**DEFAULT_TASK.params, **req.task_params})
    return TaskSpec(req.task, dict(req.task_params))


def causal_for(grammar: Grammar, evaluator: Evaluator, space_path: Path) -> bool:
    """The causality derivations are expanded with: what the task needs, if the space admits
    it; a non-causal task takes a bidirectional model where the space allows one."""
    admits = grammar.causality.admits()
    if evaluator.causal:
        if True not in admits:
            raise CampaignError(
                f"task {evaluator.spec.name} is causal but {space_path} is written for "
                "non-causal models (`task noncausal`)"
            )
        return True
    if evaluator.causal is False and False in admits:
        return False
    return True in admits


def default_run_name(strategy: str, task: str) -> str:
    # `module:function` and entry-point names may hold characters a run name may not.
    short = re.sub(r"[^A-Za-z0-9._-]+", "-", task.rpartition(":")[2]).strip("-._") or "task"
    return f"{strategy}-{short}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run(req: RunRequest) -> tuple[RunConfig, Path, Preset]:
    """Check every input and resolve the config; nothing is written."""
    task_spec = task_spec_of(req)
    space_path = Path(req.space) if req.space else default_space(task_spec.name)
    grammar = load_space(space_path)
    preset = load_preset(resolve_preset_path(req.strategy))
    evaluator = resolve_task(task_spec, req.proxy)
    proxy = dict(req.proxy)
    if evaluator.trains:  # a task (or suite) that trains models, not `null`
        proxy = {**CAMPAIGN_PROXY_DEFAULTS, **req.proxy}
        inert = [k for k in SELF_TUNING_OPTIONS if k in req.proxy]
        if inert and proxy.get("self_tuning") is False:
            raise CampaignError(
                f"--proxy-option {inert[0]} acts only on the self-tuning proxy, which "
                "campaigns leave off by default: add --proxy-option self_tuning=true"
            )
        evaluator = resolve_task(task_spec, proxy)
    default_budget = DEFAULT_CAMPAIGN_BUDGET if req.task is None else evaluator.default_budget
    budget = parse_budget(req.budget or default_budget)
    suite = evaluator if isinstance(evaluator, SuiteEvaluator) else None
    members = suite.member_names if suite is not None else ()
    objectives = parse_objectives(req.objectives, evaluator.metric_name, members)
    if suite is not None:
        suite.share(budget)  # a budget too small to split among the members: refused now
    if req.trials < 1 or req.workers < 1:
        raise CampaignError("--trials and --workers must be at least 1")
    if req.timeout is not None and not (math.isfinite(req.timeout) and req.timeout >= 0):
        raise CampaignError(
            f"--timeout must be a number of seconds >= 0 (0: none), got {req.timeout:g}"
        )
    if req.max_params is not None and req.max_params < 1:
        raise CampaignError(f"--max-params must be at least 1, got {req.max_params}")
    max_params = req.max_params
    if max_params is None and req.task is None:
        max_params = DEFAULT_CAMPAIGN_MAX_PARAMS
    causal = causal_for(grammar, evaluator, space_path)
    if "state" in objectives and not causal and evaluator.trains:
        raise CampaignError(
            f"--objectives state: the decode state is what a causal model keeps to generate "
            f"step by step; this campaign's models are not causal ({space_path}, task "
            f"{evaluator.spec.name})"
        )
    seeds = []
    for path in req.seed_archs:
        from gatesearch.arch.space import load_known

        arch = load_known(path)
        try:
            replay(grammar, arch.derivation.choices, arch.derivation.causal)
        except DerivationError as exc:
            raise CampaignError(f"--seed-arch {path} does not fit {space_path}: {exc}") from None
        seeds.append({"file": str(path), "choices": arch.derivation.choices})
    # The default campaign's smaller MQAR is named apart from `--task mqar`'s.
    task_name = evaluator.spec.name if req.task is not None else DEFAULT_TASK_LABEL
    if suite is not None:
        task_name = suite.suite.name
    name = req.name or default_run_name(preset.strategy, task_name)
    if not RUN_NAME.match(name):
        raise CampaignError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    timeout = req.timeout if req.timeout is not None else preset.trial.timeout
    schedule = resolve_schedule(req, preset.schedule, budget)
    if suite is not None and schedule.staged:
        # A stint saves one model's state; a suite trial holds one per member.
        raise CampaignError(
            f"--schedule {schedule.kind.value}: a suite trains its members whole; multi-fidelity "
            "schedules are not supported for suites (use --schedule none)"
        )
    config = RunConfig(
        name=name,
        created=datetime.now().isoformat(timespec="seconds"),
        space=str(space_path),
        strategy=preset.strategy,
        preset=preset.source,
        options=preset.options,
        # The task as resolved (every param, defaults included): resume rebuilds it from here.
        task=evaluator.spec,
        metric_name=evaluator.metric_name,
        higher_is_better=evaluator.higher_is_better,
        budget=budget,
        trials=req.trials,
        workers=req.workers,
        seed=req.seed,
        objectives=tuple(objectives),
        directions=tuple(Direction.of(o, evaluator.higher_is_better) for o in objectives),
        causal=causal,
        trial=replace(preset.trial, timeout=timeout),
        seed_archs=tuple(seeds),
        storage=req.storage,
        address=req.address,
        max_params=max_params,
        proxy=proxy,
        schedule=schedule,
    )
    return config, space_path, preset


def resolve_schedule(req: RunRequest, preset: Schedule, budget: Budget) -> Schedule:
    """The preset's schedule with the request's --schedule, --min-budget and --eta over it;
    ScheduleError (one line) when its rungs cannot be made from the budget."""
    doc = preset.to_dict()
    given = {"kind": req.schedule, "min_budget": req.min_budget, "eta": req.eta}
    doc.update({k: v for k, v in given.items() if v is not None})
    schedule = Schedule.from_dict(doc, "--schedule")
    if not schedule.staged and (req.min_budget is not None or req.eta is not None):
        raise ScheduleError("--min-budget and --eta need --schedule asha or hyperband")
    schedule.rungs(budget)  # checked now: units, order
    return schedule
