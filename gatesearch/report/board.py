"""The leaderboard's rows: what the terminal's table and the page's show of each trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import INPUT_OP
from gatesearch.formats import rank_text
from gatesearch.tasks.suite import member_objective

if TYPE_CHECKING:
    pass

from gatesearch.report.data import Ranked, RunData

# ------------------------------------------------------------------------------ rows


def _width(g: nx.DiGraph | None) -> int | None:
    if g is None:
        return None
    for _, attrs in g.nodes(data=True):
        if attrs["op"] == INPUT_OP:
            d = attrs["params"].get("d_model")
            return int(d) if isinstance(d, int | float) else None
    return None


# Size metrics shown beside the objectives, unless one already is an objective.
_SIZE_METRICS = (("params", "params"), ("flops", "FLOPs/token"), ("state", "state"))


def size_columns(objectives: list[str], rows: Sequence[BoardRow] = ()) -> list[tuple[str, str]]:
    """(metric, column head) of the sizes shown beside `objectives`: parameters, FLOPs per
    token, and the decode state in bytes where `rows` have one (causal models only)."""
    return [
        (key, label)
        for key, label in _SIZE_METRICS
        if key not in objectives and (key != "state" or any(key in r.metrics for r in rows))
    ]


def member_columns(objectives: list[str], members: Sequence[str]) -> list[tuple[str, str]]:
    """(metric, column head) of a suite's member scores (`member:NAME`, headed by the name),
    each beside the objectives unless it is one."""
    return [(member_objective(m), m) for m in members if member_objective(m) not in objectives]


@dataclass(frozen=True)
class BoardRow:
    rank: int
    number: int
    level: int
    values: tuple[float, ...]
    metrics: dict[str, float]
    width: int | None
    arch_hash: str
    arch: str  # complete: the page and `--wide` show it whole
    arch_short: str  # what a terminal's column shows
    joint_rank: int = 0  # the rank a tie shares (see formats.rank_text)
    tied: bool = False

    @property
    def rank_cell(self) -> str:
        """`3`, or `=2` when it ties (formats.rank_text)."""
        return rank_text(self.rank, self.joint_rank, self.tied)


def board(data: RunData, ranked: list[Ranked], top: int) -> list[BoardRow]:
    rows = []
    for x in ranked[:top]:
        r = x.record
        g = data.graph(r.arch_hash)
        note = data.graph_note(r.arch_hash) if g is None else ""
        rows.append(
            BoardRow(
                rank=x.rank,
                number=r.number,
                level=x.level,
                values=tuple(r.values or ()),
                metrics=dict(r.metrics),
                width=_width(g),
                arch_hash=r.arch_hash,
                arch=describe(g, complete=True) if g is not None else note,
                arch_short=describe(g) if g is not None else note,
                joint_rank=x.joint_rank,
                tied=x.tied,
            )
        )
    return rows
