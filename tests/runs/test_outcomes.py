"""Every stored trial has one outcome, read from Optuna's state and the campaign's reason."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from gatesearch.runs.outcomes import (
    TrialOutcome,
    classify,
    interrupted_reason,
    rejected_reason,
)


@pytest.mark.parametrize(
    ("state", "reason", "outcome"),
    [
        (TrialState.COMPLETE, None, TrialOutcome.COMPLETE),
        (TrialState.FAIL, "RuntimeError: loss is nan", TrialOutcome.FAILED),
        (TrialState.FAIL, None, TrialOutcome.FAILED),
        (TrialState.FAIL, interrupted_reason("Ctrl-C"), TrialOutcome.INTERRUPTED),
        (TrialState.FAIL, "interrupted: driver stopped", TrialOutcome.INTERRUPTED),
        (TrialState.FAIL, rejected_reason(200_000, 100_000), TrialOutcome.REJECTED),
        (TrialState.RUNNING, None, TrialOutcome.RUNNING),
        (TrialState.WAITING, None, TrialOutcome.RUNNING),
    ],
)
def test_each_stored_trial_has_one_outcome(state, reason, outcome):
    assert classify(state, reason) is outcome


def test_only_completed_and_failed_trials_finish_a_slot():
    assert {o for o in TrialOutcome if o.finished} == {TrialOutcome.COMPLETE, TrialOutcome.FAILED}


def test_the_reasons_read_as_existing_runs_store_them():
    assert rejected_reason(200_000, 100_000) == (
        "over the parameter limit: 200,000 parameters > --max-params 100,000"
    )
    assert interrupted_reason("driver stopped") == "interrupted: driver stopped"
