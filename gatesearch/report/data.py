"""Reading a run for the report: its trials and graphs, read without a lock, and their ranking."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from gatesearch.arch.graph import GraphError, read_graph
from gatesearch.errors import GatesearchError
from gatesearch.formats import objective_header, objective_name
from gatesearch.runs.config import Direction, RunConfig
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import RungCounts, joint_ranks, rank_records, rung_counts, tie_key
from gatesearch.runs.store import JOURNAL, RunStore, StoreError, TrialRecord
from gatesearch.tasks.suite import SUITE_TASK, suite_text

if TYPE_CHECKING:
    pass


REPORT_DIR = "report"
DEFAULT_TOP = 10

# A driver appends each batch of journal records with one write; a reader that lands between
# the kernel copying the first and last byte sees a line without its newline. Waiting this
# long, a few times, tells a write in flight from a journal truncated for good.
_JOURNAL_RETRIES = 5
_JOURNAL_WAIT_S = 0.2


class ReportError(GatesearchError):
    """A report that cannot be written as asked (output folder, empty run)."""


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Ranked:
    """A completed, distinct trial in ranking order."""

    rank: int
    record: TrialRecord
    level: int  # Pareto level, 1 = non-dominated; 1 for every trial of a single objective
    joint_rank: int = 0  # the rank it shares when its scores tie with others' (else `rank`)
    tied: bool = False


@dataclass
class RunData:
    """Everything the report shows, read once from the run."""

    root: Path
    config: RunConfig
    target: int
    records: list[TrialRecord]
    graphs: dict[str, nx.DiGraph | None] = field(default_factory=dict)
    rejected: int = 0  # proposals over --max-params, not in `records`
    rungs: RungCounts | None = None  # under a multi-fidelity schedule
    # Why a graph file could not be read, by hash (missing, or not a readable graph).
    graph_errors: dict[str, str] = field(default_factory=dict)

    @property
    def objectives(self) -> list[str]:
        return list(self.config.objectives)

    @property
    def metric_name(self) -> str:
        """The task's metric (`accuracy`): the config's, or for a run whose config predates
        it (`metric`), the one its trials name when they agree."""
        if self.config.metric_name != "metric":
            return self.config.metric_name
        names = {r.metrics.get("metric_name") for r in self.records} - {None}
        named = next(iter(names)) if len(names) == 1 else None
        return named if isinstance(named, str) else "metric"

    @property
    def names(self) -> list[str]:
        """The objectives in words (`accuracy`), for sentences and plot axes."""
        return [objective_name(o, self.metric_name) for o in self.objectives]

    @property
    def labels(self) -> list[str]:
        """Column heads for the objectives, as every table writes them (`accuracy ↑`)."""
        return [
            objective_header(o, self.metric_name, d is Direction.MAXIMIZE)
            for o, d in zip(self.objectives, self.config.directions)
        ]

    @property
    def task(self) -> str:
        """The task as a user writes it: `charlm(seq_len=128)`, or the name alone; a suite
        by its name and members (the page lists each member's params apart)."""
        task = self.config.task
        if task.name == SUITE_TASK:
            return suite_text(task)
        if not task.params:
            return task.name
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in task.params.items())
        return f"{task.name}({args})"

    @property
    def signs(self) -> np.ndarray:
        """+1 for minimised objectives, -1 for maximised: sign * value is always minimised."""
        return np.array(self.config.signs)

    def graph(self, arch_hash: str) -> nx.DiGraph | None:
        """The architecture's graph, or None when its artifact is missing or unreadable."""
        if arch_hash not in self.graphs:
            path = self.root / "graphs" / f"{arch_hash}.parquet"
            try:
                self.graphs[arch_hash] = read_graph(path)
            except GraphError as exc:
                self.graphs[arch_hash] = None
                self.graph_errors[arch_hash] = str(exc)
        return self.graphs[arch_hash]

    def graph_note(self, arch_hash: str) -> str:
        """What tables show in place of an architecture whose graph could not be read."""
        self.graph(arch_hash)
        missing = not (self.root / "graphs" / f"{arch_hash}.parquet").exists()
        return "(graph file missing)" if missing else "(graph file unreadable)"

    def skipped(self) -> str | None:
        """One line on the graphs left out of the report, or None when every one was read."""
        if not self.graph_errors:
            return None
        n = len(self.graph_errors)
        first = next(iter(self.graph_errors.values()))
        return (
            f"{n} graph file{'s' if n > 1 else ''} could not be read; their architectures are "
            f"left out of the choices plot and the drawings (first: {first})"
        )

    def completed(self) -> list[TrialRecord]:
        return [
            r for r in self.records if r.outcome is TrialOutcome.COMPLETE and r.values is not None
        ]

    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.outcome is TrialOutcome.FAILED]

    def evaluated(self) -> list[TrialRecord]:
        """Distinct architectures with a result (complete or failed), first evaluation each."""
        return [
            r for r in self.records if r.outcome.finished and r.duplicate_of is None and r.arch_hash
        ]

    def counts(self) -> dict[str, int]:
        outcomes = Counter(r.outcome for r in self.records)
        return {
            "complete": outcomes[TrialOutcome.COMPLETE],
            "failed": outcomes[TrialOutcome.FAILED],
            "running": outcomes[TrialOutcome.RUNNING],
            "duplicates": sum(1 for r in self.records if r.duplicate_of is not None),
            "interrupted": outcomes[TrialOutcome.INTERRUPTED],
            "rejected": self.rejected,
        }

    def finished_slots(self) -> int:
        return len({r.slot for r in self.records if r.outcome.finished})


def _journal_in_flight(path: Path) -> bool:
    """True when the journal's last line has no newline yet (a driver may be appending)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def load_run(root: Path) -> RunData:
    """Read a run without writing to it or taking its lock; StoreError when it is not one."""
    root = Path(root)
    for attempt in range(_JOURNAL_RETRIES):
        try:
            store = RunStore.open(root, writer=False)
            break
        except StoreError:
            if attempt + 1 == _JOURNAL_RETRIES or not _journal_in_flight(root / JOURNAL):
                raise
            time.sleep(_JOURNAL_WAIT_S)
    try:
        records = store.records()
        # Proposals over --max-params, and repeats of an evaluated architecture, were never
        # trained: counted, not analysed (most are a count only; those an Optuna sampler
        # proposed are failed trials).
        untrained = (TrialOutcome.REJECTED, TrialOutcome.REPEATED)
        kept = [r for r in records if r.outcome not in untrained]
        rejected = store.rejected_untracked + sum(
            r.outcome is TrialOutcome.REJECTED for r in records
        )
        rungs = rung_counts(store.config, kept)
        return RunData(root, store.config, store.target, kept, rejected=rejected, rungs=rungs)
    finally:
        store.close()  # a reader holds no lock; this only drops the storage handle


# ------------------------------------------------------------------------------ ranking


def rank_trials(data: RunData, need: int | None = None) -> list[Ranked]:
    """Completed, distinct trials best first, as `campaign.rank_records` orders them (so the
    report's ranks are the ones `retrain --top` uses, and `export --rank` until a retrain
    exists; then the retrained table's)."""
    rows = [r for r in data.completed() if r.duplicate_of is None]
    placed = rank_records(rows, data.config.directions, need)
    joint = joint_ranks([tie_key(level, record) for level, record in placed])
    return [
        Ranked(k + 1, record, level, joint_rank, tied)
        for k, ((level, record), (joint_rank, tied)) in enumerate(zip(placed, joint))
    ]
