"""The report's plots (matplotlib, as PNG bytes) and the drawing of an architecture."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from gatesearch.registry import REGISTRY, Role

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from gatesearch.arch.describe import node_label
from gatesearch.formats import BYTE_METRICS, count, metric
from gatesearch.report.choices import ChoiceShares
from gatesearch.report.data import Ranked, RunData

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
    """Log scale for positive values spanning more than two decades, and counts (params,
    FLOPs) on the ticks as the tables write them: 250.0k rather than 2.5e5."""
    from matplotlib.ticker import FuncFormatter

    if not len(values):
        return
    if values.min() > 0 and values.max() / values.min() > 100:
        getattr(ax, f"set_{axis}scale")("log")
    if np.abs(values).max() >= 1e4:
        getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda v, _: count(v)))


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _plain(text: str) -> str:
    """Text from the run, drawn as written: a `$` would otherwise start matplotlib math."""
    return text.replace("$", r"\$")


def best_so_far_figure(data: RunData) -> Figure | None:
    """Each objective against trial number: every trial, the best so far, the failures."""
    done = sorted(data.completed(), key=lambda r: r.number)
    if not done:
        return None
    names = data.names
    fig = _figure(9, 2.2 + 2.0 * len(names))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    numbers = np.array([r.number for r in done])
    values = np.array([r.values for r in done], dtype=float)  # (n, d)
    fails = [r.number for r in data.failed()]
    for j, (ax, name) in enumerate(zip(axes, names)):
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
    # One legend, outside the axes on the right: inside, whichever corner it took, the best
    # line (which ends in the top or bottom right) or the trials could run under it.
    axes[0].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("trial number")
    axes[0].set_title(
        f"best so far: {names[0]} = {metric(data.objectives[0], _best_value(data, 0))} after "
        f"{len(done)} completed trials",
        fontsize=11,
    )
    return fig


def plot_best_so_far(data: RunData) -> bytes | None:
    fig = best_so_far_figure(data)
    return _png(fig) if fig is not None else None


# Learning curves drawn in colour at most: past ten the colours repeat and the legend
# outgrows the plot; the page's leaderboard names the rest.
_CURVES_COLOURED = 10


def plot_learning_curves(data: RunData, ranked: list[Ranked]) -> bytes | None:
    """Every trial's learning curve (its intermediate values: the objective at its weight
    steps) in grey, the first ten of `ranked` (the leaderboard's top k) in colour; None when
    no trial has two points or more."""
    if len(data.labels) != 1:
        return None  # Optuna keeps one curve per trial, of a campaign's only objective
    curves = [r.curve for r in data.records if r.curve]
    if not any(len(c) >= 2 for c in curves):
        return None
    top = [x for x in ranked if x.record.curve][:_CURVES_COLOURED]
    fig = _figure(9, 4.8)
    ax = fig.add_subplot()
    _draw_grey_curves(ax, curves)
    for x, colour in zip(top, _top_colours()):
        steps, values = zip(*x.record.curve)
        label = f"trial {x.record.number} (#{x.rank})"
        ax.plot(steps, values, "o-", color=colour, lw=1.6, ms=3.5, label=label, zorder=3)
    points = np.array([p for c in curves for p in c], dtype=float)  # (n, 2): step, value
    lo, hi = points[:, 0].min(), points[:, 0].max()
    if lo > 0 and hi / lo > 20:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(_whole_numbers())
    _scale_axis(ax, "y", points[:, 1])
    direction = "lower" if data.signs[0] > 0 else "higher"
    ax.set_xlabel("weight steps")
    ax.set_ylabel(f"{data.names[0]} ({direction} is better)")
    ax.grid(alpha=0.3)
    if top:
        # Outside the axes: curves of the best trials crowd the corner a legend would take.
        ax.legend(
            title="trial (rank)",
            fontsize=8,
            title_fontsize=8,
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    coloured = f"; the top {len(top)} in colour" if top else ""
    ax.set_title(f"learning curves of {len(curves)} trials{coloured}", fontsize=11, loc="left")
    return _png(fig)


def _draw_grey_curves(ax: Any, curves: list[tuple[tuple[int, float], ...]]) -> None:
    """All curves as one collection of thin grey lines (hundreds of trials draw as fast as
    one), each with a dot at its last point: where the trial stopped, shown even for a
    curve of one point."""
    from matplotlib.collections import LineCollection

    ax.add_collection(
        LineCollection([list(c) for c in curves], colors=_GREY, linewidths=0.8, alpha=0.6)
    )
    ends = np.array([c[-1] for c in curves], dtype=float)  # (n, 2): step, value
    ax.scatter(ends[:, 0], ends[:, 1], s=6, color=_GREY, alpha=0.8, zorder=2)
    ax.autoscale_view()


def _top_colours() -> list[Any]:
    """The accent for the best trial, then the tab10 colours but its red (too near it)."""
    from matplotlib import colormaps

    tab10 = [colormaps["tab10"](i) for i in range(10)]
    return [_ACCENT, *(c for i, c in enumerate(tab10) if i != 3)]


def _best_value(data: RunData, j: int) -> float | None:
    done = data.completed()
    if not done:
        return None
    sign = data.signs[j]
    return float(sign * min(sign * r.values[j] for r in done if r.values is not None))


def plot_pareto(data: RunData, ranked: list[Ranked]) -> bytes | None:
    # Axis names with the unit where the tables show one in the values (`135.2kB`).
    objectives = [
        f"{name} (bytes)" if key in BYTE_METRICS else name
        for key, name in zip(data.objectives, data.names)
    ]
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
    if not families or shares.top_n == 0:  # no top that is a minority of the field
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


def _whole_numbers() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)  # steps are counts: no tick at 2.5


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


@dataclass(frozen=True)
class _ArchLayout:
    """Where `plot_architecture` puts things, in inches."""

    order: list[Any]  # nodes in execution order, top to bottom
    labels: dict[Any, str]
    pos: dict[Any, tuple[float, float]]  # box centre-left of each node
    chain: list[tuple[Any, Any]]  # edges between neighbours
    skips: list[tuple[Any, Any]]  # every other edge: a skip path
    lanes: list[int]  # one per skip
    step: float  # between node centres
    gutter: float  # left of the boxes, for the skip loops
    width: float
    height: float


_ARCH_FONT = 9


def _arch_layout(g: nx.DiGraph) -> _ArchLayout:
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
    gutter = 0.55 + 0.16 * (max(lanes, default=0) + 1)  # inches left of the boxes for loops
    text_w = max(len(t) for t in labels.values()) * 0.072 + 0.4
    width = max(6.0, gutter + text_w + 0.3)
    height = step * (len(order) + 1) + 0.6
    pos = {n: (0.0, -i * step) for n, i in pos_of.items()}
    return _ArchLayout(order, labels, pos, chain, skips, lanes, step, gutter, width, height)


def _draw_boxes(ax: Any, g: nx.DiGraph, lay: _ArchLayout) -> None:
    """One box per node, coloured by the primitive's role."""
    for n in lay.order:
        spec = REGISTRY.get(g.nodes[n]["op"])
        colour = _ROLE_COLOURS.get(spec.role, "#ffffff") if spec is not None else "#ffffff"
        ax.text(
            *lay.pos[n],
            _plain(lay.labels[n]),
            ha="left",
            va="center",
            fontsize=_ARCH_FONT,
            family="monospace",
            zorder=3,
            bbox={"boxstyle": "round,pad=0.35", "fc": colour, "ec": "#555555", "lw": 0.8},
        )


def _draw_edges(ax: Any, g: nx.DiGraph, lay: _ArchLayout) -> None:
    """Chain arrows down the left of the boxes; skip paths as loops out to the left."""
    pad_pt = 0.35 * _ARCH_FONT  # the box's padding beyond the text, in points
    # Chain arrows run from box to box a little inside the left edge.
    chain_pos = {n: (x + 0.25, y) for n, (x, y) in lay.pos.items()}
    half_box = _ARCH_FONT / 2 + pad_pt + 1
    nx.draw_networkx_edges(
        g,
        chain_pos,
        edgelist=lay.chain,
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
    for (u, v), lane in zip(lay.skips, lay.lanes):
        arm = 14 + 11 * lane
        nx.draw_networkx_edges(
            g,
            lay.pos,
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


def _draw_key(ax: Any, lay: _ArchLayout, title: str) -> None:
    """The title top left, the colour key top right."""
    from matplotlib.patches import Patch

    ax.text(
        -lay.gutter + 0.1,
        0.5 * lay.step + 0.4,
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
        bbox_to_anchor=(1.0, 1.0 - 0.7 / lay.height),
    )


def plot_architecture(g: nx.DiGraph, title: str) -> bytes:
    """The graph as a vertical chain in execution order, top to bottom. Edges between
    neighbours are short arrows down the left of the boxes; every other edge (a skip path)
    loops out to the left and back, curved, in a lane of its own when skips overlap."""
    from matplotlib.figure import Figure

    lay = _arch_layout(g)
    fig = Figure(figsize=(lay.width, lay.height), dpi=_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    # Data units are inches, so text widths, gaps and arrow lengths can be planned.
    ax.set_xlim(-lay.gutter, lay.width - lay.gutter)
    ax.set_ylim(-(len(lay.order) - 0.5) * lay.step - 0.2, 0.5 * lay.step + 0.6)
    ax.axis("off")
    _draw_boxes(ax, g, lay)
    _draw_edges(ax, g, lay)
    _draw_key(ax, lay, title)
    return _png(fig)
