"""`gatesearch run | resume | status | ls`: search campaigns from the command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gatesearch.evaluate import (
    objective_label,
    parse_proxy_options,
    parse_task_params,
)
from gatesearch.experiments.retrain import (
    DEFAULT_DROPOUTS,
    DEFAULT_EVAL_POINTS,
    DEFAULT_PATIENCE,
    final_order,
)
from gatesearch.runs.campaign import Campaign, Stats, open_for_resume
from gatesearch.runs.config import Direction, RunConfig
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import count_finished, leaderboard, summary
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.store import CONFIG, RunStore, StoreError, list_runs
from gatesearch.tasks import TaskSpec

out = Console(highlight=False)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _values(values: Any) -> str:
    if values is None:
        return "-"
    return " ".join(f"{v:.4g}" for v in values)


class Display:
    """One live status line and the best architecture, or plain lines when not a terminal."""

    def __init__(self, console: Console, name: str, labels: list[str] | None = None) -> None:
        self.console = console
        self.name = name
        self.labels = labels or []  # objective names as shown, e.g. "accuracy ↑"
        self.live: Live | None = None
        self.last_print = 0.0
        self.last_done = -1

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def render(self, s: Stats) -> Text:
        width = 24
        filled = int(width * s.done / max(1, s.target))
        text = Text()
        text.append("━" * filled, style="green")
        text.append("━" * (width - filled), style="grey37")
        text.append(f" {s.done}/{s.target} done · {s.running} running · ")
        text.append(f"{s.failed} failed", style="red" if s.failed else "")
        text.append(f" · {s.duplicates} dup")
        if s.rejected:
            text.append(f" · {s.rejected} over --max-params")
        text.append(f" · {_clock(s.elapsed)} elapsed · ETA {_clock(s.eta)}")
        if s.best is not None:
            what = ", ".join(self.labels) + " " if self.labels else ""
            head = f"best {what}{_values(s.best)} (trial {s.best_number}): "
            room = max(20, self.console.width - len(head) - 1)
            arch = s.best_arch if len(s.best_arch) <= room else s.best_arch[: room - 1] + "…"
            text.append("\n" + head, style="bold")
            text.append(arch)
        return text

    def update(self, s: Stats) -> None:
        if self.live is not None:
            self.live.update(self.render(s))
            return
        now = time.monotonic()
        if s.done != self.last_done and (now - self.last_print > 5 or s.done == s.target):
            self.last_print, self.last_done = now, s.done
            self.console.print(self.render(s).plain.replace("━", "").strip(), markup=False)


def _task_text(spec: TaskSpec) -> str:
    """`mqar(vocab=64, length=32, ...)` from a config's task spec."""
    args = ", ".join(f"{k}={v}" for k, v in spec.params.items() if v is not None)
    return f"{spec.name}({args})" if args else spec.name


def _labels(config: RunConfig) -> list[str]:
    """Objective column heads: the task's metric name for `metric`, with its direction."""
    labels = []
    for objective, way in zip(config.objectives, config.directions):
        arrow = "↑" if way is Direction.MAXIMIZE else "↓"
        labels.append(f"{objective_label(objective, config.metric_name)} {arrow}")
    return labels


def _board(store: RunStore) -> None:
    rows = leaderboard(store, top=5)
    if not rows:
        out.print("no completed trial yet")
        return
    table = Table(title=f"best of {store.config.name}", box=None, pad_edge=False, expand=True)
    table.add_column("rank", justify="right", no_wrap=True, min_width=4)
    table.add_column("trial", justify="right", no_wrap=True, min_width=5)
    for label in _labels(store.config):
        table.add_column(label, justify="right", no_wrap=True, min_width=len(label) + 2)
    # Only the architecture column shrinks, to the terminal's width.
    table.add_column("architecture", overflow="ellipsis", no_wrap=True, ratio=1)
    for r in rows:
        table.add_row(
            str(r["rank"]),
            str(r["number"]),
            *(f"{v:.4g}" for v in r["values"].values()),
            Text(r["arch"]),
        )
    out.print(table)


