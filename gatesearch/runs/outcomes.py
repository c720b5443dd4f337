"""What became of a stored trial, beyond Optuna's states: one Enum, one function.

Optuna knows RUNNING, COMPLETE and FAIL. A campaign stores more outcomes as FAIL with a
reason: a trial its driver stopped (its slot runs again), an Optuna proposal that repeats an
evaluated architecture (no slot) and a training that failed (a finished slot). An Optuna
sampler's proposal turned down over `--max-params` (never trained, no slot) is PRUNED with its
reason and an infeasible constraint, so that the sampler learns from it (older runs: FAIL). Every
reader asks `classify` (or `TrialRecord.outcome`) instead of reading the reason's prefix.
A duplicate is not an outcome of its own: it is COMPLETE or FAILED like the trial it copies,
and marked by `duplicate_of`.

Under a multi-fidelity schedule a trial also waits between rungs (PAUSED: Optuna's RUNNING,
with the rung it reached), trains on at a higher one (CONTINUING: RUNNING, promoted), and ends
below the top rung when it can no longer be promoted (PRUNED, Optuna's own state, with its
rungs' values as intermediate values — as Optuna's pruners leave a stopped trial).
"""

from __future__ import annotations

from enum import Enum

from optuna.trial import TrialState

# The reasons' prefixes, as stored in the `fail_reason` of existing runs.
INTERRUPTED = "interrupted"
OVER_LIMIT = "over the parameter limit"
REPEATED = "repeated"


class TrialOutcome(Enum):
    RUNNING = "running"  # started (or waiting), no result yet
    COMPLETE = "complete"  # scored: it has objective values
    FAILED = "failed"  # its training failed: a finished slot with no values
    INTERRUPTED = "interrupted"  # its driver stopped it: the slot runs again
    REJECTED = "rejected"  # over --max-params: never trained, takes no slot
    REPEATED = "repeated"  # an Optuna proposal of an evaluated architecture: no slot
    PAUSED = "paused"  # scored at a rung below the top; may be promoted
    CONTINUING = "continuing"  # promoted: training on toward a higher rung
    PRUNED = "pruned"  # scored below the top rung and never to be promoted

    @property
    def finished(self) -> bool:
        """Counts toward the campaign's --trials: scored (at some rung) or failed for good."""
        return self in _FINISHED


_FINISHED = {
    TrialOutcome.COMPLETE,
    TrialOutcome.FAILED,
    TrialOutcome.PAUSED,
    TrialOutcome.CONTINUING,
    TrialOutcome.PRUNED,
}


def classify(
    state: TrialState, fail_reason: str | None, rung: int | None = None, paused: bool = False
) -> TrialOutcome:
    """The outcome of a trial stored with Optuna `state` and the campaign's `fail_reason`,
    `rung` (the highest rung it was scored at, None without a schedule) and `paused`."""
    if state is TrialState.COMPLETE:
        return TrialOutcome.COMPLETE
    if state is TrialState.PRUNED:
        # An Optuna sampler's proposal over --max-params is stored PRUNED (see
        # `RunStore.reject_trial`); older runs stored it FAIL, read below.
        if (fail_reason or "").startswith(OVER_LIMIT):
            return TrialOutcome.REJECTED
        return TrialOutcome.PRUNED
    if state is TrialState.FAIL:
        reason = fail_reason or ""
        if reason.startswith(INTERRUPTED):
            return TrialOutcome.INTERRUPTED
        if reason.startswith(OVER_LIMIT):
            return TrialOutcome.REJECTED
        if reason.startswith(REPEATED):
            return TrialOutcome.REPEATED
        return TrialOutcome.FAILED
    if rung is not None:  # RUNNING with a rung's score: between stints, or on the next one
        return TrialOutcome.PAUSED if paused else TrialOutcome.CONTINUING
    return TrialOutcome.RUNNING


def interrupted_reason(why: str) -> str:
    return f"{INTERRUPTED}: {why}"


def rejected_reason(params: int, limit: int) -> str:
    return f"{OVER_LIMIT}: {params:,} parameters > --max-params {limit:,}"


def repeated_reason(original: int | None) -> str:
    of = f"trial {original}" if original is not None else "a trial in flight"
    return f"{REPEATED}: the architecture of {of}; asked again"
