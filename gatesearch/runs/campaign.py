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
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import read_graph
from gatesearch.arch.space import Architecture, load_space
from gatesearch.budget import Budget, BudgetUnit, parse_budget
from gatesearch.evaluate import (
    Evaluator,
    objective_value,
    resolve_task,
    spec_of,
)
from gatesearch.grammar import Grammar, replay
from gatesearch.proxy.stint import Stint
from gatesearch.runs.dispatch import Dispatcher, EventKind
from gatesearch.runs.outcomes import (
    TrialOutcome,
    interrupted_reason,
    rejected_reason,
    repeated_reason,
)
from gatesearch.runs.promotion import Promotion, Rungs
from gatesearch.runs.ranking import count_finished
from gatesearch.runs.request import CampaignError, trial_seed
from gatesearch.runs.store import (
    PRESET_COPY,
    SPACE_COPY,
    RunStore,
    TrialRecord,
    compact_metrics,
)
from gatesearch.strategies import Observation, Strategy
from gatesearch.strategies.presets import make_strategy, parse_preset
from gatesearch.tasks import TaskSpec

# A proposal over --max-params is stored as a failed trial outside every slot (it is no trial
# of the --trials count) and the strategy is asked again, with a fresh seed, up to this many
# times in a row before the campaign gives up on the limit.
MAX_REJECTS = 2000
REJECTED_SLOT = -1
# A proposal of an architecture already evaluated is set aside and the strategy asked again,
# up to this many times for one slot; then the repeat is taken as a duplicate trial (a space,
# or a parameter limit, with few architectures left).
MAX_REPEATS = 20
REPEATED_SLOT = -2
_REJECT_STREAM = 1000  # seed stream of the re-asks (0: the proposal, 1: the training)


def _curve_step(stop: Budget) -> int:
    """A rung's step on the trial's learning curve: its budget in its unit (milliseconds for
    seconds), so the steps of one trial's rungs are distinct and increasing."""
    return round(stop.amount * 1000) if stop.unit is BudgetUnit.SECONDS else int(stop.amount)


def learning_curve(metrics: dict[str, Any], objectives: list[str]) -> list[tuple[int, float]]:
    """(weight step, value) of a trial's only objective over its validation points (the
    proxy's `eval_points`), ending at its final score; empty for several objectives (Optuna
    keeps one curve per trial) or one with no curve (parameters, FLOPs, latency)."""
    if len(objectives) != 1 or objectives[0] not in ("metric", "loss"):
        return []
    key = {"metric": "valid_metric", "loss": "valid_loss"}[objectives[0]]
    points = [
        (int(p["step"]), float(p[key]))
        for p in metrics.get("curve") or []
        if isinstance(p, dict) and math.isfinite(float(p.get(key, math.nan)))
    ]
    final = objective_value(metrics, objectives[0])
    steps = metrics.get("steps")
    if final is not None and isinstance(steps, int | float) and math.isfinite(final):
        if not points or points[-1][0] != int(steps):
            points.append((int(steps), float(final)))
    return points


# ----------------------------------------------------------------------------------- on Ray


def _run_trial(
    graph: nx.DiGraph,
    task: dict,
    budget: str,
    seed: int,
    threads: int,
    proxy: dict,
    stint: Stint | None = None,
) -> dict:
    """Body of the Ray task: one trial (or one stint of it), nothing cached across trials."""
    from gatesearch.evaluate import evaluate

    evaluator = resolve_task(spec_of(task), proxy)
    if evaluator.needs_torch:
        import torch

        torch.set_num_threads(threads)
    cpu = time.process_time()
    metrics = evaluate(graph, evaluator, parse_budget(budget), seed, stint)
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
    bracket: int = 0
    rung: int | None = None  # the rung it trains to; None without a schedule
    rung_values: list[list[float]] = field(default_factory=list)  # scored so far, by rung
    cpu_seconds: float = 0.0  # of its stints so far (multi-fidelity)


