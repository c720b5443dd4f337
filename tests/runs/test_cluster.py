"""Campaigns on a Ray cluster: a real two-node `ray.cluster_utils.Cluster` (a head and one worker
node, one CPU each) driven through the `gatesearch` console script with `--address`, and a Ray
worker SIGKILLed while it runs a trial.

The engine records no node per trial, so where a trial ran is read from the operating system:
Ray titles a worker process `ray::<function>` while it executes a task (`ray::_run_trial` for a
trial, `ray::IDLE` between tasks), and each node's workers are children of that node's raylet.
A watcher thread samples /proc; a trial of `--task null --budget Ns` sleeps N seconds inside
the Ray task, long enough to be seen, and to be killed mid-trial.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from gatesearch.runs.ranking import summary
from gatesearch.runs.store import RunStore

pytestmark = pytest.mark.slow

GATESEARCH = Path(sys.executable).with_name("gatesearch")  # the console script of this venv
TRIAL_TITLE = b"ray::_run_trial"  # the engine's Ray task function, as Ray titles its worker

# Bounded waits: generous for a loaded 2-core machine, each failing with what it waited for.
NODES_UP_S = 60.0
CAMPAIGN_S = 150.0
FIRST_TRIAL_S = 90.0
SAMPLE_EVERY_S = 0.05

# The killed trial sleeps TRIAL_S seconds; it is killed once its worker has run it KILL_AFTER_S,
# which leaves TRIAL_S - KILL_AFTER_S seconds of margin before it would have finished anyway.
TRIAL_S = 3.0
KILL_AFTER_S = 1.0


@dataclass(frozen=True)
class RayCluster:
    address: str
    raylets: dict[int, str]  # raylet pid -> node name ("head", "worker")


@contextmanager
def private_cluster(workers: int = 1) -> Iterator[tuple[Cluster, RayCluster]]:
    """A head (one CPU) and `workers` one-CPU nodes, seen by no other test or session."""
    # A Cluster writes its address to <RAY_TMPDIR>/ray/ray_current_cluster, where every plain
    # `ray.init()` on this machine (other tests, other sessions) would find it and connect to
    # it while it is up; a private temp dir keeps it to this module. Short, because Ray's unix
    # socket paths under it must stay within 107 bytes.
    tmp = tempfile.mkdtemp(prefix="gsc-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    nodes = None
    try:
        nodes = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        added = [nodes.add_node(num_cpus=1) for _ in range(workers)]
        nodes.wait_for_nodes(timeout=NODES_UP_S)

        def raylet(node) -> int:
            return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

        names = {raylet(nodes.head_node): "head"}
        names.update({raylet(node): "worker" for node in added})
        yield nodes, RayCluster(nodes.address, names)
    finally:
        if nodes is not None:
            nodes.shutdown()  # removes the address file: RAY_TMPDIR must still point at tmp
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with private_cluster() as (_, ray_cluster):
        yield ray_cluster


# ------------------------------------------------------------------------ watching workers


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def trial_workers(raylets: dict[int, str]) -> dict[int, str]:
    """Worker processes of the given raylets running a trial now: pid -> node name."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # ended while we looked
        if not title.startswith(TRIAL_TITLE):
            continue
        node = raylets.get(_ppid(int(entry.name)) or -1)
        if node is not None:
            found[int(entry.name)] = node
    return found


class Watcher:
    """Samples, every SAMPLE_EVERY_S, which workers of the cluster run a trial."""

    def __init__(self, raylets: dict[int, str]) -> None:
        self.raylets = raylets
        self.samples: list[tuple[float, int, str]] = []  # (time.time(), pid, node)
        self.since: dict[int, float] = {}  # pid -> when it was first seen in its current trial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            running = trial_workers(self.raylets)
            self.samples += [(now, pid, node) for pid, node in running.items()]
            # Ray reuses a worker for the next trial: seen idle in between, it starts afresh.
            self.since = {pid: self.since.get(pid, now) for pid in running}
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def nodes(self) -> set[str]:
        return {node for _, _, node in self.samples}

    def wait_for_trial(self, min_age: float, timeout: float) -> int:
        """The pid of a worker that has been running one trial for at least `min_age` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.time()
            for pid, since in list(self.since.items()):
                # Checked again right before the kill: still in that trial, not idle after it.
                if now - since >= min_age and pid in trial_workers(self.raylets):
                    return pid
            time.sleep(SAMPLE_EVERY_S)
        raise AssertionError(f"no worker of the cluster ran a trial within {timeout:g}s")


# ----------------------------------------------------------------------------------- driving


def gatesearch(*args: object, log: Path) -> subprocess.Popen:
    """Start the console script; stdout and stderr go to `log` (no pipe to fill up)."""
    with open(log, "w") as sink:
        return subprocess.Popen(
            [str(GATESEARCH), *map(str, args)], stdout=sink, stderr=subprocess.STDOUT
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float = CAMPAIGN_S) -> None:
    """Wait for a gatesearch command; fail with its output unless it ends well in time."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args[1]} did not end within {timeout:g}s:\n{log.read_text()}")
    assert code == 0, f"{proc.args[1]} exited {code}:\n{log.read_text()}"


