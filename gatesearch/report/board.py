"""The leaderboard's rows, and the labels and numbers it shows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import INPUT_OP

if TYPE_CHECKING:
    pass

from gatesearch.report.data import Ranked, RunData

# ------------------------------------------------------------------------------ labels


def fmt_value(value: Any) -> str:
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


def size_columns(objectives: list[str]) -> list[tuple[str, str]]:
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
