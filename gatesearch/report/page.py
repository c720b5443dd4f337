"""index.html: one self-contained page (inline CSS and images, no script, nothing fetched),
rendered from templates/report.html.j2 with the CSS of templates/report.css."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gatesearch.experiments.retrain import protocol, read_retrained, sort_retrained
from gatesearch.formats import (
    MISSING,
    TIE_NOTE,
    count,
    metric,
    objective_header,
    score,
    whole,
)
from gatesearch.report.board import BoardRow, member_columns, size_columns
from gatesearch.report.choices import ChoiceShares
from gatesearch.report.data import Ranked, RunData
from gatesearch.runs.store import RunState, campaign_state
from gatesearch.tasks import TaskSpec, task_label
from gatesearch.tasks.suite import suite_member_docs, suite_members

TEMPLATE = "report.html.j2"

# ----------------------------------------------------------------------------------- HTML


def _escape(value: Any) -> Markup:
    """What the template prints for a value: html.escape's spelling (`&quot;`, `&#x27;`)
    rather than markupsafe's (`&#34;`, `&#39;`), so pages keep the bytes they had before
    the template; a macro's output is already markup and passes as it is."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gatesearch.report", "templates"),
        # Run names, task and space text, graph parameters and failure reasons all come
        # from run folders anyone may hand over: every value is escaped, none trusted.
        autoescape=True,
        finalize=_escape,  # before autoescape, which then leaves its Markup alone
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not a blank
        trim_blocks=True,
        keep_trailing_newline=True,  # the page ends in a line break, as it always has
    )


@dataclass(frozen=True)
class Figure:
    """A plot on the page: the PNG as base64 for a data URI, or, none drawn, a note why."""

    png_base64: str | None
    alt: str
    caption: str
    missing: str

    @classmethod
    def of(cls, png: bytes | None, alt: str, caption: str, missing: str) -> Figure:
        data = base64.b64encode(png).decode("ascii") if png is not None else None
        return cls(data, alt, caption, missing)


@dataclass(frozen=True)
class Card:
    number: int
    label: str
    bad: bool  # drawn in red


@dataclass(frozen=True)
class BestLine:
    label: str  # "Best", or "Rank 1" when several objectives make a front
    number: int
    scores: str
    arch_hash: str


@dataclass(frozen=True)
class CampaignView:
    cards: list[Card]
    best: BestLine | None
    skipped: str | None
    config: list[tuple[str, str]]


@dataclass(frozen=True)
class TableRow:
    best: bool  # the rank-1 row, highlighted
    cells: list[tuple[str, str]]  # (CSS class, text)


@dataclass(frozen=True)
class BoardView:
    ranking: str  # how the rows are ordered, in words
    head: list[str]
    rows: list[TableRow]
    tie: str | None = None  # the line saying what `=N` means, when a rank is shared


@dataclass(frozen=True)
class RetrainedView:
    metric: str
    head: list[str]
    rows: list[TableRow]


@dataclass(frozen=True)
class FailuresView:
    figure: Figure
    kinds: list[tuple[str, int]]  # (reason, trials), the commonest first


@dataclass(frozen=True)
class BestArchView:
    number: int
    arch_hash: str
    tree: str
    figure: Figure


@dataclass(frozen=True)
class Page:
    """Everything the template shows, as plain values."""

    name: str
    strategy: str
    task: str
    finished: int
    target: int
    status: str
    stopped: bool  # the footer then says how to go on
    drawn: str
    root: str
    top: int
    campaign: CampaignView
    board: BoardView
    retrained: RetrainedView | None
    progress: Figure
    curves: Figure
    pareto: Figure | None
    choices: Figure
    failures: FailuresView | None
    best_arch: BestArchView | None


@dataclass
class Report:
    """What was drawn and written, for the terminal summary and tests."""

    name: str
    objectives: list[str]  # their column heads (`accuracy ↑`)
    folder: Path
    files: list[Path]
    rows: list[BoardRow]
    counts: dict[str, int]
    kinds: list[tuple[str, int]]
    finished: int
    target: int
    retrained: list[RetrainedRow] = field(default_factory=list)
    skipped: str | None = None  # what could not be read and was left out
    keys: list[str] = field(default_factory=list)  # the objectives' keys (`metric`, `params`)
    rungs: str | None = None  # the rungs line, under a multi-fidelity schedule
    members: tuple[str, ...] = ()  # a suite's member names, for their scores' table


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


