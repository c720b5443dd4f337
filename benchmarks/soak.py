"""Soak: faults and hostile input for as long as you like, with the invariants counted.

    python benchmarks/soak.py --minutes 30 --out runs/soak

Not part of the test suite. On a private two-CPU Ray cluster (`ray.cluster_utils.Cluster`, its
own temporary folder), it repeats, in a random order drawn from `--seed`:

- kill-run / kill-resume: start `gatesearch run` (a new campaign of the `null` task, whose
  trials sleep for their budget) or `gatesearch resume` of an unfinished one, and SIGKILL the
  driver at a random moment — during Ray's start, between trials, while graphs, trial files
  and journal records are being written;
- finish: resume an unfinished campaign to its end, then check it;
- kill-report: SIGKILL `gatesearch report` of a finished campaign at a random moment;
- bad-input: a command with a bad argument or a damaged copy of a run, against a protected
  finished campaign, which must exit 2 with one line and change nothing;
- fuzz: mutated space files, which must load or raise GrammarError, nothing else.

Invariants, checked after every step that can break them and once more at the end (every
campaign resumed to its end first): a finished campaign has exactly its target of finished
trials, none left RUNNING, and every completed non-duplicate trial its graph and its trial
file; no temporary file of a dead writer anywhere in a run folder; the protected campaign's
files byte for byte unchanged; no process of ours left when the soak ends. Each violation is
printed as it is found and counted; the summary prints the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

GATESEARCH = Path(sys.executable).with_name("gatesearch")
TRIALS = 6  # per campaign
BUDGET = "0.4s"  # what a null trial sleeps
TEMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{32}\.tmp$")
PROTECTED = "protected"


@dataclass
class Soak:
    root: Path
    address: str
    rng: random.Random
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    next_run: int = 0

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def violation(self, text: str) -> None:
        self.violations.append(text)
        print(f"VIOLATION: {text}", flush=True)

    def gs(self, *args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GATESEARCH), *map(str, args)], capture_output=True, text=True, timeout=timeout
        )

    def spawn(self, *args: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(GATESEARCH), *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def campaigns(self) -> list[Path]:
        if not self.runs.is_dir():
            return []
        return sorted(p for p in self.runs.iterdir() if p.is_dir() and p.name != PROTECTED)

    def status(self, run: Path) -> dict | None:
        done = self.gs("status", run, "--json")
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)

    def unfinished(self) -> list[Path]:
        out = []
        for run in self.campaigns():
            info = self.status(run)
            if info is not None and info["finished"] < info["target"]:
                out.append(run)
        return out

    # ------------------------------------------------------------------------------ steps

    def kill_driver(self) -> None:
        pending = self.unfinished()
        if pending and self.rng.random() < 0.6:
            run = self.rng.choice(pending)
            proc = self.spawn("resume", run, "--address", self.address)
            self.counts["kill-resume"] += 1
        else:
            name = f"c{self.next_run:03d}"
            self.next_run += 1
            strategy = self.rng.choice(["evolution", "random", "tpe"])
            proc = self.spawn(
                "run", "--task", "null", "--budget", BUDGET, "--trials", TRIALS,
                "--workers", 2, "--strategy", strategy, "--runs-dir", self.runs,
                "--name", name, "--address", self.address,
            )  # fmt: skip
            self.counts["kill-run"] += 1
        time.sleep(self.rng.uniform(0.2, 8.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.counts["sigkill"] += 1
        proc.wait()

    def finish(self) -> None:
        pending = self.unfinished()
        if not pending:
            return
        run = self.rng.choice(pending)
        done = self.gs("resume", run, "--address", self.address)
        self.counts["finish"] += 1
        if done.returncode != 0:
            self.violation(f"resume {run.name} exited {done.returncode}: {done.stderr.strip()}")
        self.check_finished(run)

    def kill_report(self) -> None:
        finished = [r for r in self.campaigns() if r not in self.unfinished()]
        if not finished:
            return
        run = self.rng.choice(finished)
        before = digest(run, skip=("report",))
        proc = self.spawn("report", run)
        time.sleep(self.rng.uniform(0.1, 6.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.counts["sigkill"] += 1
        proc.wait()
        self.counts["kill-report"] += 1
        if digest(run, skip=("report",)) != before:
            self.violation(f"report of {run.name} changed the run outside report/")

    def bad_input(self) -> None:
        protected = self.runs / PROTECTED
        cases = bad_cases(protected, self.root)
        label, args = self.rng.choice(cases)
        before = digest(protected)
        done = self.gs(*args)
        self.counts["bad-input"] += 1
        lines = done.stderr.strip().splitlines()
        if done.returncode != 2 or len(lines) != 1 or "Traceback" in done.stderr:
            self.violation(f"bad input {label}: exit {done.returncode}, stderr {done.stderr!r}")
        if digest(protected) != before:
            self.violation(f"bad input {label} changed the protected run")

    def fuzz(self, n: int = 200) -> None:
        from gatesearch.arch.space import DEFAULT_SPACE
        from gatesearch.grammar import GrammarError, grammar_from_text

        source = DEFAULT_SPACE.read_text(encoding="utf-8")
        tokens = ["(", ")", ",", "|", ":=", "[", "]", "..", "#", "\n", "1e400", "0", "-3",
                  "choice(", "repeat(", "residual(", "mlp", "attention", "width", "let",
                  "max_depth", '"x"', "[1e308]"]  # fmt: skip
        for _ in range(n):
            text = source
            for _ in range(self.rng.randint(1, 6)):
                pos = self.rng.randrange(len(text) + 1)
                if self.rng.random() < 0.5:
                    text = (
                        text[:pos]
                        + self.rng.choice(tokens) * self.rng.choice([1, 1, 50])
                        + text[pos:]
                    )
                else:
                    text = text[:pos] + text[pos + self.rng.randint(1, 12) :]
            try:
                grammar_from_text(text, "fuzz.space")
            except GrammarError:
                pass
            except Exception as exc:  # anything else is a bug
                self.violation(f"fuzz: {type(exc).__name__}: {exc}")
            self.counts["fuzz"] += 1

    # ------------------------------------------------------------------------------ checks

    def check_finished(self, run: Path) -> None:
        from optuna.trial import TrialState

        from gatesearch.runs.ranking import count_finished
        from gatesearch.runs.store import RunStore

        with RunStore.open(run, writer=False) as store:
            records = store.records()
            target = store.target
            finished = count_finished(records)
            if finished != target:
                self.violation(f"{run.name}: {finished} finished, target {target}")
            for r in records:
                if r.state is TrialState.RUNNING:
                    self.violation(f"{run.name}: trial {r.number} left RUNNING")
                if r.state is TrialState.COMPLETE and r.duplicate_of is None:
                    if not store.graph_path(r.arch_hash).is_file():
                        self.violation(f"{run.name}: trial {r.number} has no graph")
                    if not (run / "trials" / f"{r.number}.json").is_file():
                        self.violation(f"{run.name}: trial {r.number} has no trial file")
        self.counts["checked"] += 1

    def check_temps(self) -> None:
        for path in self.runs.rglob(".*.tmp"):
            match = TEMP.match(path.name)
            if match and not alive(int(match.group(1))):
                self.violation(f"stray temporary {path.relative_to(self.runs)}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def digest(root: Path, skip: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in skip:
            continue
        h.update(str(rel).encode())
        if p.is_file() and p.name != "driver.lock":  # the lock's text names its last holder
            h.update(p.read_bytes())
    return h.hexdigest()


def bad_cases(protected: Path, root: Path) -> list[tuple[str, list[object]]]:
    damaged = root / "damaged"
    if not damaged.exists():
        shutil.copytree(protected, damaged)
        journal = damaged / "study.journal"
        journal.write_bytes(journal.read_bytes()[:-9])  # a torn last record
    space = root / "deep.space"
    space.write_text("model := embed " + "residual(" * 300 + "rmsnorm" + ")" * 300 + " head\n")
    return [
        ("resume --trials 0", ["resume", protected, "--trials", "0"]),
        ("run over an existing name", ["run", "--task", "null", "--runs-dir", protected.parent,
                                       "--name", PROTECTED]),
        ("report --top 0", ["report", protected, "--top", "0"]),
        ("export --rank 999", ["export", protected, "--rank", "999", "-o", root / "x.py"]),
        ("retrain bad budget", ["retrain", protected, "--budget", "3 weeks"]),
        ("status of a torn journal", ["status", damaged]),
        ("resume of a torn journal", ["resume", damaged]),
        ("deep space", ["space", "validate", space]),
        ("negative timeout", ["run", "--task", "null", "--timeout", "-1", "--runs-dir",
                              root / "never"]),
        ("budget overflow", ["run", "--task", "null", "--budget", "1e999steps", "--runs-dir",
                             root / "never"]),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="[default: a temporary folder]")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="gatesearch-soak-"))
    root.mkdir(parents=True, exist_ok=True)

    from ray.cluster_utils import Cluster

    ray_tmp = tempfile.mkdtemp(prefix="gs-soak-")  # short: Ray's socket paths
    os.environ["RAY_TMPDIR"] = ray_tmp
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    started = time.monotonic()
    soak = Soak(root, cluster.address, random.Random(args.seed))
    try:
        made = soak.gs("run", "--task", "null", "--budget", BUDGET, "--trials", TRIALS,
                       "--workers", 2, "--runs-dir", soak.runs, "--name", PROTECTED,
                       "--address", cluster.address)  # fmt: skip
        if made.returncode != 0:
            raise SystemExit(f"could not make the protected run: {made.stderr}")
        protected_digest = digest(soak.runs / PROTECTED)
        steps = [soak.kill_driver] * 5 + [soak.finish] * 2 + [soak.kill_report, soak.bad_input]
        steps += [soak.fuzz]
        end = started + args.minutes * 60
        while time.monotonic() < end:
            soak.rng.choice(steps)()
            soak.check_temps()
        # The end: every campaign resumed to its end and checked.
        for run in soak.unfinished():
            done = soak.gs("resume", run, "--address", cluster.address)
            if done.returncode != 0:
                soak.violation(f"final resume of {run.name}: {done.stderr.strip()}")
        for run in soak.campaigns():
            soak.check_finished(run)
        soak.check_temps()
        if digest(soak.runs / PROTECTED) != protected_digest:
            soak.violation("the protected run changed")
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    ours = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == os.getpid()]
    if ours:
        soak.violation(f"processes left: {ours}")
    minutes = (time.monotonic() - started) / 60
    print(
        f"soak: {minutes:.1f} min, seed {args.seed}, {len(soak.campaigns())} campaigns, in {root}"
    )
    for key, n in sorted(soak.counts.items()):
        print(f"  {key:14s} {n}")
    print(f"  violations     {len(soak.violations)}")
    raise SystemExit(1 if soak.violations else 0)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


if __name__ == "__main__":
    main()
