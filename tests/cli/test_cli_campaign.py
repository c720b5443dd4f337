"""The campaign commands end to end: real local Ray (started once here), real journal storage,
real files; the driver killed with SIGKILL in a subprocess and resumed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from classifydata import CHANNELS, N_CLASSES, write_classify_npz
from clitools import cli

from gatesearch.arch.space import SPACES_DIR
from gatesearch.runs.store import SPACE_COPY, RunStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def small_preset(tmp_path: Path, strategy: str, options: str = "") -> Path:
    path = tmp_path / f"{strategy}.toml"
    path.write_text(f'strategy = "{strategy}"\n[options]\n{options}\n')
    return path


PRESETS = {
    "random": "",
    "evolution": "population = 4\nsample_size = 2\ncrossover = 0.5",
    "tpe": "n_startup_trials = 3",
    "nsga2": "population_size = 4",
}


def status_json(run: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli("status", run, "--json") == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_each_strategy_runs_a_campaign(tmp_path, capsys, strategy):
    preset = small_preset(tmp_path, strategy, PRESETS[strategy])
    objectives = "loss,params" if strategy == "nsga2" else "loss"
    code = cli(
        "run", "--task", "null", "--trials", "10", "--workers", "2", "--strategy", preset,
        "--runs-dir", tmp_path / "runs", "--name", "c", "--objectives", objectives,
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    assert "next:" in text and "best of c" in text
    # Each next command whole on a line of its own (never wrapped), to be copied.
    lines = [line.strip() for line in text.splitlines()]
    run_dir = tmp_path / "runs" / "c"
    assert any(line.startswith(f"gatesearch report {run_dir}    #") for line in lines), text
    assert any(
        line.startswith(f"gatesearch export {run_dir} -o best.py --weights") for line in lines
    )
    info = status_json(tmp_path / "runs" / "c", capsys)
    assert info["finished"] == 10 and info["complete"] == 10 and info["failed"] == 0
    assert info["best"]["values"].keys() == set(objectives.split(","))
    run = tmp_path / "runs" / "c"
    assert (run / "config.json").is_file() and (run / "space.space").is_file()
    assert json.loads((run / "config.json").read_text())["strategy"] == strategy
    with RunStore.open(run, writer=False) as store:
        records = store.records()
    originals = {r.arch_hash for r in records if r.duplicate_of is None}
    assert {p.stem for p in (run / "graphs").glob("*.parquet")} == originals
    assert sorted(r.slot for r in records) == list(range(10))


def test_status_and_ls(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "null", "--trials", "3", "--runs-dir", runs, "--name", "x") == 0
    # A name as long as the default campaign's: ls at 80 columns must not cut it.
    long = "evolution-mqar-small-20261203-055609-and-more"
    assert cli("run", "--task", "null", "--trials", "1", "--runs-dir", runs, "--name", long) == 0
    capsys.readouterr()
    assert cli("ls", runs) == 0
    listing = capsys.readouterr().out
    assert "x" in listing and "3/3" in listing and "evolution" in listing
    row = next(line for line in listing.splitlines() if line.startswith(long))
    assert "finished" in row and "1/1" in row  # one line, the name whole
    assert cli("status", runs / "x") == 0
    assert "x (finished)" in (text := capsys.readouterr().out) and "3/3 finished" in text
    assert status_json(runs / "x", capsys)["state"] == "finished"
    # Resuming a finished campaign without --trials has nothing to run, and says so.
    assert cli("resume", runs / "x") == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert f"{runs / 'x'} is finished (3/3 trials): nothing to resume" in flat
    assert status_json(runs / "x", capsys)["finished"] == 3


# A database server to test --storage against, beside SQLite: e.g.
# GATESEARCH_TEST_DB=postgresql://user:password@localhost/db (with `pip install
# "psycopg[binary]"`). Each run of the test adds its studies there, under fresh names.
DB_SERVER = os.environ.get("GATESEARCH_TEST_DB")


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(None, id="sqlite"),
        pytest.param(
            DB_SERVER,
            marks=pytest.mark.skipif(not DB_SERVER, reason="GATESEARCH_TEST_DB is not set"),
            id="server",
        ),
    ],
)
def test_rdb_storage_runs_resumes_and_refuses_a_second_study(tmp_path, capsys, server):
    """--storage with a real relational database (SQLite through SQLAlchemy, or a server):
    the study lives in the database, the run directory holds the rest, and resume finds it."""
    runs, db = tmp_path / "runs", tmp_path / "studies.db"
    url = server or f"sqlite:///{db}"
    name = f"s{uuid.uuid4().hex[:12]}"  # a server's database outlives the test
    base = ["--task", "null", "--runs-dir", runs, "--storage", url]
    assert cli("run", *base, "--trials", "3", "--name", name) == 0
    assert server or db.is_file()
    assert not (runs / name / "study.journal").exists()
    assert json.loads((runs / name / "config.json").read_text())["storage"] == url
    assert cli("resume", runs / name, "--trials", "2") == 0
    info = status_json(runs / name, capsys)
    assert info["finished"] == 5
    with RunStore.open(runs / name, writer=False) as store:
        assert sorted(r.slot for r in store.records()) == list(range(5))
    # Another run of the same name in another folder would share the database's study.
    capsys.readouterr()
    other = ["--task", "null", "--runs-dir", tmp_path / "elsewhere", "--storage", url]
    assert cli("run", *other, "--name", name) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"already holds a study named '{name}'" in err
    assert not (tmp_path / "elsewhere" / name).exists()
    assert info == status_json(runs / name, capsys)  # the first run's study is untouched


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        # No database server listens on port 1; with no driver installed the import fails
        # first. Either way: one line, and the password never shown.
        ("postgresql://researcher:s3cret@127.0.0.1:1/studies", "cannot open storage"),
        ("sqlite:////nonexistent-dir/studies.db", "cannot open storage"),
        ("notadatabase://x", "cannot open storage"),
    ],
    ids=["unreachable-server", "sqlite-bad-path", "unknown-dialect"],
)
def test_a_storage_that_cannot_open_is_one_line_and_leaves_no_run(tmp_path, capsys, url, needle):
    runs = tmp_path / "runs"
    code = cli("run", "--task", "null", "--runs-dir", runs, "--storage", url, "--name", "bad")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "s3cret" not in err
    assert not (runs / "bad").exists() and not list(runs.glob(".bad.*"))


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "null", "--trials", "2", "--runs-dir", runs, "--name", "ok") == 0
    bad_preset = tmp_path / "bad.toml"
    bad_preset.write_text('strategy = "evolution"\n[options]\npopulaton = 3\n')
    broken_space = tmp_path / "broken.space"
    broken_space.write_text("model := embed nonsense(\n")
    unwritable = tmp_path / "ro"
    unwritable.mkdir()
    unwritable.chmod(0o500)
    before = tree_digest(runs)
    cases = {
        "missing space": (["--space", tmp_path / "nope.space"], "nope.space"),
        "invalid space": (["--space", broken_space], "broken.space"),
        "missing preset": (["--strategy", tmp_path / "nope.toml"], "nope.toml"),
        "unknown preset key": (["--strategy", bad_preset], "populaton"),
        "unknown strategy": (["--strategy", "annealing"], "annealing"),
        "unknown task": (["--task", "mqar9"], "mqar9"),
        "bad budget": (["--budget", "10 parsecs"], "10 parsecs"),
        "proxy option, no model": (["--proxy-option", "batch_size=8"], "trains no model"),
        "existing run": (["--name", "ok"], "already exists"),
        "negative timeout": (["--timeout", "-1"], "--timeout"),
        "infinite timeout": (["--timeout", "inf"], "--timeout"),
    }
    for label, (extra, needle) in cases.items():
        capsys.readouterr()
        code = cli("run", "--task", "null", "--runs-dir", runs, "--name", "new", *extra)
        err = capsys.readouterr().err.strip()
        assert code == 2, label
        assert len(err.splitlines()) == 1 and needle in err, (label, err)
        assert not (runs / "new").exists(), label
    if os.geteuid() != 0:
        code = cli("run", "--task", "null", "--runs-dir", unwritable / "runs", "--name", "n")
        assert code == 2 and "cannot write" in capsys.readouterr().err
    for target in (runs / "missing", tmp_path):
        assert cli("resume", target) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # A resume that cannot load the run's space must not have raised its trial target first.
    space_copy = runs / "ok" / SPACE_COPY
    good_space = space_copy.read_bytes()
    space_copy.write_text("model := embed nonsense(\n")
    before = tree_digest(runs)
    assert cli("resume", runs / "ok", "--trials", "2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and SPACE_COPY in err, err
    assert tree_digest(runs) == before
    space_copy.write_bytes(good_space)
    journal = runs / "ok" / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-7])  # a torn last record
    before = tree_digest(runs)
    assert cli("resume", runs / "ok") == 2
    assert "truncated" in capsys.readouterr().err
    assert tree_digest(runs) == before


def test_second_driver_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "null", "--trials", "2", "--runs-dir", runs, "--name", "l") == 0
    with RunStore.open(runs / "l", writer=True):
        capsys.readouterr()
        assert cli("resume", runs / "l", "--trials", "2") == 2
        err = capsys.readouterr().err
        assert "in use by another driver" in err and len(err.strip().splitlines()) == 1
    assert cli("resume", runs / "l", "--trials", "2") == 0  # the lock went with its holder


def finished_by_slot(run: Path) -> dict[int, tuple[int, str, tuple | None]]:
    with RunStore.open(run, writer=False) as store:
        records = store.records()
    out = {}
    for r in records:
        if r.state.is_finished() and not (r.fail_reason or "").startswith("interrupted"):
            assert r.slot not in out, f"slot {r.slot} finished twice"
            out[r.slot] = (r.number, r.arch_hash, r.values)
    return out


def spawn_and_kill(tmp_path: Path, address: str, args: list[str], run: Path, after: int) -> None:
    """Start a driver subprocess on the test's Ray, SIGKILL it once `after` slots finished."""
    cmd = [sys.executable, "-m", "gatesearch.cli.app", "run", "--address", address, *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # A guard against a hung driver, not a speed target: on a loaded 2-core machine starting
    # the driver (torch, Ray) and finishing its first slots took over a minute.
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"driver ended early: {proc.stderr.read().decode()}")
            if (run / "study.journal").exists() and len(finished_by_slot(run)) >= after:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("driver made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_then_resume_loses_nothing(tmp_path, capsys, ray_local):
    runs, run = tmp_path / "runs", tmp_path / "runs" / "k"
    args = ["--task", "null", "--budget", "0.3s", "--trials", "10", "--workers", "2",
            "--runs-dir", runs, "--name", "k"]  # fmt: skip
    spawn_and_kill(tmp_path, ray_local, args, run, after=3)
    before = finished_by_slot(run)
    with RunStore.open(run, writer=False) as store:
        running = {r.slot for r in store.records() if r.state.name == "RUNNING"}
    assert running, "the kill should leave trials running"
    # status and ls see that no driver is alive: the run is stopped, its running trials orphans
    capsys.readouterr()
    assert cli("status", run) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "k (stopped)" in flat
    assert f"{len(running)} left running by the stopped driver (resume runs them again)" in flat
    assert cli("ls", runs) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["k", "stopped"]
    assert cli("resume", run) == 0
    after = finished_by_slot(run)
    assert sorted(after) == list(range(10))  # completed == budget, each slot once
    for slot, record in before.items():  # nothing finished before the kill was lost
        assert after[slot] == record
    assert running <= set(after)  # the interrupted slots ran again
    info = status_json(run, capsys)
    assert info["finished"] == 10 and info["interrupted"] == len(running)
    with RunStore.open(run, writer=False) as store:
        numbers = [r.number for r in store.records()]
    assert len(numbers) == len(set(numbers))


def test_ctrl_c_stops_with_status_130_and_resume_finishes(tmp_path, capsys, ray_local):
    """SIGINT (Ctrl-C) in a real driver process: running trials are stored as interrupted,
    the driver says how to go on and exits 130; resume completes the campaign."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "i"
    # 30 trials of 0.5 s on 2 workers: 7 s of work left after the first two, so a loaded
    # machine (a slow journal read below) cannot let the campaign finish before the signal.
    trials = 30
    cmd = [sys.executable, "-m", "gatesearch.cli.app", "run", "--address", ray_local, "--task",
           "null", "--budget", "0.5s", "--trials", str(trials), "--workers", "2",
           "--runs-dir", runs, "--name", "i"]  # fmt: skip
    # A suite started in the background (`cmd &`) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: give the driver the default disposition a terminal has.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "study.journal").exists() and len(finished_by_slot(run)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the driver ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    # Rich wraps long lines: compare with whitespace collapsed.
    assert f"interrupted: continue with `gatesearch resume {run}`" in " ".join(out.split())
    before = finished_by_slot(run)
    assert 2 <= len(before) < trials
    info = status_json(run, capsys)
    assert info["running"] == 0 and info["interrupted"] >= 1
    n = info["interrupted"]
    # Nothing was re-run yet: status must not say it was.
    assert cli("status", run) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"{n} interrupted (0 re-run, {n} to run again on resume)" in said, said
    assert cli("resume", run) == 0
    after = finished_by_slot(run)
    assert sorted(after) == list(range(trials))
    assert all(after[slot] == record for slot, record in before.items())
    capsys.readouterr()
    assert cli("status", run) == 0
    assert f"{n} interrupted ({n} re-run)" in " ".join(capsys.readouterr().out.split())


def test_serial_resume_repeats_an_uninterrupted_campaign(tmp_path, ray_local):
    preset = small_preset(tmp_path, "evolution", PRESETS["evolution"])
    common = ["--task", "null", "--budget", "0.15s", "--trials", "12", "--workers", "1",
              "--strategy", preset, "--runs-dir", tmp_path / "runs", "--seed", "7"]  # fmt: skip
    assert cli("run", *common, "--name", "whole") == 0
    run = tmp_path / "runs" / "cut"
    spawn_and_kill(tmp_path, ray_local, [*common, "--name", "cut"], run, after=6)
    assert cli("resume", run) == 0
    whole = finished_by_slot(tmp_path / "runs" / "whole")
    cut = finished_by_slot(run)
    assert [whole[s][1] for s in range(12)] == [cut[s][1] for s in range(12)]


def test_seed_archs_are_the_first_trials(tmp_path, capsys):
    from gatesearch.arch.space import SPACES_DIR, load_known

    known = [SPACES_DIR / "known" / "llama.toml", SPACES_DIR / "known" / "hawk.toml"]
    args = ["run", "--task", "null", "--trials", "4", "--runs-dir", tmp_path / "runs"]
    for path in known:
        args += ["--seed-arch", path]
    assert cli(*args, "--name", "s", "--strategy", "tpe") == 0
    with RunStore.open(tmp_path / "runs" / "s", writer=False) as store:
        by_slot = {r.slot: r.arch_hash for r in store.records()}
    assert [by_slot[0], by_slot[1]] == [load_known(p).hash for p in known]


def test_the_run_header_shows_epochs_a_trial_on_a_data_file(tmp_path, capsys):
    """Users plan training in epochs of their data: the header says what the budget buys,
    counted in real positions (frames here are zero-padded to 9 steps)."""
    lengths = [3, 9, 5, 4] * 3
    frames = np.zeros((len(lengths), 9, 4), dtype=np.float32)
    for i, n in enumerate(lengths):
        frames[i, :n, i % 4] = 1.0
    data = tmp_path / "padded.npz"
    split = ["train"] * 8 + ["valid"] * 2 + ["test"] * 2
    np.savez(data, frames=frames, lengths=np.array(lengths), split=np.array(split))
    code = cli(
        "run", "--task", "frames", "--task-param", f"path={data}", "--budget", "60tokens",
        "--trials", "1", "--workers", "1", "--strategy", "random",
        "--proxy-option", "batch_size=4", "--runs-dir", tmp_path / "runs", "--name", "f",
    )  # fmt: skip
    text = " ".join(capsys.readouterr().out.split())
    assert code == 0, text
    positions = sum(n - 1 for n in lengths[:8])  # a frame is predicted from the one before
    assert (
        f"data: 8 training sequences, {positions} positions an epoch (padding not counted); "
        f"60tokens ≈ {60 / positions:.3g} epochs a trial"
    ) in text


def test_a_classify_campaign_searches_the_noncausal_space_by_default(tmp_path, capsys, monkeypatch):
    """The user's case: multichannel frames and a label per sequence, no --space. The
    campaign trains architectures of gated_classify.space and its best exports and runs."""
    data = write_classify_npz(tmp_path / "sensors.npz")
    code = cli(
        "run", "--task", "classify", "--task-param", f"path={data}", "--trials", "4",
        "--workers", "2", "--budget", "6steps", "--strategy", small_preset(tmp_path, "random"),
        "--runs-dir", tmp_path / "runs", "--name", "cls",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().out
    run = tmp_path / "runs" / "cls"
    info = status_json(run, capsys)
    assert info["finished"] == 4 and info["failed"] == 0, info["failure_reasons"]
    assert info["metric_name"] == "accuracy"
    config = json.loads((run / "config.json").read_text())
    space = SPACES_DIR / "gated_classify.space"
    assert config["space"] == str(space) and config["causal"] is False
    assert (run / SPACE_COPY).read_text() == space.read_text()
    with RunStore.open(run, writer=False) as store:
        values = [r.values for r in store.records()]
    assert len(values) == 4 and all(v is not None and 0.0 <= v[0] <= 1.0 for v in values)

    assert cli("export", run, "--rank", "1", "-o", tmp_path / "best.py") == 0
    spec = importlib.util.spec_from_file_location("classify_best", tmp_path / "best.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered as an import would: the file's dataclasses (the build context, for some
    # architectures) look their module up there.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with torch.no_grad():
        logits = module.Model()(torch.randn(2, 9, CHANNELS))
    assert logits.shape == (2, 9, N_CLASSES)
