"""What a promotion costs: a trial trained in two stints (to a lower rung, saved, then
continued to the top) against the same trial trained at once, in CPU-seconds.

    python benchmarks/stint_cost.py --archs 5 --seed 0
    python benchmarks/stint_cost.py --task-param vocab=256 --task-param length=64 \\
        --task-param pairs=16 --budget 270steps --rung 90steps

Architectures are sampled from the default space under a parameter limit. Each is trained
through the campaign's own evaluator (fixed hyperparameters, one thread, in this process):
once for the whole budget, then as two stints — to `--rung`, its state saved, then continued
from that state to the budget — and both results are checked equal. What the stints cost
beyond the single run is what ASHA pays per promotion for saving, rebuilding the model,
loading its state and drawing the data stream again up to where it stopped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gatesearch.arch.space import DEFAULT_SPACE, load_space, sample_architectures
from gatesearch.budget import parse_budget
from gatesearch.evaluate import evaluate, parse_task_params, resolve_task
from gatesearch.proxy.stint import Stint
from gatesearch.tasks import TaskSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="mqar")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--budget", default="270steps", help="the top rung")
    p.add_argument("--rung", default="90steps", help="where the first stint stops")
    p.add_argument("--archs", type=int, default=5)
    p.add_argument("--max-params", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0, help="which architectures are sampled")
    args = p.parse_args()

    torch.set_num_threads(1)
    params = parse_task_params(args.task_param or ["vocab=256", "length=64", "pairs=16"])
    evaluator = resolve_task(TaskSpec(args.task, params), {"self_tuning": False})
    sampled = sample_architectures(load_space(DEFAULT_SPACE), 20 * args.archs, seed=args.seed)
    archs = [a for a in sampled if evaluator.count_params(a.graph) <= args.max_params]
    full, rung = parse_budget(args.budget), parse_budget(args.rung)
    total_one = total_two = 0.0
    for i, arch in enumerate(archs[: args.archs]):
        start = time.process_time()
        once = evaluate(arch.graph, evaluator, full, 0)
        one = time.process_time() - start
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "rung0"
            start = time.process_time()
            evaluate(arch.graph, evaluator, full, 0, Stint(rung, None, state))
            first = time.process_time() - start
            start = time.process_time()
            twice = evaluate(arch.graph, evaluator, full, 0, Stint(full, state, None))
            second = time.process_time() - start
        total_one, total_two = total_one + one, total_two + first + second
        same = once["metric"] == twice["metric"] and once["loss"] == twice["loss"]
        print(
            f"arch {i} ({once['params']:,.0f} params): at once {one:.2f} CPU-s; "
            f"stints {first:.2f} + {second:.2f} = {first + second:.2f} "
            f"({(first + second) / one:.2f}x); same result: {same}",
            flush=True,
        )
    print(
        f"all: at once {total_one:.1f} CPU-s, in stints {total_two:.1f} ({total_two / total_one:.2f}x)"
    )


if __name__ == "__main__":
    main()
