"""`gatesearch fidelity`: can the proxy be trusted on this task? — and how its result reads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gatesearch.cli.options import (
    PROXY_OPTION_HELP,
    AddressOpt,
    RunsDirOpt,
    SpaceOpt,
    TaskParamOpt,
)
from gatesearch.cli.render import clock, out
from gatesearch.evaluate import parse_proxy_options, parse_task_params
from gatesearch.experiments.fidelity import (
    KIND,
    PLOT,
    PROXIES,
    PROXY_LABELS,
    RESULT,
    FidelityConfig,
    FidelityError,
    FidelityRequest,
    run_fidelity,
)
from gatesearch.runs.store import CONFIG


def fidelity_row(root: Path) -> tuple[str, ...] | None:
    """`ls`'s columns for a `gatesearch fidelity` folder (they live in runs/ too), or None
    when `root` is not one."""
    try:
        doc = json.loads((root / CONFIG).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return None
    try:
        config = FidelityConfig.from_dict(doc, str(root / CONFIG))
        task, archs = config.task.name, f"{config.archs} archs"
    except FidelityError:  # a folder cut off while it was written: listed, not read
        task, archs = "?", "? archs"
    try:
        taus = json.loads((root / RESULT).read_text())["correlations"]["metric"]
        best = " ".join(
            f"τ({key})={taus[name]['tau']:+.2f}"
            for key, name in (("a", "self_tuning"), ("b", "fixed"), ("c", "params"))
            if taus.get(name, {}).get("tau") is not None
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ("unfinished", "fidelity", task, archs, "-", f"no {RESULT} yet")
    return ("finished", "fidelity", task, archs, "-", best)


def _corr(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _top(stats: dict[str, Any]) -> str:
    return "" if stats.get("overlap") is None else f"{stats['overlap']}/{stats['k']}"


def _pick(stats: dict[str, Any]) -> str:
    return "" if stats.get("pick_rank") is None else f"#{stats['pick_rank']}"


def fidelity_table(result: dict[str, Any]) -> Table:
    """Rank agreement of each proxy with the full budget on the metric and the loss — τ, ρ,
    the top-k overlap and where the proxy's pick ranks at full budget — and what each kind of
    run cost. Narrow enough for an 80-column terminal; `two_seeds_line` adds the repeat's
    second reference."""
    config = FidelityConfig.from_dict(result["config"], RESULT)
    metric = config.metric_name
    table = Table(
        title=f"proxy fidelity: {config.task.name} ({metric}), "
        f"{config.archs} architectures, "
        f"{config.proxy_budget} vs {config.full_budget}",
        box=None,
        pad_edge=False,
    )
    heads = ["τ", "ρ", "τ loss", "ρ loss", "top-k", "pick"]
    table.add_column("proxy")
    for head in (*heads, "pairs", "CPU-s"):
        table.add_column(head, justify="right")
    cpu = result["cpu_seconds"]
    for proxy in config.compared:
        on_metric = result["correlations"]["metric"][proxy]
        on_loss = result["correlations"]["loss"][proxy]
        cost = cpu[proxy]["total"] if proxy in cpu else 0.0
        cells = [
            _corr(on_metric["tau"]),
            _corr(on_metric["rho"]),
            _corr(on_loss["tau"]),
            _corr(on_loss["rho"]),
            _top(on_metric),
            _pick(on_metric),
        ]
        table.add_row(PROXY_LABELS[proxy], *cells, str(on_metric["n"]), f"{cost:.1f}")
    blank = [""] * (len(heads) + 1)
    table.add_row(f"full ({config.full_trainer})", *blank, f"{cpu['full']['total']:.1f}")
    return table


def two_seeds_line(result: dict[str, Any]) -> str | None:
    """τ of (a)-(c) against the mean of both full runs, when the full runs were repeated."""
    two = result.get("two_seeds")
    if not two:
        return None

    def taus(key: str) -> str:
        return ", ".join(f"({c}) {_corr(two[key][p]['tau'])}" for c, p in zip("abc", PROXIES))

    metric = FidelityConfig.from_dict(result["config"], RESULT).metric_name
    line = f"τ against the mean of both full runs: {metric} {taus('metric')}"
    # A task whose metric is its loss (language modelling) would print the same twice.
    return line if metric == "loss" else f"{line}; loss {taus('loss')}"


def bootstrap_line(result: dict[str, Any]) -> str | None:
    """The bootstrap intervals of the metric's τ and of the differences (a) − (b), (a) − (c):
    how much of a gap between proxies the architectures' sampling alone could make."""
    boot = result.get("bootstrap")
    if not boot:  # written before the intervals existed
        return None

    def span(ci: list[float] | None) -> str:
        return "n/a" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"

    taus = ", ".join(f"{PROXY_LABELS[p][:3]} {span(ci)}" for p, ci in boot["tau"].items())
    diffs = ", ".join(
        f"{PROXY_LABELS[p][:3]}−{PROXY_LABELS[q][:3]} {span(ci)}"
        for (p, q), ci in ((tuple(k.split("-")), ci) for k, ci in boot["difference"].items())
    )
    level = round(100 * boot["level"])
    return (
        f"{level}% intervals over the architectures ({boot['resamples']} resamples): "
        f"τ {taus}; differences {diffs}"
    )


