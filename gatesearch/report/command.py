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

from gatesearch.report.board import board, fmt_value, size_columns
from gatesearch.report.choices import choice_shares, failure_kinds
from gatesearch.report.csvfile import trials_csv
from gatesearch.report.data import DEFAULT_TOP, REPORT_DIR, ReportError, load_run, rank_trials
from gatesearch.report.page import (
    RETRAINED_HEAD,
    Report,
    render_html,
    retrained_cells,
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
                + "  ".join(f"{o}={fmt_value(v)}" for o, v in zip(data.labels, rows[0].values)),
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
        sizes = size_columns(objectives)
        for head in [*heads, *(label for _, label in sizes)]:
            table.add_column(head, justify="right", no_wrap=True, min_width=len(head))
        table.add_column("architecture")
        for r in rep.rows:
            cells = [str(r.rank)] + ([str(r.level)] if multi else []) + [str(r.number)]
            cells += [fmt_value(v) for v in r.values]
            cells += [fmt_value(r.metrics.get(key)) for key, _ in sizes]
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
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="The run directory, e.g. runs/NAME.")
    ],
    top: Annotated[
        int,
        typer.Option(
            "--top", min=1, metavar="N", help="Leaderboard size; the top-k of the choices plot."
        ),
    ] = DEFAULT_TOP,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Report folder [default: RUN_DIR/report]."),
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
