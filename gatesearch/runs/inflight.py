"""What a campaign has in flight and what it counts: one trial on its way (a slot's trial, or
under a schedule one stint of it), and the campaign's running statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from gatesearch.arch.space import Architecture


@dataclass
class InFlight:
    slot: int
    seed: int
    trial_id: int
    number: int
    arch: Architecture
    bracket: int = 0
    rung: int | None = None  # the rung it trains to; None without a schedule
    rung_values: list[list[float]] = field(default_factory=list)  # scored so far, by rung
    cpu_seconds: float = 0.0  # of its stints so far (multi-fidelity)


class Phase(Enum):
    """Where a campaign's driver is, for the progress line: the first minute on a fresh
    machine goes to starting Ray and its workers, and nothing else tells the user so."""

    STARTING_RAY = "starting Ray"
    WAITING = "waiting for the first trial to start"
    SEARCHING = "searching"


@dataclass
class Stats:
    target: int
    workers: int = 1
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
    phase: Phase = Phase.STARTING_RAY
    # When the first trial of this driver began on a worker: the ETA's clock starts there, not
    # at the driver's start (Ray's start-up is not a trial's cost).
    first_start: float | None = None

    best_rung: int = -1  # the rung `best` was scored at (0 without a schedule)

    def count(
        self,
        number: int,
        values: tuple[float, ...] | None,
        duplicate: bool,
        rung: int,
        signs: Sequence[float],
        describe: Callable[[], str],
        slot_done: bool = True,
    ) -> None:
        """A stored result: a finished slot (unless a promotion's), and perhaps the best —
        the best at the highest fidelity reached, a higher rung first, then the values."""
        if self.phase is Phase.WAITING:  # a duplicate can finish before any trial starts
            self.phase = Phase.SEARCHING
        if slot_done:
            self.done += 1
            self.duplicates += duplicate
            self.failed += values is None
        if values is None:
            return
        key = (-rung, *(v * sg for v, sg in zip(values, signs)))
        if self.best is None or key < (
            -self.best_rung,
            *(v * sg for v, sg in zip(self.best, signs)),
        ):
            self.best, self.best_number, self.best_rung = values, number, rung
            self.best_arch = describe()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def trial_started(self) -> None:
        if self.first_start is None:
            self.first_start = time.monotonic()
        self.phase = Phase.SEARCHING

    @property
    def eta_after(self) -> int:
        """How many trials must finish (since this driver started) before an ETA is shown:
        one per worker, so that the estimate sees every worker's throughput. Measured on a
        150-trial campaign, an ETA from the first trial alone was 5-8x too long."""
        return max(1, min(self.workers, self.target - self.done_at_start))

    @property
    def eta(self) -> float | None:
        """Seconds left at the throughput since the first trial started; None until
        `eta_after` trials have finished."""
        new = self.done - self.done_at_start
        if new < self.eta_after or self.first_start is None:
            return None
        return max(0, self.target - self.done) * (time.monotonic() - self.first_start) / new
