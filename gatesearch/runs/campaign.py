"""The campaign loop: ask -> build graph -> dispatch to Ray -> tell -> store.

One driver process owns a run directory (flock) and is the only writer of its study. Each
campaign slot (0, 1, 2, ... up to the target) gets a seed derived from (campaign seed, slot);
the strategy's proposal and the trial's training both draw from it, so with one worker a
campaign that is killed and resumed evaluates the same architectures in the same order as one
that never stopped.

A slot is finished by a COMPLETE or FAIL trial. A trial found RUNNING when a run is reopened
(the driver was killed) or failed as "interrupted" (Ctrl-C) does not finish its slot: the slot
is run again with the same derivation and seed, as a new trial. Architectures are identified
by their canonical hash: a proposal whose hash already has a result is not trained again; its
result is copied into a new trial marked `duplicate_of`, and counted.
"""

from __future__ import annotations

import math
import os
import platform
import re
import signal
import socket
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from gatesearch.arch.graph import GraphError, describe, read_graph
from gatesearch.arch.space import DEFAULT_SPACE, Architecture, load_space
from gatesearch.budget import Budget, parse_budget
from gatesearch.errors import GatesearchError
from gatesearch.evaluate import (
    OBJECTIVES,
    Evaluator,
    objective_label,
    objective_value,
    resolve_task,
    spec_of,
)
from gatesearch.grammar import DerivationError, Grammar, replay
from gatesearch.runs.config import Direction, RunConfig, TrialResources
from gatesearch.runs.dispatch import Dispatcher, EventKind
from gatesearch.runs.outcomes import TrialOutcome, interrupted_reason, rejected_reason
from gatesearch.runs.store import (
    PRESET_COPY,
    SPACE_COPY,
    RunState,
    RunStore,
    StoreError,
    TrialRecord,
    campaign_state,
    compact_metrics,
)
from gatesearch.shipped import shipped_dir
from gatesearch.strategies import STRATEGIES, Observation, Strategy, StrategyError, parse_options
from gatesearch.tasks import TaskSpec

PRESETS_DIR = shipped_dir("strategies")
DEFAULT_PRESET = "evolution"
# A proposal over --max-params is stored as a failed trial outside every slot (it is no trial
# of the --trials count) and the strategy is asked again, with a fresh seed, up to this many
# times in a row before the campaign gives up on the limit.
MAX_REJECTS = 2000
REJECTED_SLOT = -1
_REJECT_STREAM = 1000  # seed stream of the re-asks (0: the proposal, 1: the training)


# `gatesearch run` with no --task: MQAR shrunk so that 12 trials of 20 s on 2 cores show a
# search making progress within about three minutes. 32 tokens with 4 key-value pairs over
# a 64-token vocabulary is the smallest MQAR that still needs recall (a model must look back
# up to 24 positions); the held-out sets are cut to 256 sequences because scoring 1024 would
# cost a fifth of a 20 s trial on a CPU. `--task mqar` alone gives MQAR's full defaults
# (vocabulary 256, length 64, 4 pairs).
DEFAULT_TASK = TaskSpec(
    "mqar", {"vocab": 64, "length": 32, "pairs": 4, "n_valid": 256, "n_test": 256}
)
DEFAULT_CAMPAIGN_BUDGET = "20s"


class CampaignError(GatesearchError):
    """A campaign that cannot start or go on as asked (user input, Ray address)."""


# ---------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    strategy: str
    options: dict[str, Any]
    trial: TrialResources
    text: str
    source: str


_PRESET_KEYS = {"strategy", "description", "options", "trial"}


def resolve_preset_path(spec: str | Path | None) -> Path:
    """A preset file, or a preset name (`tpe`) found in the bundled strategies/ folder."""
    if spec is None:
        spec = DEFAULT_PRESET
    path = Path(spec)
    if path.suffix == ".toml" or path.exists() or os.sep in str(spec):
        if not path.is_file():
            raise CampaignError(f"strategy preset {path}: no such file")
        return path
    bundled = PRESETS_DIR / f"{spec}.toml"
    if not bundled.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise CampaignError(
            f"unknown strategy preset {spec!r}: give a .toml file or one of {names}"
        )
    return bundled


