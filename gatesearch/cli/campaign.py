"""`gatesearch run | resume | status | ls`: search campaigns from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gatesearch.budget import Budget
from gatesearch.cli.fidelity import fidelity_row
from gatesearch.cli.options import (
    AddressOpt,
    ProxyOptionOpt,
    RunDirArg,
    RunsDirOpt,
    SpaceOpt,
    TaskParamOpt,
    WideOpt,
)
from gatesearch.cli.render import (
    Display,
    clock,
    objective_labels,
    out,
    print_board,
    print_table,
    task_text,
)
from gatesearch.evaluate import (
    Evaluator,
    ProxyEvaluator,
    SuiteEvaluator,
    parse_proxy_options,
    parse_task_params,
)
from gatesearch.formats import metric
from gatesearch.runs.campaign import Campaign, open_for_resume
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import count_finished, summary
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.store import RunStore, StoreError, list_runs
from gatesearch.tasks.suite import suite_members


def _header(store: RunStore, evaluator: Evaluator) -> None:
    """What a new campaign will do, before its first trial; for a task on a data file, how
    many epochs of it a trial trains (what users plan training in)."""
    config = store.config
    out.print(
        f"campaign {store.root}: {config.strategy} on {task_text(config.task)}, "
        f"{config.trials} trials × {config.budget}, {config.workers} workers"
        + (f", at most {config.max_params:,} parameters" if config.max_params else ""),
        markup=False,
    )
    if config.schedule.staged:
        out.print(f"schedule: {config.schedule.describe(config.budget)}", markup=False)
    if isinstance(evaluator, SuiteEvaluator):
        out.print(
            f"suite {evaluator.suite.name}: each member trains an equal share, "
            f"{evaluator.share(config.budget)} of the trial's {config.budget}",
            markup=False,
        )
    if isinstance(evaluator, ProxyEvaluator | SuiteEvaluator):
        out.print(
            "proxy: self-tuning hyperparameters (STN)"
            if evaluator.proxy.self_tuning
            else "proxy: fixed hyperparameters (self-tuning: --proxy-option self_tuning=true)",
            markup=False,
        )
    epochs = _epochs_text(evaluator, config.budget)
    if epochs is not None:
        out.print(epochs, markup=False)


def _epochs_text(evaluator: Evaluator, budget: Budget) -> str | None:
    """`data: 120 training sequences, 9,310 positions an epoch; 2e5tokens ≈ 21.5 epochs a
    trial`, for a task whose data has epochs (None otherwise)."""
    if not isinstance(evaluator, ProxyEvaluator):
        return None
    epoch = evaluator.task.train_epoch()
    if epoch is None:
        return None
    size = (
        f"data: {epoch.sequences:,} training sequences, {epoch.positions:,} positions an epoch "
        "(padding not counted)"
    )
    epochs = epoch.epochs(budget, evaluator.proxy.batch_size)
    if epochs is None:
        return f"{size}; epochs a trial of {budget} depend on each model's speed"
    return f"{size}; {budget} ≈ {epochs:.3g} epochs a trial"


def _drive(store: RunStore, new: bool = False, wide: bool = False) -> None:
    """Drive the campaign to its target; `new`: print the header of a campaign starting."""
    with store:
        campaign = Campaign(store)
        if new:
            _header(store, campaign.evaluator)
        labels = objective_labels(store.config)
        with Display(out, store.config.name, labels, store.config.objectives) as display:
            campaign.display = display
            display.update(campaign.stats)
            try:
                stats = campaign.run()
            except KeyboardInterrupt:
                display.__exit__()
                out.print(
                    f"interrupted: continue with `gatesearch resume {escape(str(store.root))}`",
                    soft_wrap=True,
                )
                raise typer.Exit(130) from None
        print_board(store, wide)
        out.print(
            f"{stats.done} trials ({stats.failed} failed, {stats.duplicates} duplicates) in "
            f"{clock(stats.elapsed)}."
        )
        members = suite_members(store.config.task)
        print_next(store.root, found=stats.best is not None, members=members)


def print_next(root: Path, found: bool, members: tuple[str, ...] = ()) -> None:
    """What to do next, one command a line and never wrapped: a command broken across
    lines at the terminal's width cannot be copied whole. A suite's campaign (its
    `members`) retrains its finalists at several seeds (its best is the maximum of many
    one-seed scores) and exports the architecture with one member's ends."""
    if found:
        steps = [
            (f"gatesearch report {root}", "plots and an HTML page"),
            (f"gatesearch retrain {root} --top 1", "the best at full budget"),
            (f"gatesearch export {root} -o best.py --weights", "as PyTorch code"),
            (f"gatesearch resume {root} --trials N", "search N more"),
        ]
        if members:
            rescore = f"gatesearch retrain {root} --top 3"
            export = f"gatesearch export {root} --member {members[0]} -o best.py"
            steps = [
                steps[0],
                (rescore, "the best 3 on every member at 2 seeds: which is best"),
                (export, f"as PyTorch code, with {members[0]}'s ends"),
                steps[3],
            ]
    else:  # nothing to retrain or export: what went wrong comes first
        steps = [
            (f"gatesearch status {root}", "why no trial completed"),
            (f"gatesearch resume {root} --trials N", "try N more"),
        ]
    out.print("next:")
    for command, why in steps:
        out.print(f"  {escape(command)}    [dim]# {why}[/dim]", soft_wrap=True)


