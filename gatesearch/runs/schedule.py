"""Multi-fidelity schedules: rungs of training budget and the promotions between them.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020): trials
start at the lowest rung, `min_budget`; rung k trains to min_budget·ηᵏ, the top rung to the
campaign's budget. Whenever a worker is free, the best trial of the highest rung that has one
in its top ⌊n/η⌋ (n the trials that reached that rung) and was not yet promoted goes on to the
next rung, continuing its training; when none qualifies, a new trial starts at the bottom.
Asynchronous: a rung never waits to fill, so no worker idles. Hyperband (Li et al. 2018) runs
ASHA in brackets whose lowest rung differs (bracket s starts at min_budget·ηˢ); new trials are
dealt to the brackets in turn.

With several objectives, "best" is non-dominated sorting (the Pareto level), ties by the
objectives in order and then the trial number, as MOASHA ranks (Schmucker et al. 2021) —
the same order the campaign's leaderboard uses.

Everything here is a pure function of what the trials reported, so a resumed campaign
rebuilds the same rungs and the same promotion queue from its stored trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from gatesearch.budget import Budget, BudgetError, BudgetUnit, parse_budget
from gatesearch.errors import GatesearchError

DEFAULT_ETA = 3
DEFAULT_RUNGS = 3  # without a min_budget: the budget / η², three rungs


class ScheduleError(GatesearchError):
    """A schedule that cannot run as given (user input)."""


class ScheduleKind(StrEnum):
    NONE = "none"  # every trial trains the whole budget once
    ASHA = "asha"
    HYPERBAND = "hyperband"


@dataclass(frozen=True)
class Schedule:
    """A preset's `[schedule]` table. `min_budget` None: the budget / η^(DEFAULT_RUNGS − 1)."""

    kind: ScheduleKind = ScheduleKind.NONE
    min_budget: Budget | None = None
    eta: int = DEFAULT_ETA

    def rungs(self, budget: Budget) -> tuple[Budget, ...]:
        """The rungs' budgets, lowest first, the last `budget` itself. Steps and tokens are
        whole numbers (rounded up); every rung is above the one before."""
        if self.kind is ScheduleKind.NONE:
            return (budget,)
        if self.eta < 2:
            raise ScheduleError(f"schedule eta must be at least 2, got {self.eta}")
        low = self.min_budget or Budget(
            budget.amount / self.eta ** (DEFAULT_RUNGS - 1), budget.unit
        )
        if low.unit is not budget.unit:
            raise ScheduleError(
                f"schedule min_budget {low} must be in the budget's unit ({budget})"
            )
        if low.amount > budget.amount:
            raise ScheduleError(f"schedule min_budget {low} is above the budget {budget}")
        # The top rung takes the place of the power of η nearest the budget: 10 → 100 steps
        # at η = 3 gives 10, 30, 100 (not 10, 30, 90, 100).
        levels = round(math.log(budget.amount / low.amount, self.eta))
        amounts: list[float] = []
        for k in range(levels):
            a = _whole(low.amount * self.eta**k, budget.unit)
            if a < budget.amount and (not amounts or a > amounts[-1]):
                amounts.append(a)
        return (*(Budget(a, budget.unit) for a in amounts), budget)

    @property
    def staged(self) -> bool:
        """Whether trials train in stints over rungs (anything but `none`)."""
        return self.kind is not ScheduleKind.NONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "min_budget": None if self.min_budget is None else str(self.min_budget),
            "eta": self.eta,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str) -> Schedule:
        """A `[schedule]` table (a preset's, or config.json's); ScheduleError naming `source`
        and the key. Missing keys take their defaults."""
        known = {"kind", "min_budget", "eta"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ScheduleError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))} in [schedule] "
                f"(known: {', '.join(sorted(known))})"
            )
        kind_text = doc.get("kind", "none")
        try:
            kind = ScheduleKind(kind_text)
        except ValueError:
            choices = ", ".join(k.value for k in ScheduleKind)
            raise ScheduleError(
                f"{source}: schedule {kind_text!r} is not one of {choices}"
            ) from None
        eta = doc.get("eta", DEFAULT_ETA)
        if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
            raise ScheduleError(f"{source}: schedule eta must be a whole number >= 2, got {eta!r}")
        low = doc.get("min_budget")
        if low is not None and not isinstance(low, str):
            raise ScheduleError(
                f"{source}: schedule min_budget must be a budget such as 100steps, got {low!r}"
            )
        try:
            min_budget = None if low is None else parse_budget(low)
        except BudgetError as exc:
            raise ScheduleError(f"{source}: schedule min_budget: {exc}") from None
        return cls(kind, min_budget, eta)

    def describe(self, budget: Budget) -> str:
        """`asha (η=3): rungs 100steps, 300steps, 900steps`; `none` as it is."""
        if not self.staged:
            return "none"
        rungs = ", ".join(str(b) for b in self.rungs(budget))
        return f"{self.kind} (η={self.eta}): rungs {rungs}"

    def brackets(self, budget: Budget) -> tuple[tuple[Budget, ...], ...]:
        """Each bracket's rungs: one bracket for ASHA; for Hyperband bracket s drops the s
        lowest rungs (s = 0 .. rungs − 1)."""
        rungs = self.rungs(budget)
        if self.kind is ScheduleKind.HYPERBAND:
            return tuple(rungs[s:] for s in range(len(rungs)))
        return (rungs,)


