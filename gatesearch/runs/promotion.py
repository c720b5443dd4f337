"""The campaign's side of a multi-fidelity schedule: which bracket and rung each trial is on,
what a free worker does next (promote, or start a new proposal), and which waiting trials can
never be promoted (pruned, their saved states deleted so the disk stays bounded).

The rules are runs/schedule.py's (ASHA; Hyperband as ASHA brackets); this keeps the
campaign's trial numbers on them and rebuilds them from the stored trials on resume.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatesearch.arch.space import Architecture
from gatesearch.budget import Budget, BudgetUnit
from gatesearch.grammar import Grammar, replay
from gatesearch.proxy.stint import Stint
from gatesearch.runs.inflight import InFlight
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.schedule import Ladder, Schedule
from gatesearch.runs.store import RunStore, TrialRecord


@dataclass(frozen=True)
class Promotion:
    number: int  # the trial
    bracket: int
    rung: int  # the rung it trains to


class Rungs:
    """The brackets' ladders of one campaign, keyed by trial number. Values are minimised
    (each objective times its sign)."""

    def __init__(self, schedule: Schedule, budget: Budget, signs: Sequence[float]) -> None:
        self.brackets = schedule.brackets(budget)
        self.ladders = [Ladder(rungs, schedule.eta) for rungs in self.brackets]
        self.signs = tuple(signs)
        self.bracket_of: dict[int, int] = {}  # trial number → bracket
        self.closed: set[int] = set()  # complete, failed or pruned: never promoted

    def bracket_for(self, slot: int) -> int:
        """New trials are dealt to the brackets in turn (one bracket for ASHA)."""
        return slot % len(self.brackets)

    def budget(self, bracket: int, rung: int) -> Budget:
        return self.brackets[bracket][rung]

    def overall(self, bracket: int, rung: int) -> int:
        """A bracket's rung as its place among all the schedule's rungs (Hyperband's bracket
        s starts at the s-th): what is stored, so trials of different brackets compare."""
        return len(self.brackets[0]) - len(self.brackets[bracket]) + rung

    def is_top(self, bracket: int, rung: int) -> bool:
        return rung == len(self.brackets[bracket]) - 1

    def report(self, number: int, bracket: int, rung: int, values: Sequence[float]) -> None:
        self.bracket_of[number] = bracket
        minimised = [v * s for v, s in zip(values, self.signs)]
        self.ladders[bracket].report(number, rung, minimised)

    def close(self, number: int) -> None:
        self.closed.add(number)

    def next_promotion(self) -> Promotion | None:
        """ASHA's choice for a free worker, the highest target rung over the brackets first;
        None: start a new trial."""
        best: Promotion | None = None
        for b, ladder in enumerate(self.ladders):
            for rung in range(len(ladder.rungs) - 2, -1, -1):
                pick = next(
                    (
                        t
                        for t in ladder.top(rung)
                        if t not in ladder.promoted[rung] and t not in self.closed
                    ),
                    None,
                )
                if pick is not None:
                    if best is None or rung + 1 > best.rung:
                        best = Promotion(pick, b, rung + 1)
                    break
        return best

    def start_promotion(self, p: Promotion) -> None:
        self.ladders[p.bracket].promoted[p.rung - 1].add(p.number)

    def cancel_promotion(self, p: Promotion) -> None:
        """A promotion that did not train (Ctrl-C): the trial waits at its rung again."""
        self.ladders[p.bracket].promoted[p.rung - 1].discard(p.number)

    def hopeless(self, waiting: Sequence[tuple[int, int]], trials: int) -> list[int]:
        """Of the waiting (number, rung) trials, those that can never be promoted when
        `trials` start in all: too far down their rung for its most promotable places."""
        out = []
        n = len(self.brackets)
        for number, rung in waiting:
            b = self.bracket_of[number]
            in_bracket = (trials - b + n - 1) // n  # slots b, b + n, ... below `trials`
            if not self.ladders[b].promotable_ever(number, rung, in_bracket):
                out.append(number)
        return out

    def rebuild(self, records: Sequence[TrialRecord], bracket_of_slot: dict[int, int]) -> None:
        """The ladders from the stored trials: every rung result, who was promoted (reaching
        a rung means promotion from the one below) and who is closed."""
        for r in records:
            if r.rung is None or r.duplicate_of is not None:
                continue
            b = bracket_of_slot[r.slot]
            for rung, values in enumerate(r.rung_values):
                self.report(r.number, b, rung, values)
            if r.outcome is TrialOutcome.CONTINUING:  # promoted when its driver stopped
                self.ladders[b].promoted[len(r.rung_values) - 1].add(r.number)
            if r.outcome in (TrialOutcome.COMPLETE, TrialOutcome.FAILED, TrialOutcome.PRUNED):
                self.close(r.number)


class Staged:
    """A campaign's trials under a schedule, with the run folder: who waits at which rung
    (with its saved state), which promotions a stopped driver left to redo, what a trial's
    stint trains, and the ends of waiting — pruned, or closed with the campaign."""

    def __init__(self, store: RunStore, signs: Sequence[float]) -> None:
        config = store.config
        self.store = store
        self.rungs = Rungs(config.schedule, config.budget, signs)
        self.paused: dict[int, InFlight] = {}  # waiting at a rung, by trial number
        self.repromote: list[Promotion] = []  # cut off when the driver stopped: first
        self.states_peak = store.states_peak

    # ---- rebuilding
    def rebuild(self, records: Sequence[TrialRecord], grammar: Grammar, causal: bool) -> None:
        """The ladders, the waiting trials and the promotions to redo; states of trials that
        no longer wait (a killed driver's leftovers) deleted."""
        brackets = {r.slot: self.rungs.bracket_for(r.slot) for r in records if r.slot >= 0}
        self.rungs.rebuild(records, brackets)
        for r in records:
            if r.outcome not in (TrialOutcome.PAUSED, TrialOutcome.CONTINUING):
                continue
            b, rung = brackets[r.slot], len(r.rung_values) - 1  # the rung in its bracket
            arch = Architecture.from_derivation(replay(grammar, r.choices, causal))
            item = InFlight(r.slot, r.seed, r.trial_id, r.number, arch, b, rung)
            item.rung_values = [list(v) for v in r.rung_values]
            item.cpu_seconds = float(r.metrics.get("cpu_seconds_total") or 0.0)
            self.paused[r.number] = item
            if r.outcome is TrialOutcome.CONTINUING:  # its state is the rung's it left from
                self.repromote.append(Promotion(r.number, b, rung + 1))
        for folder in self.store.state_folders():
            if not folder.name.isdigit() or int(folder.name) not in self.paused:
                shutil.rmtree(folder, ignore_errors=True)

    # ---- what a free worker does
    def next_promotion(self, peek: bool = False) -> Promotion | None:
        """The promotion a free worker runs (a stopped driver's first), or None."""
        if self.repromote:
            return self.repromote[0] if peek else self.repromote.pop(0)
        return self.rungs.next_promotion()

    def start(self, item: InFlight) -> None:
        """A new trial: its bracket, at the bracket's first rung."""
        item.bracket, item.rung = self.rungs.bracket_for(item.slot), 0

    def promote(self, p: Promotion) -> InFlight:
        """The waiting trial `p` names, on its way to the next rung."""
        item = self.paused.pop(p.number)
        item.rung = p.rung
        self.rungs.start_promotion(p)
        self.store.continue_trial(item.trial_id)
        return item

    def stint(self, item: InFlight) -> Stint:
        """What the trial's task trains: up to its rung, from the state saved at the rung
        below, saving its own unless it is the top."""
        b, rung = item.bracket, item.rung or 0
        state = self.store.state_path(item.number)
        return Stint(
            stop=self.rungs.budget(b, rung),
            resume=state if rung > 0 else None,
            save=None if self.rungs.is_top(b, rung) else state,
        )

    def overall(self, item: InFlight) -> int:
        return self.rungs.overall(item.bracket, item.rung or 0)

    # ---- results
    def finished(
        self, item: InFlight, values: tuple[float, ...] | None, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """A stint's result: the trial waits at its rung, or (top, failed) is done with its
        state. The metrics with the CPU of all its stints."""
        assert item.rung is not None
        item.cpu_seconds += float(metrics.get("cpu_seconds") or 0.0)
        if metrics:
            metrics = {**metrics, "cpu_seconds_total": item.cpu_seconds}
        if values is not None:
            self.rungs.report(item.number, item.bracket, item.rung, values)
        if values is None or self.rungs.is_top(item.bracket, item.rung):
            self.rungs.close(item.number)
            self.store.remove_state(item.number)
        else:
            self.paused[item.number] = item
            self._measure_states()
        return metrics

    def store_result(
        self,
        item: InFlight,
        values: tuple[float, ...],
        compact: dict[str, Any],
        seq: int,
        duplicate_of: int | None,
    ) -> None:
        """A staged trial's score at its rung: an intermediate value (one objective), then
        waiting (paused), complete at the top rung, or — a duplicate of a trial still on the
        ladder — pruned at the copied rung."""
        rung = item.rung or 0
        item.rung_values.append(list(values))
        if duplicate_of is None and len(values) == 1:
            stop = self.rungs.budget(item.bracket, rung)
            self.store.report_curve(item.trial_id, [(curve_step(stop), values[0])])
        self.store.pause_trial(item.trial_id, self.overall(item), item.rung_values, compact, seq)
        if duplicate_of is not None:
            self.store.mark_duplicate(item.trial_id, duplicate_of)
            self.store.prune_trial(item.trial_id)
        elif self.rungs.is_top(item.bracket, rung):
            self.store.complete_trial(item.trial_id, list(values), compact, seq)

    def prune_hopeless(self, trials: int) -> None:
        """Waiting trials that can never be promoted when `trials` start in all end, PRUNED;
        their states go."""
        again = {p.number for p in self.repromote}
        waiting = [(n, it.rung or 0) for n, it in self.paused.items() if n not in again]
        for number in self.rungs.hopeless(waiting, trials):
            self._prune(number)

    def close(self) -> None:
        """The campaign is over: what still waits for a promotion will not get one. Any state
        left (a task of a killed driver that finished after it) goes too."""
        for number in list(self.paused):
            self._prune(number)
        for folder in self.store.state_folders():
            shutil.rmtree(folder, ignore_errors=True)

    def _prune(self, number: int) -> None:
        item = self.paused.pop(number)
        self.store.prune_trial(item.trial_id)
        self.store.remove_state(number)
        self.rungs.close(number)

    def _measure_states(self) -> None:
        """Keep the peak of the saved states' size (what the disk must hold), stored when it
        grows: a new state is the only thing that grows it."""
        size = self.store.states_bytes()
        if size > self.states_peak:
            self.states_peak = size
            self.store.set_states_peak(size)


def curve_step(stop: Budget) -> int:
    """A rung's step on the trial's learning curve: its budget in its unit (milliseconds for
    seconds), so the steps of one trial's rungs are distinct and increasing."""
    return round(stop.amount * 1000) if stop.unit is BudgetUnit.SECONDS else int(stop.amount)
