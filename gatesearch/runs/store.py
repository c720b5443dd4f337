"""A campaign's run directory: frozen snapshot, Optuna study, graph artifacts, driver lock.

```
runs/NAME/
  config.json       resolved configuration (frozen at creation)
  space.space       copy of the search space the campaign was started with
  strategy.toml     copy of the strategy preset
  versions.json     Python and package versions, host
  study.journal     the Optuna study (journal file storage), unless config names --storage
  graphs/<hash>.parquet   one architecture graph per evaluated hash
  trials/<number>.json    each evaluated (non-duplicate) trial's whole result: metrics,
                          tuned hyperparameters and their trajectory, or the failure reason
  driver.lock       flock-ed by the one driver writing this run
```

The driver is the only writer. Its journal backend appends each record with one `write` on an
O_APPEND descriptor and fsyncs at most once a second: a killed driver loses nothing the kernel
has seen (the page cache outlives the process), and a power cut loses at most the last second.
Optuna's stock file backend fsyncs every record under a lock file, ~7 ms a record on this
machine, which alone would exceed the per-trial overhead goal. Readers (`status`, `ls`) use
the stock backend and never append. Nothing is pickled; trial records carry JSON user attrs.

Trial user attrs: `slot` (the campaign's logical trial index; per-trial seeds derive from it),
`seed`, `arch_hash`, `choices` (the derivation, path -> value, as a JSON string), and when
finished `metrics` (the scalar metrics and the tuned hyperparameters, as a JSON string; the
trajectory only in trials/), `seq` (completion order), `duplicate_of` (trial number reused) or
`fail_reason`. A one-objective trial's learning curve is its intermediate values (step: weight
steps). Runs written before choices and metrics were strings hold them as objects;
both read the same. Study user attrs: `trials_target` (what `--trials` and `resume --trials`
asked for) and `rejected_proposals` (proposals turned down over --max-params that were never
trials; earlier runs stored each as a failed trial, and still read).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import networkx as nx
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from gatesearch.arch.graph import write_graph
from gatesearch.atomic import WRITE_GUARD, AtomicFolder, is_temp, remove_temps, write_atomic
from gatesearch.errors import GatesearchError
from gatesearch.runs.config import FORMAT, RunConfig, RunConfigError
from gatesearch.runs.outcomes import TrialOutcome, classify

CONFIG = "config.json"
SPACE_COPY = "space.space"
PRESET_COPY = "strategy.toml"
VERSIONS = "versions.json"
JOURNAL = "study.journal"
STATES = "states"  # a staged trial's training state between rungs, by trial number
GRAPHS = "graphs"
TRIALS = "trials"
LOCK = "driver.lock"
TARGET_ATTR = "trials_target"
# Proposals over --max-params that were never trials (see Campaign._reject): a count only.
REJECTED_ATTR = "rejected_proposals"
REPEATED_ATTR = "repeated_proposals"
STATES_PEAK_ATTR = "states_peak_bytes"


class StoreError(GatesearchError):
    """A run directory that cannot be created, opened or locked as asked."""


class RunLockedError(StoreError):
    pass


# ------------------------------------------------------------------------- journal backend


class DriverJournalBackend(JournalFileBackend):
    """Journal file appends for the single driver: one write per batch, fsync at most every
    `fsync_interval` seconds (and on close). Exclusive access comes from the run's flock."""

    def __init__(self, file_path: str, fsync_interval: float = 1.0) -> None:
        super().__init__(file_path)
        self._fd = os.open(file_path, os.O_WRONLY | os.O_APPEND)
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        view = memoryview(data)
        with WRITE_GUARD:  # never cut in half by a watchdog's exit
            while view:
                view = view[os.write(self._fd, view) :]
        now = time.monotonic()
        if now - self._last_sync >= self._fsync_interval:
            os.fsync(self._fd)
            self._last_sync = now

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def shown_url(url: str) -> str:
    """A storage URL fit for a message: its password, if it holds one, masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: shown as given, to show its mistake
        return url


def check_journal(path: Path, in_flight: bool = False) -> None:
    """StoreError unless `path` is a complete journal: present, every line whole JSON. With
    `in_flight` (a driver is at work on the run) an incomplete last line is the driver's
    append caught half-way, not damage: Optuna's reader leaves it for its next read. Only
    the bytes present when the check starts are read: a line appended meanwhile is not
    seen cut."""
    if not path.is_file():
        raise StoreError(f"{path.parent}: study journal {path.name} is missing")
    with open(path, "rb") as f:
        left = os.fstat(f.fileno()).st_size
        for i, line in enumerate(f, start=1):
            if len(line) > left:  # grown since the check began: the part that was there
                line = line[:left]
            left -= len(line)
            if not line.endswith(b"\n"):
                if in_flight and left <= 0:
                    return
                raise StoreError(
                    f"{path}: truncated (line {i} is incomplete); the store is damaged, "
                    "restore it from a copy"
                )
            try:
                json.loads(line)
            except ValueError:
                raise StoreError(f"{path}: corrupt record on line {i}") from None
            if left <= 0:
                break


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's INFO log lines silenced for the block, its verbosity restored after."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


# -------------------------------------------------------------------------------- records


def _pack(doc: dict[str, Any]) -> str:
    """A trial's choices or metrics as one JSON string attr, not a dict. Why: Optuna keeps
    every trial's decoded attrs in the driver's memory, and a dict of ~50 small objects a trial
    was most of the driver's growth (11.4 → 6.9 KB a trial, benchmarks/RESULTS.md)."""
    return json.dumps(doc, separators=(",", ":"))


