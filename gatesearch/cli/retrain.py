"""`gatesearch retrain`: the campaign's best architectures trained at the full budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from gatesearch.arch.describe import describe
from gatesearch.cli.options import RunDirArg, WideOpt
from gatesearch.cli.render import arch_cell, clock, out, print_table
from gatesearch.experiments.retrain import (
    DEFAULT_DROPOUTS,
    DEFAULT_EVAL_POINTS,
    DEFAULT_PATIENCE,
    DEFAULT_SCHEDULE,
    SUITE_DROPOUTS,
    SUITE_PATIENCE,
    Placed,
    RetrainJob,
    default_dropouts,
    default_patience,
    final_order,
    parse_dropouts,
    protocol,
)
from gatesearch.experiments.retrain import retrain as run_retrain
from gatesearch.formats import (
    MISSING,
    TIE_NOTE,
    count,
    metric,
    objective_header,
    rank_text,
    score,
    whole,
)
from gatesearch.runs.store import RunStore


def retrain(
    run_dir: RunDirArg,
    top: Annotated[
        int, typer.Option(metavar="N", help="How many of the best trials to retrain.")
    ] = 1,
    budget: Annotated[
        str | None,
        typer.Option(
            metavar="BUDGET",
            help="Most training per architecture: 2000steps, 600s or 1e7tokens "
            "[default: 10x the campaign's per-trial budget; a suite's finalists: the trial's "
            "budget, on more seeds].",
        ),
    ] = None,
    eval_points: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Score the validation split at this many evenly spaced points of the budget; "
            "the best point's weights are kept.",
        ),
    ] = DEFAULT_EVAL_POINTS,
    patience: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Stop after this many validation points in a row without a better score "
            f"(0: train the whole budget) [default: {DEFAULT_PATIENCE}; a suite's finalists: "
            f"{SUITE_PATIENCE}].",
        ),
    ] = None,
    dropout: Annotated[
        str | None,
        typer.Option(
            metavar="RATES",
            help="Dropout for every rate: 'tuned' (the proxy's values: the fixed defaults, or "
            "what a self-tuning campaign tuned), a rate such as 0.25, 'self-tune' (the "
            "proxy's values as the start, tuned on as the retrain goes), or several, "
            "comma-separated: each architecture is then trained once per value and the best "
            "on validation kept. The default trains the proxy's values and 0.25: a retrain "
            "10x the proxy's length wants more dropout than a proxy's short training on small "
            "data, and validation keeps the proxy's where it does not. A suite's finalists, "
            "retrained at the trial's budget, train the proxy's values only "
            f"[default: '{DEFAULT_DROPOUTS}'; a suite's finalists: '{SUITE_DROPOUTS}'].",
        ),
    ] = None,
    schedule: Annotated[
        str,
        typer.Option(
            metavar="SHAPE",
            help="How the learning rate decays: 'cosine' (over the whole budget, stopping "
            "after --patience points without a better score) or 'plateau' (constant until "
            "--patience points pass without a better score, then back to the best point and a "
            "linear decay over a quarter of the steps done so far; the budget is a maximum).",
        ),
    ] = DEFAULT_SCHEDULE,
    seeds: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="A suite campaign's finalists: train each at N seeds (the same for every "
            "finalist) and rank them by the mean score [default: 2; a run on one task "
            "trains once, at the trial's seed].",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Trainings at once [default: the campaign's].")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS", help="Ray cluster address [default: the campaign's, or local]."
        ),
    ] = None,
    wide: WideOpt = False,
) -> None:
    """Train the campaign's best K at the full budget (by default once with the proxy's
    dropout and once with dropout 0.25, the better on validation kept), keeping each one's
    best validation point; store weights (safetensors), graph, validation/test
    metrics and the validation curve under RUN_DIR/retrained/<hash>/. Ranks them by their
    retrained validation score, which `export --rank` and `report` then follow. A suite
    campaign's finalists train every member at --seeds seeds, at the trial's budget, with the
    proxy's dropout and no early stop, and are ranked by their mean suite score (no weights
    kept: one model per member and seed)."""
    if dropout is None or patience is None:
        with RunStore.open(run_dir, writer=False) as store:
            spec = store.config.task
        dropout = default_dropouts(spec) if dropout is None else dropout
        patience = default_patience(spec) if patience is None else patience
    dropouts = parse_dropouts(dropout)  # checked before anything starts
    printer = _Printer(several=len(dropouts) > 1)
    rows = run_retrain(
        run_dir,
        top,
        budget=budget,
        address=address,
        workers=workers,
        on_done=printer.done,
        eval_points=eval_points,
        patience=patience,
        on_progress=printer.progress,
        dropouts=dropouts,
        schedule=schedule,
        seeds=seeds,
    )
    # The rank `export --rank` and `report` give: every retrained architecture of the run
    # counts, earlier retrains too.
    with RunStore.open(run_dir, writer=False) as store:
        final = {p.arch_hash: p for p in final_order(store)}
        print_table(out, _table(run_dir, rows, store, final, wide), wide)
        # Only the rows shown: campaign trials never retrained also tie (two proxies at the
        # same accuracy), but this table does not list them.
        shown = (final.get(r["job"].record.arch_hash) for r in rows)
        if any(p is not None and p.tied for p in shown):
            out.print(TIE_NOTE, markup=False, soft_wrap=True)  # one line, however narrow
        # Earlier retrains count in the ranks shown; say so when they were trained otherwise.
        # (A result kept in place of a short one is an earlier retrain, not this one's.)
        now = {r["job"].record.arch_hash for r in rows if "metrics" in r and "not_stored" not in r}
        docs = {h: p.retrained for h, p in final.items() if p.retrained is not None}
        mine = {protocol(doc) for h, doc in docs.items() if h in now}
        other = Counter(protocol(doc) for doc in docs.values() if protocol(doc) not in mine)
        if mine and other:
            earlier = ", ".join(f"{n} at {how}" for how, n in sorted(other.items()))
            out.print(
                f"note: the ranks count earlier retrains trained otherwise ({earlier}); "
                "retrain them alike to compare them on equal terms",
                markup=False,
                soft_wrap=True,
            )
    # Where each model went is printed as it ends (above); the command on a line of its own,
    # never wrapped: it is there to be copied. Printed when anything was retrained, failures
    # or not: what was stored is ranked and exportable either way.
    if any("metrics" in r for r in rows):
        out.print("next:")
        member = next((r["job"].member for r in rows if r["job"].member is not None), None)
        if member is not None:  # a suite: no weights; the architecture with one member's ends
            command = f"gatesearch export {run_dir} --rank 1 --member {member.name} -o best.py"
            why = f"the best on the suite as PyTorch code, with {member.name}'s ends"
        else:
            command = f"gatesearch export {run_dir} --rank 1 -o model.py --weights"
            why = "the best retrained model as PyTorch code"
        out.print(f"  {command}    # {why}", markup=False, soft_wrap=True)
    # Last, so that they are the lines a user reads first after the run.
    failed = sum("error" in r for r in rows)
    if failed:
        out.print(f"{failed} of {len(rows)} retrainings failed")
    # A suite finalist stored at fewer seeds than asked: kept, but not what was asked for.
    short = sum(bool(r.get("not_stored", r.get("metrics", {})).get("failures")) for r in rows)
    if short:
        out.print(f"{short} of {len(rows)} finalists scored at fewer seeds than asked (above)")
    if failed or short:
        raise typer.Exit(1)


class _Printer:
    """The lines printed while retraining: each validation point, then each model's result."""

    def __init__(self, several: bool) -> None:
        self.several = several  # several dropout variants per architecture
        # A suite's jobs (members × seeds × variants) print at each quarter of their budget,
        # not at every point: the quarter each last printed.
        self.quarters: dict[int, int] = {}

    def label(self, job: RetrainJob, whole: bool = False) -> str:
        """The job's name in a line; `whole`: the architecture it belongs to (a suite's
        finalist is many jobs: one per member, seed and variant)."""
        if whole:
            return f"campaign #{job.rank} (trial {job.record.number})"
        variant = f", {job.variant}" if self.several or job.dropout is not None else ""
        member = f", {job.member.name}, seed {job.draw + 1}" if job.member is not None else ""
        return f"campaign #{job.rank} (trial {job.record.number}{member}{variant})"

    def progress(self, job: RetrainJob, event: dict[str, Any]) -> None:
        point, best, frac = event["point"], event["best"], event["progress"]
        if job.member is not None:
            quarter = int(frac * 4 + 1e-9)
            if quarter <= self.quarters.get(id(job), 0):
                return
            self.quarters[id(job)] = quarter
        eta = event["elapsed"] * (1.0 - frac) / frac if frac > 0 else None
        out.print(
            f"  {self.label(job)}: step {point['step']:,} "
            f"({frac:.0%}), valid {event['metric_name']} {score(point['valid_metric'])} "
            f"(loss {score(point['valid_loss'])}), best {score(best['valid_metric'])} at step "
            f"{best['step']:,}, ETA {clock(eta)} at most",
            markup=False,
        )

    def done(self, row: dict[str, Any]) -> None:
        job = row["job"]
        if "error" in row:
            out.print(f"{self.label(job, whole=True)} failed: {row['error']}", markup=False)
            return
        m = row["metrics"]
        if job.member is not None:
            self.suite_done(row)
            return
        stop = "stopped early, " if m["stopped_early"] else ""
        if m.get("cooldown_start") is not None:  # --schedule plateau: where its decay began
            stop = f"decay from {m['cooldown_start']:.0%} of the budget, {stop}"
        kept = f"kept of {len(m['variants'])} variants: " if "variants" in m else ""
        out.print(
            f"{self.label(job)}: {kept}valid {m['metric_name']} "
            f"{score(m['valid']['metric'])}, test {score(m['test']['metric'])} "
            f"({stop}best of {len(m['curve'])} points at step {m['best_step']:,.0f}) "
            f"-> {row['path']}",
            markup=False,
        )

    def suite_done(self, row: dict[str, Any]) -> None:
        """A suite finalist: its mean score and each seed's, then each member's mean score;
        when it was short of seeds and an earlier retrain stays (`outranks_short`), the new
        scores and then which result stays."""
        m = row.get("not_stored", row["metrics"])
        each = ", ".join(score(s["valid"]["metric"]) for s in m["per_seed"])
        out.print(
            f"{self.label(row['job'], whole=True)}: valid score {score(m['valid']['metric'])} "
            f"(mean of {len(m['per_seed'])} seeds: {each}), test "
            f"{score(m['test']['metric'])}"
            + (" (not stored, below)" if "not_stored" in row else f" -> {row['path']}"),
            markup=False,
        )
        members = ", ".join(f"{name} {score(v['valid'])}" for name, v in m["members"].items())
        out.print(f"  members (valid, 0 to 1): {members}", markup=False, soft_wrap=True)
        for failure in m.get("failures", []):  # those seeds are left out of the score
            out.print(f"  seed left out, failed: {failure}", markup=False)
        if "not_stored" in row:
            kept = row["metrics"]
            out.print(
                f"  not stored: the earlier retrain in {row['path']} (valid score "
                f"{score(kept['valid']['metric'])}, {protocol(kept)}, no seed lost) stays",
                markup=False,
            )


