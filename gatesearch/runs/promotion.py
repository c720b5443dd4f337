"""The campaign's side of a multi-fidelity schedule: which bracket and rung each trial is on,
what a free worker does next (promote, or start a new proposal), and which waiting trials can
never be promoted (pruned, their saved states deleted so the disk stays bounded).

The rules are runs/schedule.py's (ASHA; Hyperband as ASHA brackets); this keeps the
campaign's trial numbers on them and rebuilds them from the stored trials on resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatesearch.budget import Budget
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.schedule import Ladder, Schedule
from gatesearch.runs.store import TrialRecord


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