def _unpack(stored: Any) -> dict[str, Any]:
    """A packed attr, or the dict runs stored before packing (they still resume)."""
    return dict(json.loads(stored)) if isinstance(stored, str) else dict(stored)


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, read back from the study."""

    number: int
    trial_id: int
    state: TrialState
    slot: int
    seed: int
    arch_hash: str
    choices: dict[str, Any]
    values: tuple[float, ...] | None
    metrics: dict[str, Any]
    seq: int | None
    duplicate_of: int | None
    fail_reason: str | None
    # Multi-fidelity: the highest rung scored (its place among the schedule's rungs; None
    # without a schedule), the objective values at each rung its bracket reached, and
    # whether it waits for a promotion.
    rung: int | None = None
    rung_values: tuple[tuple[float, ...], ...] = ()
    paused: bool = False
    seq0: int | None = None  # the order its slot finished (its first rung's result)
    # The study's intermediate values, (step, objective) sorted by step: the learning curve
    # `Campaign` reports for one-objective campaigns (weight steps of its validation points,
    # or its rungs' budgets); empty when none was reported.
    curve: tuple[tuple[int, float], ...] = ()

    @property
    def outcome(self) -> TrialOutcome:
        return classify(self.state, self.fail_reason, self.rung, self.paused)

    @property
    def scored(self) -> tuple[float, ...] | None:
        """The objective values at the highest fidelity the trial reached: its values when
        complete, else those of its highest rung (paused or pruned), else None."""
        if self.values is not None:
            return self.values
        return self.rung_values[-1] if self.rung_values else None

    @classmethod
    def from_frozen(cls, t: optuna.trial.FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        return cls(
            number=t.number,
            trial_id=t._trial_id,
            state=t.state,
            slot=int(a.get("slot", -1)),
            seed=int(a.get("seed", 0)),
            arch_hash=str(a.get("arch_hash", "")),
            choices=_unpack(a.get("choices", {})),
            values=tuple(t.values) if t.values is not None else None,
            metrics=_unpack(a.get("metrics", {})),
            seq=a.get("seq"),
            duplicate_of=a.get("duplicate_of"),
            fail_reason=a.get("fail_reason"),
            rung=a.get("rung"),
            rung_values=tuple(tuple(float(v) for v in r) for r in a.get("rung_values", [])),
            paused=bool(a.get("paused", False)),
            seq0=a.get("seq0"),
            curve=tuple(sorted((int(s), float(v)) for s, v in t.intermediate_values.items())),
        )


# ----------------------------------------------------------------------------------- store


class RunStore:
    """The run directory and its study. Open with `create` (new run) or `open` (existing)."""

    def __init__(self, root: Path, config: RunConfig, writer: bool) -> None:
        self.root = root
        self.config = config
        self.writer = writer
        self._lock_fd: int | None = None
        self._backend: DriverJournalBackend | None = None

    def _attach(self) -> None:
        """Open the storage and load the study (which must exist)."""
        self.storage = self._make_storage()
        name = self.config.name
        try:
            self.study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            raise StoreError(f"{self.root}: the store holds no study named {name!r}") from None
        self.study = optuna.load_study(study_name=name, storage=self.storage)

    # ---- opening
    def _make_storage(self) -> optuna.storages.BaseStorage:
        url = self.config.storage
        if url:
            try:
                return optuna.storages.RDBStorage(url)
            except Exception as exc:  # any driver or URL problem is the user's to fix
                # SQLAlchemy's messages run over several lines (a background link last).
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise StoreError(f"cannot open storage {shown_url(url)}: {first}") from None
        path = str(self.root / JOURNAL)
        if self.writer:
            self._backend = DriverJournalBackend(path)
            return JournalStorage(self._backend)
        return JournalStorage(JournalFileBackend(path))

    @classmethod
    def create(
        cls,
        root: Path,
        config: RunConfig,
        space_file: Path,
        preset_text: str,
        versions: dict[str, str],
    ) -> RunStore:
        """Write the snapshot into a temporary folder, rename it into place, lock it and
        create the study. An existing run is never touched."""
        root = Path(root)
        parent = root.parent
        if root.exists():
            driver = running_driver(root)
            if driver is not None:
                # `resume` would be refused too while the driver holds the lock: point to
                # what works now.
                raise StoreError(
                    f"{root} is {driver}: watch it with `gatesearch status {root}`, "
                    "or choose another --name"
                )
            raise StoreError(
                f"{root} already exists: resume it with `gatesearch resume {root}` "
                "or choose another --name"
            )
        folder = AtomicFolder(root)
        try:
            tmp = folder.create()
        except OSError as exc:
            raise StoreError(f"cannot write runs directory {parent}: {exc.strerror}") from None
        try:
            with folder:
                (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
                shutil.copyfile(space_file, tmp / SPACE_COPY)
                (tmp / PRESET_COPY).write_text(preset_text)
                (tmp / VERSIONS).write_text(json.dumps(versions, indent=2) + "\n")
                (tmp / GRAPHS).mkdir()
                (tmp / LOCK).touch()
                if not config.storage:
                    (tmp / JOURNAL).touch()
        except OSError as exc:
            raise StoreError(f"cannot create {root}: {exc}") from None
        store = cls(root, config, writer=True)
        store.lock()
        try:
            store.storage = store._make_storage()
        except StoreError:  # nothing stored yet: leave no half-made run behind
            store.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
        directions = [optuna.study.StudyDirection[d.upper()] for d in config.directions]
        try:
            with _optuna_quiet():  # its "A new study created" line would sit above our own
                store.study_id = store.storage.create_new_study(directions, config.name)
        except optuna.exceptions.DuplicatedStudyError:
            store.close()
            shutil.rmtree(root, ignore_errors=True)
            raise StoreError(
                f"storage {shown_url(config.storage or '')} already holds a study named "
                f"{config.name!r}"
            ) from None
        store.study = optuna.load_study(study_name=config.name, storage=store.storage)
        store.storage.set_study_user_attr(store.study_id, TARGET_ATTR, config.trials)
        return store

    @classmethod
    def open(cls, root: Path, writer: bool) -> RunStore:
        """Open an existing run, checking it before anything is written. A writer takes the
        driver lock first (RunLockedError when another driver holds it)."""
        root = Path(root)
        config = read_config(root)
        if not config.storage:
            # A reader beside a driver at work may catch it half-way through an append
            # (`status` beside `run`). A writer never passes a cut line: were the lock file's
            # driver dead (on another host, say), its appends would follow the cut line and
            # break the journal for good.
            in_flight = not writer and running_driver(root) is not None
            check_journal(root / JOURNAL, in_flight=in_flight)
        if not (root / SPACE_COPY).is_file() or not (root / PRESET_COPY).is_file():
            raise StoreError(f"{root}: the snapshot is incomplete (space or preset copy missing)")
        store = cls(root, config, writer)
        if writer:
            store.lock()
        try:
            store._attach()
        except StoreError:
            store.close()
            raise
        except Exception as exc:
            store.close()
            raise StoreError(f"{root}: the study cannot be read ({exc})") from None
        if writer:
            # Only the lock's holder writes graphs and trial files: what a killed driver left
            # half-written there is garbage now.
            for folder in (GRAPHS, TRIALS, STATES):
                remove_temps(root / folder)
        return store

    # ---- lock
    def lock(self) -> None:
        path = self.root / LOCK
        if not path.exists():
            raise StoreError(f"{self.root}: lock file {LOCK} is missing; not a run directory?")
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.root} is in use by another driver ({holder}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- target
    @property
    def target(self) -> int:
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return int(attrs.get(TARGET_ATTR, self.config.trials))

    def set_target(self, n: int) -> None:
        self.storage.set_study_user_attr(self.study_id, TARGET_ATTR, n)

    @property
    def rejected_untracked(self) -> int:
        """Proposals turned down over --max-params without a trial of their own."""
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return int(attrs.get(REJECTED_ATTR, 0))

    def set_rejected_untracked(self, n: int) -> None:
        self.storage.set_study_user_attr(self.study_id, REJECTED_ATTR, n)

    @property
    def repeated_untracked(self) -> int:
        """Proposals of an evaluated architecture set aside without a trial of their own."""
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return int(attrs.get(REPEATED_ATTR, 0))

    def set_repeated_untracked(self, n: int) -> None:
        self.storage.set_study_user_attr(self.study_id, REPEATED_ATTR, n)

    # ---- trials
    def records(self) -> list[TrialRecord]:
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        return [TrialRecord.from_frozen(t) for t in trials]

    def start_trial(
        self,
        slot: int,
        seed: int,
        arch_hash: str,
        choices: dict[str, Any] | None,
        trial: optuna.trial.Trial | None,
        params: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> tuple[int, int]:
        """Record a RUNNING trial; returns (trial_id, number). With `trial` (asked through an
        Optuna sampler) the attrs are added to it, else one new trial holds everything, with
        `params` (Optuna parameters and their distributions) when given. `choices` None
        stores none (a proposal turned down: nothing will replay it)."""
        attrs: dict[str, Any] = {"slot": slot, "seed": seed, "arch_hash": arch_hash}
        if choices is not None:
            attrs["choices"] = _pack(choices)
        if trial is not None:
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(tid, key, value)
            return tid, trial.number
        frozen = optuna.trial.FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.now(),
            datetime_complete=None,
            params=params[0] if params else {},
            distributions=params[1] if params else {},
            user_attrs=attrs,
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        tid = self.storage.create_new_trial(self.study_id, template_trial=frozen)
        return tid, self.storage.get_trial_number_from_id(tid)

    def complete_trial(
        self,
        trial_id: int,
        values: list[float],
        metrics: dict[str, Any],
        seq: int,
        duplicate_of: int | None = None,
    ) -> None:
        self.storage.set_trial_user_attr(trial_id, "metrics", _pack(metrics))
        self.storage.set_trial_user_attr(trial_id, "seq", seq)
        if duplicate_of is not None:
            self.storage.set_trial_user_attr(trial_id, "duplicate_of", duplicate_of)
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values)

    def report_curve(self, trial_id: int, points: list[tuple[int, float]]) -> None:
        """A trial's learning curve as Optuna's intermediate values (step: its weight steps),
        which optuna-dashboard draws; before the trial is completed."""
        for step, value in points:
            self.storage.set_trial_intermediate_value(trial_id, step, value)

    def pause_trial(
        self,
        trial_id: int,
        rung: int,
        rung_values: list[list[float]],
        metrics: dict[str, Any],
        seq: int | None,
    ) -> None:
        """A trial scored at `rung` (below the top): it waits, RUNNING, for a promotion. `seq`
        orders results; the first rung's is kept as `seq0` too, the order in which slots
        finished, which a resumed strategy replays (later rungs overwrite `seq`)."""
        self.storage.set_trial_user_attr(trial_id, "rung_values", rung_values)
        self.storage.set_trial_user_attr(trial_id, "metrics", _pack(metrics))
        if seq is not None:
            self.storage.set_trial_user_attr(trial_id, "seq", seq)
            if len(rung_values) == 1:
                self.storage.set_trial_user_attr(trial_id, "seq0", seq)
        self.storage.set_trial_user_attr(trial_id, "rung", rung)
        self.storage.set_trial_user_attr(trial_id, "paused", True)

    def hold_trial(self, trial_id: int) -> None:
        """A promotion that did not train (its driver stopped): it waits at its rung again."""
        self.storage.set_trial_user_attr(trial_id, "paused", True)

    def mark_duplicate(self, trial_id: int, duplicate_of: int) -> None:
        self.storage.set_trial_user_attr(trial_id, "duplicate_of", duplicate_of)

    def state_folders(self) -> list[Path]:
        """The trials' saved training states (see `state_path`), not those being written.

        Why not remove the temporaries here: a worker may be writing one at this moment (a
        stint saving its state), and removing it failed that trial; what killed writers left
        is removed when a driver opens the run (no worker of its can be running then)."""
        folder = self.root / STATES
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and not is_temp(p.name))

    def states_bytes(self) -> int:
        """Bytes the waiting trials' saved states take on disk now. A worker may be
        replacing a folder as it is read (a promoted trial saving its next rung): what
        vanishes meanwhile is not counted."""
        total = 0
        for folder in self.state_folders():
            try:
                files = list(folder.iterdir())
            except FileNotFoundError:
                continue
            for f in files:
                try:
                    total += f.stat().st_size
                except FileNotFoundError:
                    continue
        return total

    @property
    def states_peak(self) -> int:
        """The most bytes the saved states ever took at once in this run."""
        return int(self.storage.get_study_user_attrs(self.study_id).get(STATES_PEAK_ATTR, 0))

    def set_states_peak(self, n: int) -> None:
        self.storage.set_study_user_attr(self.study_id, STATES_PEAK_ATTR, n)

    def continue_trial(self, trial_id: int) -> None:
        """A paused trial promoted: it trains on toward the next rung."""
        self.storage.set_trial_user_attr(trial_id, "paused", False)

    def prune_trial(self, trial_id: int) -> None:
        """A paused trial that will not be promoted: Optuna's PRUNED, its rungs' scores kept."""
        self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)

    def state_path(self, number: int) -> Path:
        """Where a trial's training state waits between rungs (see proxy/stint.py)."""
        return self.root / STATES / str(number)

    def remove_state(self, number: int) -> None:
        shutil.rmtree(self.state_path(number), ignore_errors=True)

    def reject_trial(self, trial_id: int, reason: str, seq: int) -> None:
        """An Optuna sampler's proposal turned down over --max-params, stored PRUNED with
        its reason. Why not FAIL: Optuna's samplers learn nothing from failed trials, and
        TPE then went on proposing models over the limit (3,336 in a row after its 10
        random trials on MQAR 256/64/16 under 200k). Pruned, and infeasible by the
        constraint the proposer sets, TPE ranks it after every scored trial and learns to
        avoid what was turned down."""
        self.storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        self.storage.set_trial_user_attr(trial_id, "seq", seq)
        self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)

    def fail_trial(
        self, trial_id: int, reason: str, seq: int | None, duplicate_of: int | None = None
    ) -> None:
        self.storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if seq is not None:
            self.storage.set_trial_user_attr(trial_id, "seq", seq)
        if duplicate_of is not None:
            self.storage.set_trial_user_attr(trial_id, "duplicate_of", duplicate_of)
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    # ---- per-trial results
    def trial_metrics_path(self, number: int) -> Path:
        return self.root / TRIALS / f"{number}.json"

    def save_trial_metrics(self, number: int, doc: dict[str, Any]) -> None:
        path = self.trial_metrics_path(number)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, (json.dumps(doc, separators=(",", ":")) + "\n").encode())

    def load_trial_metrics(self, number: int) -> dict[str, Any] | None:
        """A trial's stored result document; None when absent (duplicates, older runs)."""
        try:
            return json.loads(self.trial_metrics_path(number).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"{self.trial_metrics_path(number)}: corrupt ({exc})") from None

    # ---- graphs
    def graph_path(self, arch_hash: str) -> Path:
        return self.root / GRAPHS / f"{arch_hash}.parquet"

    def save_graph(self, arch_hash: str, graph: nx.DiGraph) -> None:
        path = self.graph_path(arch_hash)
        if not path.exists():
            write_graph(graph, path)  # itself atomic: a temporary file, then a rename


