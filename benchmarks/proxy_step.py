"""What self-tuning costs per weight step: fixed hyperparameters vs the STN proxy with the
`scale` response (the default) and the `full` response, side by side in one process.

    python benchmarks/proxy_step.py                 # LLaMA-small and Hawk-small on MQAR 256/64/4
    python benchmarks/proxy_step.py --steps 200 --repeats 5

Each configuration trains the same architecture from the same seed for `--steps` weight steps
(hyper steps included, as in a campaign), `--repeats` times in an interleaved order, and the
median milliseconds per weight step are printed with the ratio to the fixed run of the same
round. One torch thread, as a campaign trial with cpus = 1 runs.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from gatesearch.arch.space import load_known
from gatesearch.proxy import ProxyConfig, Response, train_proxy
from gatesearch.tasks import make_task

ROOT = Path(__file__).resolve().parent.parent
# Small versions of two known architectures: sizes a CPU campaign under --max-params trains.
SMALL = {"$width": 64, "$heads": 2, "model.stack.block#count": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--archs", default="llama,hawk")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = make_task("mqar", vocab=256, length=64, pairs=4)
    base = ProxyConfig(latency_runs=1)
    configs = {
        "fixed": replace(base, self_tuning=False),
        "stn-scale": replace(base, response=Response.SCALE),
        "stn-full": replace(base, response=Response.FULL),
    }
    for name in args.archs.split(","):
        arch = load_known(ROOT / "spaces" / "known" / f"{name}.toml", overrides=SMALL)
        times: dict[str, list[float]] = {k: [] for k in configs}
        ratios: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(args.repeats):
            round_ms = {}
            for label, config in configs.items():
                result = train_proxy(arch.graph, task, f"{args.steps}steps", 0, config)
                round_ms[label] = 1e3 * result.metrics["train_seconds"] / args.steps
            for label, ms in round_ms.items():
                times[label].append(ms)
                ratios[label].append(ms / round_ms["fixed"])
        params = int(result.metrics["params"])
        print(f"{name}-small ({params:,} parameters), {args.steps} steps × {args.repeats}:")
        for label in configs:
            print(
                f"  {label:10s} {statistics.median(times[label]):7.1f} ms/step"
                f"   ×{statistics.median(ratios[label]):.2f} of fixed"
            )


if __name__ == "__main__":
    main()
