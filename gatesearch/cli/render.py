"""How the command line shows things: one console, clocks, objective labels, the live
progress line of a campaign and its leaderboard."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gatesearch.formats import MISSING, TIE_NOTE, metric, objective_header, rank_text
from gatesearch.runs.config import Direction, RunConfig
from gatesearch.runs.inflight import Phase, Stats
from gatesearch.runs.ranking import leaderboard
from gatesearch.runs.store import RunStore
from gatesearch.tasks import TaskSpec
from gatesearch.tasks.suite import SUITE_TASK, member_objective, suite_members, suite_text

out = Console(highlight=False)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def values_text(values: Any, objectives: Sequence[str] = ()) -> str:
    """A trial's objective values, each as every table writes it (a count for `params`)."""
    if values is None:
        return MISSING
    keys = list(objectives) or [""] * len(values)
    return " ".join(metric(key, v) for key, v in zip(keys, values))


# Wider than any row: a `--wide` table is drawn at its natural width, every cell whole, and
# the terminal (or the file it is piped to) takes lines longer than its own width.
WIDE_WIDTH = 100_000


def print_table(console: Console, table: Table, wide: bool = False) -> None:
    """Print `table` to fit the console, or with `wide` whole: no column shrunk or cut."""
    if not wide:
        console.print(table)
        return
    table.expand = False
    whole = Console(
        file=console.file,
        width=WIDE_WIDTH,
        highlight=False,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
    )
    whole.print(table)


def arch_cell(short: str, complete: str, wide: bool) -> Text:
    """An architecture cell: with `wide` the complete line, whole; else the short one, cut
    to one line with … when the column is narrower."""
    if wide:
        return Text(complete, no_wrap=True, overflow="ignore")
    return Text(short, no_wrap=True, overflow="ellipsis")


class Display:
    """One live status line and the best architecture, or plain lines when not a terminal."""

    def __init__(
        self,
        console: Console,
        name: str,
        labels: list[str] | None = None,
        objectives: Sequence[str] = (),
    ) -> None:
        self.console = console
        self.name = name
        self.labels = labels or []  # objective names as shown, e.g. "accuracy ↑"
        self.objectives = tuple(objectives)  # their keys, for how each value is written
        self.live: Live | None = None
        self.last_print = 0.0
        self.last_done = -1
        self.last_phase: Phase | None = None

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def render(self, s: Stats) -> Text:
        """The progress line, fitted to the console's width (a wrapped line scrolls a live
        display); counts that are zero are left out, the bar goes first when space is short."""
        parts = [f"{s.done}/{s.target} done", f"{s.running} running"]
        if s.failed:
            parts.append(f"{s.failed} failed")
        for n, what in (
            (s.duplicates, "dup"),
            (s.rejected, "over --max-params"),
            (s.repeated, "repeats asked again"),
            (s.promoted, "promoted"),
        ):
            if n:
                parts.append(f"{n} {what}")
        parts.append(f"{clock(s.elapsed)} elapsed")
        if s.phase is not Phase.SEARCHING:
            parts.append(f"{s.phase.value}…")
        elif s.eta is None:
            parts.append(f"ETA after {s.eta_after} trial{'s' * (s.eta_after > 1)}")
        else:
            parts.append(f"ETA {clock(s.eta)}")
        line = " · ".join(parts)
        bar = min(24, self.console.width - len(line) - 2)
        text = Text()
        if bar >= 8:
            filled = int(bar * s.done / max(1, s.target))
            text.append("━" * filled, style="green")
            text.append("━" * (bar - filled) + " ", style="grey37")
        text.append(line, style="red" if s.failed and s.failed == s.done else "")
        if s.best is not None:
            what = ", ".join(self.labels) + " " if self.labels else ""
            head = f"best {what}{values_text(s.best, self.objectives)} (trial {s.best_number}): "
            room = max(20, self.console.width - len(head) - 1)
            arch = s.best_arch if len(s.best_arch) <= room else s.best_arch[: room - 1] + "…"
            text.append("\n" + head, style="bold")
            text.append(arch)
        return text

    def update(self, s: Stats) -> None:
        if self.live is not None:
            self.live.update(self.render(s))
            return
        now = time.monotonic()
        changed = s.done != self.last_done or s.phase is not self.last_phase
        if changed and (now - self.last_print > 5 or s.done == s.target or s.done == 0):
            self.last_print, self.last_done, self.last_phase = now, s.done, s.phase
            self.console.print(self.render(s).plain.replace("━", "").strip(), markup=False)