def _whole(amount: float, unit: BudgetUnit) -> float:
    """Steps and tokens count whole units; a float product like 3·(100/9) is not one."""
    if unit is BudgetUnit.SECONDS:
        return amount
    return float(math.ceil(amount - 1e-9))


def order_of(values: Mapping[int, Sequence[float]]) -> list[int]:
    """Trial ids best first, by minimised `values` (signs applied): one objective by its
    value; several by Pareto level, then the objectives in order; ties by the id."""
    from gatesearch.runs.ranking import pareto_mask

    ids = sorted(values)
    if not ids:
        return []
    points = np.array([values[i] for i in ids], dtype=float)  # (n, d)
    levels = np.ones(len(ids), dtype=int)
    if points.shape[1] > 1:
        left, level = np.arange(len(ids)), 1
        while len(left):
            front = pareto_mask(points[left])
            levels[left[front]] = level
            left, level = left[~front], level + 1
    keys = {ids[j]: (int(levels[j]), *points[j], ids[j]) for j in range(len(ids))}
    return sorted(ids, key=keys.__getitem__)


@dataclass
class Ladder:
    """The rungs of one bracket: which trial reached which rung with which (minimised)
    values, and which were promoted."""

    rungs: tuple[Budget, ...]
    eta: int
    reached: list[dict[int, tuple[float, ...]]] = field(default_factory=list)
    promoted: list[set[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reached = [{} for _ in self.rungs]
        self.promoted = [set() for _ in self.rungs]

    def report(self, trial: int, rung: int, values: Sequence[float]) -> None:
        """`trial` finished rung `rung` with minimised `values`."""
        self.reached[rung][trial] = tuple(float(v) for v in values)
        if rung > 0:
            self.promoted[rung - 1].add(trial)

    def drop(self, trial: int) -> None:
        """A trial that failed or was turned down: out of every rung."""
        for rung in self.reached:
            rung.pop(trial, None)

    def top(self, rung: int) -> list[int]:
        """The rung's top ⌊n/η⌋ trials, best first (those ASHA may promote from it)."""
        here = self.reached[rung]
        return order_of(here)[: len(here) // self.eta]

    def next_promotion(self) -> tuple[int, int] | None:
        """(trial, the rung it goes to) by ASHA's rule, or None: start a new trial."""
        for rung in range(len(self.rungs) - 2, -1, -1):
            for trial in self.top(rung):
                if trial not in self.promoted[rung]:
                    return trial, rung + 1
        return None

    def promotable_ever(self, trial: int, rung: int, trials: int) -> bool:
        """Whether `trial`, at `rung`, could still be promoted when `trials` start at the
        bottom in all: its rank there is within ⌊trials/η⌋, the most places a rung's top can
        ever have (no rung holds more trials than start; ranks only fall as trials join —
        an asynchronous rung may hold more than ⌊trials/η⌋ of them, never more than all).
        A state that cannot be is deleted."""
        if rung >= len(self.rungs) - 1 or trial in self.promoted[rung]:
            return False
        rank = order_of(self.reached[rung]).index(trial)
        return rank < trials // self.eta