def _heads(store: RunStore) -> list[str]:
    """Column heads: the scores named and pointed as every table does (`valid` over
    `accuracy ↑`), on two lines so that the numbers leave the paths and architectures room."""
    name, hib = store.config.metric_name, store.config.higher_is_better
    return [
        "rank",
        "campaign",
        "trial",
        "proxy",
        f"valid\n{objective_header('metric', name, hib)}",
        f"test\n{objective_header('metric', name, hib)}",
        f"valid\n{objective_header('loss', name, False)}",
        "params",
        "best\nstep",
        "architecture",
    ]


def _table(
    run_dir: Path,
    rows: list[dict[str, Any]],
    store: RunStore,
    final: dict[str, Placed],
    wide: bool,
) -> Table:
    """The retrained models, best validation score first, with their final rank (`=2` when
    their retrained scores tie), and the architecture as searched (short, or complete with
    `wide`)."""
    table = Table(
        title=f"retrained from {run_dir}, best validation score first",
        box=None,
        pad_edge=False,
    )
    for head in _heads(store):
        if head == "architecture":  # it takes what width the numbers leave
            table.add_column(head, justify="left")
        else:  # numbers are never cut
            width = max(map(len, head.splitlines()))
            table.add_column(head, justify="right", no_wrap=True, min_width=width)
    objectives = store.config.objectives
    for row in rows:
        job = row["job"]
        proxy = " ".join(metric(o, v) for o, v in zip(objectives, job.record.values or ()))
        arch = arch_cell(describe(job.graph), describe(job.graph, complete=True), wide)
        if "error" in row:
            blank = [""] * 4
            table.add_row(
                MISSING,
                f"#{job.rank}",
                str(job.record.number),
                proxy,
                "failed",
                *blank,
                Text(row["error"]),  # in the architecture's place: why comes first
            )
            continue
        m = row["metrics"]
        placed = final.get(job.record.arch_hash)
        table.add_row(
            rank_text(placed.rank, placed.joint_rank, placed.tied) if placed else MISSING,
            f"#{job.rank}",
            str(job.record.number),
            proxy,
            score(m["valid"]["metric"]),
            score(m["test"]["metric"]),
            score(m["valid"]["loss"]),
            count(m["params"]),
            whole(m["best_step"]),
            arch,
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain)
