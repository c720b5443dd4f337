"""Does the self-tuning proxy judge each architecture near its own best hyperparameters?

    python benchmarks/self_tuning.py --task classify --task-param path=DATA/natops.parquet \
        --budget 300steps --max-params 100000 --out runs/st-natops
    python benchmarks/self_tuning.py --task charlm --budget 300steps --reference runs/st-charlm \
        --proxy-option hyper_lr=0.2 --out runs/st-charlm-hlr   # one STN variant, grid reused

N distinct architectures are sampled from the default space (under --max-params, as a
campaign with that limit would train them). Each is trained at the proxy budget B, with the
same seed, by

- (i) the self-tuning proxy (what a campaign scores it with; `--proxy-option` applies here),
- (ii) fixed default hyperparameters (the same trainer with self-tuning off),
- (iii) a grid over the regularisers the STN tunes — every dropout rate set to each of
  `--dropouts`, crossed with each weight decay of `--decays` — at the fixed default learning
  rate; its best cell per architecture is "the architecture at its own best hyperparameters",
  the truth the STN claims to approximate,
- (iv) for the first `--check-10x` architectures, the same grid at 10·B: is the best cell at
  B also good at 10·B?

Printed and written to <out>/self_tuning.json: the mean regret of (i) and (ii) against
(iii)'s best (in the metric's units; higher is worse), Kendall τ of (i) and (ii) against
(iii)'s best with 95% bootstrap intervals (the `fidelity` machinery), the dropout and decay
(i) settled on beside (iii)'s best cell, and the CPU-seconds of each kind. Input-token noise
and auxiliary-loss weights, which the STN also tunes, stay at their defaults in (ii)-(iv).

`--reference DIR` reuses (ii), (iii) and (iv) from an earlier run of this script with the
same task, space, budget, seed, architectures and grid, so a change of the proxy costs only
its own runs. The result file is written every ten runs too, so an interrupted measurement
goes on from where it stopped with `--reference` of its own folder.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from gatesearch.budget import Budget, parse_budget
from gatesearch.evaluate import parse_proxy_options, parse_task_params
from gatesearch.experiments.fidelity import (
    FidelityError,
    FidelityRequest,
    bootstrap_taus,
    prepare,
    rank_correlations,
)
from gatesearch.proxy.hyper import WEIGHT_DECAY
from gatesearch.runs.dispatch import ensure_ray, failure_reason
from gatesearch.runs.request import trial_seed
from gatesearch.tasks import TaskError

RESULT = "self_tuning.json"
KINDS = ("grid10", "grid", "self_tuning", "fixed")  # dispatch order: the longest runs first


def run_one(
    graph: Any,
    task: dict[str, Any],
    budget: str,
    seed: int,
    self_tuning: bool,
    start: dict[str, float] | None,
    proxy: dict[str, Any],
) -> dict[str, Any]:
    """One training on a Ray worker (one thread): the scalar metrics, the hyperparameters it
    ended at and its CPU-seconds."""
    import torch

    from gatesearch.proxy import proxy_config, train_proxy
    from gatesearch.proxy.hyper import DROPOUT_ROLES, dropout_name
    from gatesearch.registry import REGISTRY
    from gatesearch.tasks import TaskSpec

    torch.set_num_threads(1)
    if start is not None:  # the dropout rates of the roles this model has; the decay
        roles = {spec.role for _, a in graph.nodes(data=True) if (spec := REGISTRY.get(a["op"]))}
        absent = {dropout_name(r) for r in DROPOUT_ROLES if r not in roles}
        start = {k: v for k, v in start.items() if k not in absent}
    config = replace(proxy_config(proxy), self_tuning=self_tuning, start=start, latency_runs=1)
    cpu = time.process_time()
    result = train_proxy(graph, TaskSpec.from_dict(task), budget, seed, config)
    return {
        "loss": result.metrics["loss"],
        "metric": result.metrics["metric"],
        "steps": result.metrics["steps"],
        "hyperparameters": dict(result.hyperparameters),
        "cpu_seconds": time.process_time() - cpu,
    }


def grid_cells(dropouts: list[float], decays: list[float]) -> list[dict[str, float]]:
    """Each cell: every dropout rate at `d` (`run_one` drops the roles a model lacks) and the
    weight decay at `w`."""
    from gatesearch.proxy.hyper import DROPOUT_ROLES, dropout_name

    return [
        {**{dropout_name(role): d for role in DROPOUT_ROLES}, WEIGHT_DECAY: w}
        for d in dropouts
        for w in decays
    ]


def goodness(entry: dict[str, Any] | None, higher_is_better: bool) -> float | None:
    """The metric with higher = better; None for a failed run."""
    if entry is None or "error" in entry:
        return None
    value = entry["metric"]
    if not math.isfinite(value):
        return None
    return value if higher_is_better else -value


def best_cell(cells: list[dict[str, Any] | None], higher_is_better: bool) -> int | None:
    """Index of the best finite cell (ties by the lower loss), None when all failed."""
    scored = [
        (-g, c["loss"], i)
        for i, c in enumerate(cells)
        if (g := goodness(c, higher_is_better)) is not None
    ]
    return min(scored)[2] if scored else None


def mean_dropout(hypers: dict[str, Any]) -> float | None:
    rates = [v for k, v in hypers.items() if k.startswith("dropout_")]
    return statistics.fmean(rates) if rates else None


def analyse(config: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Regret, τ with intervals, settled hyperparameters, CPU-seconds (see the docstring)."""
    hib = config["higher_is_better"]
    truth, scores = [], {"self_tuning": [], "fixed": []}
    regrets: dict[str, list[float]] = {"self_tuning": [], "fixed": []}
    settled = []
    for row in rows:
        b = best_cell(row["runs"]["grid"], hib)
        row["best_cell"] = b
        best = goodness(row["runs"]["grid"][b], hib) if b is not None else None
        truth.append(best)
        for kind in scores:
            g = goodness(row["runs"][kind], hib)
            scores[kind].append(g)
            if g is not None and best is not None:
                regrets[kind].append(best - g)
        st = row["runs"]["self_tuning"]
        if b is not None and st is not None and "error" not in st:
            cell = config["cells"][b]
            settled.append(
                {
                    "dropout": mean_dropout(st["hyperparameters"]),
                    "decay": st["hyperparameters"].get(WEIGHT_DECAY),
                    "best_dropout": cell["dropout_mixer"],
                    "best_decay": cell[WEIGHT_DECAY],
                }
            )
    taus = {k: rank_correlations(v, truth) for k, v in scores.items()}
    boot = bootstrap_taus(scores, truth, (("self_tuning", "fixed"),), seed=config["seed"])
    cpu = {
        kind: sum(
            e["cpu_seconds"]
            for row in rows
            for e in (
                row["runs"].get(kind) or [] if kind.startswith("grid") else [row["runs"][kind]]
            )
            if e is not None and "cpu_seconds" in e
        )
        for kind in KINDS
    }
    check = []
    for row in rows:
        cells10 = row["runs"].get("grid10")
        if not cells10 or row["best_cell"] is None:
            continue
        b10 = best_cell(cells10, hib)
        at_b = goodness(cells10[row["best_cell"]], hib)
        if b10 is None or at_b is None:
            continue
        ranked10 = sorted((g for c in cells10 if (g := goodness(c, hib)) is not None), reverse=True)
        check.append(
            {
                "index": row["index"],
                "best_cell_at_B": row["best_cell"],
                "best_cell_at_10B": b10,
                "rank_at_10B_of_B_best": 1 + sum(g > at_b for g in ranked10),
                "regret_at_10B": goodness(cells10[b10], hib) - at_b,
            }
        )
    return {
        "regret": {k: statistics.fmean(v) if v else None for k, v in regrets.items()},
        "tau": taus,
        "bootstrap": boot,
        "settled": settled,
        "cpu_seconds": cpu,
        "check_10x": check,
    }


