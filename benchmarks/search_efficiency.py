"""Search efficiency: does a multi-fidelity schedule find better architectures per CPU-second?

Campaigns of each strategy run with `--schedule none` and `--schedule asha` at (about) the same
total training — the same number of weight steps: with ASHA each trial costs less on average
(most stop at the lowest rung), so it gets more trials — over several seeds. For each
campaign:

- its total CPU-seconds (every stint of every trial, measured in the trials),
- its pick (the best at the highest fidelity it reached), retrained once at one common full
  budget (`retrain`'s default dropouts, best validation point kept): the pick's
  validation and test metric,
- the CPU-seconds it took to first reach, at the top rung, the median final proxy score of
  random search with `none` (an upper bound for ASHA: a trial's cost is counted whole
  when it first appears).

    python benchmarks/search_efficiency.py --out se.json \\
        --task mqar --task-param vocab=128 --task-param length=64 --task-param pairs=8 \\
        --budget 270steps --max-params 200000 --none-trials 24 --seeds 3 \\
        --strategies random,evolution --full-budget 810steps

`--strategies` takes preset names or preset files: `benchmarks/presets/tpe_group.toml` is TPE
with `group = true`. `--first-seed` with `--out` adds seeds to an earlier run's file.

Prints a table per configuration (median and range over seeds), then each configuration's
best-so-far top-rung proxy score (median over seeds) at fractions of random/none's median
CPU-seconds, and writes the numbers to --out; `--plot FILE.png` draws the best-so-far
curves against CPU-seconds. Run again with the same --out, it trains only what is missing
(nothing, once all is done) and prints the tables again. Sizes are the caller's: state them
beside the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gatesearch.budget import parse_budget
from gatesearch.evaluate import parse_proxy_options, parse_task_params
from gatesearch.experiments.retrain import DEFAULT_DROPOUTS, parse_dropouts, retrain
from gatesearch.runs.campaign import Campaign
from gatesearch.runs.outcomes import TrialOutcome
from gatesearch.runs.ranking import ranked
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.schedule import Schedule, ScheduleKind
from gatesearch.runs.store import RunStore

SCHEDULES = ("none", "asha")


def asha_trials(none_trials: int, budget: str, eta: int, min_budget: str | None) -> int:
    """Trials ASHA gets for the steps `none_trials` full trials take: in expectation a
    fraction 1/ηᵏ of trials trains from rung k − 1 to rung k."""
    full = parse_budget(budget)
    low = parse_budget(min_budget) if min_budget else None
    rungs = [b.amount for b in Schedule(ScheduleKind.ASHA, low, eta).rungs(full)]
    per_trial = sum((r - (rungs[k - 1] if k else 0.0)) / eta**k for k, r in enumerate(rungs))
    return max(1, round(none_trials * full.amount / per_trial))


def run_one(args: argparse.Namespace, root: Path, strategy: str, schedule: str, seed: int) -> dict:
    trials = args.none_trials
    if schedule != "none":
        trials = asha_trials(args.none_trials, args.budget, args.eta, args.min_budget)
    name = f"{label(strategy)}-{schedule}-{seed}"
    req = RunRequest(
        strategy=strategy,
        task=args.task,
        task_params=parse_task_params(args.task_param),
        trials=trials,
        workers=args.workers,
        name=name,
        runs_dir=root,
        budget=args.budget,
        seed=seed,
        max_params=args.max_params,
        proxy=parse_proxy_options(args.proxy_option),
        schedule=schedule,
        min_budget=args.min_budget if schedule != "none" else None,
        eta=args.eta if schedule != "none" else None,
    )
    config, space, preset = prepare_run(req)
    store = RunStore.create(root / name, config, space, preset.text, package_versions())
    wall = time.perf_counter()
    with store:
        Campaign(store).run()
    wall = time.perf_counter() - wall
    with RunStore.open(root / name, writer=False) as store:
        records = store.records()
        pick = ranked(store)[0]
        hib = store.config.higher_is_better
        top = len(store.config.schedule.rungs(store.config.budget)) - 1
    cpu = 0.0
    timeline = []  # (cumulative CPU-seconds, top-rung proxy score) in the order trials ended
    for r in sorted(records, key=lambda r: (r.seq if r.seq is not None else -1, r.number)):
        if r.duplicate_of is not None or not r.outcome.finished:
            continue
        cpu += float(r.metrics.get("cpu_seconds_total", r.metrics.get("cpu_seconds", 0.0)))
        at_top = r.outcome is TrialOutcome.COMPLETE and (r.rung is None or r.rung == top)
        timeline.append((cpu, r.values[0] if at_top and r.values else None))
    rows = retrain(
        root / name,
        1,
        budget=args.full_budget,
        workers=args.workers,
        dropouts=parse_dropouts(args.retrain_dropout),
    )
    m = rows[0].get("metrics") or {}
    return {
        "strategy": label(strategy),
        "schedule": schedule,
        "seed": seed,
        "trials": trials,
        "distinct": sum(1 for r in records if r.duplicate_of is None and r.outcome.finished),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "higher_is_better": hib,
        "pick": {"number": pick.number, "rung": pick.rung, "proxy": list(pick.scored or ())},
        "full": {
            "valid": (m.get("valid") or {}).get("metric"),
            "test": (m.get("test") or {}).get("metric"),
            "error": rows[0].get("error"),
        },
        "timeline": timeline,
    }


def label(strategy: str) -> str:
    """A strategy's name in the table: the preset's name, or a preset file's stem (a file
    such as tpe_group.toml measures a preset's option, e.g. TPE with `group = true`)."""
    return Path(strategy).stem