def _drive(store: RunStore) -> None:
    with store:
        campaign = Campaign(store)
        with Display(out, store.config.name, _labels(store.config)) as display:
            campaign.display = display
            display.update(campaign.stats)
            try:
                stats = campaign.run()
            except KeyboardInterrupt:
                display.__exit__()
                out.print(f"interrupted: continue with `gatesearch resume {store.root}`")
                raise typer.Exit(130) from None
        _board(store)
        out.print(
            f"{stats.done} trials ({stats.failed} failed, {stats.duplicates} duplicates) in "
            f"{_clock(stats.elapsed)}. next: `gatesearch report {store.root}` (plots, HTML), "
            f"`gatesearch retrain {store.root} --top 1` then `gatesearch export "
            f"{store.root} -o best.py --weights`, or `gatesearch resume {store.root} "
            "--trials N` to search further"
        )


def run(
    space: Annotated[
        Path | None, typer.Option(help="Search space file [default: spaces/gated_lm.space].")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="Strategy preset: a .toml file or random|tpe|nsga2|evolution [default: evolution]."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="Task: a built-in (mqar, selective_copy, parity, flip_flop, charlm, frames, "
            "classify, tokens), module:function, an entry point, or null (no training) "
            "[default: a small MQAR, vocab=64 length=32 pairs=4]."
        ),
    ] = None,
    task_param: Annotated[
        list[str] | None,
        typer.Option(
            help="A task parameter as key=value (e.g. vocab=64, path=data.parquet); repeatable."
        ),
    ] = None,
    trials: Annotated[int, typer.Option(help="How many trials.")] = 12,
    workers: Annotated[int, typer.Option(help="Trials evaluated at once.")] = 2,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address (auto, ray://host:port); default: a local Ray."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name [default: strategy-task-time].")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    budget: Annotated[
        str | None,
        typer.Option(
            help="Per-trial training budget: 200steps, 30s or 1e6tokens [default: 20s; "
            "at once for null]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Campaign seed; per-trial seeds derive from it.")] = 0,
    objectives: Annotated[
        str,
        typer.Option(
            help="Comma-separated: metric (the task's; maximised when higher is better, e.g. "
            "MQAR accuracy), loss, params, flops, latency (minimised). Two or more: Pareto."
        ),
    ] = "metric",
    seed_arch: Annotated[
        list[Path] | None,
        typer.Option(
            help="A known architecture (spaces/known/*.toml) for the first trials; repeatable."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna RDB URL (e.g. postgresql://...) instead of the run's journal file."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a trial may run, counted from when a worker starts it (not while it "
            "queues for a free CPU), before it is failed [default: the preset's]."
        ),
    ] = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            help="Parameter limit: a proposal whose model (built for the task) is larger is "
            "turned down untrained and not counted among the trials [default: no limit]."
        ),
    ] = None,
    proxy_option: Annotated[
        list[str] | None,
        typer.Option(
            help="A setting of the proxy trainer as key=value (batch_size, lr, hyper_lr, "
            "train_per_hyper, centred, response, ...; see ProxyConfig); repeatable."
        ),
    ] = None,
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
    )
    config, space_path, preset = prepare_run(request)
    store = RunStore.create(
        runs_dir / config.name, config, space_path, preset.text, package_versions()
    )
    out.print(
        f"campaign {store.root}: {config.strategy} on {_task_text(config.task)}, "
        f"{config.trials} trials × {config.budget}, {config.workers} workers",
        markup=False,
    )
    _drive(store)


def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory, e.g. runs/NAME.")],
    trials: Annotated[int | None, typer.Option(help="Run N more trials than are finished.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address to continue on.")] = None,
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
    _drive(store)