def reusable(reference: Path, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """(ii), (iii), (iv) runs of an earlier result by architecture hash; exits on a mismatch."""
    try:
        old = json.loads((reference / RESULT).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --reference {reference}: no readable {RESULT} ({exc})") from None
    same = ("task", "space", "budget", "seed", "cells", "max_params")
    diff = [k for k in same if old.get("config", {}).get(k) != config[k]]
    if diff:
        raise SystemExit(f"error: --reference {reference}: differs in {', '.join(diff)}")
    return {
        row["arch_hash"]: {k: v for k, v in row["runs"].items() if k != "self_tuning"}
        for row in old["archs"]
    }


def fmt(x: float | None, digits: str = ".4g") -> str:
    return "n/a" if x is None else format(x, digits)


def interval(boot: dict[str, Any], kind: str) -> str:
    ci = boot["tau"].get(kind)
    return "n/a" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def report(config: dict[str, Any], result: dict[str, Any], wall: float) -> None:
    metric = config["metric_name"]
    print(
        f"\n{config['label']}: {len(config['archs_hashes'])} archs, B = {config['budget']}, "
        f"grid {len(config['cells'])} cells, metric {metric} "
        f"({'higher' if config['higher_is_better'] else 'lower'} is better), "
        f"wall {wall / 60:.1f} min"
    )
    boot = result["bootstrap"]
    for kind, label in (("self_tuning", "(i) self-tuning"), ("fixed", "(ii) fixed")):
        t = result["tau"][kind]
        print(
            f"  {label:16s} regret {fmt(result['regret'][kind])}  "
            f"τ vs grid best {fmt(t['tau'], '.2f')} {interval(boot, kind)}"
        )
    diff = boot["difference"].get("self_tuning-fixed")
    print(
        f"  τ (i) − (ii) 95% interval: {'n/a' if diff is None else f'[{diff[0]:.2f}, {diff[1]:.2f}]'}"
    )
    s = result["settled"]
    if s:
        print(
            "  (i) settled on: mean dropout "
            f"{statistics.fmean(x['dropout'] for x in s if x['dropout'] is not None):.3f}, "
            f"decay median {statistics.median(x['decay'] for x in s):.2g};  grid best: "
            f"dropout mean {statistics.fmean(x['best_dropout'] for x in s):.3f}, "
            f"decay median {statistics.median(x['best_decay'] for x in s):.2g}"
        )
    cpu = result["cpu_seconds"]
    print(
        "  CPU-seconds: (i) {:.0f}, (ii) {:.0f}, (iii) grid {:.0f}, (iv) grid at 10B {:.0f}; "
        "(i) / (iii) = {}".format(
            cpu["self_tuning"],
            cpu["fixed"],
            cpu["grid"],
            cpu["grid10"],
            fmt(cpu["self_tuning"] / cpu["grid"] if cpu["grid"] else None, ".3f"),
        )
    )
    for c in result["check_10x"]:
        print(
            f"  10B check, arch {c['index']}: B's best cell ranks {c['rank_at_10B_of_B_best']} "
            f"of {len(config['cells'])} at 10B (regret {c['regret_at_10B']:.4g})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--task-param", action="append", default=[], help="key=value")
    ap.add_argument("--label", default=None, help="the name printed for this task")
    ap.add_argument("--space", type=Path, default=None)
    ap.add_argument("--archs", type=int, default=16)
    ap.add_argument("--budget", default="300steps", help="the proxy budget B")
    ap.add_argument("--max-params", type=int, default=100_000)
    ap.add_argument("--dropouts", default="0.05,0.25,0.5")
    ap.add_argument("--decays", default="1e-5,1e-3,1e-2")
    ap.add_argument("--check-10x", type=int, default=4, help="archs whose grid runs at 10·B")
    ap.add_argument("--proxy-option", action="append", default=[], help="key=value for (i)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="[default: a temporary folder]")
    args = ap.parse_args()
    try:
        dropouts = [float(x) for x in args.dropouts.split(",")]
        decays = [float(x) for x in args.decays.split(",")]
        proxy = parse_proxy_options(args.proxy_option)
        req = FidelityRequest(
            space=args.space,
            task=args.task,
            task_params=parse_task_params(args.task_param),
            archs=args.archs,
            proxy_budget=args.budget,
            runs_dir=Path(tempfile.mkdtemp(prefix="gatesearch-st-")),
            name="self-tuning",
            workers=args.workers,
            seed=args.seed,
            max_params=args.max_params,
            proxy=proxy,
        )
        base, _, archs = prepare(req)
        budget = parse_budget(args.budget)
    except (ValueError, FidelityError, TaskError) as exc:
        sys.exit(f"error: {str(exc).splitlines()[0]}")
    cells = grid_cells(dropouts, decays)
    config = {
        "label": args.label or base.task.name,
        "task": base.task.to_dict(),
        "space": base.space,
        "metric_name": base.metric_name,
        "higher_is_better": base.higher_is_better,
        "budget": str(budget),
        "seed": args.seed,
        "max_params": args.max_params,
        "cells": cells,
        "check_10x": args.check_10x,
        "proxy": proxy,
        "archs_hashes": [a.hash for a in archs],
        "command": " ".join(sys.argv),
    }
    reused = reusable(args.reference, config) if args.reference else {}
    out = args.out or Path(tempfile.mkdtemp(prefix="gatesearch-self-tuning-"))
    out.mkdir(parents=True, exist_ok=True)
    long = str(Budget(budget.amount * 10, budget.unit))
    rows = [
        {
            "index": i,
            "arch_hash": a.hash,
            "seed": trial_seed(args.seed, i, 1),
            "runs": {
                "self_tuning": None,
                "fixed": None,
                "grid": [None] * len(cells),
                **({"grid10": [None] * len(cells)} if i < args.check_10x else {}),
                # (iv) is taken where the reference ran it and this run asks for it.
                **{
                    k: v
                    for k, v in reused.get(a.hash, {}).items()
                    if k != "grid10" or i < args.check_10x
                },
            },
        }
        for i, a in enumerate(archs)
    ]
    ensure_ray(None, args.workers)
    remote = ray.remote(run_one).options(num_cpus=1, max_retries=0)
    task = base.task.to_dict()
    pending: dict[Any, tuple[int, str, int | None]] = {}
    for kind in KINDS:
        for row, arch in zip(rows, archs):
            seed = row["seed"]
            if kind in ("grid", "grid10"):
                if kind not in row["runs"]:
                    continue
                b = long if kind == "grid10" else str(budget)
                for j, cell in enumerate(cells):
                    if row["runs"][kind][j] is None:
                        ref = remote.remote(arch.graph, task, b, seed, False, cell, {})
                        pending[ref] = (row["index"], kind, j)
            elif row["runs"][kind] is None:
                st = kind == "self_tuning"
                ref = remote.remote(
                    arch.graph, task, str(budget), seed, st, None, proxy if st else {}
                )
                pending[ref] = (row["index"], kind, None)
    total = len(pending)
    t0 = time.perf_counter()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, kind, j = pending.pop(ready[0])
            try:
                entry = ray.get(ready[0])
            except Exception as exc:  # a diverged run: recorded, left out of the ranking
                entry = {"error": failure_reason(exc)}
            if j is None:
                rows[index]["runs"][kind] = entry
            else:
                rows[index]["runs"][kind][j] = entry
            done = total - len(pending)
            if done % 10 == 0 or not pending:
                print(
                    f"  {done}/{total} runs, {(time.perf_counter() - t0) / 60:.1f} min", flush=True
                )
                # What is done so far, so an interrupted measurement can go on from it
                # (--reference reuses every finished (ii)-(iv) run).
                partial = {"config": config, "archs": rows, "partial": True}
                (out / RESULT).write_text(json.dumps(partial, indent=2) + "\n")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    result = analyse(config, rows)
    (out / RESULT).write_text(
        json.dumps({"config": config, "archs": rows, **result, "wall_seconds": wall}, indent=2)
        + "\n"
    )
    report(config, result, wall)
    print(f"results in {out / RESULT}")


if __name__ == "__main__":
    main()