def trials_of(run: Path) -> tuple[dict, list[FrozenTrial]]:
    with RunStore.open(run, writer=False) as store:
        return summary(store), store.study.get_trials(deepcopy=False)


def check_stored(run: Path, info: dict, trials: list[FrozenTrial], n: int) -> None:
    """Every slot 0..n-1 finished once; each original has its graph and its result file."""
    assert info["finished"] == n and info["target"] == n and info["running"] == 0
    assert [t.user_attrs["slot"] for t in sorted(trials, key=lambda t: t.user_attrs["slot"])] == (
        list(range(n))
    )
    assert len({t.number for t in trials}) == len(trials)
    for t in trials:
        if t.user_attrs.get("duplicate_of") is None:
            assert (run / "graphs" / f"{t.user_attrs['arch_hash']}.parquet").is_file()
            assert (run / "trials" / f"{t.number}.json").is_file()


# ------------------------------------------------------------------------------------- tests


def test_campaign_runs_on_both_nodes_and_resumes_on_the_cluster(cluster, tmp_path):
    runs, run = tmp_path / "runs", tmp_path / "runs" / "two-nodes"
    # One CPU per node and two 1-CPU trials at once: the second trial must go to the other node.
    with Watcher(cluster.raylets) as watch:
        proc = gatesearch(
            "run", "--address", cluster.address, "--task", "null", "--budget", "1s",
            "--trials", 6, "--workers", 2, "--runs-dir", runs, "--name", run.name,
            log=tmp_path / "run.log",
        )  # fmt: skip
        finish(proc, tmp_path / "run.log")
    info, trials = trials_of(run)
    check_stored(run, info, trials, 6)
    assert info["complete"] == 6 and info["failed"] == 0, info
    assert json.loads((run / "config.json").read_text())["address"] == cluster.address
    assert watch.nodes() == {"head", "worker"}, f"trials ran on {watch.nodes() or 'no node'}"
    before = {t.number: (t.state, t.values, t.user_attrs["arch_hash"]) for t in trials}

    with Watcher(cluster.raylets) as watch:
        proc = gatesearch(
            "resume", run, "--address", cluster.address, "--trials", 2, log=tmp_path / "resume.log"
        )
        finish(proc, tmp_path / "resume.log")
    info, trials = trials_of(run)
    check_stored(run, info, trials, 8)
    assert info["complete"] == 8 and info["failed"] == 0, info
    for t in trials:  # the first six kept as they were
        if t.number in before:
            assert before[t.number] == (t.state, t.values, t.user_attrs["arch_hash"])
    assert watch.nodes(), "the resumed trials did not run on the cluster"


@pytest.mark.parametrize("retries", [1, 0], ids=["retries1-rerun", "retries0-failed"])
def test_worker_killed_mid_trial(cluster, tmp_path, retries):
    """With `retries = 1` (the presets' default) Ray runs the killed trial again in a new
    worker and it completes; with `retries = 0` it is stored as failed with the worker's death
    as its reason. Either way the campaign goes on to its budget."""
    preset = tmp_path / "random.toml"
    preset.write_text(f'strategy = "random"\n[trial]\nretries = {retries}\n')
    runs, run = tmp_path / "runs", tmp_path / "runs" / "kill"
    log = tmp_path / "run.log"
    # One trial at a time, so the trial running at the kill is the one whose worker died.
    with Watcher(cluster.raylets) as watch:
        proc = gatesearch(
            "run", "--address", cluster.address, "--task", "null", "--budget", f"{TRIAL_S}s",
            "--trials", 2, "--workers", 1, "--strategy", preset, "--runs-dir", runs,
            "--name", run.name, log=log,
        )  # fmt: skip
        try:
            victim = watch.wait_for_trial(KILL_AFTER_S, FIRST_TRIAL_S)
        except AssertionError:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{log.read_text()}\nno trial to kill") from None
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        finish(proc, log)
    info, trials = trials_of(run)
    check_stored(run, info, trials, 2)
    killed = [
        t
        for t in trials
        if t.datetime_start.timestamp() <= killed_at <= t.datetime_complete.timestamp()
    ]
    assert len(killed) == 1, f"trials running at the kill: {[t.number for t in killed]}"
    (hit,) = killed
    end = hit.datetime_complete.timestamp()
    # Seen running the trial after the kill, before its result came back: the retry's worker.
    rerun = {p for t, p, _ in watch.samples if killed_at < t < end and p != victim}
    if retries:
        assert hit.state is TrialState.COMPLETE, hit.user_attrs.get("fail_reason")
        assert rerun, "no new worker ran the killed trial again"
        assert info["complete"] == 2 and info["failed"] == 0, info
    else:
        reason = hit.user_attrs.get("fail_reason", "")
        assert hit.state is TrialState.FAIL and "WorkerCrashedError" in reason, reason
        assert not rerun, f"trial re-run with retries = 0 (workers {rerun})"
        assert info["complete"] == 1 and info["failed"] == 1, info
        assert list(info["failure_reasons"]) == [reason]