def retrained_head(rows: list[RetrainedRow]) -> list[str]:
    """The retrained table's heads, the scores named and pointed as every table does
    (`valid accuracy ↑`), on two lines in a terminal (a page reads the break as a space)."""
    doc = rows[0].doc if rows else {}
    name = doc.get("metric_name")
    name = name if isinstance(name, str) else "metric"
    hib = bool(doc.get("higher_is_better", False))
    return [
        "rank",
        "campaign",
        "trial",
        f"valid\n{objective_header('metric', name, hib)}",
        f"test\n{objective_header('metric', name, hib)}",
        f"valid\n{objective_header('loss', name, False)}",
        "params",
        "best\nstep",
        "budget",
    ]


def retrained_cells(r: RetrainedRow) -> list[str]:
    d = r.doc
    return [
        str(r.rank),
        f"#{r.campaign_rank}",
        str(r.number),
        score(d["valid"]["metric"]),
        score(d["test"]["metric"]),
        score(d["valid"]["loss"]),
        count(d.get("params")),
        f"{whole(d.get('best_step'))}/{whole(d.get('steps'))}",
        protocol(d),
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
    finished = data.finished_slots()
    status = campaign_state(data.root, finished, data.target)
    page = Page(
        name=data.config.name,
        strategy=data.config.strategy,
        task=data.task,
        finished=finished,
        target=data.target,
        status=str(status),
        stopped=status.state is RunState.STOPPED,
        drawn=datetime.now().strftime("%Y-%m-%d %H:%M"),
        root=str(data.root),
        top=top,
        campaign=_campaign(data, rows, counts),
        board=_board(data, rows),
        retrained=_retrained(retrained or []),
        progress=Figure.of(
            plots.get("best_so_far"),
            "best so far against trial number",
            "Grey: each completed trial. Line: the best value found up to that trial."
            + (" Red ticks: failed trials." if counts["failed"] else ""),
            "No completed trial yet.",
        ),
        curves=_curves(plots.get("learning_curves"), data.names),
        pareto=_pareto(plots.get("pareto")) if len(data.labels) > 1 else None,
        choices=_choices(plots.get("choices"), shares),
        failures=_failures(kinds, plots.get("failures")),
        best_arch=_best_arch(data, rows, best_tree, plots.get("best_architecture")),
    )
    return _environment().get_template(TEMPLATE).render(page=page)


def _campaign(data: RunData, rows: list[BoardRow], counts: dict[str, int]) -> CampaignView:
    cfg = data.config
    objectives = data.labels
    config = [
        ("strategy", f"{cfg.strategy} ({cfg.preset})"),
        ("task", data.task),
        ("budget per trial", cfg.budget),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(data.names, cfg.directions))),
        ("trials (target)", data.target),
        ("workers", cfg.workers),
        ("campaign seed", cfg.seed),
        ("search space", cfg.space),
        ("created", cfg.created),
        ("run directory", data.root),
    ]
    # A suite's members, each with its params and weight, after the task line.
    config[2:2] = [
        (
            f"member {m['name']}",
            f"{task_label(TaskSpec(m['task'], m['params']))}, weight {m['weight']:g}",
        )
        for m in suite_member_docs(cfg.task)
    ]
    cards = [
        Card(data.finished_slots(), f"of {data.target} finished", False),
        Card(counts["complete"], "complete", False),
        Card(counts["failed"], "failed", counts["failed"] > 0),
        Card(counts["running"], "running", False),
        Card(counts["duplicates"], "duplicates", False),
        Card(counts["interrupted"], "interrupted (their slots run again)", False),
        Card(counts["rejected"], "over --max-params, not trained", False),
    ]
    if data.rungs is not None:  # a multi-fidelity campaign: its rungs and promotions
        budgets = cfg.schedule.rungs(cfg.budget)
        config.insert(3, ("schedule", cfg.schedule.describe(cfg.budget)))
        reached = zip(data.rungs.rungs, data.rungs.reached)
        config.insert(4, ("trials per rung", " · ".join(f"{b}: {n}" for b, n in reached)))
        cards += [
            Card(data.rungs.reached[-1], f"reached the top rung ({budgets[-1]})", False),
            Card(data.rungs.promotions, "promotions", False),
            Card(data.rungs.paused, "waiting for a promotion", False),
            Card(data.rungs.pruned, "pruned below the top", False),
        ]
    best = None
    if rows:
        scores = ", ".join(
            f"{name} = {metric(key, v)}"
            for name, key, v in zip(data.names, data.objectives, rows[0].values)
        )
        label = "Rank 1" if len(objectives) > 1 else "Best"
        best = BestLine(label, rows[0].number, scores, rows[0].arch_hash)
    return CampaignView(cards, best, data.skipped(), [(k, str(v)) for k, v in config])


