"""`gatesearch report`: draw and write the files, print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gatesearch.arch.describe import tree_lines
from gatesearch.atomic import remove_temps, write_atomic

if TYPE_CHECKING:
    pass

from gatesearch.cli.options import WideOpt
from gatesearch.cli.render import arch_cell, print_members, print_table
from gatesearch.formats import TIE_NOTE, metric
from gatesearch.report.board import board, size_columns
from gatesearch.report.choices import choice_shares, failure_kinds
from gatesearch.report.csvfile import trials_csv
from gatesearch.report.data import DEFAULT_TOP, REPORT_DIR, ReportError, load_run, rank_trials
from gatesearch.report.page import (
    Report,
    render_html,
    retrained_cells,
    retrained_head,
    retrained_rows,
)
from gatesearch.report.plots import (
    plot_architecture,
    plot_best_so_far,
    plot_choices,
    plot_failures,
    plot_learning_curves,
    plot_pareto,
)
from gatesearch.tasks.suite import member_objective, suite_members


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
        "learning_curves": plot_learning_curves(data, ranked[:top]),
        "pareto": plot_pareto(data, ranked),
        "choices": plot_choices(shares),
        "failures": plot_failures(kinds),
        "best_architecture": (
            plot_architecture(
                best_graph,
                f"best: trial {rows[0].number}  {rows[0].arch_hash}  "
                + "  ".join(
                    f"{name}={metric(key, v)}"
                    for name, key, v in zip(data.names, data.objectives, rows[0].values)
                ),
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
        keys=data.objectives,
        rungs=data.rungs.line() if data.rungs is not None else None,
        members=suite_members(data.config.task),
    )


# ------------------------------------------------------------------------------------- CLI


def _print(console: Console, rep: Report, wide: bool = False) -> None:
    c = rep.counts
    objectives = rep.objectives
    console.print(Text(rep.name, style="bold"), end="")
    # Proposals over --max-params were never trained: a count beside the trials, not one of
    # them (the page shows the same card).
    rejected = f" · {c['rejected']} over --max-params, not trained" if c["rejected"] else ""
    console.print(
        f": {rep.finished}/{rep.target} finished · {c['complete']} "
        f"complete · {c['failed']} failed · {c['running']} running · {c['duplicates']} "
        f"duplicates · {c['interrupted']} interrupted{rejected}",
        highlight=False,
    )
    if rep.rungs is not None:
        console.print(f"  {rep.rungs}", highlight=False, markup=False)
    if rep.rows:
        multi = len(objectives) > 1
        table = Table(box=None, pad_edge=False)
        # Numbers never wrap or shrink; the architecture takes what width is left, one line.
        heads = ["rank", *(["front"] if multi else []), "trial", *objectives]
        sizes = size_columns(rep.keys, rep.rows)
        for head in [*heads, *(label for _, label in sizes)]:
            table.add_column(head, justify="right", no_wrap=True, min_width=len(head))
        table.add_column("architecture")
        for r in rep.rows:
            cells = [r.rank_cell] + ([str(r.level)] if multi else []) + [str(r.number)]
            cells += [metric(key, v) for key, v in zip(rep.keys, r.values)]
            cells += [metric(key, r.metrics.get(key)) for key, _ in sizes]
            table.add_row(*cells, arch_cell(r.arch_short, r.arch, wide))
        print_table(console, table, wide)
        if any(r.tied for r in rep.rows):
            console.print(Text(TIE_NOTE), soft_wrap=True)  # one line, however narrow
        scores = [
            (r.number, {m: r.metrics.get(member_objective(m)) for m in rep.members})
            for r in rep.rows
        ]
        print_members(console, rep.members, scores, rep.keys, wide)
    else:
        console.print("no completed trial yet")
    if rep.retrained:
        metric_name = rep.retrained[0].doc.get("metric_name", "metric")
        table = Table(
            title=f"retrained: best validation {metric_name} first (the order export --rank "
            "follows)",
            box=None,
            pad_edge=False,
        )
        for head in retrained_head(rep.retrained):
            width = max(map(len, head.splitlines()))  # numbers are never cut
            table.add_column(head, justify="right", no_wrap=True, min_width=width)
        for row in rep.retrained:
            table.add_row(*retrained_cells(row))
        print_table(console, table, wide)
    for kind, n in rep.kinds[:10]:
        console.print(Text(f"  failed ×{n}: {kind}"))
    if len(rep.kinds) > 10:
        console.print(f"  … {len(rep.kinds) - 10} more kinds of failure in the report")
    if rep.skipped:
        console.print(Text(f"skipped: {rep.skipped}"), soft_wrap=True)  # a path: never broken


def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="The run directory, e.g. runs/NAME.")
    ],
    top: Annotated[
        int,
        typer.Option(
            "--top",
            min=1,
            metavar="N",
            help="Leaderboard size; the top-k of the choices plot (fewer when that would not "
            "be under half of the evaluated architectures).",
        ),
    ] = DEFAULT_TOP,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Report folder [default: RUN_DIR/report]."),
    ] = None,
    wide: WideOpt = False,
) -> None:
    """Leaderboard in the terminal; plots and one self-contained HTML page in RUN_DIR/report."""
    rep = write_report(run_dir, top, out)
    console = Console(highlight=False)
    _print(console, rep, wide)
    pngs = sum(1 for f in rep.files if f.suffix == ".png")
    console.print(
        Text(f"report: {rep.folder / 'index.html'} ({pngs} plots, trials.csv)"), highlight=False
    )
    console.print(Text("next: open the page in a browser, or share it (one self-contained file)"))
    if rep.rows and _has_command("export"):
        # A command on a line of its own, never wrapped: it is there to be copied.
        command = f"gatesearch export {run_dir} --rank 1 -o model.py"
        console.print(Text(f"  {command}    # the best as PyTorch code"), soft_wrap=True)


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
