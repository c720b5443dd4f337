"""Multi-fidelity campaigns for real: ASHA's promotions through the campaign loop (checked
against the ladder's own rule), continued training whose cost is exactly the top budget,
duplicates, Optuna's view, and a driver SIGKILLed during a promotion then resumed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from clitools import cli
from optuna.trial import TrialState

from gatesearch.budget import parse_budget
from gatesearch.runs.campaign import Campaign
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import leaderboard, summary
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.schedule import Ladder, Schedule, ScheduleKind
from gatesearch.runs.store import STATES, RunStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

ASHA = {"schedule": "asha", "min_budget": "1steps"}
RUNGS = (1, 3, 9)  # --budget 9steps, η = 3
TINY_SPACE = """\
task causal
let width = choice(16)
model := embed stack rmsnorm head
stack := repeat(block, 1..2)
block := residual(rmsnorm mixer)
mixer := gru | lstm | mingru | attention(heads=2)
"""


def run_campaign(tmp_path: Path, **kw) -> RunStore:
    req = RunRequest(runs_dir=tmp_path / "runs", name="c", **kw)
    config, space, preset = prepare_run(req)
    store = RunStore.create(req.runs_dir / "c", config, space, preset.text, package_versions())
    with store:
        Campaign(store).run()
    return RunStore.open(req.runs_dir / "c", writer=False)


def no_states_left(store: RunStore) -> bool:
    folder = store.root / STATES
    return not folder.exists() or not any(folder.iterdir())


def replay_asha(records: list) -> dict[int, int]:
    """With one worker the campaign makes ASHA's decisions one at a time: promote when the
    ladder offers one, else start the next slot. Replayed here on the ladder with the scores
    the campaign stored; the rungs each trial should reach, by trial number."""
    by_slot = {r.slot: r for r in records}
    ladder = Ladder(Schedule(ScheduleKind.ASHA, parse_budget("1steps")).rungs(
        parse_budget("9steps")), 3)  # fmt: skip
    reached: dict[int, int] = {}
    next_slot = 0
    while True:
        promotion = ladder.next_promotion()
        if promotion is not None:
            number, rung = promotion
        elif next_slot < len(by_slot):
            number, rung = by_slot[next_slot].number, 0
            next_slot += 1
        else:
            return reached
        record = next(r for r in records if r.number == number)
        ladder.report(number, rung, record.rung_values[rung])
        reached[number] = rung


def test_asha_promotes_as_its_rule_says_and_leaves_nothing_waiting(tmp_path, capsys):
    store = run_campaign(
        tmp_path, task="null", budget="9steps", trials=18, workers=1, strategy="random", **ASHA
    )
    records = store.records()
    assert sorted(r.slot for r in records) == list(range(18))
    assert {r.outcome for r in records} <= {TrialOutcome.COMPLETE, TrialOutcome.PRUNED}
    assert {len(r.rung_values) - 1 for r in records} == {0, 1, 2}  # every rung was reached
    assert {r.number: len(r.rung_values) - 1 for r in records} == replay_asha(records)
    assert no_states_left(store)
    # Optuna's view: the top rung COMPLETE, the rest PRUNED, every rung an intermediate value.
    for t in store.study.trials:
        rungs = store.records()[t.number].rung_values
        assert t.state is (TrialState.COMPLETE if len(rungs) == 3 else TrialState.PRUNED)
        assert t.intermediate_values == {RUNGS[k]: v[0] for k, v in enumerate(rungs)}
    # The leaderboard ranks by the rung reached first.
    board = [r["rung"] for r in leaderboard(store, top=18)]
    assert board == sorted(board, reverse=True)
    # status and report count the trials per rung and the promotions, from the records.
    reached = [sum(len(r.rung_values) > k for r in records) for k in range(3)]
    promotions = sum(len(r.rung_values) - 1 for r in records)
    info = summary(store)
    assert info["reached"] == reached and info["promotions"] == promotions > 0
    line = f"rungs reached: 1steps {reached[0]} · 3steps {reached[1]} · 9steps {reached[2]}"
    assert cli("report", store.root) == 0
    said = " ".join(capsys.readouterr().out.split())  # Rich wraps at 80 columns
    assert f"{line}; {promotions} promotions, 0 waiting for one" in said, said
    assert cli("status", store.root) == 0  # the same line
    said = " ".join(capsys.readouterr().out.split())
    assert f"{line}; {promotions} promotions, 0 waiting for one" in said, said
    page = (store.root / "report" / "index.html").read_text()
    assert f"1steps: {reached[0]} · 3steps: {reached[1]} · 9steps: {reached[2]}" in page
    assert "promotions" in page and "reached the top rung (9steps)" in page


def test_a_promoted_trial_trains_on_and_costs_exactly_its_rung(tmp_path):
    space = tmp_path / "tiny.space"
    space.write_text(TINY_SPACE)
    task = {"vocab": 16, "length": 16, "pairs": 2, "n_valid": 32, "n_test": 32}
    store = run_campaign(
        tmp_path, task="mqar", task_params=task, space=space, budget="27steps", trials=9,
        workers=2, strategy="random", proxy={"batch_size": 4}, schedule="asha",
        min_budget="3steps",
    )  # fmt: skip
    records = store.records()
    assert any(r.outcome is TrialOutcome.COMPLETE for r in records)
    for r in records:
        if r.duplicate_of is None:  # weight steps = the rung's budget: continued, not redone
            assert r.metrics["steps"] == (3, 9, 27)[len(r.rung_values) - 1], r.number
            # CPU over every stint, the last stint's within it.
            assert r.metrics["cpu_seconds_total"] >= r.metrics["cpu_seconds"] > 0
            if len(r.rung_values) > 1:
                assert r.metrics["cpu_seconds_total"] > r.metrics["cpu_seconds"]
    assert no_states_left(store)
    # The disk's peak: at least one state, weights and Adam's two moments in float32 each.
    smallest = min(r.metrics["params"] for r in records)
    assert summary(store)["states_peak_bytes"] >= 12 * smallest


def test_duplicates_copy_the_first_rung_and_never_train_again(tmp_path):
    space = tmp_path / "two.space"  # two architectures only
    space.write_text(TINY_SPACE.replace("gru | lstm | mingru | attention(heads=2)", "gru | lstm")
                     .replace("1..2", "1..1"))  # fmt: skip
    store = run_campaign(
        tmp_path, task="null", space=space, budget="9steps", trials=8, workers=2,
        strategy="random", **ASHA,
    )  # fmt: skip
    records = store.records()
    originals = [r for r in records if r.duplicate_of is None]
    dups = [r for r in records if r.duplicate_of is not None]
    assert len(originals) == 2 and len(dups) == 6
    by_number = {r.number: r for r in records}
    for d in dups:
        assert d.outcome is TrialOutcome.PRUNED
        assert d.rung_values[0] == by_number[d.duplicate_of].rung_values[0]
    assert no_states_left(store)


def test_a_preset_schedule_and_flags_over_it(tmp_path, capsys):
    preset = tmp_path / "asha.toml"
    preset.write_text('strategy = "random"\n[schedule]\nkind = "asha"\neta = 2\n')
    base = ["run", "--task", "null", "--budget", "8steps", "--trials", "4", "--strategy", preset,
            "--runs-dir", tmp_path / "runs"]  # fmt: skip
    assert cli(*base, "--name", "p") == 0
    assert "schedule: asha (η=2): rungs 2steps, 4steps, 8steps" in capsys.readouterr().out
    assert cli(*base, "--name", "q", "--schedule", "none") == 0
    assert "schedule:" not in capsys.readouterr().out
    bad = {
        "kind": (["--schedule", "bohb"], "schedule 'bohb' is not one of none, asha, hyperband"),
        "unit": (["--min-budget", "1s"], "in the budget's unit"),
        "eta": (["--eta", "1"], "eta must be a whole number >= 2"),
        "above": (["--min-budget", "20steps"], "above the budget"),
        "no schedule": (["--schedule", "none", "--eta", "3"], "need --schedule asha"),
    }
    for label, (extra, needle) in bad.items():
        capsys.readouterr()
        assert cli(*base, "--name", f"bad-{label}".replace(" ", "-"), *extra) == 2, label
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (label, err)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["p", "q"]


def test_sigkill_during_a_promotion_then_resume_loses_nothing(tmp_path, ray_local):
    """The driver is killed while a promoted trial trains; resume restarts it from its last
    rung's saved state and the campaign ends as one that never stopped would: every slot
    scored once, nothing waiting, no state left behind, budgets exact."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "k"
    cmd = [sys.executable, "-m", "gatesearch.cli.app", "run", "--address", ray_local,
           "--task", "null", "--budget", "0.9s", "--schedule", "asha", "--min-budget", "0.1s",
           "--trials", "12", "--workers", "2", "--runs-dir", runs, "--name", "k"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"driver ended early: {proc.stderr.read().decode()}")
            if (run / "study.journal").exists():
                with RunStore.open(run, writer=False) as store:
                    outcomes = {r.outcome for r in store.records()}
                if TrialOutcome.CONTINUING in outcomes:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("no promotion started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunStore.open(run, writer=False) as store:
        before = {r.number: r.rung_values for r in store.records() if r.rung is not None}
        continuing = [r.number for r in store.records() if r.outcome is TrialOutcome.CONTINUING]
    assert continuing and all((run / STATES / str(n)).is_dir() for n in continuing)
    assert cli("resume", run) == 0
    with RunStore.open(run, writer=False) as store:
        records = store.records()
        assert no_states_left(store)
    finished = [r for r in records if r.outcome.finished]
    assert sorted(r.slot for r in finished) == list(range(12))  # each slot scored once
    assert {r.outcome for r in finished} <= {TrialOutcome.COMPLETE, TrialOutcome.PRUNED}
    after = {r.number: r.rung_values for r in records}
    for number, rungs in before.items():  # what was scored before the kill is kept
        assert after[number][: len(rungs)] == rungs
    for number in continuing:  # the promotion cut off ran again, from its saved rung
        assert len(after[number]) > len(before[number])
    journal = optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))
    study = optuna.load_study(study_name="k", storage=optuna.storages.JournalStorage(journal))
    assert not [t for t in study.trials if t.state is TrialState.RUNNING]


