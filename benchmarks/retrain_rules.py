"""Which regularisers should `retrain` train a campaign's best with?

    python benchmarks/retrain_rules.py runs/NAME --top 3            # after a campaign

For each of the campaign's top K architectures, three retrains at the retrain budget (default
10x the campaign's), each as `gatesearch retrain` trains (cosine-decayed learning rate from the
proxy's peak, validation points, best point's weights kept, patience):

- `tuned`: the hyperparameters the self-tuning proxy settled on (what `retrain` uses),
- `defaults`: the trainer's default regularisers (dropout 0.05, weight decay 1e-4, no input
  noise) at the same learning rate,
- `grid`: the best cell of a dropout x weight-decay grid run at the campaign's proxy budget
  with fixed hyperparameters (benchmarks/self_tuning.py's grid), at the same learning rate,
- `dropout=D` for each D of `--set-dropout`: the tuned values with every dropout rate set to
  D (what a hand-written loop's usual 0.2-0.3 does at the retrain's length),
- `self-tune` (`--self-tune`): the tuned values as the start, the regularisers left to tune
  themselves through the retrain (the uncentred STN response; `self-tune-centred` as well with
  `--self-tune-centred`), the learning rate on the same cosine.

`--no-grid` leaves the grid rule out (it costs 9 proxy runs an architecture).

Printed: validation and test scores of each, and which rule wins on validation; the whole
result goes to --json. The run folder is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray
from self_tuning import best_cell, grid_cells, run_one

from gatesearch.budget import parse_budget
from gatesearch.evaluate import spec_of
from gatesearch.experiments.retrain import (
    SelfTune,
    default_full_budget,
    retrain_body,
    select,
    with_dropout,
)
from gatesearch.proxy.hyper import WEIGHT_DECAY
from gatesearch.runs.dispatch import ensure_ray, failure_reason
from gatesearch.runs.store import RunStore, StoreError

RULES = ("tuned", "defaults", "grid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--budget", default=None, help="[default: 10x the campaign's]")
    ap.add_argument("--dropouts", default="0.05,0.25,0.5")
    ap.add_argument("--decays", default="1e-5,1e-3,1e-2")
    ap.add_argument("--set-dropout", default="", help="comma-separated D: a dropout=D rule each")
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--no-defaults", action="store_true")
    ap.add_argument("--self-tune", action="store_true", help="add the self-tune rule")
    ap.add_argument("--self-tune-centred", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    try:
        with RunStore.open(args.run, writer=False) as store:
            config = store.config.to_dict()
            jobs = select(store, args.top)
    except StoreError as exc:
        sys.exit(f"error: {exc}")
    proxy_budget = parse_budget(config["budget"])
    full = str(parse_budget(args.budget) if args.budget else default_full_budget(proxy_budget))
    set_dropouts = [float(x) for x in args.set_dropout.split(",") if x]
    rules = [
        r
        for r in RULES
        if not (args.no_grid and r == "grid") and not (args.no_defaults and r == "defaults")
    ]
    rules += [f"dropout={d:g}" for d in set_dropouts]
    tuners = {"self-tune": SelfTune(centred=False), "self-tune-centred": SelfTune(centred=True)}
    rules += [r for r, on in zip(tuners, (args.self_tune, args.self_tune_centred)) if on]
    cells = grid_cells(
        [float(x) for x in args.dropouts.split(",")], [float(x) for x in args.decays.split(",")]
    )
    task = spec_of(config["task"]).to_dict()
    ensure_ray(None, args.workers)
    t0 = time.perf_counter()
    grid_remote = ray.remote(run_one).options(num_cpus=1, max_retries=0)
    body = ray.remote(retrain_body).options(num_cpus=1, max_retries=0)
    try:
        # The grid at the proxy budget first: its best cell is one of the rules.
        grids = {
            j.rank: [
                grid_remote.remote(j.graph, task, str(proxy_budget), j.seed, False, c, {})
                for c in cells
            ]
            for j in jobs
            if "grid" in rules
        }
        best: dict[int, dict[str, float]] = {j.rank: {} for j in jobs}
        for rank, refs in grids.items():
            runs = []
            for ref in refs:
                try:
                    runs.append(ray.get(ref))
                except Exception as exc:
                    runs.append({"error": failure_reason(exc)})
            b = best_cell(runs, bool(config["higher_is_better"]))
            best[rank] = cells[b] if b is not None else {}
        pending = {}
        for j in jobs:
            lr = j.hyperparameters.get("lr")
            starts = {
                "tuned": dict(j.hyperparameters),
                "defaults": {} if lr is None else {"lr": lr},
                "grid": {**best[j.rank], **({} if lr is None else {"lr": lr})},
            }
            for d in set_dropouts:
                starts[f"dropout={d:g}"] = with_dropout(dict(j.hyperparameters), d)
            for rule in tuners:
                starts[rule] = dict(j.hyperparameters)
            for rule, start in starts.items():
                if rule not in rules:
                    continue
                # The grid's cells name every dropout role; a model tunes only its own.
                start = {
                    k: v
                    for k, v in start.items()
                    if k in j.hyperparameters or k == "lr" or k == WEIGHT_DECAY
                }
                ref = body.remote(
                    *(j.graph, task, full, j.seed, start, 1),
                    self_tune=tuners.get(rule),
                    proxy=config["proxy"],  # as `retrain` keeps the campaign's options
                )
                pending[ref] = (j, rule, start)
        rows: list[dict[str, Any]] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            j, rule, start = pending.pop(ready[0])
            try:
                m = ray.get(ready[0])["metrics"]
                row = {
                    "rank": j.rank,
                    "trial": j.record.number,
                    "rule": rule,
                    "start": start,
                    "valid": m["valid"],
                    "test": m["test"],
                    "best_step": m["best_step"],
                    "steps": m["steps"],
                    "params": m["params"],
                    "hyperparameters": m["hyperparameters"],
                }
            except Exception as exc:
                row = {"rank": j.rank, "rule": rule, "error": failure_reason(exc)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    hib = bool(config["higher_is_better"])
    print(f"\n{args.run}: retrain budget {full}, wall {(time.perf_counter() - t0) / 60:.1f} min")
    print(f"{'rank':>4} {'rule':>17} {'valid':>9} {'test':>9} {'best step':>10}")
    for row in sorted(rows, key=lambda r: (r["rank"], rules.index(r["rule"]))):
        if "error" in row:
            print(f"{row['rank']:>4} {row['rule']:>17} failed: {row['error']}")
            continue
        print(
            f"{row['rank']:>4} {row['rule']:>17} {row['valid']['metric']:9.4f} "
            f"{row['test']['metric']:9.4f} {row['best_step']:>6.0f}/{row['steps']:.0f}"
        )
    sign = 1.0 if hib else -1.0
    for rule in rules:
        wins = 0
        for rank in {r["rank"] for r in rows}:
            mine = [r for r in rows if r["rank"] == rank and "error" not in r]
            if mine and max(mine, key=lambda r: sign * r["valid"]["metric"])["rule"] == rule:
                wins += 1
        print(f"  {rule}: best on validation for {wins} of {len({r['rank'] for r in rows})}")
    if args.json:
        args.json.write_text(
            json.dumps({"run": str(args.run), "budget": full, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