def run(
    space: SpaceOpt = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            metavar="PRESET",
            help="Strategy preset: a .toml file or random|tpe|nsga2|evolution [default: evolution].",
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            metavar="TASK",
            help="Task: a built-in (mqar, selective_copy, parity, flip_flop, MAD's "
            "in_context_recall, noisy_recall, fuzzy_recall, memorization, compression, "
            "charlm, frames, classify, tokens), module:function, an entry point, a suite "
            "(a .toml file such as suites/mad.toml, or a shipped suite's name: mad), or null "
            "(no training) "
            "[default: a small MQAR, vocab=64 length=32 pairs=4].",
        ),
    ] = None,
    task_param: TaskParamOpt = None,
    trials: Annotated[int, typer.Option(metavar="N", help="How many trials.")] = 12,
    workers: Annotated[int, typer.Option(metavar="N", help="Trials evaluated at once.")] = 2,
    address: AddressOpt = None,
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="Run name [default: strategy-task-time].")
    ] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    budget: Annotated[
        str | None,
        typer.Option(
            metavar="BUDGET",
            help="Per-trial training budget: 200steps, 30s or 1e6tokens (tokens: the real "
            "positions fed to the model, padding not counted) [default: 400steps for the "
            "default campaign (no --task), else the task's (20s); at once for null].",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Campaign seed; per-trial seeds derive from it.")
    ] = 0,
    objectives: Annotated[
        str,
        typer.Option(
            metavar="NAMES",
            help="Comma-separated: metric (the task's; maximised when higher is better, e.g. "
            "MQAR accuracy), loss, params, flops, latency, state (decode state in bytes, "
            "causal tasks) (minimised); for a suite, member:NAME (one member's score, "
            "maximised). Two or more: Pareto.",
        ),
    ] = "metric",
    seed_arch: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="A known architecture (spaces/known/*.toml) for the first trials; repeatable.",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Optuna RDB URL (e.g. postgresql://...) instead of the run's journal file.",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Seconds a trial may run, counted from when a worker starts it (not while it "
            "queues for a free CPU), before it is failed [default: the preset's].",
        ),
    ] = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Parameter limit: a proposal whose model (built for the task) is larger is "
            "turned down untrained and not counted among the trials [default: 200000 for "
            "the default campaign (no --task), else no limit].",
        ),
    ] = None,
    proxy_option: ProxyOptionOpt = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            metavar="none|asha|hyperband",
            help="Multi-fidelity: none (every trial trains the whole budget), asha (trials "
            "start at the lowest rung; the best 1/η go on, continuing their training) or "
            "hyperband (ASHA in brackets) [default: the preset's, else none].",
        ),
    ] = None,
    min_budget: Annotated[
        str | None,
        typer.Option(
            metavar="BUDGET",
            help="The lowest rung, in the budget's unit [default: the budget / η²].",
        ),
    ] = None,
    eta: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Rungs grow by this factor and 1/η of a rung is promoted [default: 3].",
        ),
    ] = None,
    wide: WideOpt = False,
) -> None:
    """Run a search campaign into RUNS_DIR/NAME."""
    request = RunRequest(
        space=space,
        strategy=strategy,
        task=task,
        task_params=parse_task_params(task_param or []),
        trials=trials,
        workers=workers,
        address=address,
        name=name,
        runs_dir=runs_dir,
        budget=budget,
        seed=seed,
        objectives=objectives,
        seed_archs=list(seed_arch or []),
        storage=storage,
        timeout=timeout,
        max_params=max_params,
        proxy=parse_proxy_options(proxy_option or []),
        schedule=schedule,
        min_budget=min_budget,
        eta=eta,
    )
    config, space_path, preset = prepare_run(request)
    store = RunStore.create(
        runs_dir / config.name, config, space_path, preset.text, package_versions()
    )
    _drive(store, new=True, wide=wide)