def compact_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a trial's study record keeps of its metrics: scalars and the tuned
    hyperparameters. Trajectories stay in trials/<number>.json, so the journal (replayed on
    every open) and the driver's memory do not grow with them."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, int | float | str | bool) or value is None:
            out[key] = value
        elif key == "hyperparameters" and isinstance(value, dict):
            out[key] = dict(value)
    return out


def read_config(root: Path) -> RunConfig:
    if not root.exists():
        raise StoreError(f"{root}: no such run directory")
    path = root / CONFIG
    if not path.is_file():
        raise StoreError(f"{root}: not a gatesearch run ({CONFIG} missing)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: corrupt ({exc})") from None
    if isinstance(config, dict) and config.get("kind") == "fidelity":
        raise StoreError(
            f"{root} is a `gatesearch fidelity` result, not a campaign: its table and plot are "
            f"fidelity.json and fidelity.png there"
        )
    if not isinstance(config, dict) or config.get("format") != FORMAT or "name" not in config:
        raise StoreError(f"{path}: not a gatesearch run config of format {FORMAT}")
    try:
        return RunConfig.from_dict(config, str(path))
    except RunConfigError as exc:
        raise StoreError(str(exc)) from None


class RunState(Enum):
    """Whether a campaign's driver is at work, as read from its lock file."""

    RUNNING = "running"
    STOPPED = "stopped"  # no driver, trials left to run: killed, Ctrl-C, or a failure
    FINISHED = "finished"