def status(
    run_dir: Annotated[Path, typer.Argument(help="The run directory, e.g. runs/NAME.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Progress, best trial and failure reasons of a campaign."""
    store = RunStore.open(run_dir, writer=False)
    info = summary(store)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    out.print(
        f"[bold]{info['name']}[/bold] ({info['state']})  {info['strategy']} on "
        f"{escape(_task_text(store.config.task))} × {info['budget']}  "
        f"objectives: {', '.join(_labels(store.config))}"
    )
    # Trials stored as running with no driver alive were cut off with it: say so, not "running".
    running = (
        f"{info['running']} left running by the stopped driver (resume runs them again)"
        if info["running"] and not info["driver_alive"]
        else f"{info['running']} running"
    )
    out.print(
        f"{info['finished']}/{info['target']} finished: {info['complete']} complete "
        f"({info['duplicates']} duplicates), {info['failed']} failed, {running}, "
        f"{info['interrupted']} interrupted and re-run"
    )
    if info["rejected"]:
        out.print(
            f"  {info['rejected']} proposals over --max-params {info['max_params']:,} "
            "turned down untrained"
        )
    for reason, n in info["failure_reasons"].items():
        out.print(f"  failed ×{n}: {reason}", markup=False)
    _board(store)


def ls(
    runs_dir: Annotated[Path, typer.Argument(help="Folder holding runs.")] = Path("runs"),
) -> None:
    """List campaigns (state, strategy, task, progress, best) and fidelity results."""
    table = Table(
        "run", "state", "strategy", "task", "progress", "failed", "best", box=None, pad_edge=False
    )
    for root in list_runs(runs_dir):
        fidelity = _fidelity_row(root)
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
            info["task"],
            f"{info['finished']}/{info['target']}",
            str(info["failed"]),
            " ".join(
                f"{label}={v:.4g}" for label, v in zip(info["labels"], best["values"].values())
            )
            if best
            else "-",
        )
    out.print(table)


def _fidelity_row(root: Path) -> tuple[str, ...] | None:
    """`ls`'s columns for a `gatesearch fidelity` folder (they live in runs/ too), or None
    when `root` is not one."""
    from gatesearch.experiments.fidelity import RESULT

    try:
        config = json.loads((root / CONFIG).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict) or config.get("kind") != "fidelity":
        return None
    task = str((config.get("task") or {}).get("name", "?"))
    archs = f"{config.get('archs', '?')} archs"
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


def retrain(
    run_dir: Annotated[Path, typer.Argument(help="The run directory, e.g. runs/NAME.")],
    top: Annotated[int, typer.Option(help="How many of the best trials to retrain.")] = 1,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Most training per architecture: 2000steps, 600s or 1e7tokens "
            "[default: 10x the campaign's per-trial budget]."
        ),
    ] = None,
    eval_points: Annotated[
        int,
        typer.Option(
            help="Score the validation split at this many evenly spaced points of the budget; "
            "the best point's weights are kept."
        ),
    ] = DEFAULT_EVAL_POINTS,
    patience: Annotated[
        int,
        typer.Option(
            help="Stop after this many validation points in a row without a better score "
            "(0: train the whole budget)."
        ),
    ] = DEFAULT_PATIENCE,
    dropout: Annotated[
        str,
        typer.Option(
            help="Dropout for every rate: 'tuned' (the proxy's values), a rate such as 0.25, "
            "'self-tune' (the proxy's values as the start, tuned on as the retrain goes), or "
            "several, comma-separated: each architecture is then trained once per value and "
            "the best on validation kept. The default trains the proxy's values and 0.25: a "
            "retrain 10x the proxy's length wants more dropout than the proxy tuned for its "
            "own on small data, and validation keeps the proxy's where it does not."
        ),
    ] = DEFAULT_DROPOUTS,
    workers: Annotated[
        int | None, typer.Option(help="Trainings at once [default: the campaign's].")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address [default: the campaign's, or local].")
    ] = None,
) -> None:
    """Train the campaign's best K at the full budget (by default once with the proxy's tuned
    dropout and once with dropout 0.25, the better on validation kept), keeping each one's
    best validation point; store weights (safetensors), graph, validation/test
    metrics and the validation curve under RUN_DIR/retrained/<hash>/. Ranks them by their
    retrained validation score, which `export --rank` and `report` then follow."""
    from gatesearch.experiments.retrain import parse_dropouts
    from gatesearch.experiments.retrain import retrain as run_retrain

    dropouts = parse_dropouts(dropout)  # checked before anything starts

    def label(job: Any) -> str:
        variant = f", {job.variant}" if len(dropouts) > 1 or job.dropout is not None else ""
        return f"campaign #{job.rank} (trial {job.record.number}{variant})"

    def progress(job: Any, event: dict[str, Any]) -> None:
        point, best, frac = event["point"], event["best"], event["progress"]
        eta = event["elapsed"] * (1.0 - frac) / frac if frac > 0 else None
        out.print(
            f"  {label(job)}: step {point['step']:,} "
            f"({frac:.0%}), valid {event['metric_name']} {point['valid_metric']:.4g} "
            f"(loss {point['valid_loss']:.4g}), best {best['valid_metric']:.4g} at step "
            f"{best['step']:,}, ETA {_clock(eta)} at most",
            markup=False,
        )

    def done(row: dict[str, Any]) -> None:
        job = row["job"]
        if "error" in row:
            out.print(
                f"{label(job)} failed: {row['error']}",
                markup=False,
            )
        else:
            m = row["metrics"]
            stop = "stopped early, " if m["stopped_early"] else ""
            kept = f"kept of {len(m['variants'])} variants: " if "variants" in m else ""
            out.print(
                f"{label(job)}: {kept}valid {m['metric_name']} "
                f"{m['valid']['metric']:.4g}, test {m['test']['metric']:.4g} "
                f"({stop}best of {len(m['curve'])} points at step {m['best_step']:,.0f}) "
                f"-> {row['path']}",
                markup=False,
            )

    rows = run_retrain(
        run_dir,
        top,
        budget=budget,
        address=address,
        workers=workers,
        on_done=done,
        eval_points=eval_points,
        patience=patience,
        on_progress=progress,
        dropouts=dropouts,
    )
    # The rank `export --rank` and `report` give: every retrained architecture of the run
    # counts, earlier retrains too.
    with RunStore.open(run_dir, writer=False) as store:
        final = {p.arch_hash: p.rank for p in final_order(store)}
    table = Table(
        title=f"retrained from {run_dir}, best validation score first",
        box=None,
        pad_edge=False,
    )
    for head in (
        "rank",
        "campaign",
        "trial",
        "proxy",
        "valid metric",
        "test metric",
        "valid loss",
        "params",
        "best step",
        "where",
    ):
        table.add_column(head, justify="left" if head == "where" else "right")
    for row in rows:
        job = row["job"]
        proxy = " ".join(f"{v:.4g}" for v in job.record.values or ())
        if "error" in row:
            table.add_row(
                "-",
                f"#{job.rank}",
                str(job.record.number),
                proxy,
                "failed",
                "",
                "",
                "",
                "",
                Text(row["error"]),
            )
            continue
        m = row["metrics"]
        table.add_row(
            str(final.get(job.record.arch_hash, "-")),
            f"#{job.rank}",
            str(job.record.number),
            proxy,
            f"{m['valid']['metric']:.4g}",
            f"{m['test']['metric']:.4g}",
            f"{m['valid']['loss']:.4g}",
            f"{m['params']:.4g}",
            f"{m['best_step']:,.0f}/{m['steps']:,.0f}",
            Text(str(row["path"])),
        )
    out.print(table)
    failed = sum("error" in r for r in rows)
    if failed:
        out.print(f"{failed} of {len(rows)} retrainings failed")
        raise typer.Exit(1)
    out.print(f"next: `gatesearch export {run_dir} --rank 1 -o model.py --weights`", markup=False)


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
    from gatesearch.experiments.fidelity import PROXY_LABELS, compared

    config = result["config"]
    metric = config["metric_name"]
    table = Table(
        title=f"proxy fidelity: {config['task']['name']} ({metric}), "
        f"{config['archs']} architectures, "
        f"{config['proxy_budget']} vs {config['full_budget']}",
        box=None,
        pad_edge=False,
    )
    heads = ["τ", "ρ", "τ loss", "ρ loss", "top-k", "pick"]
    table.add_column("proxy")
    for head in (*heads, "pairs", "CPU-s"):
        table.add_column(head, justify="right")
    cpu = result["cpu_seconds"]
    for proxy in compared(config):
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
    table.add_row(f"full ({config['full_trainer']})", *blank, f"{cpu['full']['total']:.1f}")
    return table


def two_seeds_line(result: dict[str, Any]) -> str | None:
    """τ of (a)-(c) against the mean of both full runs, when the full runs were repeated."""
    from gatesearch.experiments.fidelity import PROXIES

    two = result.get("two_seeds")
    if not two:
        return None

    def taus(key: str) -> str:
        return ", ".join(f"({c}) {_corr(two[key][p]['tau'])}" for c, p in zip("abc", PROXIES))

    metric = result["config"]["metric_name"]
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

    from gatesearch.experiments.fidelity import PROXY_LABELS

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
    space: Annotated[
        Path | None, typer.Option(help="Search space file [default: spaces/gated_lm.space].")
    ] = None,
    task: Annotated[
        str, typer.Option(help="Task: a built-in, module:function or an entry point.")
    ] = "mqar",
    task_param: Annotated[
        list[str] | None, typer.Option(help="A task parameter as key=value; repeatable.")
    ] = None,
    archs: Annotated[int, typer.Option(help="How many architectures to sample.")] = 20,
    proxy_budget: Annotated[
        str | None, typer.Option(help="Budget of the proxy runs (a) and (b) [default: 20s].")
    ] = None,
    full_budget: Annotated[
        str | None,
        typer.Option(help="Budget of the reference runs [default: 10x the proxy budget]."),
    ] = None,
    full_trainer: Annotated[
        str,
        typer.Option(
            help="How the reference runs train: self-tuning (hyperparameters tuned as they "
            "train) or fixed (defaults)."
        ),
    ] = "self-tuning",
    runs_dir: Annotated[Path, typer.Option(help="Where the result folder is written.")] = Path(
        "runs"
    ),
    name: Annotated[
        str | None, typer.Option(help="Result folder name [default: fidelity-task-time].")
    ] = None,
    workers: Annotated[int, typer.Option(help="Trainings at once (local Ray).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the trainings.")] = 0,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address; default: a local Ray.")
    ] = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            help="Sample only architectures with at most this many parameters, as a "
            "campaign with --max-params would train [default: no limit]."
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
            help="A setting of the proxy trainer as key=value (batch_size, lr, hyper_lr, "
            "train_per_hyper, centred, response, ...; see ProxyConfig); repeatable. "
            "Applies to (a) and (b); the full runs take --full-option instead."
        ),
    ] = None,
    full_option: Annotated[
        list[str] | None,
        typer.Option(
            help="A setting of the trainer for the full-budget runs as key=value; "
            "repeatable. They decay the learning rate (lr_schedule=cosine) unless told "
            "lr_schedule=constant."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="An earlier fidelity run (its folder) on the same task, space, seed, "
            "--archs, --max-params, full budget and full options: its full-budget runs are "
            "reused, not trained again."
        ),
    ] = None,
) -> None:
    """Can the proxy be trusted on this task? Rank correlations (Kendall τ, Spearman ρ) of
    (a) the self-tuning proxy, (b) fixed hyperparameters at the same budget and (c) the
    parameter count with full-budget scores of N sampled architectures; with --repeat-full,
    (d) a second full-budget run at another seed."""
    from gatesearch.experiments.fidelity import PLOT, RESULT, FidelityRequest, run_fidelity

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
            out.print(f"{done}/{total} trainings done · {_clock(now - start)} elapsed")

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
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("status")(status)
    app.command("ls")(ls)
    app.command("retrain")(retrain)
    app.command("fidelity")(fidelity)