def test_hyperband_brackets_start_higher_and_rank_with_the_rest(tmp_path):
    """Bracket s of Hyperband starts at the s-th rung: slots are dealt to brackets in turn,
    each bracket promotes within itself, and the stored rung is the schedule's (so trials of
    different brackets compare)."""
    store = run_campaign(
        tmp_path, task="null", budget="9steps", trials=18, workers=2, strategy="random",
        schedule="hyperband", min_budget="1steps",
    )  # fmt: skip
    records = store.records()
    assert {r.outcome for r in records} <= {TrialOutcome.COMPLETE, TrialOutcome.PRUNED}
    for r in records:
        bracket = r.slot % 3
        first = r.rung - len(r.rung_values) + 1
        assert first == bracket, (r.number, r.rung, r.rung_values)
        steps = sorted(store.study.trials[r.number].intermediate_values)
        assert steps == list(RUNGS[first : r.rung + 1])
    assert all(r.outcome is TrialOutcome.COMPLETE for r in records if r.slot % 3 == 2)
    assert no_states_left(store)


def test_several_objectives_promote_by_pareto_level(tmp_path):
    store = run_campaign(
        tmp_path, task="null", budget="9steps", trials=12, workers=1, strategy="random",
        objectives="loss,params", **ASHA,
    )  # fmt: skip
    records = store.records()
    promoted = [r for r in records if len(r.rung_values) > 1]
    assert promoted and no_states_left(store)
    # Optuna keeps no curve for several objectives; the rungs' values are still stored.
    assert all(not t.intermediate_values for t in store.study.trials)
    assert all(len(v) == 2 for r in records for v in r.rung_values)