@dataclass
class Stats:
    target: int
    done: int = 0  # finished slots (complete + failed)
    failed: int = 0
    duplicates: int = 0
    rejected: int = 0  # proposals over --max-params (not counted in done)
    repeated: int = 0  # proposals of an evaluated architecture, asked again (not in done)
    promoted: int = 0  # promotions to a higher rung started (multi-fidelity)
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
        # Multi-fidelity: the rungs, trials waiting at one (by number) and promotions a
        # stopped driver left unfinished, to run first.
        self.rungs = Rungs(config.schedule, self.budget, self.sign) if self.staged else None
        self.paused: dict[int, _InFlight] = {}
        self.repromote: list[Promotion] = []
        self.best_rung = -1
        self.states_peak = store.states_peak if self.staged else 0
        self.rejected_untracked = self.rejected_saved = store.rejected_untracked
        self.stats.rejected = self.rejected_untracked
        self.repeated_untracked = self.repeated_saved = store.repeated_untracked
        self.stats.repeated = self.repeated_untracked
        self._rebuild(store.records())

    @property
    def staged(self) -> bool:
        return self.config.schedule.staged

    # ---- rebuilding from the store
    def _rebuild(self, records: list[TrialRecord]) -> None:
        # Finished slots and the proposals turned down over --max-params, in completion order.
        untrained = (TrialOutcome.REJECTED, TrialOutcome.REPEATED)
        finished = [r for r in records if r.outcome.finished or r.outcome in untrained]
        # In the order slots finished: a staged trial's first rung, as its strategy saw it.
        finished.sort(key=_finish_order)
        done_slots = set()
        for r in finished:
            if r.outcome is TrialOutcome.REJECTED:
                self.strategy.tell(Observation(r.slot, r.choices, None))
                self.stats.rejected += 1
                continue
            if r.outcome is TrialOutcome.REPEATED:
                self.stats.repeated += 1
                continue
            done_slots.add(r.slot)
            values = r.scored if r.outcome is not TrialOutcome.FAILED else None
            if r.duplicate_of is None and r.arch_hash:
                self.results[r.arch_hash] = (r.number, values, r.metrics, r.fail_reason)
            self.strategy.tell(Observation(r.slot, r.choices, values, rung=r.rung or 0))
            self._count(r.number, values, r.duplicate_of is not None, r.arch_hash, r.rung)
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
        if self.rungs is not None:
            self._rebuild_rungs(records)

    def _rebuild_rungs(self, records: list[TrialRecord]) -> None:
        """The ladders, the waiting trials and the promotions to redo; states of trials that
        no longer wait (a killed driver's leftovers) deleted."""
        assert self.rungs is not None
        brackets = {r.slot: self.rungs.bracket_for(r.slot) for r in records if r.slot >= 0}
        self.rungs.rebuild(records, brackets)
        for r in records:
            if r.outcome not in (TrialOutcome.PAUSED, TrialOutcome.CONTINUING):
                continue
            b, rung = brackets[r.slot], len(r.rung_values) - 1  # the rung in its bracket
            arch = Architecture.from_derivation(replay(self.grammar, r.choices, self.causal))
            item = _InFlight(r.slot, r.seed, r.trial_id, r.number, arch, b, rung)
            item.rung_values = [list(v) for v in r.rung_values]
            item.cpu_seconds = float(r.metrics.get("cpu_seconds_total") or 0.0)
            self.paused[r.number] = item
            if r.outcome is TrialOutcome.CONTINUING:  # its state is the rung's it left from
                self.repromote.append(Promotion(r.number, b, rung + 1))
        for folder in self.store.state_folders():
            if not folder.name.isdigit() or int(folder.name) not in self.paused:
                shutil.rmtree(folder, ignore_errors=True)

    def _count(
        self,
        number: int,
        values: tuple[float, ...] | None,
        duplicate: bool,
        arch_hash: str,
        rung: int | None = None,
        graph: nx.DiGraph | None = None,
        slot_done: bool = True,
    ) -> None:
        s = self.stats
        if slot_done:
            s.done += 1
            s.duplicates += duplicate
            s.failed += values is None
        if values is None:
            return
        # The best at the highest fidelity reached: a higher rung first, then the values.
        key = (-(rung or 0), *(v * sg for v, sg in zip(values, self.sign)))
        best = None
        if s.best is not None:
            best = (-self.best_rung, *(v * sg for v, sg in zip(s.best, self.sign)))
        if best is None or key < best:
            s.best, s.best_number, self.best_rung = values, number, rung or 0
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
        self._close_rungs()
        return self.stats

    def _more(self) -> bool:
        return (
            bool(self.requeue)
            or self.next_slot < self.stats.target
            or self._promotion(peek=True) is not None
        )

    def _promotion(self, peek: bool = False) -> Promotion | None:
        """The promotion a free worker runs (a stopped driver's first), or None."""
        if self.rungs is None:
            return None
        if self.repromote:
            return self.repromote[0] if peek else self.repromote.pop(0)
        return self.rungs.next_promotion()

    def _can_launch(self, workers: int) -> bool:
        outstanding = len(self.inflight) + sum(len(w) for w in self.waiting.values())
        return self._more() and len(self.inflight) < workers and outstanding < 2 * workers

    def _launch(self) -> None:
        promotion = self._promotion()
        if promotion is not None:
            self._promote(promotion)
            return
        if self.requeue:
            slot, choices = self.requeue.pop(0)
            fixed: dict[str, Any] | None = choices
        else:
            slot = self.next_slot
            self.next_slot += 1
            seeds = self.config.seed_archs
            fixed = seeds[slot]["choices"] if slot < len(seeds) else None
        proposal, arch, seed = self._propose(slot, fixed)
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
            if self.rungs is not None:
                item.bracket, item.rung = self.rungs.bracket_for(slot), 0
            self._submit(item)
            self.original[arch.hash] = item
        self._show()

    def _submit(self, item: _InFlight) -> None:
        """Put the trial (a stint of it, under a schedule) on Ray."""
        stint = None
        if self.rungs is not None and item.rung is not None:
            b, rung = item.bracket, item.rung
            state = self.store.state_path(item.number)
            stint = Stint(
                stop=self.rungs.budget(b, rung),
                resume=state if rung > 0 else None,
                save=None if self.rungs.is_top(b, rung) else state,
            )
        assert self.dispatch is not None  # launched from `run`
        self.dispatch.submit(
            item.number,
            _run_trial_streamed,
            item.arch.graph,
            self.task,
            str(self.budget),
            trial_seed(self.config.seed, item.slot, 1),
            self.cpus,
            self.proxy,
            stint,
        )
        self.inflight[item.number] = item

    def _promote(self, p: Promotion) -> None:
        """Continue a waiting trial's training to the next rung, from its saved state."""
        assert self.rungs is not None
        item = self.paused.pop(p.number)
        item.rung = p.rung
        self.rungs.start_promotion(p)
        self.store.continue_trial(item.trial_id)
        self.stats.promoted += 1
        self._submit(item)
        self._show()

    def _propose(self, slot: int, fixed: dict[str, Any] | None) -> tuple[Any, Architecture, int]:
        """The slot's proposal, its architecture and seed. A proposal over --max-params is
        turned down, and one whose architecture was already evaluated (or is in flight) is
        set aside as a repeat, up to MAX_REPEATS times a slot: the strategy is asked again
        with a fresh seed, so a repeat takes no trial of the --trials count."""
        seed = trial_seed(self.config.seed, slot)
        study = self.store.study
        repeats = 0
        for attempt in range(MAX_REJECTS + 1):
            if fixed is not None:
                proposal = self.strategy.ask_fixed(slot, seed, study, fixed)
            else:
                proposal = self.strategy.ask(slot, seed, study)
            arch = Architecture.from_derivation(proposal.derivation)
            # Requeued and seeded trials run as given: the limit applies to proposals.
            over = None if fixed is not None else self._over_limit(arch)
            if over is not None:
                self._reject(arch, proposal, seed, over)
            elif fixed is None and repeats < MAX_REPEATS and self._evaluated(arch.hash):
                repeats += 1
                self._repeat(arch, proposal, seed)
            else:
                return proposal, arch, seed
            seed = trial_seed(self.config.seed, slot, _REJECT_STREAM + attempt)
        self._abandon(interrupted_reason("no proposal fits --max-params"))
        raise CampaignError(
            f"{MAX_REJECTS} proposals in a row are over --max-params {self.max_params:,}: "
            "raise the limit or narrow the space"
        )

    def _evaluated(self, arch_hash: str) -> bool:
        return arch_hash in self.results or arch_hash in self.original

    def _repeat(self, arch: Architecture, proposal: Any, seed: int) -> None:
        """Set aside a proposal of an architecture already evaluated: counted, not a trial.
        An Optuna sampler's proposal is already a trial of its study: it is failed as a
        repeat (outside every slot, without its choices), as a turned-down one is."""
        if proposal.trial is not None:
            trial_id, _ = self.store.start_trial(
                REPEATED_SLOT, seed, arch.hash, None, proposal.trial
            )
            number = self.results[arch.hash][0] if arch.hash in self.results else None
            self.store.fail_trial(trial_id, repeated_reason(number), self.seq, None)
            self.seq += 1
        else:
            self.repeated_untracked += 1
        self.stats.repeated += 1

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
        if self.repeated_untracked != self.repeated_saved:
            self.store.set_repeated_untracked(self.repeated_untracked)
            self.repeated_saved = self.repeated_untracked

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
        if item.rung:  # a promotion's result: no slot, no duplicates waiting on it
            self._finish_rung(item, values, metrics, reason)
            return
        h = item.arch.hash
        self.original.pop(h, None)
        # Only the compact metrics stay in the driver: its memory must not grow with trajectories.
        self.results[h] = (item.number, values, compact_metrics(metrics), reason)
        if item.rung is None:
            self._record(item, values, metrics, reason, None)
        else:
            self._finish_rung(item, values, metrics, reason)
        for dup in self.waiting.pop(h, []):
            self._record(dup, values, metrics, reason, item.number)

    def _finish_rung(
        self,
        item: _InFlight,
        values: tuple[float, ...] | None,
        metrics: dict[str, Any],
        reason: str | None,
    ) -> None:
        """A stint's result: the trial waits at its rung, completes at the top, or failed."""
        assert self.rungs is not None and item.rung is not None
        top = self.rungs.is_top(item.bracket, item.rung)
        # What the trial cost over all its stints, for `status` and benchmarks.
        item.cpu_seconds += float(metrics.get("cpu_seconds") or 0.0)
        if metrics:
            metrics = {**metrics, "cpu_seconds_total": item.cpu_seconds}
        if values is not None:
            self.rungs.report(item.number, item.bracket, item.rung, values)
        if values is None or top:
            self.rungs.close(item.number)
            self.store.remove_state(item.number)
        else:
            self.paused[item.number] = item
            self._measure_states()
        self._record(item, values, metrics, reason, None)
        self._prune_hopeless()

    def _measure_states(self) -> None:
        """Keep the peak of the saved states' size (what the disk must hold), stored when it
        grows: a new state is the only thing that grows it."""
        size = self.store.states_bytes()
        if size > self.states_peak:
            self.states_peak = size
            self.store.set_states_peak(size)

    def _prune_hopeless(self) -> None:
        """Waiting trials that can never be promoted now end, PRUNED; their states go."""
        assert self.rungs is not None
        again = {p.number for p in self.repromote}
        waiting = [(n, it.rung or 0) for n, it in self.paused.items() if n not in again]
        for number in self.rungs.hopeless(waiting, self.stats.target):
            self._prune(number)

    def _prune(self, number: int) -> None:
        assert self.rungs is not None
        item = self.paused.pop(number)
        self.store.prune_trial(item.trial_id)
        self.store.remove_state(number)
        self.rungs.close(number)

    def _close_rungs(self) -> None:
        """The campaign is over: what still waits for a promotion will not get one. Any state
        left (a task of a killed driver that finished after it) goes too."""
        for number in list(self.paused):
            self._prune(number)
        for folder in self.store.state_folders():
            shutil.rmtree(folder, ignore_errors=True)

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
                    **self._stint_doc(item),
                    "values": dict(zip(self.objectives, values)) if values else None,
                    "fail_reason": reason if values is None else None,
                    "metrics": metrics,
                },
            )
        if values is None:
            self.store.fail_trial(item.trial_id, reason or "failed", seq, duplicate_of)
        elif self.rungs is not None:
            self._store_rung(item, values, metrics, seq, duplicate_of)
        else:
            if duplicate_of is None:
                self.store.report_curve(item.trial_id, learning_curve(metrics, self.objectives))
            compact = compact_metrics(metrics)
            self.store.complete_trial(item.trial_id, list(values), compact, seq, duplicate_of)
        choices = item.arch.derivation.choices
        # The schedule's rung (Hyperband's brackets start higher), as stored and rebuilt.
        rung = 0 if self.rungs is None else self.rungs.overall(item.bracket, item.rung or 0)
        self.strategy.tell(Observation(item.slot, choices, values, item.arch.derivation, rung))
        self._count(
            item.number,
            values,
            duplicate_of is not None,
            item.arch.hash,
            rung,
            item.arch.graph,
            slot_done=not item.rung,  # a promotion's result finishes no slot
        )

    def _stint_doc(self, item: _InFlight) -> dict[str, Any]:
        if self.rungs is None or item.rung is None:
            return {}
        return {"rung": item.rung, "stop": str(self.rungs.budget(item.bracket, item.rung))}

    def _store_rung(
        self,
        item: _InFlight,
        values: tuple[float, ...],
        metrics: dict[str, Any],
        seq: int,
        duplicate_of: int | None,
    ) -> None:
        """A staged trial's score at its rung: an intermediate value (one objective), then
        waiting (paused), complete at the top rung, or — a duplicate of a trial still on the
        ladder — pruned at the copied rung."""
        assert self.rungs is not None
        rung = item.rung or 0
        item.rung_values.append(list(values))
        compact = compact_metrics(metrics)
        if duplicate_of is None and len(values) == 1:
            stop = self.rungs.budget(item.bracket, rung)
            self.store.report_curve(item.trial_id, [(_curve_step(stop), values[0])])
        overall = self.rungs.overall(item.bracket, rung)
        self.store.pause_trial(item.trial_id, overall, item.rung_values, compact, seq)
        if duplicate_of is None and self.rungs.is_top(item.bracket, rung):
            self.store.complete_trial(item.trial_id, list(values), compact, seq)
            return
        if duplicate_of is not None:
            self.store.mark_duplicate(item.trial_id, duplicate_of)
            self.store.prune_trial(item.trial_id)

    def _abandon(self, reason: str) -> None:
        self._save_rejected()
        for number in self.dispatch.cancel() if self.dispatch is not None else []:
            item = self.inflight[number]
            if item.rung:  # a promotion: back to waiting at its rung, its state kept
                self.store.hold_trial(item.trial_id)
                continue
            self.store.fail_trial(item.trial_id, reason, None)
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


def _finish_order(r: TrialRecord) -> tuple[int, int]:
    seq = r.seq0 if r.seq0 is not None else r.seq
    return (seq if seq is not None else -1, r.number)


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
