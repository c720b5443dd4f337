"""`gatesearch report runs/NAME`: what a campaign found, in the terminal and as files to share.

The terminal gets the leaderboard (rank, objectives, parameters, FLOPs per token, the
architecture in one line), the trial counts by state and the failure reasons. The report
folder (runs/NAME/report/ unless `--out`) gets:

```
best_so_far.png        best value against trial number, one panel per objective
pareto.png             multi-objective runs: every trial in grey, the non-dominated front
choices.png            share of trials using each gating choice: top-k against all
failures.png           failure reasons (only when some trial failed)
best_architecture.png  the best graph, a vertical chain with its skip edges
trials.csv             one row per trial: state, objectives, metrics, hash, failure reason
index.html             one self-contained page: config, leaderboard, the plots, the best tree
```

The run is only read: the study through Optuna's stock journal reader (no lock, no append),
the graphs from their Parquet files. The driver's flock is never taken, so a report can be
drawn while the campaign runs; RUNNING trials are counted and otherwise left out. Every file
is written to a temporary name and renamed into place, so a reader never sees half a file.

Ranking: single-objective runs rank completed trials by the objective. Multi-objective runs
rank by Pareto level (1 = not dominated by any trial, 2 = dominated only by level 1, ...), then
by the objectives in their order. Duplicates (an architecture evaluated before) are not ranked
twice.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import networkx as nx
import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatesearch.atomic import remove_temps, write_atomic
from gatesearch.campaign import rank_records
from gatesearch.errors import GatesearchError
from gatesearch.graph import INPUT_OP, OUTPUT_OP, GraphError, describe, read_graph, tree_lines
from gatesearch.registry import REGISTRY, PrimitiveSpec, Role
from gatesearch.retrain import read_retrained, sort_retrained
from gatesearch.runs.config import RunConfig
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.store import JOURNAL, RunState, RunStore, StoreError, TrialRecord, campaign_state

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_DIR = "report"
DEFAULT_TOP = 10

# A driver appends each batch of journal records with one write; a reader that lands between
# the kernel copying the first and last byte sees a line without its newline. Waiting this
# long, a few times, tells a write in flight from a journal truncated for good.
_JOURNAL_RETRIES = 5
_JOURNAL_WAIT_S = 0.2

# Colours: one accent for "the answer" (best, top-k, front), grey for the rest.
_ACCENT = "#d1495b"
_ACCENT_2 = "#2e6f95"
_GREY = "#9aa0a6"
_FAIL = "#c0392b"
_ROLE_COLOURS: dict[Role, str] = {
    Role.STEM: "#e8e8e8",
    Role.HEAD: "#e8e8e8",
    Role.NORM: "#f3f0e0",
    Role.MIXER: "#cfe3f3",
    Role.CHANNEL: "#f8dcc2",
    Role.COMBINE: "#d5ecd4",
}
_DPI = 110


class ReportError(GatesearchError):
    """A report that cannot be written as asked (output folder, empty run)."""


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Ranked:
    """A completed, distinct trial in ranking order."""

    rank: int
    record: TrialRecord
    level: int  # Pareto level, 1 = non-dominated; 1 for every trial of a single objective


@dataclass
class RunData:
    """Everything the report shows, read once from the run."""

    root: Path
    config: RunConfig
    target: int
    records: list[TrialRecord]
    graphs: dict[str, nx.DiGraph | None] = field(default_factory=dict)
    rejected: int = 0  # proposals over --max-params, not in `records`
    # Why a graph file could not be read, by hash (missing, or not a readable graph).
    graph_errors: dict[str, str] = field(default_factory=dict)

    @property
    def objectives(self) -> list[str]:
        return list(self.config.objectives)

    @property
    def labels(self) -> list[str]:
        """Column heads for the objectives: `metric` named after the task's metric when the
        trials say which it is (`metric (accuracy)`)."""
        names = {r.metrics.get("metric_name") for r in self.records} - {None}
        named = next(iter(names)) if len(names) == 1 else None
        return [
            f"{o} ({named})" if o == "metric" and isinstance(named, str) and named != o else o
            for o in self.objectives
        ]

    @property
    def task(self) -> str:
        """The task as a user writes it: `charlm(seq_len=128)`, or the name alone."""
        task = self.config.task
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
        # Proposals over --max-params were never trained: counted, not analysed (most are
        # a count only; those an Optuna sampler proposed are failed trials).
        kept = [r for r in records if r.outcome is not TrialOutcome.REJECTED]
        rejected = store.rejected_untracked + len(records) - len(kept)
        return RunData(root, store.config, store.target, kept, rejected=rejected)
    finally:
        store.close()  # a reader holds no lock; this only drops the storage handle


# ------------------------------------------------------------------------------ ranking


def rank_trials(data: RunData, need: int | None = None) -> list[Ranked]:
    """Completed, distinct trials best first, as `campaign.rank_records` orders them (so the
    report's ranks are the ones `retrain --top` uses, and `export --rank` until a retrain
    exists; then the retrained table's)."""
    rows = [r for r in data.completed() if r.duplicate_of is None]
    placed = rank_records(rows, data.config.directions, need)
    return [Ranked(k + 1, record, level) for k, (level, record) in enumerate(placed)]


# ------------------------------------------------------------------------- gating choices


def _nodes_with_nested(g: nx.DiGraph) -> Iterator[tuple[str, dict[str, Any]]]:
    """(op, params) of every node, and of primitives nested in params (a mixture's expert)."""

    def nested(op: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        yield op, params
        for value in params.values():
            if isinstance(value, dict) and isinstance(value.get("op"), str):
                yield from nested(value["op"], value.get("params") or {})

    for _, attrs in g.nodes(data=True):
        if attrs["op"] not in (INPUT_OP, OUTPUT_OP):
            yield from nested(attrs["op"], attrs["params"])


def _active_params(spec: PrimitiveSpec, params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) of each parameter that matters here: written values, else the default;
    a parameter whose `active` says it plays no part (a gate activation without a gate) is
    left out, so it does not count as a choice."""
    for p in spec.params:
        if p.active is not None and not p.active(params):
            continue
        value = params.get(p.name, p.default)
        if value is not None:
            yield p.name, value


Picker = Callable[[str, PrimitiveSpec, dict[str, Any]], list[str]]


def _by_param(op: str, param: str) -> Picker:
    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        if node_op != op:
            return []
        return [str(v) for name, v in _active_params(spec, params) if name == param]

    return pick


def _by_role(role: Role) -> Picker:
    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        return [node_op] if spec.role is role else []

    return pick


def _wrapper_of(combine_op: str) -> str:
    """The wrapper a combine node closes (add closes residual), from the registry."""
    for spec in REGISTRY.specs():
        if spec.role is Role.WRAPPER and spec.combine == combine_op:
            return spec.name
    return combine_op


def _skip_path(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
    return [_wrapper_of(node_op)] if spec.role is Role.COMBINE else []


def _by_ref(role: Role) -> Picker:
    """Values of every parameter that names a primitive of `role` (act=, prune=)."""

    def pick(node_op: str, spec: PrimitiveSpec, params: dict[str, Any]) -> list[str]:
        return [
            str(v)
            for name, v in _active_params(spec, params)
            if (p := spec.param(name)) is not None and p.ref is role and not p.slot
        ]

    return pick


@dataclass(frozen=True)
class ChoiceFamily:
    """One panel of the choices plot: a family of gating decisions read off the graph."""

    title: str
    pick: Picker


FAMILIES: tuple[ChoiceFamily, ...] = (
    ChoiceFamily("attention gate position", _by_param("attention", "gate")),
    ChoiceFamily("sequence mixer / recurrence", _by_role(Role.MIXER)),
    ChoiceFamily("GLU variant", _by_param("glu", "variant")),
    ChoiceFamily("MoE router", _by_param("moe", "router")),
    ChoiceFamily("activation", _by_ref(Role.ACTIVATION)),
    ChoiceFamily("pruning gate", _by_ref(Role.PRUNING_GATE)),
    ChoiceFamily("skip path", _skip_path),
)


def choices_of(g: nx.DiGraph) -> dict[str, Counter[str]]:
    """Family title -> how many times this architecture takes each value (one count per
    attention layer for the gate position, per `act=` parameter for activations, ...)."""
    found: dict[str, Counter[str]] = {f.title: Counter() for f in FAMILIES}
    for op, params in _nodes_with_nested(g):
        spec = REGISTRY.get(op)
        if spec is None:
            continue
        for family in FAMILIES:
            found[family.title].update(family.pick(op, spec, params))
    return found


@dataclass(frozen=True)
class FamilyShares:
    """One family's values with their share in the top-k and in all architectures.

    A share is the fraction of the family's uses in an architecture that take the value
    (3 attention layers, one gated g1: 1/3), averaged over the architectures that use the
    family at all, so a deep model counts as much as a shallow one and the shares of a group
    add up to 1."""

    top_with: int  # top-k architectures that use the family
    all_with: int  # evaluated architectures that use the family
    rows: list[tuple[str, float, float]]  # (value, top share, all share), top share first


@dataclass(frozen=True)
class ChoiceShares:
    top_n: int
    all_n: int
    families: dict[str, FamilyShares]


def _mean_shares(
    graphs: list[dict[str, Counter[str]]], family: str
) -> tuple[int, defaultdict[str, float]]:
    total: defaultdict[str, float] = defaultdict(float)
    users = 0
    for choices in graphs:
        counts = choices[family]
        n = sum(counts.values())
        if n:
            users += 1
            for value, k in counts.items():
                total[value] += k / n
    return users, defaultdict(float, {v: t / users for v, t in total.items()} if users else {})


def choice_shares(data: RunData, ranked: list[Ranked], top: int) -> ChoiceShares:
    everyone = [
        choices_of(g) for r in data.evaluated() if (g := data.graph(r.arch_hash)) is not None
    ]
    best = [
        choices_of(g) for x in ranked[:top] if (g := data.graph(x.record.arch_hash)) is not None
    ]
    families: dict[str, FamilyShares] = {}
    for family in FAMILIES:
        all_with, all_share = _mean_shares(everyone, family.title)
        top_with, top_share = _mean_shares(best, family.title)
        values = set(all_share) | set(top_share)
        if not values:
            continue  # this space never offers the choice: no empty panel
        rows = [(v, top_share[v], all_share[v]) for v in values]
        rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
        families[family.title] = FamilyShares(top_with, all_with, rows)
    return ChoiceShares(len(best), len(everyone), families)


# ------------------------------------------------------------------------- failures


_HEX = re.compile(r"\b[0-9a-f]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(\.\d+)?(e[-+]?\d+)?")


def failure_kind(reason: str) -> str:
    """A failure reason with its specifics (hashes, numbers) blanked, so that 'out of memory
    at 2.00 GiB' and 'at 3.50 GiB' count as one kind."""
    text = _HEX.sub("…", reason.strip())
    return _NUMBER.sub("N", text)


def failure_kinds(data: RunData) -> list[tuple[str, int]]:
    counts = Counter(failure_kind(r.fail_reason or "failed") for r in data.failed())
    return counts.most_common()


# ------------------------------------------------------------------------------ labels


def _fmt(value: Any) -> str:
    """An objective or metric: 4 significant digits, SI prefixes for counts (params, FLOPs);
    `-` for anything that is not a finite number (absent, or a task's non-scalar metric)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    if abs(value) >= 1e4:
        return _si(value)
    return f"{value:.4g}"


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def _value_text(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("op"), str):
        return node_label(value["op"], value.get("params") or {}, max_params=2)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def node_label(op: str, params: dict[str, Any], max_params: int = 4) -> str:
    """`op(k=v, ...)` with the parameters that differ from the registry defaults."""
    spec = REGISTRY.get(op)
    shown = []
    for name, value in params.items():
        p = spec.param(name) if spec is not None else None
        if p is not None and p.active is not None and not p.active(params):
            continue
        if p is None or p.default != value or type(p.default) is not type(value):
            shown.append(f"{name}={_value_text(value)}")
    if spec is not None and spec.role is Role.COMBINE:
        op = f"{op}  [{_wrapper_of(op)}]"
    if not shown:
        return op
    if len(shown) > max_params:
        shown = [*shown[:max_params], "…"]
    return f"{op}({', '.join(shown)})"


def _width(g: nx.DiGraph | None) -> int | None:
    if g is None:
        return None
    for _, attrs in g.nodes(data=True):
        if attrs["op"] == INPUT_OP:
            d = attrs["params"].get("d_model")
            return int(d) if isinstance(d, int | float) else None
    return None


# Size metrics shown beside the objectives, unless one already is an objective.
_SIZE_METRICS = (("params", "params"), ("flops", "FLOPs/token"))


def _size_columns(objectives: list[str]) -> list[tuple[str, str]]:
    return [(key, label) for key, label in _SIZE_METRICS if key not in objectives]


@dataclass(frozen=True)
class BoardRow:
    rank: int
    number: int
    level: int
    values: tuple[float, ...]
    metrics: dict[str, float]
    width: int | None
    arch_hash: str
    arch: str


def board(data: RunData, ranked: list[Ranked], top: int) -> list[BoardRow]:
    rows = []
    for x in ranked[:top]:
        r = x.record
        g = data.graph(r.arch_hash)
        rows.append(
            BoardRow(
                rank=x.rank,
                number=r.number,
                level=x.level,
                values=tuple(r.values or ()),
                metrics=dict(r.metrics),
                width=_width(g),
                arch_hash=r.arch_hash,
                arch=describe(g) if g is not None else data.graph_note(r.arch_hash),
            )
        )
    return rows


# ------------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # A bare Figure with its own Agg canvas: no pyplot state, no display backend.
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software tag: the page then holds no URL at all, not even inside a base64 image.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _scale_axis(ax: Any, axis: str, values: np.ndarray) -> None:
    """Log scale for positive values spanning more than two decades, and 250k rather than
    2.5e5 on the ticks of counts (params, FLOPs)."""
    from matplotlib.ticker import EngFormatter

    if not len(values):
        return
    if values.min() > 0 and values.max() / values.min() > 100:
        getattr(ax, f"set_{axis}scale")("log")
    if np.abs(values).max() >= 1e4:
        getattr(ax, f"{axis}axis").set_major_formatter(EngFormatter(sep=""))


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _plain(text: str) -> str:
    """Text from the run, drawn as written: a `$` would otherwise start matplotlib math."""
    return text.replace("$", r"\$")


def plot_best_so_far(data: RunData) -> bytes | None:
    done = sorted(data.completed(), key=lambda r: r.number)
    if not done:
        return None
    objectives = data.labels
    fig = _figure(9, 2.2 + 2.0 * len(objectives))
    axes = fig.subplots(len(objectives), 1, sharex=True, squeeze=False)[:, 0]
    numbers = np.array([r.number for r in done])
    values = np.array([r.values for r in done], dtype=float)  # (n, d)
    fails = [r.number for r in data.failed()]
    for j, (ax, name) in enumerate(zip(axes, objectives)):
        sign = data.signs[j]
        best = sign * np.minimum.accumulate(sign * values[:, j])
        ax.scatter(numbers, values[:, j], s=14, color=_GREY, alpha=0.7, label="trial", zorder=2)
        ax.step(numbers, best, where="post", color=_ACCENT, lw=2, label="best so far", zorder=3)
        if fails:
            # A rug of failures along the bottom edge: where in the campaign they happened.
            ax.plot(
                fails,
                np.zeros(len(fails)),
                "|",
                color=_FAIL,
                ms=10,
                mew=1.5,
                transform=ax.get_xaxis_transform(),
                label="failed",
                zorder=4,
            )
        _scale_axis(ax, "y", values[:, j])
        direction = "lower" if sign > 0 else "higher"
        ax.set_ylabel(f"{name} ({direction} is better)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    axes[-1].set_xlabel("trial number")
    axes[0].set_title(
        f"best so far: {objectives[0]} = {_fmt(_best_value(data, 0))} after {len(done)} "
        "completed trials",
        fontsize=11,
    )
    return _png(fig)


def _best_value(data: RunData, j: int) -> float | None:
    done = data.completed()
    if not done:
        return None
    sign = data.signs[j]
    return float(sign * min(sign * r.values[j] for r in done if r.values is not None))


def plot_pareto(data: RunData, ranked: list[Ranked]) -> bytes | None:
    objectives = data.labels
    if len(objectives) < 2 or not ranked:
        return None
    values = np.array([x.record.values for x in ranked], dtype=float)  # (n, d)
    on_front = np.array([x.level == 1 for x in ranked])
    ranks = [x.rank for x in ranked]
    pairs = [(a, b) for a in range(len(objectives)) for b in range(a + 1, len(objectives))]
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig = _figure(max(8.0, 4.8 * cols), (5.0 if cols == 1 else 4.2) * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    for ax, (a, b) in zip(axes, pairs):
        ax.scatter(values[:, a], values[:, b], s=16, color=_GREY, alpha=0.6, label="all trials")
        front = values[on_front]
        ax.scatter(
            front[:, a],
            front[:, b],
            s=46,
            color=_ACCENT,
            edgecolor="black",
            lw=0.6,
            zorder=3,
            label=f"Pareto front ({int(on_front.sum())})",
        )
        if len(objectives) == 2:
            # The front as the staircase it is: everything above-right of it is dominated.
            order = np.argsort(front[:, a] * data.signs[a])
            ax.step(front[order, a], front[order, b], where="post", color=_ACCENT, lw=1.2)
        for k in np.flatnonzero(on_front)[:10]:
            ax.annotate(
                f"#{ranks[k]}",
                (values[k, a], values[k, b]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
            )
        _scale_axis(ax, "x", values[:, a])
        _scale_axis(ax, "y", values[:, b])
        ax.set_xlabel(objectives[a])
        ax.set_ylabel(objectives[b])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(
        f"Pareto front: {int(on_front.sum())} of {len(ranked)} architectures are not dominated "
        "(#n = leaderboard rank)",
        fontsize=11,
    )
    return _png(fig)


def plot_choices(shares: ChoiceShares) -> bytes | None:
    families = list(shares.families.items())
    if not families or shares.all_n == 0:
        return None
    cols = 2
    rows = math.ceil(len(families) / cols)
    heights = [
        max(len(families[i][1].rows) if i < len(families) else 0 for i in (r * cols, r * cols + 1))
        for r in range(rows)
    ]
    fig = _figure(11, sum(0.3 * h + 0.9 for h in heights) + 0.6)
    grid = fig.add_gridspec(rows, cols, height_ratios=[h + 2 for h in heights])
    bar = 0.38
    for i, (title, fam) in enumerate(families):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        y = np.arange(len(fam.rows))
        top_share = np.array([t for _, t, _ in fam.rows])
        all_share = np.array([a for _, _, a in fam.rows])
        ax.barh(y - bar / 2, top_share, bar, color=_ACCENT, label=f"top {shares.top_n}")
        ax.barh(y + bar / 2, all_share, bar, color=_GREY, label=f"all {shares.all_n}")
        xmax = max(top_share.max(), all_share.max()) * 1.2 + 0.02
        for yy, t in zip(y, top_share):
            ax.text(t + xmax * 0.01, yy - bar / 2, f"{t:.0%}", va="center", fontsize=7)
        ax.set_yticks(y, [_plain(_shorten(v, 24)) for v, _, _ in fam.rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, min(1.15, xmax))
        ax.xaxis.set_major_formatter(_percent())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(
            f"{title}   (used by {fam.top_with}/{shares.top_n} top, "
            f"{fam.all_with}/{shares.all_n} all)",
            fontsize=9.5,
            loc="left",
        )
        ax.grid(axis="x", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(
        f"How each choice divides its uses: top {shares.top_n} vs all {shares.all_n} "
        "evaluated architectures",
        fontsize=11,
    )
    return _png(fig)


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def plot_failures(kinds: list[tuple[str, int]]) -> bytes | None:
    if not kinds:
        return None
    shown = kinds[:15]
    rest = sum(n for _, n in kinds[15:])
    if rest:
        shown.append((f"({len(kinds) - 15} other kinds)", rest))
    fig = _figure(10, 1.2 + 0.38 * len(shown))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    counts = [n for _, n in shown]
    ax.barh(y, counts, color=_FAIL, height=0.6)
    for yy, n in zip(y, counts):
        ax.text(n, float(yy), f" {n}", va="center", fontsize=8)
    ax.set_yticks(y, [_plain(_shorten(k, 70)) for k, _ in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("failed trials")
    ax.set_xlim(0, max(counts) * 1.12)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{sum(n for _, n in kinds)} failed trials by reason", fontsize=11, loc="left")
    return _png(fig)


def _lanes(spans: list[tuple[int, int]]) -> list[int]:
    """A lane per skip edge (i, j) so that edges whose spans overlap or touch get different
    lanes (back-to-back residuals would otherwise merge into one line), and nested ones sit
    outside the edges they enclose."""
    order = sorted(range(len(spans)), key=lambda k: spans[k][1] - spans[k][0])
    lanes = [0] * len(spans)
    placed: list[int] = []
    for k in order:
        a, b = spans[k]
        floor = 0
        taken = set()
        for m in placed:
            c, d = spans[m]
            if a <= c and d <= b and (c, d) != (a, b):
                floor = max(floor, lanes[m] + 1)  # encloses m: go outside it
            elif a <= d and c <= b:
                taken.add(lanes[m])
        lane = floor
        while lane in taken:
            lane += 1
        lanes[k] = lane
        placed.append(k)
    return lanes


def plot_architecture(g: nx.DiGraph, title: str) -> bytes:
    """The graph as a vertical chain in execution order, top to bottom. Edges between
    neighbours are short arrows down the left of the boxes; every other edge (a skip path)
    loops out to the left and back, curved, in a lane of its own when skips overlap."""
    index = {node: i for i, node in enumerate(g)}  # insertion order = derivation order
    order = list(nx.lexicographical_topological_sort(g, key=index.__getitem__))
    pos_of = {node: i for i, node in enumerate(order)}
    # Three parameters at most keep the picture narrow enough to read at page width; the
    # page's tree beside it has them all.
    labels = {n: node_label(g.nodes[n]["op"], g.nodes[n]["params"], 3) for n in order}
    skips = [(u, v) for u, v in g.edges if pos_of[v] - pos_of[u] > 1]
    chain = [(u, v) for u, v in g.edges if pos_of[v] - pos_of[u] == 1]
    lanes = _lanes([(pos_of[u], pos_of[v]) for u, v in skips])

    step = 0.42  # inches between node centres
    font = 9
    gutter = 0.55 + 0.16 * (max(lanes, default=0) + 1)  # inches left of the boxes for loops
    text_w = max(len(t) for t in labels.values()) * 0.072 + 0.4
    width = max(6.0, gutter + text_w + 0.3)
    height = step * (len(order) + 1) + 0.6

    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(width, height), dpi=_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    # Data units are inches, so text widths, gaps and arrow lengths can be planned.
    ax.set_xlim(-gutter, width - gutter)
    ax.set_ylim(-(len(order) - 0.5) * step - 0.2, 0.5 * step + 0.6)
    ax.axis("off")
    pos = {n: (0.0, -i * step) for n, i in pos_of.items()}
    pad_pt = 0.35 * font  # the box's padding beyond the text, in points
    for n in order:
        spec = REGISTRY.get(g.nodes[n]["op"])
        colour = _ROLE_COLOURS.get(spec.role, "#ffffff") if spec is not None else "#ffffff"
        ax.text(
            *pos[n],
            _plain(labels[n]),
            ha="left",
            va="center",
            fontsize=font,
            family="monospace",
            zorder=3,
            bbox={"boxstyle": "round,pad=0.35", "fc": colour, "ec": "#555555", "lw": 0.8},
        )
    # Chain arrows run from box to box a little inside the left edge.
    chain_pos = {n: (x + 0.25, y) for n, (x, y) in pos.items()}
    half_box = font / 2 + pad_pt + 1
    nx.draw_networkx_edges(
        g,
        chain_pos,
        edgelist=chain,
        ax=ax,
        arrows=True,
        arrowstyle="-|>",
        arrowsize=9,
        width=1.0,
        edge_color="#444444",
        node_size=0,
        min_source_margin=half_box,
        min_target_margin=half_box,
    )
    for (u, v), lane in zip(skips, lanes):
        arm = 14 + 11 * lane
        nx.draw_networkx_edges(
            g,
            pos,
            edgelist=[(u, v)],
            ax=ax,
            arrows=True,
            arrowstyle="-|>",
            arrowsize=9,
            width=1.2,
            edge_color=_ACCENT_2,
            node_size=0,
            connectionstyle=f"arc,angleA=180,angleB=180,armA={arm},armB={arm},rad=7",
            min_source_margin=pad_pt + 1,
            min_target_margin=pad_pt + 1,
        )
    ax.text(
        -gutter + 0.1,
        0.5 * step + 0.4,
        _plain(title),
        fontsize=10,
        weight="bold",
        va="center",
        zorder=4,
    )
    roles = [r for r in _ROLE_COLOURS if r not in (Role.HEAD,)]
    handles = [Patch(fc=_ROLE_COLOURS[r], ec="#555555", label=r.value) for r in roles]
    handles[0].set_label("stem / head")
    handles.append(Patch(fc="none", ec=_ACCENT_2, label="skip path"))
    ax.legend(
        handles=handles,
        loc="upper right",
        fontsize=7,
        frameon=False,
        ncols=1,
        bbox_to_anchor=(1.0, 1.0 - 0.7 / height),
    )
    return _png(fig)


# ---------------------------------------------------------------------------------- files


def _cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, anything nested (tuned hyperparameters) as JSON."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def trials_csv(data: RunData) -> bytes:
    metric_names = sorted({k for r in data.records for k in r.metrics})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "number",
            "state",
            "slot",
            "arch_hash",
            *data.objectives,
            *(f"metric_{m}" for m in metric_names),
            "duplicate_of",
            "fail_reason",
        ]
    )
    for r in data.records:
        values = list(r.values) if r.values is not None else [""] * len(data.objectives)
        w.writerow(
            [
                r.number,
                r.state.name.lower(),
                r.slot,
                r.arch_hash,
                *values,
                *(_cell(r.metrics.get(m)) for m in metric_names),
                "" if r.duplicate_of is None else r.duplicate_of,
                r.fail_reason or "",
            ]
        )
    return buf.getvalue().encode()


# ----------------------------------------------------------------------------------- HTML

_CSS = """
:root { --accent: #d1495b; --ink: #1f2328; --muted: #5f6b76; --line: #d8dee4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--ink); background: #f6f8fa; }
header { background: #1f2a36; color: #fff; padding: 22px 0 18px; }
header .wrap { display: flex; justify-content: space-between; align-items: baseline;
               flex-wrap: wrap; gap: 8px; }
header h1 { margin: 0; font-size: 24px; font-weight: 600; }
header .sub { color: #b9c4cf; font-size: 14px; }
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
main .wrap > section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
                       padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
p.note { color: var(--muted); margin: 4px 0 12px; font-size: 14px; }
p.note.bad { color: #b3261e; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 6px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 13px; }
.card.bad b { color: #b3261e; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #fff4f5; }
table.counts td.num { width: 5em; }
table.kv th { width: 34%; background: none; color: var(--muted); font-weight: 500; }
code, pre, td.arch, td.hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
                              monospace; font-size: 12.5px; }
td.arch { width: 100%; overflow-wrap: anywhere; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      margin: 0; line-height: 1.4; white-space: pre-wrap; overflow-wrap: anywhere; }
figure { margin: 8px 0 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
.archbox figure { margin: 0; max-width: 720px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.archbox { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 20px;
        align-items: start; }
footer { color: var(--muted); font-size: 13px; padding: 6px 0 28px; }
@media (max-width: 860px) { .archbox { grid-template-columns: 1fr; } }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure_html(png: bytes | None, alt: str, caption: str, missing: str) -> str:
    if png is None:
        return f'<p class="note">{_e(missing)}</p>'
    return f"<figure>{_img(png, alt)}<figcaption>{_e(caption)}</figcaption></figure>"


@dataclass
class Report:
    """What was drawn and written, for the terminal summary and tests."""

    name: str
    objectives: list[str]
    folder: Path
    files: list[Path]
    rows: list[BoardRow]
    counts: dict[str, int]
    kinds: list[tuple[str, int]]
    finished: int
    target: int
    retrained: list[RetrainedRow] = field(default_factory=list)
    skipped: str | None = None  # what could not be read and was left out


@dataclass(frozen=True)
class RetrainedRow:
    """An architecture `gatesearch retrain` trained: `rank` in the order `export --rank`
    follows (by retrained validation score), `campaign_rank` its rank in the campaign."""

    rank: int
    campaign_rank: int
    number: int
    arch_hash: str
    doc: dict[str, Any]  # its retrained/<hash>/metrics.json


def retrained_rows(data: RunData, ranked: list[Ranked]) -> list[RetrainedRow]:
    """The retrained architectures among `ranked`, in `retrain.final_order`'s order."""
    found = [(x, doc) for x in ranked if (doc := read_retrained(data.root, x.record.arch_hash))]
    hib = data.config.higher_is_better
    found = sort_retrained(found, lambda item: item[1], hib)
    return [
        RetrainedRow(i, x.rank, x.record.number, x.record.arch_hash, doc)
        for i, (x, doc) in enumerate(found, start=1)
    ]


RETRAINED_HEAD = (
    "rank",
    "campaign",
    "trial",
    "valid",
    "test",
    "valid loss",
    "params",
    "best step",
    "budget",
)


def retrained_cells(r: RetrainedRow) -> list[str]:
    d = r.doc
    return [
        str(r.rank),
        f"#{r.campaign_rank}",
        str(r.number),
        _fmt(d["valid"]["metric"]),
        _fmt(d["test"]["metric"]),
        _fmt(d["valid"]["loss"]),
        _fmt(d.get("params")),
        f"{_fmt(d.get('best_step'))}/{_fmt(d.get('steps'))}",
        str(d.get("budget", "-")),
    ]


def _retrained_html(rows: list[RetrainedRow]) -> list[str]:
    if not rows:
        return []
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in RETRAINED_HEAD) + "<th>hash</th></tr>"
    body = "".join(
        f"<tr{' class=best' if r.rank == 1 else ''}>"
        + "".join(f'<td class="num">{_e(c)}</td>' for c in retrained_cells(r))
        + f'<td class="hash">{_e(r.arch_hash)}</td></tr>'
        for r in rows
    )
    metric = rows[0].doc.get("metric_name", "metric")
    return [
        f"""<section><h2>Retrained</h2><p class="note">Trained at the full budget by
<code>gatesearch retrain</code>, each at its best validation point; ranked by the validation
{_e(metric)}, the order <code>gatesearch export --rank</code> follows (the campaign's rank
beside it). Test scores are for reading, not for choosing.</p>
<table>{head}{body}</table></section>"""
    ]


def render_html(
    data: RunData,
    rows: list[BoardRow],
    counts: dict[str, int],
    kinds: list[tuple[str, int]],
    shares: ChoiceShares,
    plots: dict[str, bytes | None],
    best_tree: list[str] | None,
    top: int,
    retrained: list[RetrainedRow] | None = None,
) -> str:
    cfg = data.config
    name = cfg.name
    objectives = data.labels
    multi = len(objectives) > 1
    finished = data.finished_slots()

    config_rows = [
        ("strategy", f"{cfg.strategy} ({cfg.preset})"),
        ("task", data.task),
        ("budget per trial", cfg.budget),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(objectives, cfg.directions))),
        ("trials (target)", data.target),
        ("workers", cfg.workers),
        ("campaign seed", cfg.seed),
        ("search space", cfg.space),
        ("created", cfg.created),
        ("run directory", data.root),
    ]
    kv = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in config_rows)
    cards = [
        (finished, f"of {data.target} finished", False),
        (counts["complete"], "complete", False),
        (counts["failed"], "failed", counts["failed"] > 0),
        (counts["running"], "running", False),
        (counts["duplicates"], "duplicates", False),
        (counts["interrupted"], "interrupted, re-run", False),
        (counts["rejected"], "over --max-params, not trained", False),
    ]
    cards_html = "".join(
        f'<div class="card{" bad" if bad else ""}"><b>{_e(n)}</b><span>{_e(label)}</span></div>'
        for n, label, bad in cards
    )
    best_line = ""
    if rows:
        best = rows[0]
        vals = ", ".join(f"{o} = {_fmt(v)}" for o, v in zip(objectives, best.values))
        best_line = (
            f'<p class="note">{"Rank 1" if multi else "Best"}: trial {_e(best.number)} ({_e(vals)}), '
            f"<code>{_e(best.arch_hash)}</code></p>"
        )
    skipped = data.skipped()
    if skipped:
        best_line += f'<p class="note bad">Skipped: {_e(skipped)}.</p>'

    head = ["rank"] + (["front"] if multi else []) + ["trial", *objectives]
    sizes = _size_columns(objectives)
    head += [label for _, label in sizes] + ["width", "hash", "architecture"]
    board_html = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    for r in rows:
        cells = [f'<td class="num">{r.rank}</td>']
        if multi:
            cells.append(f'<td class="num">{r.level}</td>')
        cells.append(f'<td class="num">{r.number}</td>')
        cells += [f'<td class="num">{_e(_fmt(v))}</td>' for v in r.values]
        cells += [f'<td class="num">{_e(_fmt(r.metrics.get(key)))}</td>' for key, _ in sizes]
        cells += [
            f'<td class="num">{_e(r.width if r.width is not None else "-")}</td>',
            f'<td class="hash">{_e(r.arch_hash)}</td>',
            f'<td class="arch">{_e(r.arch)}</td>',
        ]
        board_html += f"<tr{' class=best' if r.rank == 1 else ''}>" + "".join(cells) + "</tr>"
    if not rows:
        board_html += f'<tr><td colspan="{len(head)}">no completed trial yet</td></tr>'

    ranking = (
        "Ranked by Pareto level (front 1 = not dominated by any other trial), then by "
        + ", ".join(objectives)
        if multi
        else f"Ranked by {objectives[0]}"
    )
    sections = [
        f"""<section><h2>Campaign</h2><div class="cards">{cards_html}</div>{best_line}
<table class="kv">{kv}</table></section>""",
        f"""<section><h2>Leaderboard</h2><p class="note">{_e(ranking)}; duplicates are not
ranked twice. Parameters and FLOPs per token as the task measured them.</p>
<table>{board_html}</table></section>""",
        *_retrained_html(retrained or []),
        f"""<section><h2>Search progress</h2>{
            _figure_html(
                plots.get("best_so_far"),
                "best so far against trial number",
                "Grey: each completed trial. Line: the best value found up to that trial."
                + (" Red ticks: failed trials." if counts["failed"] else ""),
                "No completed trial yet.",
            )
        }</section>""",
    ]
    if multi:
        sections.append(
            f"""<section><h2>Pareto front</h2>{
                _figure_html(
                    plots.get("pareto"),
                    "Pareto front",
                    "Every distinct completed architecture in grey; the non-dominated ones "
                    "highlighted and labelled with their leaderboard rank.",
                    "No completed trial yet.",
                )
            }</section>"""
        )
    sections.append(
        f"""<section><h2>Which gating choices win</h2>{
            _figure_html(
                plots.get("choices"),
                "gating choices in the top-k against all trials",
                "How each family of choices divides its uses: of the attention layers in an "
                "architecture, the share gated at each position; of its pruning gates, the "
                "share of each kind; and so on, averaged over the architectures that use the "
                f"family (each counts once). Coloured: the top {shares.top_n}; grey: all "
                f"{shares.all_n} evaluated. A choice far more common in the top than overall is "
                "one the search found to help.",
                "No evaluated architecture yet.",
            )
        }</section>"""
    )
    if kinds:
        fail_rows = "".join(
            f'<tr><td class="num">{n}</td><td>{_e(k)}</td></tr>' for k, n in kinds[:30]
        )
        fail_body = _figure_html(plots.get("failures"), "failure reasons", "", "")
        fail_body += (
            '<p class="note">Numbers and hashes in the reasons are shown as N and … so that '
            "failures of one kind count together; trials.csv has each full reason.</p>"
            f'<table class="counts"><tr><th>trials</th><th>reason</th></tr>{fail_rows}</table>'
        )
    else:
        fail_body = '<p class="note">No failed trials.</p>'
    sections.append(f"<section><h2>Failures</h2>{fail_body}</section>")
    if rows:
        tree = "\n".join(best_tree) if best_tree else data.graph_note(rows[0].arch_hash)
        sections.append(
            f"""<section><h2>Best architecture</h2><p class="note">Trial {_e(rows[0].number)},
hash <code>{_e(rows[0].arch_hash)}</code>. Parameters that differ from the primitives'
defaults are shown.</p><div class="archbox"><pre>{_e(tree)}</pre>{
                _figure_html(
                    plots.get("best_architecture"),
                    "diagram of the best architecture",
                    "Execution order top to bottom; blue loops are skip paths.",
                    "The graph artifact is missing.",
                )
            }</div></section>"""
        )

    status = campaign_state(data.root, finished, data.target)
    now = datetime.now().strftime("%Y-%m-%d %H:%M")
    resume = (
        f"; go on with `gatesearch resume {data.root}`" if status.state is RunState.STOPPED else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatesearch report: {_e(name)}</title>
<style>{_CSS}</style></head>
<body><header><div class="wrap"><h1>gatesearch report: {_e(name)}</h1>
<div class="sub">{_e(cfg.strategy)} on {_e(data.task)} · {_e(finished)}/{_e(data.target)} trials · {
        _e(status)
    } · drawn {_e(now)}</div></div></header>
<main><div class="wrap">
{"".join(sections)}
</div></main>
<footer><div class="wrap">Generated by <code>gatesearch report</code> at {_e(now)} from
<code>{_e(data.root)}</code>; top-k = {_e(top)}. The campaign was {_e(status)} when this page was
drawn{_e(resume)}.</div></footer>
</body></html>
"""


def write_report(run_dir: Path, top: int = DEFAULT_TOP, out: Path | None = None) -> Report:
    """Read the run, draw the plots and the page, write them into `out` (default
    run_dir/report). The run itself is not written to."""
    if top < 1:
        raise ReportError(f"--top {top}: need at least 1")
    data = load_run(run_dir)
    folder = Path(out) if out is not None else data.root / REPORT_DIR
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"--out {folder} is a file; give a folder")

    import matplotlib

    matplotlib.use("Agg")  # never a window, whatever the user's matplotlibrc says

    ranked = rank_trials(data, need=top)
    rows = board(data, ranked, top)
    counts = data.counts()
    kinds = failure_kinds(data)
    shares = choice_shares(data, ranked, top)
    best_graph = data.graph(rows[0].arch_hash) if rows else None
    plots: dict[str, bytes | None] = {
        "best_so_far": plot_best_so_far(data),
        "pareto": plot_pareto(data, ranked),
        "choices": plot_choices(shares),
        "failures": plot_failures(kinds),
        "best_architecture": (
            plot_architecture(
                best_graph,
                f"best: trial {rows[0].number}  {rows[0].arch_hash}  "
                + "  ".join(f"{o}={_fmt(v)}" for o, v in zip(data.labels, rows[0].values)),
            )
            if best_graph is not None
            else None
        ),
    }
    retrained = retrained_rows(data, rank_trials(data))
    page = render_html(
        data,
        rows,
        counts,
        kinds,
        shares,
        plots,
        tree_lines(best_graph) if best_graph is not None else None,
        top,
        retrained,
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_temps(folder, dead_only=True)  # left by a report killed while writing
        files = []
        for key, png in plots.items():
            if png is not None:
                path = folder / f"{key}.png"
                write_atomic(path, png)
                files.append(path)
        write_atomic(folder / "trials.csv", trials_csv(data))
        write_atomic(folder / "index.html", page.encode("utf-8"))
        files += [folder / "trials.csv", folder / "index.html"]
    except OSError as exc:
        raise ReportError(f"cannot write the report into {folder}: {exc.strerror}") from None
    return Report(
        data.config.name,
        data.labels,
        folder,
        files,
        rows,
        counts,
        kinds,
        data.finished_slots(),
        data.target,
        retrained,
        data.skipped(),
    )


# ------------------------------------------------------------------------------------- CLI


def _print(console: Console, rep: Report) -> None:
    c = rep.counts
    objectives = rep.objectives
    console.print(Text(rep.name, style="bold"), end="")
    console.print(
        f": {rep.finished}/{rep.target} finished · {c['complete']} "
        f"complete · {c['failed']} failed · {c['running']} running · {c['duplicates']} "
        f"duplicates · {c['interrupted']} interrupted",
        highlight=False,
    )
    if rep.rows:
        multi = len(objectives) > 1
        table = Table(box=None, pad_edge=False)
        # Numbers never wrap or shrink; the architecture takes what width is left, one line.
        heads = ["rank", *(["front"] if multi else []), "trial", *objectives]
        sizes = _size_columns(objectives)
        for head in [*heads, *(label for _, label in sizes)]:
            table.add_column(head, justify="right", no_wrap=True, min_width=len(head))
        table.add_column("architecture")
        for r in rep.rows:
            cells = [str(r.rank)] + ([str(r.level)] if multi else []) + [str(r.number)]
            cells += [_fmt(v) for v in r.values]
            cells += [_fmt(r.metrics.get(key)) for key, _ in sizes]
            # Wrappable for the table's width sums, cut to one line with … when drawn.
            table.add_row(*cells, Text(r.arch, no_wrap=True, overflow="ellipsis"))
        console.print(table)
    else:
        console.print("no completed trial yet")
    if rep.retrained:
        metric = rep.retrained[0].doc.get("metric_name", "metric")
        table = Table(
            title=f"retrained: best validation {metric} first (the order export --rank follows)",
            box=None,
            pad_edge=False,
        )
        for head in RETRAINED_HEAD:
            table.add_column(head, justify="right", no_wrap=True)
        for row in rep.retrained:
            table.add_row(*retrained_cells(row))
        console.print(table)
    for kind, n in rep.kinds[:10]:
        console.print(Text(f"  failed ×{n}: {kind}"))
    if len(rep.kinds) > 10:
        console.print(f"  … {len(rep.kinds) - 10} more kinds of failure in the report")
    if rep.skipped:
        console.print(Text(f"skipped: {rep.skipped}"), soft_wrap=True)  # a path: never broken


def report(
    run_dir: Annotated[Path, typer.Argument(help="The run directory, e.g. runs/NAME.")],
    top: Annotated[
        int, typer.Option("--top", min=1, help="Leaderboard size; the top-k of the choices plot.")
    ] = DEFAULT_TOP,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder [default: RUN_DIR/report].")
    ] = None,
) -> None:
    """Leaderboard in the terminal; plots and one self-contained HTML page in RUN_DIR/report."""
    rep = write_report(run_dir, top, out)
    console = Console(highlight=False)
    _print(console, rep)
    pngs = sum(1 for f in rep.files if f.suffix == ".png")
    console.print(
        Text(f"report: {rep.folder / 'index.html'} ({pngs} plots, trials.csv)"), highlight=False
    )
    nxt = "next: open the page in a browser, or share it (it is one self-contained file)"
    if rep.rows and _has_command("export"):
        nxt += f"; `gatesearch export {run_dir} --rank 1 -o model.py` writes the best as PyTorch"
    console.print(Text(nxt))


_APP: typer.Typer | None = None


def _has_command(name: str) -> bool:
    if _APP is None:
        return False
    return any(
        (c.name or (c.callback.__name__ if c.callback else "")) == name
        for c in _APP.registered_commands
    )


def register(app: typer.Typer) -> None:
    global _APP
    _APP = app
    app.command("report")(report)