def cpu_to_reach(timeline: list, target: float, hib: bool) -> float | None:
    for cpu, score in timeline:
        if score is not None and (score >= target if hib else score <= target):
            return cpu
    return None


def best_so_far(timeline: list, cpu: float, hib: bool) -> float | None:
    """The best top-rung proxy score a campaign had by `cpu` CPU-seconds (None: none yet)."""
    scores = [s for c, s in timeline if s is not None and c <= cpu]
    if not scores:
        return None
    return max(scores) if hib else min(scores)


# Where the best-so-far table looks: fractions of random/none's median CPU-seconds (the
# issue's goal is the target within a third of it).
MARKS = (0.25, 1 / 3, 0.5, 1.0)


def summarise(results: list[dict], plot: Path | None = None) -> None:
    hib = results[0]["higher_is_better"]
    finals = [
        max(s for _, s in r["timeline"] if s is not None)
        if hib
        else min(s for _, s in r["timeline"] if s is not None)
        for r in results
        if r["strategy"] == "random" and r["schedule"] == "none"
    ]
    target = statistics.median(finals) if finals else None
    print(f"target: random/none's median final proxy score {target}")
    head = f"{'config':<20} {'trials':>7} {'CPU-s':>8} {'pick valid':>18} {'pick test':>18} {'CPU-s to target':>18}"
    print(head)

    def span(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{statistics.median(xs):.4g} [{min(xs):.4g}, {max(xs):.4g}]"

    for config in sorted({(r["strategy"], r["schedule"]) for r in results}):
        rs = [r for r in results if (r["strategy"], r["schedule"]) == config]
        reach = [cpu_to_reach(r["timeline"], target, hib) for r in rs] if target else []
        print(
            f"{'/'.join(config):<20} {statistics.median(r['trials'] for r in rs):>7.0f} "
            f"{statistics.median(r['cpu_seconds'] for r in rs):>8.0f} "
            f"{span([r['full']['valid'] for r in rs]):>18} "
            f"{span([r['full']['test'] for r in rs]):>18} "
            f"{span(reach):>18} ({sum(x is not None for x in reach)}/{len(rs)} reached)"
        )
    base = [r["cpu_seconds"] for r in results if (r["strategy"], r["schedule"]) == RANDOM_NONE]
    if not base:
        return
    scale = statistics.median(base)
    marks = [f"{m:.2g}x" for m in MARKS]
    print(
        f"\nbest top-rung proxy score so far (median over seeds, a seed with none yet "
        f"counted worst; '-': the median had none) at fractions of random/none's median {scale:.0f} CPU-s"
    )
    print(f"{'config':<20} " + " ".join(f"{m:>10}" for m in marks))
    curves = {}
    for config in sorted({(r["strategy"], r["schedule"]) for r in results}):
        rs = [r for r in results if (r["strategy"], r["schedule"]) == config]
        cells = [
            median_or_none([best_so_far(r["timeline"], m * scale, hib) for r in rs], hib)
            for m in MARKS
        ]
        print(f"{'/'.join(config):<20} " + " ".join(f"{cell(c):>10}" for c in cells))
        curves[config] = rs
    if plot is not None:
        draw(curves, hib, scale, target, plot)


RANDOM_NONE = ("random", "none")


def median_or_none(xs: list[float | None], hib: bool) -> float | None:
    """The median over seeds, a seed with no score yet counted as the worst (None when that
    is where the median falls). With an even count, the worse of the middle two."""
    worst = float("-inf") if hib else float("inf")
    order = sorted((worst if x is None else x for x in xs), reverse=hib)
    mid = order[len(order) // 2]  # best first: the middle, or the worse of the middle two
    return None if mid == worst else mid


def cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def draw(curves: dict, hib: bool, scale: float, target: float | None, path: Path) -> None:
    """Best-so-far top-rung proxy score against cumulative CPU-seconds: per configuration the
    median over seeds (a seed without a score yet counted worst), seeds thin. A campaign
    that has ended keeps its final best to the right of its end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(r["cpu_seconds"] for rs in curves.values() for r in rs)
    grid = [end * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(8, 5))

    def nan(ys: list[float | None]) -> list[float]:
        return [float("nan") if y is None else y for y in ys]

    for k, (config, rs) in enumerate(curves.items()):
        style = dict(color=f"C{k % 10}", ls="-" if config[1] == "none" else "--")
        seeds = [[best_so_far(r["timeline"], c, hib) for c in grid] for r in rs]
        for ys in seeds:
            ax.plot(grid, nan(ys), lw=0.5, alpha=0.35, **style)
        med = [median_or_none(list(at), hib) for at in zip(*seeds, strict=True)]
        ax.plot(grid, nan(med), lw=2, label="/".join(config), **style)
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls=":", label="random/none's median final")
    ax.axvline(scale / 3, color="grey", lw=0.8, ls="-.", label="1/3 of random/none's CPU-s")
    ax.set_xlabel("cumulative CPU-seconds of the campaign's trials")
    ax.set_ylabel(
        "best top-rung proxy score so far"
        + (" (higher is better)" if hib else " (lower is better)")
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task", default="mqar")
    p.add_argument("--task-param", action="append", default=[])
    p.add_argument("--proxy-option", action="append", default=[])
    p.add_argument("--budget", default="270steps")
    p.add_argument("--min-budget", default=None)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--max-params", type=int, default=200_000)
    p.add_argument("--none-trials", type=int, default=24)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    p.add_argument(
        "--strategies",
        default="random,evolution,tpe",
        help="preset names or preset files (.toml), comma-separated",
    )
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--full-budget", default="810steps")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--retrain-dropout",
        default=DEFAULT_DROPOUTS,
        help="the picks' retrain dropouts, as `retrain --dropout` takes them (its default)",
    )
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="draw best-so-far curves here (PNG)")
    args = p.parse_args()
    root = args.runs_dir or Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["strategy"], r["schedule"], r["seed"]) for r in results}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for strategy in args.strategies.split(","):
            for schedule in args.schedules.split(","):
                if (label(strategy), schedule, seed) in done:
                    continue
                t0 = time.perf_counter()
                results.append(run_one(args, root, strategy, schedule, seed))
                args.out.write_text(json.dumps(results, indent=1))
                r = results[-1]
                print(
                    f"{label(strategy)}/{schedule}/seed {seed}: {r['trials']} trials, "
                    f"{r['cpu_seconds']:.0f} CPU-s, pick valid {r['full']['valid']}, "
                    f"{time.perf_counter() - t0:.0f} s",
                    flush=True,
                )
    summarise(results, args.plot)


if __name__ == "__main__":
    sys.exit(main())
