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
        (TrialState.FAIL, rejected_reason(200_000, 100_000), TrialOutcome.REJECTED),  # old runs
        (TrialState.PRUNED, rejected_reason(200_000, 100_000), TrialOutcome.REJECTED),
        (TrialState.PRUNED, None, TrialOutcome.PRUNED),
        (TrialState.RUNNING, None, TrialOutcome.RUNNING),
        (TrialState.WAITING, None, TrialOutcome.RUNNING),
    ],
)
def test_each_stored_trial_has_one_outcome(state, reason, outcome):
    assert classify(state, reason) is outcome


def test_only_scored_and_failed_trials_finish_a_slot():
    """Scored means at any rung under a schedule: a trial waiting for a promotion, training
    toward one or pruned has its slot's result already; interrupted and turned-down ones not."""
    assert {o for o in TrialOutcome if o.finished} == {
        TrialOutcome.COMPLETE,
        TrialOutcome.FAILED,
        TrialOutcome.PAUSED,
        TrialOutcome.CONTINUING,
        TrialOutcome.PRUNED,
    }


def test_staged_trials_are_told_apart_by_their_rung_and_pause():
    assert classify(TrialState.RUNNING, None) is TrialOutcome.RUNNING  # no rung: in flight
    assert classify(TrialState.RUNNING, None, rung=0, paused=True) is TrialOutcome.PAUSED
    assert classify(TrialState.RUNNING, None, rung=1) is TrialOutcome.CONTINUING
    assert classify(TrialState.PRUNED, None, rung=1) is TrialOutcome.PRUNED
    assert classify(TrialState.COMPLETE, None, rung=2, paused=True) is TrialOutcome.COMPLETE


def test_the_reasons_read_as_existing_runs_store_them():
    assert rejected_reason(200_000, 100_000) == (
        "over the parameter limit: 200,000 parameters > --max-params 100,000"
    )
    assert interrupted_reason("driver stopped") == "interrupted: driver stopped"