def test_ctrl_c_during_a_promotion_keeps_it_waiting_and_resume_finishes(tmp_path, ray_local):
    """SIGINT while a promoted trial trains: the trial goes back to waiting at its rung with
    its saved state (not failed, not re-run from scratch); resume completes the campaign."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "i"
    cmd = [sys.executable, "-m", "gatesearch.cli.app", "run", "--address", ray_local,
           "--task", "null", "--budget", "0.9s", "--schedule", "asha", "--min-budget", "0.1s",
           "--trials", "12", "--workers", "2", "--runs-dir", runs, "--name", "i"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "study.journal").exists():
            with RunStore.open(run, writer=False) as store:
                if any(r.outcome is TrialOutcome.CONTINUING for r in store.records()):
                    break
        time.sleep(0.05)
    assert proc.poll() is None, "the driver ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    with RunStore.open(run, writer=False) as store:
        records = store.records()
    held = [r for r in records if r.outcome is TrialOutcome.PAUSED and r.rung is not None]
    assert held and not any(r.outcome is TrialOutcome.CONTINUING for r in records)
    assert all((run / STATES / str(r.number)).is_dir() for r in held)
    assert cli("resume", run) == 0
    with RunStore.open(run, writer=False) as store:
        after = store.records()
        assert no_states_left(store)
    finished = [r for r in after if r.outcome.finished]
    assert sorted(r.slot for r in finished) == list(range(12))
    assert {r.outcome for r in finished} <= {TrialOutcome.COMPLETE, TrialOutcome.PRUNED}


def test_with_one_worker_a_killed_and_resumed_asha_campaign_repeats_an_uninterrupted_one(
    tmp_path, ray_local
):
    preset = tmp_path / "evo.toml"
    preset.write_text('strategy = "evolution"\n[options]\npopulation = 4\nsample_size = 2\n')
    common = ["--task", "null", "--budget", "0.9s", "--schedule", "asha", "--min-budget",
              "0.1s", "--trials", "12", "--workers", "1", "--strategy", preset,
              "--runs-dir", tmp_path / "runs", "--seed", "7"]  # fmt: skip
    assert cli("run", *common, "--name", "whole") == 0
    run = tmp_path / "runs" / "cut"
    cmd = [sys.executable, "-m", "gatesearch.cli.app", "run", "--address", ray_local,
           *map(str, common), "--name", "cut"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "study.journal").exists():
                with RunStore.open(run, writer=False) as store:
                    if sum(len(r.rung_values) for r in store.records()) >= 8:
                        break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunStore.open(run, writer=False) as store:
        left = [r for r in store.records() if r.outcome is not TrialOutcome.COMPLETE]
    assert any(r.outcome is not TrialOutcome.PRUNED for r in left), "killed too late"
    assert cli("resume", run) == 0

    def rungs(name: str) -> dict[int, tuple]:
        with RunStore.open(tmp_path / "runs" / name, writer=False) as store:
            return {
                r.slot: (r.arch_hash, r.rung_values) for r in store.records() if r.outcome.finished
            }

    assert rungs("cut") == rungs("whole")