def task_text(spec: TaskSpec) -> str:
    """`mqar(vocab=64, length=32, ...)` from a config's task spec; a suite by its name and
    members (its members' params are in its file and in `status --json`)."""
    if spec.name == SUITE_TASK:
        return suite_text(spec)
    args = ", ".join(f"{k}={v}" for k, v in spec.params.items() if v is not None)
    return f"{spec.name}({args})" if args else spec.name


def objective_labels(config: RunConfig) -> list[str]:
    """Objective column heads: the task's metric name for `metric`, with its direction."""
    return [
        objective_header(objective, config.metric_name, way is Direction.MAXIMIZE)
        for objective, way in zip(config.objectives, config.directions)
    ]


def print_board(store: RunStore, wide: bool = False) -> None:
    """The best five: rank (`=2` for a tie, with a line under the table saying so), trial,
    the objectives, and the architecture (short, cut to the terminal; complete with
    `wide`)."""
    rows = leaderboard(store, top=5)
    if not rows:
        out.print("no completed trial yet")
        return
    table = Table(title=f"best of {store.config.name}", box=None, pad_edge=False, expand=True)
    table.add_column("rank", justify="right", no_wrap=True, min_width=4)
    table.add_column("trial", justify="right", no_wrap=True, min_width=5)
    staged = store.config.schedule.staged
    rungs = store.config.schedule.rungs(store.config.budget)
    if staged:  # the budget each was scored at: ranks go by it first
        table.add_column("at", justify="right", no_wrap=True)
    for label in objective_labels(store.config):
        table.add_column(label, justify="right", no_wrap=True, min_width=len(label) + 2)
    # A causal model's decode state, beside its scores unless it is one of the objectives.
    state = "state" not in store.config.objectives and any(r["state"] is not None for r in rows)
    if state:
        table.add_column("state", justify="right", no_wrap=True)
    # Only the architecture column shrinks, to the terminal's width (unless wide).
    table.add_column("architecture", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in rows:
        at = [str(rungs[r["rung"]])] if staged and r["rung"] is not None else []
        table.add_row(
            rank_text(r["rank"], r["joint_rank"], r["tied"]),
            str(r["number"]),
            *at,
            *(metric(key, v) for key, v in r["values"].items()),
            *([metric("state", r["state"])] if state else []),
            arch_cell(r["arch_short"], r["arch"], wide),
        )
    print_table(out, table, wide)
    if any(r["tied"] for r in rows):
        out.print(TIE_NOTE, markup=False, soft_wrap=True)  # one line, however narrow
    members = suite_members(store.config.task)
    print_members(
        out, members, [(r["number"], r["members"]) for r in rows], store.config.objectives, wide
    )


def print_members(
    console: Console,
    members: Sequence[str],
    rows: Sequence[tuple[int, dict[str, float | None]]],
    objectives: Sequence[str] = (),
    wide: bool = False,
) -> None:
    """A suite's member scores (normalised, higher better) of the trials `rows` lists, as
    (trial number, score by member): a table of its own under the leaderboard, which has no
    room for six more columns beside the architecture. Members that are objectives are in
    the leaderboard already; nothing is printed for a task that is not a suite."""
    shown = [m for m in members if member_objective(m) not in objectives]
    if not shown or not rows:
        return
    # The title as a line of its own: a table's title wraps at the (narrow) table's width.
    console.print("member scores (0 to 1, higher better):", markup=False)
    table = Table(box=None, pad_edge=False)
    table.add_column("trial", justify="right", no_wrap=True, min_width=5)
    for m in shown:
        table.add_column(m, justify="right", no_wrap=True, min_width=len(m))
    for number, scores in rows:
        table.add_row(str(number), *(metric("", scores.get(m)) for m in shown))
    print_table(console, table, wide)