def _board(data: RunData, rows: list[BoardRow]) -> BoardView:
    objectives = data.labels
    multi = len(objectives) > 1
    sizes = size_columns(data.objectives, rows)
    sizes += member_columns(data.objectives, suite_members(data.config.task))
    head = ["rank", *(["front"] if multi else []), "trial", *objectives]
    head += [label for _, label in sizes] + ["width", "hash", "architecture"]
    table = []
    for r in rows:
        numbers = [r.rank_cell, *([str(r.level)] if multi else []), str(r.number)]
        numbers += [metric(key, v) for key, v in zip(data.objectives, r.values)]
        numbers += [metric(key, r.metrics.get(key)) for key, _ in sizes]
        numbers.append(str(r.width) if r.width is not None else MISSING)
        cells = [("num", text) for text in numbers] + [("hash", r.arch_hash), ("arch", r.arch)]
        table.append(TableRow(r.rank == 1, cells))
    ranking = (
        "Ranked by Pareto level (front 1 = not dominated by any other trial), then by "
        + ", ".join(data.names)
        if multi
        else f"Ranked by {data.names[0]}"
    )
    tie = TIE_NOTE if any(r.tied for r in rows) else None
    return BoardView(ranking, head, table, tie)


def _retrained(rows: list[RetrainedRow]) -> RetrainedView | None:
    if not rows:
        return None
    table = [
        TableRow(r.rank == 1, [("num", c) for c in retrained_cells(r)] + [("hash", r.arch_hash)])
        for r in rows
    ]
    name = str(rows[0].doc.get("metric_name", "metric"))
    return RetrainedView(name, [*retrained_head(rows), "hash"], table)


def _curves(png: bytes | None, objectives: list[str]) -> Figure:
    return Figure.of(
        png,
        "learning curves",
        f"Each trial's validation {objectives[0]} at the weight steps it was scored at (the "
        "study's intermediate values: its validation points, or the rungs it reached under "
        "a multi-fidelity schedule), grey; the leaderboard's best in colour, named by "
        "trial number and rank. A dot marks where each curve ends.",
        "No trial has a learning curve of two points or more: a campaign with one objective "
        "records one with --proxy-option eval_points=N, or over rungs with --schedule asha.",
    )


def _pareto(png: bytes | None) -> Figure:
    return Figure.of(
        png,
        "Pareto front",
        "Every distinct completed architecture in grey; the non-dominated ones "
        "highlighted and labelled with their leaderboard rank.",
        "No completed trial yet.",
    )


def _choices(png: bytes | None, shares: ChoiceShares) -> Figure:
    capped = (
        f" (not the {shares.asked} asked: a top must be fewer than half of the "
        f"{shares.all_n} evaluated to tell anything from them)"
        if shares.capped
        else ""
    )
    missing = (
        f"Too few architectures to compare: {shares.all_n} evaluated, and a top set against "
        "them must be fewer than half (at least 3 evaluated)."
        if shares.all_n
        else "No evaluated architecture yet."
    )
    return Figure.of(
        png,
        "gating choices in the top-k against all trials",
        "How each family of choices divides its uses: of the attention layers in an "
        "architecture, the share gated at each position; of its pruning gates, the "
        "share of each kind; and so on, averaged over the architectures that use the "
        f"family (each counts once). Coloured: the top {shares.top_n}{capped}; grey: all "
        f"{shares.all_n} evaluated. A choice far more common in the top than overall is "
        "one the search found to help.",
        missing,
    )


def _failures(kinds: list[tuple[str, int]], png: bytes | None) -> FailuresView | None:
    if not kinds:
        return None
    return FailuresView(Figure.of(png, "failure reasons", "", ""), kinds[:30])


def _best_arch(
    data: RunData, rows: list[BoardRow], best_tree: list[str] | None, png: bytes | None
) -> BestArchView | None:
    if not rows:
        return None
    best = rows[0]
    tree = "\n".join(best_tree) if best_tree else data.graph_note(best.arch_hash)
    figure = Figure.of(
        png,
        "diagram of the best architecture",
        "Execution order top to bottom; blue loops are skip paths.",
        "The graph artifact is missing.",
    )
    return BestArchView(best.number, best.arch_hash, tree, figure)
