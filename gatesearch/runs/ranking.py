"""Ranking a run's trials (Pareto levels for several objectives), its leaderboard and the
counts `status` shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import GraphError, read_graph
from gatesearch.evaluate import objective_label, objective_value
from gatesearch.runs.config import Direction, RunConfig
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.store import (
    RunState,
    RunStore,
    TrialRecord,
    campaign_state,
)
from gatesearch.tasks import task_label
from gatesearch.tasks.suite import member_objective, suite_members

# ------------------------------------------------------------------------------- summaries


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `points` (n, d) that no other row dominates (minimising).

    Rows are visited in lexicographic order; a row can only be dominated by one visited before
    it, and if it is, also by one already on the front (domination is transitive), so each row
    is compared with the front so far: O(n * front) rather than O(n²).
    """
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort(points.T[::-1])
    front = np.empty((0, points.shape[1]))
    for i in order:
        p = points[i]
        dominated = np.any(np.all(front <= p, axis=1) & np.any(front < p, axis=1))
        if not dominated:
            mask[i] = True
            front = np.vstack([front, p])
    return mask


_SCORED = (
    TrialOutcome.COMPLETE,
    TrialOutcome.PAUSED,
    TrialOutcome.CONTINUING,
    TrialOutcome.PRUNED,
)


def rank_records(
    records: list[TrialRecord], directions: Sequence[str], need: int | None = None
) -> list[tuple[int, TrialRecord]]:
    """(Pareto level, record) of scored, non-duplicate trials, best first.

    One objective: by its value in its direction. Several: Pareto levels are peeled (level 1
    is the front) until `need` trials are placed (all when None), the rest share the next level;
    within a level, by the objectives in order, then the trial number. Under a multi-fidelity
    schedule trials rank by the highest rung they reached first (its scores there), then as
    above among the trials of one rung: a score after less training is no match for one after
    more.
    """
    rows = [
        r
        for r in records
        if r.outcome in _SCORED and r.duplicate_of is None and r.scored is not None
    ]
    if not rows:
        return []
    signs = np.array([Direction(d).sign for d in directions])
    out: list[tuple[tuple[Any, ...], int, TrialRecord]] = []
    for rung in sorted({r.rung or 0 for r in rows}, reverse=True):
        group = [r for r in rows if (r.rung or 0) == rung]
        points = np.array([r.scored for r in group], dtype=float) * signs  # (n, d), minimised
        levels = _levels(points, need)
        for i, r in enumerate(group):
            out.append(((-rung, int(levels[i]), *points[i], r.number), int(levels[i]), r))
    out.sort(key=lambda x: x[0])
    return [(level, r) for _, level, r in out]


def _levels(points: np.ndarray, need: int | None) -> np.ndarray:
    """Pareto levels of minimised `points` (n, d): all 1 for one objective."""
    levels = np.ones(len(points), dtype=int)
    if points.shape[1] > 1:
        left = np.arange(len(points))
        level, placed = 1, 0
        while len(left) and (need is None or placed < need):
            on_front = pareto_mask(points[left])
            levels[left[on_front]] = level
            placed += int(on_front.sum())
            left = left[~on_front]
            level += 1
        levels[left] = level
    return levels


def ranked(store: RunStore) -> list[TrialRecord]:
    """Completed, non-duplicate trials, best first (see `rank_records`)."""
    return [r for _, r in rank_records(store.records(), store.config.directions)]


def tie_key(level: int, record: TrialRecord) -> tuple[Any, ...]:
    """What two ranked trials must share to tie: the rung they were scored at, their Pareto
    level and every scored value. Only the trial number then orders them, and that says
    nothing about the architectures."""
    return (record.rung or 0, level, *(record.scored or ()))


def joint_ranks(keys: Sequence[Hashable]) -> list[tuple[int, bool]]:
    """For keys in ranking order: (the rank of the first with the same key, whether it has
    company) — the rank a tie shares (`=2` for the second and third of [a, b, b]) and
    whether to mark it."""
    sizes = Counter(keys)
    first: dict[Hashable, int] = {}
    return [
        (first.setdefault(key, position), sizes[key] > 1)
        for position, key in enumerate(keys, start=1)
    ]


def leaderboard(store: RunStore, top: int = 5) -> list[dict[str, Any]]:
    """The best completed, non-duplicate trials by the first objective (then the others).

    `rank` is the trial's place in the order (what `export --rank` and `retrain --top`
    count); `joint_rank` and `tied` say when its scores equal another's (`=2`), which small
    validation splits make common. `arch` is the complete one-line description, `arch_short`
    the one a terminal's column shows."""
    placed = rank_records(store.records(), store.config.directions)
    joint = joint_ranks([tie_key(level, r) for level, r in placed])
    members = suite_members(store.config.task)
    out = []
    for rank, ((_, r), (joint_rank, tied)) in enumerate(zip(placed[:top], joint), start=1):
        path = store.graph_path(r.arch_hash)
        try:
            g = read_graph(path)
            arch, short = describe(g, complete=True), describe(g)
        except GraphError:
            arch = short = "(graph file unreadable)" if path.exists() else "(graph file missing)"
        out.append(
            {
                "rank": rank,
                "joint_rank": joint_rank,
                "tied": tied,
                "number": r.number,
                "slot": r.slot,
                "values": dict(zip(store.config.objectives, r.scored or ())),
                "rung": r.rung,
                "metric": r.metrics.get("metric"),
                "loss": r.metrics.get("loss"),
                "params": r.metrics.get("params"),
                "state": objective_value(r.metrics, "state"),  # None: not a causal model
                # A suite's member scores by member name ({} for one task).
                "members": {m: objective_value(r.metrics, member_objective(m)) for m in members},
                "arch_hash": r.arch_hash,
                "arch": arch,
                "arch_short": short,
            }
        )
    return out


