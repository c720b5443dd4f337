"""What became of a stored trial, beyond Optuna's states: one Enum, one function.

Optuna knows RUNNING, COMPLETE and FAIL. A campaign stores three more outcomes as FAIL with a
reason: a trial its driver stopped (its slot runs again), a proposal turned down over
`--max-params` (never trained, no slot) and a training that failed (a finished slot). Every
reader asks `classify` (or `TrialRecord.outcome`) instead of reading the reason's prefix.
A duplicate is not an outcome of its own: it is COMPLETE or FAILED like the trial it copies,
and marked by `duplicate_of`.
"""

from __future__ import annotations

from enum import Enum

from optuna.trial import TrialState

# The reasons' prefixes, as stored in the `fail_reason` of existing runs.
INTERRUPTED = "interrupted"
OVER_LIMIT = "over the parameter limit"


class TrialOutcome(Enum):
    RUNNING = "running"  # started (or waiting), no result yet
    COMPLETE = "complete"  # scored: it has objective values
    FAILED = "failed"  # its training failed: a finished slot with no values
    INTERRUPTED = "interrupted"  # its driver stopped it: the slot runs again
    REJECTED = "rejected"  # over --max-params: never trained, takes no slot

    @property
    def finished(self) -> bool:
        """Counts toward the campaign's --trials: completed or failed for good."""
        return self in (TrialOutcome.COMPLETE, TrialOutcome.FAILED)


def classify(state: TrialState, fail_reason: str | None) -> TrialOutcome:
    """The outcome of a trial stored with Optuna `state` and the campaign's `fail_reason`."""
    if state is TrialState.COMPLETE:
        return TrialOutcome.COMPLETE
    if state is TrialState.FAIL:
        reason = fail_reason or ""
        if reason.startswith(INTERRUPTED):
            return TrialOutcome.INTERRUPTED
        if reason.startswith(OVER_LIMIT):
            return TrialOutcome.REJECTED
        return TrialOutcome.FAILED
    # RUNNING and WAITING; PRUNED is never written by a campaign, and a trial in it has no
    # result either.
    return TrialOutcome.RUNNING


def interrupted_reason(why: str) -> str:
    return f"{INTERRUPTED}: {why}"


def rejected_reason(params: int, limit: int) -> str:
    return f"{OVER_LIMIT}: {params:,} parameters > --max-params {limit:,}"
