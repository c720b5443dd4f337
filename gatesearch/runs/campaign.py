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
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import read_graph
from gatesearch.arch.space import load_space
from gatesearch.budget import Budget, parse_budget
from gatesearch.evaluate import (
    Evaluator,
    objective_value,
    resolve_task,
    spec_of,
)
from gatesearch.grammar import Grammar
from gatesearch.proxy.stint import Stint
from gatesearch.runs.dispatch import Dispatcher, EventKind
from gatesearch.runs.inflight import InFlight, Phase, Stats
from gatesearch.runs.outcomes import (
    TrialOutcome,
    interrupted_reason,
)
from gatesearch.runs.promotion import Promotion, Staged
from gatesearch.runs.proposals import Proposer
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
from gatesearch.strategies.optuna_samplers import optuna_params
from gatesearch.strategies.presets import make_strategy, parse_preset
from gatesearch.tasks import TaskSpec


def objective_values(
    metrics: dict[str, Any], objectives: list[str], task: str
) -> tuple[tuple[float, ...] | None, str | None]:
    """A trial's objective values from its metrics, or None and why not."""
    found = {o: objective_value(metrics, o) for o in objectives}
    missing = [o for o, v in found.items() if v is None]
    if missing:
        return None, f"task {task} reports no {', '.join(missing)}"
    values = tuple(float(v) for v in found.values())  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in values):
        return None, f"non-finite objective {values}"
    return values, None


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
        self.task = self.task_spec.to_dict()
        self.budget: Budget = config.budget
        self.objectives = list(config.objectives)
        self.sign = list(config.signs)
        self.cpus = int(config.trial.cpus)  # torch threads per trial
        self.display = display
        # Finished, non-duplicate results by hash: (number, values or None, metrics, reason).
        self.results: dict[str, tuple[int, tuple[float, ...] | None, dict, str | None]] = {}
        self.inflight: dict[int, InFlight] = {}  # on Ray, by trial number
        self.dispatch: Dispatcher[int] | None = None  # from `run`
        self.waiting: dict[str, list[InFlight]] = {}
        self.original: dict[str, InFlight] = {}
        self.requeue: list[tuple[int, dict[str, Any]]] = []
        self.next_slot = 0
        self.seq = 0
        self.stats = Stats(target=store.target, workers=config.workers)
        # Multi-fidelity: the rungs and the trials waiting at one (None without a schedule).
        self.staged = Staged(store, self.sign) if config.schedule.staged else None
        self.proposer = Proposer(
            store, self.strategy, self.evaluator, self.stats, self._evaluated, self._next_seq
        )
        self.stats.rejected = store.rejected_untracked
        self.stats.repeated = store.repeated_untracked
        self._rebuild(store.records())

    def _evaluated(self, arch_hash: str) -> tuple[bool, int | None]:
        """Whether the architecture has a result or is in flight; the trial with the result."""
        if arch_hash in self.results:
            return True, self.results[arch_hash][0]
        return arch_hash in self.original, None

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

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
        if self.staged is not None:
            self.staged.rebuild(records, self.grammar, self.causal)

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
        def arch() -> str:  # described only when it is the new best
            try:
                g = graph if graph is not None else read_graph(self.store.graph_path(arch_hash))
                return describe(g)
            except Exception:  # a missing artifact only costs the summary line
                return arch_hash

        self.stats.count(number, values, duplicate, rung or 0, self.sign, arch, slot_done)

    # ---- the loop
    def run(self) -> Stats:
        workers = self.config.workers
        self.dispatch = Dispatcher(
            self.config.trial,
            workers,
            self.config.address,
            on_lost=f"once it is back, `gatesearch resume {self.store.root} --address "
            f"{self.config.address}`",
        )
        with _DeferredInterrupt() as ctrl_c:
            try:
                self.stats.phase = Phase.WAITING
                self._show()
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
            finally:
                self.dispatch.close()
        if self.staged is not None:
            self.staged.close()
        return self.stats

    def _more(self) -> bool:
        return (
            bool(self.requeue)
            or self.next_slot < self.stats.target
            or self._promotion(peek=True) is not None
        )

    def _promotion(self, peek: bool = False) -> Promotion | None:
        """The promotion a free worker runs, or None (no schedule, or none due)."""
        return None if self.staged is None else self.staged.next_promotion(peek)

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
        try:
            proposal, arch, seed = self.proposer.propose(slot, fixed)
        except CampaignError:
            self._abandon(interrupted_reason("no proposal fits --max-params"))
            raise
        choices = dict(proposal.derivation.choices)
        self.proposer.save_counts()
        # Every trial carries its choices as Optuna parameters, whoever proposed it.
        params = None
        if proposal.trial is None:
            params = optuna_params(self.grammar, choices, self.causal)
        trial_id, number = self.store.start_trial(
            slot, seed, arch.hash, choices, proposal.trial, params
        )
        item = InFlight(slot, seed, trial_id, number, arch)
        if arch.hash in self.results:
            self._finish_duplicate(item)
        elif arch.hash in self.original:
            self.waiting.setdefault(arch.hash, []).append(item)
        else:
            self.store.save_graph(arch.hash, arch.graph)
            if self.staged is not None:
                self.staged.start(item)
            self._submit(item)
            self.original[arch.hash] = item
        self._show()

    def _submit(self, item: InFlight) -> None:
        """Put the trial (a stint of it, under a schedule) on Ray."""
        stint = self.staged.stint(item) if self.staged is not None else None
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
        assert self.staged is not None
        item = self.staged.promote(p)
        self.stats.promoted += 1
        self._submit(item)
        self._show()

    def _collect(self) -> None:
        assert self.dispatch is not None  # collected from `run`
        for event in self.dispatch.poll(timeout=1.0):
            if event.kind is EventKind.STARTED:
                self.stats.trial_started()
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
        return objective_values(metrics, self.objectives, self.task_spec.name)

    def _finish(
        self,
        item: InFlight,
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
        item: InFlight,
        values: tuple[float, ...] | None,
        metrics: dict[str, Any],
        reason: str | None,
    ) -> None:
        """A stint's result: the trial waits at its rung, completes at the top, or failed."""
        assert self.staged is not None
        metrics = self.staged.finished(item, values, metrics)
        self._record(item, values, metrics, reason, None)
        self.staged.prune_hopeless(self.stats.target)

    def _finish_duplicate(self, item: InFlight) -> None:
        number, values, metrics, reason = self.results[item.arch.hash]
        self._record(item, values, metrics, reason, number)

    def _record(
        self,
        item: InFlight,
        values: tuple[float, ...] | None,
        metrics: dict[str, Any],
        reason: str | None,
        duplicate_of: int | None,
    ) -> None:
        seq = self.seq
        self.seq += 1
        if duplicate_of is None:
            # The whole result (hyperparameters, trajectory) as JSON beside the study.
            stint = self.staged.stint(item) if self.staged is not None else None
            doc = {
                "number": item.number,
                "slot": item.slot,
                "seed": item.seed,
                "arch_hash": item.arch.hash,
                "task": self.task,
                "budget": str(self.budget),
                **({"rung": item.rung, "stop": str(stint.stop)} if stint else {}),
                "values": dict(zip(self.objectives, values)) if values else None,
                "fail_reason": reason if values is None else None,
                "metrics": metrics,
            }
            self.store.save_trial_metrics(item.number, doc)
        if values is None:
            self.store.fail_trial(item.trial_id, reason or "failed", seq, duplicate_of)
        elif self.staged is not None:
            compact = compact_metrics(metrics)
            self.staged.store_result(item, values, compact, seq, duplicate_of)
        else:
            if duplicate_of is None:
                self.store.report_curve(item.trial_id, learning_curve(metrics, self.objectives))
            compact = compact_metrics(metrics)
            self.store.complete_trial(item.trial_id, list(values), compact, seq, duplicate_of)
        choices = item.arch.derivation.choices
        # The schedule's rung (Hyperband's brackets start higher), as stored and rebuilt.
        rung = 0 if self.staged is None else self.staged.overall(item)
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

    def _abandon(self, reason: str) -> None:
        self.proposer.save_counts()
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