def count_finished(records: list[TrialRecord]) -> int:
    """How many of the campaign's slots are done: completed or failed for good (not
    interrupted, which runs again, nor turned down over --max-params, which takes no slot)."""
    return len({r.slot for r in records if r.outcome.finished})


def summary(store: RunStore) -> dict[str, Any]:
    """Counts by state, best trial, failure reasons: what `status` shows."""
    records = store.records()
    outcomes = Counter(r.outcome for r in records)
    failures = Counter(r.fail_reason for r in records if r.outcome is TrialOutcome.FAILED)
    board = leaderboard(store, top=5)
    config = store.config
    spec = config.task
    finished = count_finished(records)
    driver = campaign_state(store.root, finished, store.target)
    metric_name = config.metric_name
    return {
        "name": config.name,
        "path": str(store.root),
        "strategy": config.strategy,
        "task": spec.name,
        "task_label": task_label(spec),
        "task_spec": spec.to_dict(),
        "metric_name": metric_name,
        "higher_is_better": config.higher_is_better,
        "budget": str(config.budget),
        "objectives": list(config.objectives),
        "directions": [str(d) for d in config.directions],
        "labels": [objective_label(o, metric_name) for o in config.objectives],
        "target": store.target,
        "finished": finished,
        "state": str(driver),
        "driver_alive": driver.state is RunState.RUNNING,
        "complete": outcomes[TrialOutcome.COMPLETE],
        "failed": outcomes[TrialOutcome.FAILED],
        "interrupted": outcomes[TrialOutcome.INTERRUPTED],
        # Of those, how many slots a later trial already took up again (the rest run on resume).
        "interrupted_rerun": _rerun(records),
        # Optuna samplers' proposals over the limit are stored as trials; the others counted.
        "rejected": store.rejected_untracked + outcomes[TrialOutcome.REJECTED],
        "max_params": config.max_params,
        # Proposals of an architecture already evaluated, asked again (no trial slot).
        "repeated": store.repeated_untracked + outcomes[TrialOutcome.REPEATED],
        "running": outcomes[TrialOutcome.RUNNING] + outcomes[TrialOutcome.CONTINUING],
        **(_rungs_summary(store, records) if config.schedule.staged else {}),
        "duplicates": sum(1 for r in records if r.duplicate_of is not None),
        "failure_reasons": dict(failures.most_common()),
        "best": board[0] if board else None,
        "leaderboard": board,
    }


def _rerun(records: list[TrialRecord]) -> int:
    """Interrupted trials whose slot a later trial has taken up again."""
    later = {r.slot for r in records if r.outcome is not TrialOutcome.INTERRUPTED}
    return sum(1 for r in records if r.outcome is TrialOutcome.INTERRUPTED and r.slot in later)


@dataclass(frozen=True)
class RungCounts:
    """A multi-fidelity campaign's rungs as `status` and `report` show them."""

    rungs: tuple[str, ...]  # each rung's budget, lowest first
    reached: tuple[int, ...]  # distinct trials that were scored at each rung
    promotions: int  # stints that continued a trial to a higher rung
    paused: int  # trials waiting at a rung for a promotion
    pruned: int  # trials stopped below the top for good

    def line(self) -> str:
        reached = " · ".join(f"{b} {n}" for b, n in zip(self.rungs, self.reached))
        return (
            f"rungs reached: {reached}; {self.promotions} promotions, {self.paused} waiting "
            f"for one, {self.pruned} pruned"
        )


def rung_counts(config: RunConfig, records: list[TrialRecord]) -> RungCounts | None:
    """The rungs of a campaign under a schedule (None without one), duplicates aside."""
    if not config.schedule.staged:
        return None
    rungs = config.schedule.rungs(config.budget)
    reached = [0] * len(rungs)
    promotions = 0
    for r in records:
        if r.duplicate_of is None and r.rung is not None:
            first = r.rung - len(r.rung_values) + 1  # Hyperband's brackets start higher
            for k in range(first, r.rung + 1):
                reached[k] += 1
            promotions += len(r.rung_values) - 1
    outcomes = Counter(r.outcome for r in records)
    return RungCounts(
        rungs=tuple(str(b) for b in rungs),
        reached=tuple(reached),
        promotions=promotions,
        paused=outcomes[TrialOutcome.PAUSED],
        pruned=outcomes[TrialOutcome.PRUNED],
    )


def _rungs_summary(store: RunStore, records: list[TrialRecord]) -> dict[str, Any]:
    """Under a multi-fidelity schedule: the rungs, how many trials reached each (duplicates
    aside), the promotions, how many wait for one and how many were pruned."""
    counts = rung_counts(store.config, records)
    assert counts is not None  # called for staged campaigns only
    return {
        "schedule": store.config.schedule.to_dict(),
        "rungs": list(counts.rungs),
        "reached": list(counts.reached),
        "promotions": counts.promotions,
        "paused": counts.paused,
        "pruned": counts.pruned,
        "rungs_line": counts.line(),  # as status and report print it
        "states_peak_bytes": store.states_peak,
    }
