"""The run directory: snapshot, study round trip, integrity checks, the driver lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from clitools import cli
from optuna.trial import TrialState

from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.store import JOURNAL, LOCK, RunLockedError, RunStore, StoreError, list_runs


def make(tmp_path: Path, name: str = "r") -> RunStore:
    config, space, preset = prepare_run(RunRequest(task="null", runs_dir=tmp_path, name=name))
    return RunStore.create(tmp_path / name, config, space, preset.text, package_versions())


def test_snapshot_holds_config_space_preset_and_versions(tmp_path):
    with make(tmp_path) as store:
        root = store.root
    config = json.loads((root / "config.json").read_text())
    assert config["strategy"] == "evolution" and config["task"] == {"name": "null", "params": {}}
    assert (root / "space.space").read_text().startswith("# gated_lm")
    assert 'strategy = "evolution"' in (root / "strategy.toml").read_text()
    assert "optuna" in json.loads((root / "versions.json").read_text())
    assert not list(tmp_path.glob(".r.*"))  # the temporary folder was renamed into place
    assert list_runs(tmp_path) == [root]


def test_creating_a_run_logs_nothing_of_optunas_and_keeps_its_verbosity(tmp_path):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("optuna")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    logger.addHandler(handler)
    try:
        with make(tmp_path):
            pass
        assert [r.getMessage() for r in records] == []
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        logger.removeHandler(handler)
        optuna.logging.set_verbosity(before)


def test_trials_round_trip_through_the_journal(tmp_path):
    with make(tmp_path) as store:
        tid, number = store.start_trial(0, 11, "abc", {"$width": 64, "x.y[0]": "a"}, None)
        store.complete_trial(tid, [1.5], {"loss": 1.5, "params": 10.0}, seq=0)
        tid2, _ = store.start_trial(1, 12, "def", {"$width": 128}, None)
        store.fail_trial(tid2, "boom", seq=1)
        store.start_trial(2, 13, "ghi", {}, None)
    with RunStore.open(tmp_path / "r", writer=False) as store:
        a, b, c = store.records()
    assert (a.number, a.slot, a.seed, a.arch_hash, a.state) == (
        number,
        0,
        11,
        "abc",
        TrialState.COMPLETE,
    )
    assert a.choices == {"$width": 64, "x.y[0]": "a"} and a.values == (1.5,)
    assert a.metrics == {"loss": 1.5, "params": 10.0} and a.seq == 0
    assert b.state is TrialState.FAIL and b.fail_reason == "boom" and b.values is None
    assert c.state is TrialState.RUNNING


def test_a_trials_curve_reads_back_in_step_order(tmp_path):
    """Reported in any order (a resumed rung may come after a later one), read by step; a
    trial with none reads as an empty curve."""
    with make(tmp_path) as store:
        tid, _ = store.start_trial(0, 11, "abc", {}, None)
        store.report_curve(tid, [(40, 1.25), (10, 2.5), (20, 1.75)])
        store.complete_trial(tid, [1.25], {"loss": 1.25}, seq=0)
        tid2, _ = store.start_trial(1, 12, "def", {}, None)
        store.complete_trial(tid2, [2.0], {"loss": 2.0}, seq=1)
    with RunStore.open(tmp_path / "r", writer=False) as store:
        a, b = store.records()
    assert a.curve == ((10, 2.5), (20, 1.75), (40, 1.25))
    assert b.curve == ()


def test_runs_stored_with_unpacked_attrs_still_read(tmp_path):
    """Choices and metrics are stored as JSON strings now; a run whose trials hold them as
    dicts (stored before) reads the same, and can be resumed."""
    choices, metrics = {"$width": 64, "x.y[0]": "a"}, {"loss": 1.5, "params": 10.0}
    with make(tmp_path) as store:
        tid, _ = store.start_trial(0, 11, "abc", {}, None)
        store.storage.set_trial_user_attr(tid, "choices", choices)  # the older layout
        store.storage.set_trial_user_attr(tid, "metrics", metrics)
        store.storage.set_trial_state_values(tid, TrialState.COMPLETE, [1.5])
        new, _ = store.start_trial(1, 12, "def", choices, None)
        store.complete_trial(new, [1.5], metrics, seq=1)
        packed = store.storage.get_trial(new).user_attrs
    assert isinstance(packed["choices"], str) and isinstance(packed["metrics"], str)
    with RunStore.open(tmp_path / "r", writer=False) as store:
        old, fresh = store.records()
    assert old.choices == fresh.choices == choices
    assert old.metrics == fresh.metrics == metrics


def test_existing_run_is_never_overwritten(tmp_path):
    make(tmp_path).close()
    with pytest.raises(StoreError, match="already exists"):
        make(tmp_path)


def test_run_with_the_name_of_a_running_campaign_says_it_is_running(tmp_path, capsys):
    """`resume`, which an existing run's message suggests, would be refused while a driver
    holds the run: the message says it runs and how to watch it instead."""
    with make(tmp_path) as store:  # a driver holding the run
        before = sorted((p.name, p.stat().st_mtime_ns) for p in store.root.rglob("*"))
        capsys.readouterr()
        code = cli("run", "--task", "null", "--runs-dir", tmp_path, "--name", "r")
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{store.root} is running" in err and f"gatesearch status {store.root}" in err
        assert "resume" not in err
        assert sorted((p.name, p.stat().st_mtime_ns) for p in store.root.rglob("*")) == before
    # Its driver gone, the run is one to resume again.
    assert cli("run", "--task", "null", "--runs-dir", tmp_path, "--name", "r") == 2
    assert f"resume it with `gatesearch resume {tmp_path / 'r'}`" in capsys.readouterr().err


def test_a_fidelity_folder_is_refused_as_what_it_is(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text('{"kind": "fidelity", "name": "f"}')
    with pytest.raises(StoreError, match="is a `gatesearch fidelity` result, not a campaign"):
        RunStore.open(tmp_path / "f", writer=False)


def test_lock_refuses_a_second_writer(tmp_path):
    with make(tmp_path):
        with pytest.raises(RunLockedError, match="in use by another driver"):
            RunStore.open(tmp_path / "r", writer=True)
        RunStore.open(tmp_path / "r", writer=False).close()  # readers need no lock
    RunStore.open(tmp_path / "r", writer=True).close()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "no-journal", "no-config", "bad-config"],
)
def test_damaged_runs_are_refused_untouched(tmp_path, damage):
    with make(tmp_path) as store:
        tid, _ = store.start_trial(0, 1, "abc", {}, None)
        store.complete_trial(tid, [1.0], {"loss": 1.0}, seq=0)
    root = tmp_path / "r"
    journal = root / JOURNAL
    if damage == "truncated":
        journal.write_bytes(journal.read_bytes()[:-5])
    elif damage == "garbage":
        journal.write_bytes(journal.read_bytes() + b"{not json\n")
    elif damage == "no-journal":
        journal.unlink()
    elif damage == "no-config":
        (root / "config.json").unlink()
    else:
        (root / "config.json").write_text("{")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(StoreError):
        RunStore.open(root, writer=True)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_writer_removes_what_a_killed_writer_left_half_written(tmp_path):
    with make(tmp_path) as store:
        root = store.root
    # A real writer killed between creating its temporary file and renaming it into place.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gatesearch.atomic import temp_path_beside\n"
        "for folder in ('graphs', 'trials'):\n"
        "    path = Path(sys.argv[1]) / folder\n"
        "    path.mkdir(exist_ok=True)\n"
        "    temp_path_beside(path / 'x.parquet').write_bytes(b'half')\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = list(root.glob("*/.x.parquet.*.tmp"))
    assert len(left) == 2
    with RunStore.open(root, writer=False):
        pass
    assert all(p.exists() for p in left)  # a reader never deletes
    with RunStore.open(root, writer=True):
        pass
    assert not any(p.exists() for p in left)


def test_a_state_being_written_is_left_alone_while_the_campaign_runs(tmp_path):
    """A worker saves a trial's state under a temporary name while the driver measures the
    states on disk: the driver must not delete it (that failed the trial under load); a
    driver opening the run later removes such leftovers, as with graphs."""
    from gatesearch.atomic import temp_path_beside
    from gatesearch.runs.store import STATES

    with make(tmp_path) as store:
        done = store.state_path(3)
        done.mkdir(parents=True)
        (done / "state.json").write_bytes(b"{}")
        writing = temp_path_beside(store.state_path(4))
        writing.mkdir()
        (writing / "state.safetensors").write_bytes(b"12345")
        assert store.state_folders() == [done] and store.states_bytes() == 2
        assert writing.is_dir()  # still there for its writer to rename
    with RunStore.open(tmp_path / "r", writer=True):
        pass
    assert not writing.exists() and (tmp_path / "r" / STATES / "3").is_dir()


def test_a_reader_beside_a_running_driver_takes_its_half_written_last_line_for_a_write(tmp_path):
    """`status` beside `run` can read the journal while the driver appends: with a live
    driver named in the lock file, an incomplete last line is a write in progress (the trials
    before it are read); with none, it is damage, refused as before."""
    with make(tmp_path) as store:
        tid, _ = store.start_trial(0, 1, "abc", {}, None)
        store.complete_trial(tid, [1.0], {"loss": 1.0}, seq=0)
    root = tmp_path / "r"
    journal = root / JOURNAL
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id"')  # an append caught half-way
    with pytest.raises(StoreError, match="truncated"):
        RunStore.open(root, writer=False)
    (root / LOCK).write_text(f"pid {os.getpid()} on {os.uname().nodename}")  # this process
    with RunStore.open(root, writer=False) as reader:
        assert [r.values for r in reader.records()] == [(1.0,)]
    # A writer would append after the cut line: refused, the named driver alive or not.
    with pytest.raises(StoreError, match="truncated"):
        RunStore.open(root, writer=True)
    # A corrupt line that is whole is damage even beside a driver: appends end with "\n".
    journal.write_bytes(whole + b"{not json\n")
    with pytest.raises(StoreError, match="corrupt"):
        RunStore.open(root, writer=False)