def resume(
    run_dir: RunDirArg,
    trials: Annotated[
        int | None, typer.Option(metavar="N", help="Run N more trials than are finished.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Ray cluster address to continue on.")
    ] = None,
    wide: WideOpt = False,
) -> None:
    """Continue an interrupted campaign: finished trials kept, unfinished ones run again."""
    store = open_for_resume(run_dir, trials, address)
    records = store.records()
    done = count_finished(records)
    unfinished = any(r.outcome is TrialOutcome.RUNNING for r in records)
    if done >= store.target and not unfinished:
        store.close()
        out.print(
            f"{store.root} is finished ({done}/{store.target} trials): nothing to resume; "
            f"`gatesearch resume {store.root} --trials N` searches N more"
        )
        return
    out.print(f"resuming {store.root}")
    _drive(store, wide=wide)


def status(
    run_dir: RunDirArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wide: WideOpt = False,
) -> None:
    """Progress, best trial and failure reasons of a campaign."""
    store = RunStore.open(run_dir, writer=False)
    info = summary(store)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    out.print(
        f"[bold]{info['name']}[/bold] ({info['state']})  {info['strategy']} on "
        f"{escape(task_text(store.config.task))} × {info['budget']}  "
        f"objectives: {', '.join(objective_labels(store.config))}"
    )
    # Trials stored as running with no driver alive were cut off with it: say so, not "running".
    running = (
        f"{info['running']} left running by the stopped driver (resume runs them again)"
        if info["running"] and not info["driver_alive"]
        else f"{info['running']} running"
    )
    interrupted = ""
    if info["interrupted"]:
        waiting = info["interrupted"] - info["interrupted_rerun"]
        interrupted = f", {info['interrupted']} interrupted ({info['interrupted_rerun']} re-run"
        interrupted += f", {waiting} to run again on resume)" if waiting else ")"
    out.print(
        f"{info['finished']}/{info['target']} finished: {info['complete']} complete "
        f"({info['duplicates']} duplicates), {info['failed']} failed, {running}{interrupted}"
    )
    if info["rejected"]:
        out.print(
            f"  {info['rejected']} proposals over --max-params {info['max_params']:,} "
            "turned down untrained"
        )
    if info["repeated"]:
        out.print(
            f"  {info['repeated']} proposals repeated an evaluated architecture and were asked "
            "again (no trial of the --trials count)"
        )
    if "rungs_line" in info:  # a multi-fidelity campaign
        peak = info["states_peak_bytes"] / 2**20
        out.print(f"  {info['rungs_line']}; saved states took at most {peak:.1f} MiB", markup=False)
    for reason, n in info["failure_reasons"].items():
        out.print(f"  failed ×{n}: {reason}", markup=False)
    print_board(store, wide)


def ls(
    runs_dir: Annotated[
        Path, typer.Argument(metavar="RUNS_DIR", help="Folder holding runs.")
    ] = Path("runs"),
) -> None:
    """List campaigns (state, strategy, task, progress, best) and fidelity results."""
    roots = list_runs(runs_dir)
    # Whole lines, never cut: a run's name is what a user copies into the next command (a
    # line longer than the terminal wraps there, but nothing is lost).
    table = Table(box=None, pad_edge=False)
    for head in ("run", "state", "strategy", "task", "progress", "failed", "best"):
        table.add_column(head, no_wrap=True)
    for root in roots:
        fidelity = fidelity_row(root)
        if fidelity is not None:
            table.add_row(root.name, *fidelity)
            continue
        try:
            info = summary(RunStore.open(root, writer=False))
        except StoreError as exc:
            table.add_row(root.name, "?", "?", "?", "?", "?", f"unreadable: {exc}")
            continue
        best = info["best"]
        table.add_row(
            root.name,
            info["state"],
            info["strategy"],
            Text(info["task_label"]),  # a param may hold brackets: not markup
            f"{info['finished']}/{info['target']}",
            str(info["failed"]),
            " ".join(
                f"{label}={metric(key, v)}"
                for label, (key, v) in zip(info["labels"], best["values"].items())
            )
            if best
            else "-",
        )
    print_table(out, table, wide=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("status")(status)
    app.command("ls")(ls)
