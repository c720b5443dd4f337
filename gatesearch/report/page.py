"""index.html: one self-contained page (inline CSS and images, no script, nothing fetched)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatesearch.experiments.retrain import read_retrained, sort_retrained
from gatesearch.runs.store import RunState, campaign_state

if TYPE_CHECKING:
    pass

from gatesearch.report.board import BoardRow, fmt_value, size_columns
from gatesearch.report.choices import ChoiceShares
from gatesearch.report.data import Ranked, RunData

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
        fmt_value(d["valid"]["metric"]),
        fmt_value(d["test"]["metric"]),
        fmt_value(d["valid"]["loss"]),
        fmt_value(d.get("params")),
        f"{fmt_value(d.get('best_step'))}/{fmt_value(d.get('steps'))}",
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
        vals = ", ".join(f"{o} = {fmt_value(v)}" for o, v in zip(objectives, best.values))
        best_line = (
            f'<p class="note">{"Rank 1" if multi else "Best"}: trial {_e(best.number)} ({_e(vals)}), '
            f"<code>{_e(best.arch_hash)}</code></p>"
        )
    skipped = data.skipped()
    if skipped:
        best_line += f'<p class="note bad">Skipped: {_e(skipped)}.</p>'

    head = ["rank"] + (["front"] if multi else []) + ["trial", *objectives]
    sizes = size_columns(objectives)
    head += [label for _, label in sizes] + ["width", "hash", "architecture"]
    board_html = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    for r in rows:
        cells = [f'<td class="num">{r.rank}</td>']
        if multi:
            cells.append(f'<td class="num">{r.level}</td>')
        cells.append(f'<td class="num">{r.number}</td>')
        cells += [f'<td class="num">{_e(fmt_value(v))}</td>' for v in r.values]
        cells += [f'<td class="num">{_e(fmt_value(r.metrics.get(key)))}</td>' for key, _ in sizes]
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