def fidelity_lines(result: dict[str, Any]) -> list[str]:
    """What follows the fidelity table: the two-seed τ and the bootstrap intervals."""
    return [line for line in (two_seeds_line(result), bootstrap_line(result)) if line]


def fidelity(
    space: SpaceOpt = None,
    task: Annotated[
        str,
        typer.Option(metavar="TASK", help="Task: a built-in, module:function or an entry point."),
    ] = "mqar",
    task_param: TaskParamOpt = None,
    archs: Annotated[int, typer.Option(metavar="N", help="How many architectures to sample.")] = 20,
    proxy_budget: Annotated[
        str | None,
        typer.Option(metavar="BUDGET", help="Budget of the proxy runs (a) and (b) [default: 20s]."),
    ] = None,
    full_budget: Annotated[
        str | None,
        typer.Option(
            metavar="BUDGET", help="Budget of the reference runs [default: 10x the proxy budget]."
        ),
    ] = None,
    full_trainer: Annotated[
        str,
        typer.Option(
            metavar="self-tuning|fixed",
            help="How the reference runs train: self-tuning (hyperparameters tuned as they "
            "train) or fixed (defaults).",
        ),
    ] = "self-tuning",
    runs_dir: RunsDirOpt = Path("runs"),
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Result folder name [default: fidelity-task-time]."),
    ] = None,
    workers: Annotated[int, typer.Option(metavar="N", help="Trainings at once (local Ray).")] = 2,
    cpus: Annotated[
        int,
        typer.Option(metavar="N", help="CPUs per training; torch in it uses this many threads."),
    ] = 1,
    gpus: Annotated[
        float,
        typer.Option(metavar="GPUS", help="GPUs per training, fractions allowed (e.g. 0.25)."),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed of the sampling and the trainings.")
    ] = 0,
    address: AddressOpt = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Sample only architectures with at most this many parameters, as a "
            "campaign with --max-params would train [default: no limit].",
        ),
    ] = None,
    repeat_full: Annotated[
        bool,
        typer.Option(
            help="Train the full budget twice, the second time with another seed, and rank "
            "the two against each other: (d), the ceiling seed noise leaves any proxy."
        ),
    ] = False,
    proxy_option: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help=f"{PROXY_OPTION_HELP} Applies to (a) and (b); the full runs take "
            "--full-option instead.",
        ),
    ] = None,
    full_option: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="A setting of the trainer for the full-budget runs as key=value; "
            "repeatable. They decay the learning rate (lr_schedule=cosine) unless told "
            "lr_schedule=constant.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="An earlier fidelity run (its folder) on the same task, space, seed, "
            "--archs, --max-params, full budget and full options: its full-budget runs are "
            "reused, not trained again.",
        ),
    ] = None,
) -> None:
    """Can the proxy be trusted on this task? Rank correlations (Kendall τ, Spearman ρ) of
    (a) the self-tuning proxy, (b) fixed hyperparameters at the same budget and (c) the
    parameter count with full-budget scores of N sampled architectures; with --repeat-full,
    (d) a second full-budget run at another seed."""
    req = FidelityRequest(
        space=space,
        task=task,
        task_params=parse_task_params(task_param or []),
        archs=archs,
        proxy_budget=proxy_budget,
        full_budget=full_budget,
        full_trainer=full_trainer,
        runs_dir=runs_dir,
        name=name,
        workers=workers,
        cpus=cpus,
        gpus=gpus,
        seed=seed,
        address=address,
        max_params=max_params,
        repeat_full=repeat_full,
        proxy=parse_proxy_options(proxy_option or []),
        reference=reference,
        full=parse_task_params(full_option or [], "--full-option", "lr_schedule=cosine"),
    )
    start = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] > 10:
            last[0] = now
            out.print(f"{done}/{total} trainings done · {clock(now - start)} elapsed")

    root, result = run_fidelity(req, progress)
    out.print(fidelity_table(result))
    for line in fidelity_lines(result):
        out.print(line, markup=False)
    failures = {k: v for k, v in result["failures"].items() if v}
    if failures:
        out.print(
            "failed runs (left out of the ranks): "
            + ", ".join(f"{k} {v}" for k, v in failures.items())
        )
    out.print(f"wrote {root / RESULT} and {root / PLOT}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("fidelity")(fidelity)
