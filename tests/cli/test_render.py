"""The live progress line and the closing "next" lines: what a user sees at 80 columns."""

from __future__ import annotations

import io
import time

import pytest
from clitools import cli
from rich.console import Console

from gatesearch.cli.render import Display
from gatesearch.runs.inflight import Phase, Stats


def line_at(width: int, stats: Stats) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    return Display(console, "c", ["accuracy ↑"]).render(stats).plain


def test_the_progress_line_fits_80_columns_and_leaves_out_zero_counts():
    stats = Stats(target=150, workers=2, done=12, running=2, phase=Phase.SEARCHING)
    stats.first_start = time.monotonic() - 60
    line = line_at(80, stats)
    assert len(line) <= 80, line
    assert "12/150 done · 2 running" in line and "ETA" in line
    assert "failed" not in line and "dup" not in line  # zero: left out
    stats.failed, stats.duplicates, stats.rejected, stats.repeated = 3, 4, 5, 6
    crowded = line_at(80, stats)
    assert "3 failed" in crowded and "4 dup" in crowded and "5 over --max-params" in crowded
    assert "━" not in crowded  # the bar gives way first when the counts need the room
    assert "━" in line_at(200, stats)


def test_the_first_minute_says_what_the_driver_waits_for():
    stats = Stats(target=150, workers=2)
    assert "starting Ray…" in line_at(100, stats)
    stats.phase = Phase.WAITING
    assert "waiting for the first trial to start…" in line_at(100, stats)
    stats.trial_started()
    assert "ETA after 2 trials" in line_at(100, stats)


def test_no_eta_until_every_worker_finished_a_trial_and_then_from_the_first_start():
    stats = Stats(target=100, workers=4)
    stats.started -= 100  # Ray took 100 s to start: not a trial's cost
    stats.trial_started()
    stats.first_start = time.monotonic() - 10
    for _ in range(3):
        stats.count(0, (1.0,), False, 0, [1.0], lambda: "a")
    assert stats.eta is None  # three of four workers' throughput seen
    stats.count(0, (1.0,), False, 0, [1.0], lambda: "a")
    # 4 trials in the 10 s since the first start: 96 more take 240 s (not 96 × 110 / 4).
    assert stats.eta == pytest.approx(240, rel=0.05)


def test_eta_waits_for_fewer_trials_than_workers_when_fewer_are_left():
    stats = Stats(target=10, workers=4, done=9, done_at_start=9)
    assert stats.eta_after == 1


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_campaign_with_no_completed_trial_suggests_status_not_retrain(tmp_path, capsys):
    code = cli(
        "run", "--task", "null", "--budget", "2s", "--timeout", "0.2", "--trials", "2",
        "--workers", "2", "--runs-dir", tmp_path / "runs", "--name", "f",
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith(f"gatesearch status {tmp_path / 'runs' / 'f'}") for line in lines)
    assert "retrain" not in text and "export" not in text, text