def parse_preset(text: str, source: str) -> Preset:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StrategyError(f"{source}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in _PRESET_KEYS:
            raise StrategyError(
                f"{source}: unknown key {key!r} (known: {', '.join(sorted(_PRESET_KEYS))})"
            )
    name = doc.get("strategy")
    if not isinstance(name, str):
        raise StrategyError(f'{source}: needs `strategy = "<name>"` ({", ".join(STRATEGIES)})')
    if name not in STRATEGIES:
        raise StrategyError(
            f"{source}: unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        )
    options = doc.get("options", {})
    trial = doc.get("trial", {})
    if not isinstance(options, dict) or not isinstance(trial, dict):
        raise StrategyError(f"{source}: [options] and [trial] must be tables")
    parse_options(STRATEGIES[name], options, source)  # validated now, rebuilt on use
    known = TrialResources.__dataclass_fields__
    for key, value in trial.items():
        if key not in known:
            raise StrategyError(
                f"{source}: unknown key {key!r} in [trial] (known: {', '.join(known)})"
            )
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise StrategyError(f"{source}: [trial] {key} = {value!r} must be a number >= 0")
    resources = TrialResources(**trial)
    if resources.cpus < 1 or resources.cpus != int(resources.cpus):
        raise StrategyError(f"{source}: [trial] cpus must be a whole number >= 1")
    return Preset(name, options, resources, text, source)


def load_preset(path: Path) -> Preset:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StrategyError(f"{path}: cannot read: {exc}") from None
    return parse_preset(text, str(path))


def make_strategy(
    preset: Preset, grammar: Grammar, causal: bool, directions: list[str]
) -> Strategy:
    cls = STRATEGIES[preset.strategy]
    return cls(grammar, causal, directions, parse_options(cls, preset.options, preset.source))


# ------------------------------------------------------------------------------- the config


def trial_seed(campaign_seed: int, slot: int, stream: int = 0) -> int:
    """Independent 32-bit seeds per (campaign seed, slot, stream)."""
    return int(np.random.SeedSequence([campaign_seed, slot, stream]).generate_state(1)[0])


def parse_objectives(text: str, metric_name: str = "metric") -> list[str]:
    """The objective names of `--objectives`; the task's own metric name (e.g. `accuracy`)
    stands for `metric`, as the leaderboard labels it so."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CampaignError("--objectives needs at least one name")
    names = ["metric" if n == metric_name and n not in OBJECTIVES else n for n in names]
    for n in names:
        if n not in OBJECTIVES:
            choices = ", ".join(
                f"metric ({metric_name})" if o == "metric" and metric_name != o else o
                for o in OBJECTIVES
            )
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
    max_params: int | None = None  # proposals whose model is larger fail before training
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields to change


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
    space_path = Path(req.space) if req.space else DEFAULT_SPACE
    grammar = load_space(space_path)
    preset = load_preset(resolve_preset_path(req.strategy))
    evaluator = resolve_task(task_spec_of(req), req.proxy)
    default_budget = DEFAULT_CAMPAIGN_BUDGET if req.task is None else evaluator.default_budget
    budget = parse_budget(req.budget or default_budget)
    objectives = parse_objectives(req.objectives, evaluator.metric_name)
    if req.trials < 1 or req.workers < 1:
        raise CampaignError("--trials and --workers must be at least 1")
    if req.timeout is not None and not (math.isfinite(req.timeout) and req.timeout >= 0):
        raise CampaignError(
            f"--timeout must be a number of seconds >= 0 (0: none), got {req.timeout:g}"
        )
    if req.max_params is not None and req.max_params < 1:
        raise CampaignError(f"--max-params must be at least 1, got {req.max_params}")
    causal = causal_for(grammar, evaluator, space_path)
    seeds = []
    for path in req.seed_archs:
        from gatesearch.arch.space import load_known

        arch = load_known(path)
        try:
            replay(grammar, arch.derivation.choices, arch.derivation.causal)
        except DerivationError as exc:
            raise CampaignError(f"--seed-arch {path} does not fit {space_path}: {exc}") from None
        seeds.append({"file": str(path), "choices": arch.derivation.choices})
    name = req.name or default_run_name(preset.strategy, evaluator.spec.name)
    if not RUN_NAME.match(name):
        raise CampaignError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    timeout = req.timeout if req.timeout is not None else preset.trial.timeout
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
        max_params=req.max_params,
        proxy=dict(req.proxy),
    )
    return config, space_path, preset


# ----------------------------------------------------------------------------------- on Ray


def _run_trial(
    graph: nx.DiGraph, task: dict, budget: str, seed: int, threads: int, proxy: dict
) -> dict:
    """Body of the Ray task: one trial, nothing cached across trials."""
    from gatesearch.evaluate import evaluate

    evaluator = resolve_task(spec_of(task), proxy)
    if evaluator.needs_torch:
        import torch

        torch.set_num_threads(threads)
    cpu = time.process_time()
    metrics = evaluate(graph, evaluator, parse_budget(budget), seed)
    metrics["cpu_seconds"] = time.process_time() - cpu
    # Which machine ran it: on a cluster, what tells a slow or faulty node's trials apart
    # (trials.csv lists it as metric_host).
    metrics["host"] = socket.gethostname()
    return metrics


def _run_trial_streamed(*args: Any) -> Iterator[dict[str, Any]]:
    """The Ray task (the dispatcher's protocol): started when a worker begins it, then the
    trial's metrics.

    Why "started": the driver's --timeout must count from the start, not from dispatch. On a
    cluster short of free CPUs a dispatched trial may queue for minutes, and a timeout counted
    from dispatch would fail a trial that never ran.
    """
    yield {"started": True}
    yield {"result": _run_trial(*args)}


# ------------------------------------------------------------------------------ the driver


@dataclass
class _InFlight:
    slot: int
    seed: int
    trial_id: int
    number: int
    arch: Architecture


@dataclass
class Stats:
    target: int
    done: int = 0  # finished slots (complete + failed)
    failed: int = 0
    duplicates: int = 0
    rejected: int = 0  # proposals over --max-params (not counted in done)
    running: int = 0
    best: tuple[float, ...] | None = None
    best_number: int | None = None
    best_arch: str = ""
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        new = self.done - self.done_at_start
        if new <= 0:
            return None
        return (self.target - self.done) * self.elapsed / new


class Campaign:
    """Drives one open run to its target. Build with `start` or `resume`."""

    def __init__(self, store: RunStore, display: Any = None) -> None:
        self.store = store
        config = store.config
        self.config = config
        parts = load_parts(store)
        self.grammar = parts.grammar
        self.causal = config.causal
        self.strategy = parts.strategy
        self.task_spec = parts.task_spec
        self.proxy = parts.proxy
        self.evaluator = parts.evaluator
        self.max_params = config.max_params
        self.task = self.task_spec.to_dict()
        self.budget: Budget = config.budget
        self.objectives = list(config.objectives)
        self.sign = list(config.signs)
        self.cpus = int(config.trial.cpus)  # torch threads per trial
        self.display = display
        # Finished, non-duplicate results by hash: (number, values or None, metrics, reason).
        self.results: dict[str, tuple[int, tuple[float, ...] | None, dict, str | None]] = {}
        self.inflight: dict[int, _InFlight] = {}  # on Ray, by trial number
        self.dispatch: Dispatcher[int] | None = None  # from `run`
        self.waiting: dict[str, list[_InFlight]] = {}
        self.original: dict[str, _InFlight] = {}
        self.requeue: list[tuple[int, dict[str, Any]]] = []
        self.next_slot = 0
        self.seq = 0
        self.stats = Stats(target=store.target)
        self.rejected_untracked = self.rejected_saved = store.rejected_untracked
        self.stats.rejected = self.rejected_untracked
        self._rebuild(store.records())

    # ---- rebuilding from the store
    def _rebuild(self, records: list[TrialRecord]) -> None:
        # Finished slots and the proposals turned down over --max-params, in completion order.
        finished = [r for r in records if r.outcome.finished or r.outcome is TrialOutcome.REJECTED]
        finished.sort(key=lambda r: (r.seq if r.seq is not None else -1, r.number))
        done_slots = set()
        for r in finished:
            if r.outcome is TrialOutcome.REJECTED:
                self.strategy.tell(Observation(r.slot, r.choices, None))
                self.stats.rejected += 1
                continue
            done_slots.add(r.slot)
            values = r.values if r.outcome is TrialOutcome.COMPLETE else None
            if r.duplicate_of is None and r.arch_hash:
                self.results[r.arch_hash] = (r.number, values, r.metrics, r.fail_reason)
            self.strategy.tell(Observation(r.slot, r.choices, values))
            self._count(r.number, values, r.duplicate_of is not None, r.arch_hash)
        self.seq = max((r.seq for r in finished if r.seq is not None), default=-1) + 1
        self.next_slot = max((r.slot for r in records), default=-1) + 1
        pending: dict[int, dict[str, Any]] = {}
        for r in records:
            if r.outcome is TrialOutcome.RUNNING:
                # Left behind by a killed driver: fail it for the record, run its slot again.
                self.store.fail_trial(r.trial_id, interrupted_reason("driver stopped"), None)
            if r.slot not in done_slots and r.slot >= 0:
                pending[r.slot] = r.choices
        self.requeue = sorted(pending.items())
        self.stats.done_at_start = self.stats.done

    def _count(
        self,
        number: int,
        values: tuple[float, ...] | None,
        duplicate: bool,
        arch_hash: str,
        graph: nx.DiGraph | None = None,
    ) -> None:
        s = self.stats
        s.done += 1
        s.duplicates += duplicate
        if values is None:
            s.failed += 1
            return
        key = tuple(v * sg for v, sg in zip(values, self.sign))
        if s.best is None or key < tuple(v * sg for v, sg in zip(s.best, self.sign)):
            s.best, s.best_number = values, number
            s.best_arch = self._describe(arch_hash, graph)

    def _describe(self, arch_hash: str, graph: nx.DiGraph | None = None) -> str:
        try:
            return describe(
                graph if graph is not None else read_graph(self.store.graph_path(arch_hash))
            )
        except Exception:  # a missing artifact only costs the summary line
            return arch_hash

    # ---- the loop
    def run(self) -> Stats:
        workers = self.config.workers
        self.dispatch = Dispatcher(self.config.trial, workers, self.config.address)
        with _DeferredInterrupt() as ctrl_c:
            try:
                while True:
                    while self._can_launch(workers) and not ctrl_c.pending:
                        self._launch()
                    if ctrl_c.pending:
                        raise KeyboardInterrupt
                    if not self.inflight and not self.waiting:
                        if not self._more():
                            break
                        continue
                    self._collect()
            except KeyboardInterrupt:
                self._abandon(interrupted_reason("Ctrl-C"))
                raise
        return self.stats

    def _more(self) -> bool:
        return bool(self.requeue) or self.next_slot < self.stats.target

    def _can_launch(self, workers: int) -> bool:
        outstanding = len(self.inflight) + sum(len(w) for w in self.waiting.values())
        return self._more() and len(self.inflight) < workers and outstanding < 2 * workers

    def _launch(self) -> None:
        if self.requeue:
            slot, choices = self.requeue.pop(0)
            fixed: dict[str, Any] | None = choices
        else:
            slot = self.next_slot
            self.next_slot += 1
            seeds = self.config.seed_archs
            fixed = seeds[slot]["choices"] if slot < len(seeds) else None
        seed = trial_seed(self.config.seed, slot)
        study = self.store.study
        for attempt in range(MAX_REJECTS + 1):
            if fixed is not None:
                proposal = self.strategy.ask_fixed(slot, seed, study, fixed)
            else:
                proposal = self.strategy.ask(slot, seed, study)
            arch = Architecture.from_derivation(proposal.derivation)
            # Requeued and seeded trials run as given: the limit applies to proposals.
            over = None if fixed is not None else self._over_limit(arch)
            if over is None:
                break
            self._reject(arch, proposal, seed, over)
            seed = trial_seed(self.config.seed, slot, _REJECT_STREAM + attempt)
        else:
            self._abandon(interrupted_reason("no proposal fits --max-params"))
            raise CampaignError(
                f"{MAX_REJECTS} proposals in a row are over --max-params {self.max_params:,}: "
                "raise the limit or narrow the space"
            )
        choices = dict(proposal.derivation.choices)
        self._save_rejected()
        trial_id, number = self.store.start_trial(slot, seed, arch.hash, choices, proposal.trial)
        item = _InFlight(slot, seed, trial_id, number, arch)
        if arch.hash in self.results:
            self._finish_duplicate(item)
        elif arch.hash in self.original:
            self.waiting.setdefault(arch.hash, []).append(item)
        else:
            self.store.save_graph(arch.hash, arch.graph)
            assert self.dispatch is not None  # launched from `run`
            self.dispatch.submit(
                number,
                _run_trial_streamed,
                arch.graph,
                self.task,
                str(self.budget),
                trial_seed(self.config.seed, slot, 1),
                self.cpus,
                self.proxy,
            )
            self.inflight[number] = item
            self.original[arch.hash] = item
        self._show()

    def _over_limit(self, arch: Architecture) -> int | None:
        """The model's parameter count when it exceeds --max-params, else None."""
        if self.max_params is None or arch.hash in self.results:
            return None
        n = self.evaluator.count_params(arch.graph)
        return n if n > self.max_params else None

    def _reject(self, arch: Architecture, proposal: Any, seed: int, params: int) -> None:
        """Turn down a proposal over the limit: untrained, outside every slot; the strategy
        learns of it. A campaign may turn down several proposals per trial (tens of thousands
        in a long one), so it keeps only a count of them, not a trial each: every trial lives
        in the driver's memory (Optuna's study) and in the journal. A proposal an Optuna
        sampler made is already a trial of the study; that one is failed, with the reason,
        but without its choices (nothing replays a turned-down proposal)."""
        if proposal.trial is not None:
            trial_id, _ = self.store.start_trial(
                REJECTED_SLOT, seed, arch.hash, None, proposal.trial
            )
            assert self.max_params is not None  # only a limit turns a proposal down
            reason = rejected_reason(params, self.max_params)
            self.store.fail_trial(trial_id, reason, self.seq, None)
            self.seq += 1
        else:
            self.rejected_untracked += 1
        choices = dict(proposal.derivation.choices)
        self.strategy.tell(Observation(REJECTED_SLOT, choices, None, arch.derivation))
        self.stats.rejected += 1

    def _save_rejected(self) -> None:
        """Store the count of turned-down proposals, when it changed: once per trial launched,
        not once per proposal (a driver killed in a run of turn-downs loses that run's count,
        which is all it says)."""
        if self.rejected_untracked != self.rejected_saved:
            self.store.set_rejected_untracked(self.rejected_untracked)
            self.rejected_saved = self.rejected_untracked

    def _collect(self) -> None:
        assert self.dispatch is not None  # collected from `run`
        for event in self.dispatch.poll(timeout=1.0):
            if not event.kind.done:  # started (the dispatcher times it) or progress
                continue
            item = self.inflight.pop(event.key)
            if event.kind is EventKind.RESULT:
                values, reason = self._values(event.value)
                self._finish(item, values, event.value, reason)
            else:  # failed or timed out: the value is the reason
                self._finish(item, None, {}, event.value)
        self._show()

    def _values(self, metrics: dict[str, Any]) -> tuple[tuple[float, ...] | None, str | None]:
        found = {o: objective_value(metrics, o) for o in self.objectives}
        missing = [o for o, v in found.items() if v is None]
        if missing:
            return None, f"task {self.task_spec.name} reports no {', '.join(missing)}"
        values = tuple(float(v) for v in found.values())  # type: ignore[arg-type]
        if not all(math.isfinite(v) for v in values):
            return None, f"non-finite objective {values}"
        return values, None

    def _finish(
        self,
        item: _InFlight,
        values: tuple[float, ...] | None,
        metrics: dict[str, Any],
        reason: str | None,
    ) -> None:
        h = item.arch.hash
        self.original.pop(h, None)
        # Only the compact metrics stay in the driver: its memory must not grow with trajectories.
        self.results[h] = (item.number, values, compact_metrics(metrics), reason)
        self._record(item, values, metrics, reason, None)
        for dup in self.waiting.pop(h, []):
            self._record(dup, values, metrics, reason, item.number)

    def _finish_duplicate(self, item: _InFlight) -> None:
        number, values, metrics, reason = self.results[item.arch.hash]
        self._record(item, values, metrics, reason, number)

    def _record(
        self,
        item: _InFlight,
        values: tuple[float, ...] | None,
        metrics: dict[str, Any],
        reason: str | None,
        duplicate_of: int | None,
    ) -> None:
        seq = self.seq
        self.seq += 1
        if duplicate_of is None:
            # The whole result (hyperparameters, trajectory) as JSON beside the study.
            self.store.save_trial_metrics(
                item.number,
                {
                    "number": item.number,
                    "slot": item.slot,
                    "seed": item.seed,
                    "arch_hash": item.arch.hash,
                    "task": self.task,
                    "budget": str(self.budget),
                    "values": dict(zip(self.objectives, values)) if values else None,
                    "fail_reason": reason if values is None else None,
                    "metrics": metrics,
                },
            )
        compact = compact_metrics(metrics)
        if values is None:
            self.store.fail_trial(item.trial_id, reason or "failed", seq, duplicate_of)
        else:
            self.store.complete_trial(item.trial_id, list(values), compact, seq, duplicate_of)
        choices = item.arch.derivation.choices
        self.strategy.tell(Observation(item.slot, choices, values, item.arch.derivation))
        self._count(item.number, values, duplicate_of is not None, item.arch.hash, item.arch.graph)

    def _abandon(self, reason: str) -> None:
        self._save_rejected()
        for number in self.dispatch.cancel() if self.dispatch is not None else []:
            self.store.fail_trial(self.inflight[number].trial_id, reason, None)
        for items in self.waiting.values():
            for item in items:
                self.store.fail_trial(item.trial_id, reason, None)
        self.inflight.clear()
        self.waiting.clear()
        # Anything else still RUNNING was started by this driver (it holds the run's lock) and
        # never dispatched, e.g. a trial the sampler opened before a second Ctrl-C landed.
        for r in self.store.records():
            if r.outcome is TrialOutcome.RUNNING:
                self.store.fail_trial(r.trial_id, reason, None)

    def _show(self) -> None:
        self.stats.running = len(self.inflight) + sum(len(w) for w in self.waiting.values())
        if self.display is not None:
            self.display.update(self.stats)


class _DeferredInterrupt:
    """Turns the first Ctrl-C into a flag the campaign loop reads between steps.

    Why: a KeyboardInterrupt raised at an arbitrary bytecode can land between the store
    opening a trial and the loop recording it as in flight, leaving a RUNNING trial nobody
    fails. The loop polls at least once a second (its Ray wait timeout), so the delay is short.
    A second Ctrl-C interrupts at once. Only the main thread can own signal handlers; elsewhere
    this does nothing (and Python delivers no KeyboardInterrupt there anyway).
    """

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            # An ignored SIGINT (a job started with `&`) stays ignored.
            if previous is not signal.SIG_IGN and previous is not None:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ------------------------------------------------------------------------------- summaries


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `points` (n, d) that no other row dominates (minimising).

    Rows are visited in lexicographic order; a row can only be dominated by one visited before
    it, and if it is, also by one already on the front (domination is transitive), so each row
    is compared with the front so far: O(n * front) rather than O(n²).
    """
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort(points.T[::-1])
    front = np.empty((0, points.shape[1]))
    for i in order:
        p = points[i]
        dominated = np.any(np.all(front <= p, axis=1) & np.any(front < p, axis=1))
        if not dominated:
            mask[i] = True
            front = np.vstack([front, p])
    return mask


def rank_records(
    records: list[TrialRecord], directions: Sequence[str], need: int | None = None
) -> list[tuple[int, TrialRecord]]:
    """(Pareto level, record) of completed, non-duplicate trials, best first.

    One objective: by its value in its direction. Several: Pareto levels are peeled (level 1
    is the front) until `need` trials are placed (all when None), the rest share the next level;
    within a level, by the objectives in order, then the trial number.
    """
    rows = [
        r
        for r in records
        if r.outcome is TrialOutcome.COMPLETE and r.duplicate_of is None and r.values is not None
    ]
    if not rows:
        return []
    signs = np.array([Direction(d).sign for d in directions])
    points = np.array([r.values for r in rows], dtype=float) * signs  # (n, d), all minimised
    levels = np.ones(len(rows), dtype=int)
    if points.shape[1] > 1:
        left = np.arange(len(rows))
        level, placed = 1, 0
        while len(left) and (need is None or placed < need):
            on_front = pareto_mask(points[left])
            levels[left[on_front]] = level
            placed += int(on_front.sum())
            left = left[~on_front]
            level += 1
        levels[left] = level
    keys = [(int(levels[i]), *points[i], rows[i].number) for i in range(len(rows))]
    order = sorted(range(len(rows)), key=keys.__getitem__)
    return [(int(levels[i]), rows[i]) for i in order]


def ranked(store: RunStore) -> list[TrialRecord]:
    """Completed, non-duplicate trials, best first (see `rank_records`)."""
    return [r for _, r in rank_records(store.records(), store.config.directions)]


def leaderboard(store: RunStore, top: int = 5) -> list[dict[str, Any]]:
    """The best completed, non-duplicate trials by the first objective (then the others)."""
    out = []
    for rank, r in enumerate(ranked(store)[:top], start=1):
        path = store.graph_path(r.arch_hash)
        try:
            arch = describe(read_graph(path))
        except GraphError:
            arch = "(graph file unreadable)" if path.exists() else "(graph file missing)"
        out.append(
            {
                "rank": rank,
                "number": r.number,
                "slot": r.slot,
                "values": dict(zip(store.config.objectives, r.values or ())),
                "metric": r.metrics.get("metric"),
                "loss": r.metrics.get("loss"),
                "params": r.metrics.get("params"),
                "arch_hash": r.arch_hash,
                "arch": arch,
            }
        )
    return out


def count_finished(records: list[TrialRecord]) -> int:
    """How many of the campaign's slots are done: completed or failed for good (not
    interrupted, which runs again, nor turned down over --max-params, which takes no slot)."""
    return len({r.slot for r in records if r.outcome.finished})


def summary(store: RunStore) -> dict[str, Any]:
    """Counts by state, best trial, failure reasons: what `status` shows."""
    records = store.records()
    outcomes = Counter(r.outcome for r in records)
    failures = Counter(r.fail_reason for r in records if r.outcome is TrialOutcome.FAILED)
    board = leaderboard(store, top=5)
    config = store.config
    spec = config.task
    finished = count_finished(records)
    driver = campaign_state(store.root, finished, store.target)
    metric_name = config.metric_name
    return {
        "name": config.name,
        "path": str(store.root),
        "strategy": config.strategy,
        "task": spec.name,
        "task_spec": spec.to_dict(),
        "metric_name": metric_name,
        "higher_is_better": config.higher_is_better,
        "budget": str(config.budget),
        "objectives": list(config.objectives),
        "directions": [str(d) for d in config.directions],
        "labels": [objective_label(o, metric_name) for o in config.objectives],
        "target": store.target,
        "finished": finished,
        "state": str(driver),
        "driver_alive": driver.state is RunState.RUNNING,
        "complete": outcomes[TrialOutcome.COMPLETE],
        "failed": outcomes[TrialOutcome.FAILED],
        "interrupted": outcomes[TrialOutcome.INTERRUPTED],
        # Optuna samplers' proposals over the limit are stored as trials; the others counted.
        "rejected": store.rejected_untracked + outcomes[TrialOutcome.REJECTED],
        "max_params": config.max_params,
        "running": outcomes[TrialOutcome.RUNNING],
        "duplicates": sum(1 for r in records if r.duplicate_of is not None),
        "failure_reasons": dict(failures.most_common()),
        "best": board[0] if board else None,
        "leaderboard": board,
    }


@dataclass(frozen=True)
class RunParts:
    """What a campaign loads from its run folder besides the study: each can fail (a damaged
    copy of the space or preset, a moved data file, a missing task module)."""

    grammar: Grammar
    strategy: Strategy
    task_spec: TaskSpec
    proxy: dict[str, Any]
    evaluator: Evaluator


def load_parts(store: RunStore) -> RunParts:
    config = store.config
    grammar = load_space(store.root / SPACE_COPY)
    preset = parse_preset((store.root / PRESET_COPY).read_text(), str(store.root / PRESET_COPY))
    strategy = make_strategy(preset, grammar, config.causal, list(config.directions))
    spec = config.task
    # Built once here so a task that no longer resolves (a moved data file, a missing module)
    # stops the campaign with its reason instead of failing every trial.
    proxy: dict[str, Any] = dict(config.proxy)
    return RunParts(grammar, strategy, spec, proxy, resolve_task(spec, proxy))


def open_for_resume(root: Path, trials: int | None, address: str | None) -> RunStore:
    """The run's store, opened to write, with its trial target raised by `trials` — only after
    everything the campaign loads has loaded: a resume that fails changes nothing."""
    if trials is not None and trials < 1:
        raise CampaignError("--trials must be at least 1")
    store = RunStore.open(root, writer=True)
    try:
        if address is not None:
            store.config = replace(store.config, address=address)
        if trials is not None:
            load_parts(store)
            store.set_target(max(store.target, count_finished(store.records()) + trials))
    except Exception:
        store.close()
        raise
    return store


__all__ = [
    "Campaign",
    "CampaignError",
    "RunRequest",
    "StoreError",
    "count_finished",
    "leaderboard",
    "open_for_resume",
    "package_versions",
    "prepare_run",
    "ranked",
    "summary",
    "trial_seed",
]