@dataclass(frozen=True)
class DriverState:
    state: RunState
    host: str | None = None  # the machine a running driver is on, when it is not this one

    def __str__(self) -> str:
        return f"running on {self.host}" if self.host else self.state.value


def running_driver(root: Path) -> DriverState | None:
    """The driver at work on the run in `root`, None when there is none — read without
    touching the lock: a driver writes `pid N on HOST` into driver.lock while it holds it and
    empties the file when it lets go, so a named pid that is alive on this host (or any pid
    on another host) is a running driver; a dead one was killed."""
    try:
        holder = (root / LOCK).read_text().strip()
    except OSError:
        holder = ""
    m = re.fullmatch(r"pid (\d+) on (\S+)", holder)
    if m is None:
        return None
    if m.group(2) != os.uname().nodename:
        return DriverState(RunState.RUNNING, m.group(2))
    try:
        os.kill(int(m.group(1)), 0)
    except PermissionError:  # alive, someone else's
        pass
    except (ProcessLookupError, OverflowError):
        return None
    return DriverState(RunState.RUNNING)


def campaign_state(root: Path, finished: int, target: int) -> DriverState:
    """Running (`running_driver`), finished or stopped."""
    driver = running_driver(root)
    if driver is not None:
        return driver
    return DriverState(RunState.FINISHED if finished >= target else RunState.STOPPED)


def list_runs(runs_dir: Path) -> list[Path]:
    """Run directories directly under `runs_dir` (those with a config.json), by name; hidden
    ones (a run being created, or one whose creation was cut off) left out."""
    if not runs_dir.is_dir():
        raise StoreError(f"{runs_dir}: no such runs directory")
    return sorted(
        p
        for p in runs_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file()
    )
