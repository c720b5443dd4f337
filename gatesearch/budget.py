"""Training budgets as users write them: `200steps`, `30s`, `1e6tokens`.

A budget bounds one trial's training by optimiser steps, wall-clock seconds or training
tokens — the real positions fed to the model, padding not counted (`tasks.Batch.tokens`).
`BudgetClock` follows one training's progress through its budget.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from gatesearch.errors import GatesearchError


class BudgetError(GatesearchError, ValueError):
    """A budget string that cannot be read."""


class BudgetUnit(Enum):
    STEPS = "steps"
    SECONDS = "s"
    TOKENS = "tokens"


_UNITS = {
    "steps": BudgetUnit.STEPS,
    "step": BudgetUnit.STEPS,
    "s": BudgetUnit.SECONDS,
    "sec": BudgetUnit.SECONDS,
    "seconds": BudgetUnit.SECONDS,
    "tokens": BudgetUnit.TOKENS,
    "tok": BudgetUnit.TOKENS,
}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+)\s*$")


@dataclass(frozen=True)
class Budget:
    amount: float
    unit: BudgetUnit

    def __str__(self) -> str:
        if self.amount == int(self.amount):
            return f"{int(self.amount)}{self.unit.value}"
        return f"{self.amount:g}{self.unit.value}"

    def steps(self, tokens_per_step: int) -> int | None:
        """Steps this budget allows at `tokens_per_step`; None for a time budget."""
        if self.unit is BudgetUnit.STEPS:
            return int(self.amount)
        if self.unit is BudgetUnit.TOKENS:
            return max(1, math.ceil(self.amount / tokens_per_step))
        return None

    @property
    def seconds(self) -> float | None:
        return self.amount if self.unit is BudgetUnit.SECONDS else None


def parse_budget(text: str) -> Budget:
    """`200steps` | `30s` | `1e6tokens` -> Budget; BudgetError naming the accepted forms."""
    match = _BUDGET.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise BudgetError(
            f"budget {text!r} not understood: expected a number and a unit, "
            "e.g. 200steps, 30s or 1e6tokens"
        )
    amount = float(match.group(1))
    if not math.isfinite(amount):
        raise BudgetError(f"budget {text!r} is too large: give a finite number")
    if amount <= 0:
        raise BudgetError(f"budget {text!r} must be positive")
    if unit is not BudgetUnit.SECONDS and amount != int(amount):
        raise BudgetError(f"budget {text!r}: {unit.value} must be a whole number")
    return Budget(amount, unit)


class BudgetClock:
    """Progress in [0, 1] and the stopping rule for one budget, started when made.

    Under multi-fidelity scheduling a training runs in stints: `budget` is the whole schedule's
    length (the top rung), which progress — and so warm-ups, annealing and learning-rate
    schedules — is measured against, the same for every stint; `stop` is where this stint
    ends (a rung, ≤ budget, same unit); `trained` the seconds earlier stints trained.
    """

    def __init__(self, budget: Budget, stop: Budget | None = None, trained: float = 0.0) -> None:
        if stop is not None and (stop.unit is not budget.unit or stop.amount > budget.amount):
            raise BudgetError(f"a stint's stop {stop} must be in {budget}'s unit and within it")
        self.budget = budget
        self.stop = stop or budget
        self.start = time.perf_counter() - trained
        self.excluded = 0.0  # seconds of validation scoring, not charged to the budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0

    def _used(self, steps: int, tokens: int) -> float:
        return {
            BudgetUnit.STEPS: steps,
            BudgetUnit.TOKENS: tokens,
            BudgetUnit.SECONDS: self.elapsed(),
        }[self.budget.unit]

    def progress(self, steps: int, tokens: int) -> float:
        return min(1.0, self._used(steps, tokens) / self.budget.amount)

    def done(self, steps: int, tokens: int) -> bool:
        """Whether this stint has reached its stop (the whole budget without one)."""
        return self._used(steps, tokens) >= self.stop.amount