# --------------------------------------------------- a killed driver's own local Ray (issue 17)


def _title(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = _ppid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# Ray's two idle helper agents outlive a killed head by a minute or two (measured: they exit
# on their own and use no CPU meanwhile); everything that trains or schedules must not.
IDLE_AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")
GONE_S = 30.0


def test_a_killed_drivers_local_ray_and_its_trial_workers_end_with_it(tmp_path):
    """A driver without --address starts its own Ray; SIGKILLed mid-trial, its Ray head, raylet
    and the worker running the trial must not live on to compete with the resumed campaign."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Its own session folder, apart from other tests' Ray; short, for Ray's socket paths.
    ray_tmp = tempfile.mkdtemp(prefix="gs-ray-")
    env["RAY_TMPDIR"] = ray_tmp
    cmd = [GATESEARCH, "run", "--task", "null", "--budget", "20s", "--trials", "2"]
    cmd += ["--workers", "1", "--runs-dir", tmp_path / "runs", "--name", "k"]
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.DEVNULL)
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + FIRST_TRIAL_S
        while not any(_title(p).startswith(TRIAL_TITLE) for p in tree):
            assert proc.poll() is None, "the driver ended before its first trial started"
            assert time.monotonic() < deadline, "no trial worker appeared"
            time.sleep(SAMPLE_EVERY_S)
            tree = _descendants(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    titles = {p: _title(p).split(b"\0")[0] for p in tree}
    deadline = time.monotonic() + GONE_S
    while left := {
        p: t for p, t in titles.items() if _running(p) and not t.startswith(IDLE_AGENTS)
    }:
        assert time.monotonic() < deadline, f"still running {GONE_S:g}s after the kill: {left}"
        time.sleep(0.5)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_lost_head_ends_the_driver_with_one_line_and_resume_completes(tmp_path):
    """The head of the cluster dies mid-campaign (its GCS and raylet SIGKILLed, as `ray stop
    --force` on the head does): the driver says so in one line within seconds — not Ray's own
    log lines after its 60 s reconnection timeout — with the resume command, and a resume on
    the cluster once it is back finishes the campaign to its budget with nothing lost."""
    runs, run = tmp_path / "runs", tmp_path / "runs" / "lost"
    log, n = tmp_path / "run.log", 8  # 3 finish before the kill; the rest after the resume
    with private_cluster(workers=0) as (nodes, ray_cluster):
        proc = gatesearch(
            "run", "--address", ray_cluster.address, "--task", "null", "--budget", "0.4s",
            "--trials", n, "--workers", 1, "--runs-dir", runs, "--name", run.name, log=log,
        )  # fmt: skip
        deadline = time.monotonic() + FIRST_TRIAL_S
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "study.journal").exists() and trials_of(run)[0]["finished"] >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (
            f"the campaign ended before its head was killed:\n{log.read_text()}"
        )
        head = nodes.head_node.all_processes
        for kind in (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET):
            for process in head[kind]:
                os.kill(process.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = proc.wait(timeout=50)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the driver did not end 50 s after its head died:\n{log.read_text()}")
        took = time.monotonic() - killed
    said = log.read_text()
    assert code == 2 and took < 30, (code, took, said)
    last = said.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the Ray cluster at {ray_cluster.address}"), said
    assert f"`gatesearch resume {run} --address {ray_cluster.address}`" in last, said
    assert "Traceback" not in said and "GCS" not in said, said
    info, trials = trials_of(run)
    assert 3 <= info["finished"] < n
    before = {t.number: (t.state, t.values) for t in trials if t.state.is_finished()}

    with private_cluster(workers=0) as (_, back):  # the head again, at a new address
        proc = gatesearch("resume", run, "--address", back.address, log=tmp_path / "resume.log")
        finish(proc, tmp_path / "resume.log")
    info, trials = trials_of(run)
    # The trial the lost driver had running is stored as interrupted; its slot ran again.
    assert info["interrupted"] == 1 and info["interrupted_rerun"] == 1, info
    with RunStore.open(run, writer=False) as store:
        slots = sorted(r.slot for r in store.records() if r.outcome.finished)
    assert slots == list(range(n)) and info["finished"] == n and info["running"] == 0
    assert all(before[t.number] == (t.state, t.values) for t in trials if t.number in before)
