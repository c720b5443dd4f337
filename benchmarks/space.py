"""Search-space benchmarks: sampling and derivation -> graph throughput on one core, and the
10,000-sample build check (every sample builds and runs forward and backward; goal: zero
failures); with --sizes, the parameter counts of default-space samples built for MQAR 256 and
tiny Shakespeare (what a --max-params limit leaves).

    python benchmarks/space.py --throughput 2000 --builds 10000
    python benchmarks/space.py --throughput 0 --builds 0 --sizes 400
"""

from __future__ import annotations

import argparse
import collections
import platform
import random
import statistics
import time

import torch

from gatesearch.arch.build import aux_losses, build_model
from gatesearch.arch.graph import arch_hash
from gatesearch.arch.space import DEFAULT_SPACE, Architecture, graph_context, load_space
from gatesearch.grammar import derivation_to_graph, sample


def throughput(n: int, repeats: int = 3) -> dict[str, float]:
    """Per-second rates, best of `repeats`, for sampling, derivation -> graph, and hashing."""
    grammar = load_space(DEFAULT_SPACE)
    rng = random.Random(0)
    for _ in range(100):  # fill the feasibility tables, as a running campaign has
        sample(grammar, rng)
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(repeats):
        t0 = time.perf_counter()
        derivations = [sample(grammar, rng) for _ in range(n)]
        t1 = time.perf_counter()
        graphs = [derivation_to_graph(d) for d in derivations]
        t2 = time.perf_counter()
        for g in graphs:
            arch_hash(g)
        t3 = time.perf_counter()
        rates["sample (derivation)"].append(n / (t1 - t0))
        rates["derivation -> graph"].append(n / (t2 - t1))
        rates["canonical hash"].append(n / (t3 - t2))
        rates["sample + graph + hash"].append(n / (t3 - t0))
    return {k: max(v) for k, v in rates.items()}


def builds(n: int, seed: int, seq: int = 16) -> tuple[int, collections.Counter, list[float]]:
    grammar = load_space(DEFAULT_SPACE)
    rng = random.Random(seed)
    failures: collections.Counter = collections.Counter()
    times = []
    for i in range(n):
        arch = Architecture.from_derivation(sample(grammar, rng))
        t = time.perf_counter()
        try:
            ctx = graph_context(arch.graph)
            model = build_model(arch.graph, ctx)
            y = model(torch.randint(0, ctx.n_in, (2, seq)))
            loss = y.square().mean() + sum(aux_losses(model).values(), torch.zeros(()))
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite loss")
            loss.backward()
        except Exception as exc:  # a benchmark counts failures instead of stopping at one
            failures[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        times.append(time.perf_counter() - t)
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} built, {sum(failures.values())} failures", flush=True)
    return n, failures, times


def sizes(n: int, seed: int) -> None:
    """Quantiles of the model size of `n` samples per task, and the share under two limits."""
    from gatesearch.evaluate import resolve_task
    from gatesearch.tasks import TaskSpec

    grammar = load_space(DEFAULT_SPACE)
    for spec in (
        TaskSpec("mqar", {"vocab": 256, "length": 64, "pairs": 4}),
        TaskSpec("charlm", {}),
    ):
        evaluator = resolve_task(spec)
        rng = random.Random(seed)
        counts = sorted(
            evaluator.count_params(Architecture.from_derivation(sample(grammar, rng, True)).graph)
            for _ in range(n)
        )
        q = {f: counts[int(f * (n - 1))] for f in (0.1, 0.5, 0.9)}
        under = {lim: sum(c <= lim for c in counts) / n for lim in (200_000, 800_000)}
        print(
            f"  {spec.name:<7} p10 {q[0.1]:>9,}  median {q[0.5]:>9,}  p90 {q[0.9]:>10,}   "
            f"<=200k {under[200_000]:.0%}  <=800k {under[800_000]:.0%}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--throughput", type=int, default=2000, help="samples per timing pass")
    ap.add_argument("--builds", type=int, default=10000, help="samples to build and run")
    ap.add_argument("--sizes", type=int, default=0, help="samples to size per task (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, 1 thread"
    )
    if args.throughput:
        print(f"\nthroughput on one core, default space, best of 3 x {args.throughput}:")
        for name, rate in throughput(args.throughput).items():
            print(f"  {name:<24} {rate:>9.0f} /s")
    if args.builds:
        print(f"\nbuild + forward + backward on (2, 16) tokens, {args.builds} samples:")
        n, failures, times = builds(args.builds, args.seed)
        print(f"  samples: {n}  failures: {sum(failures.values())}")
        for reason, count in failures.most_common(10):
            print(f"    {count} x {reason}")
        print(
            f"  per sample: median {statistics.median(times) * 1e3:.1f} ms, "
            f"max {max(times) * 1e3:.0f} ms"
        )
    if args.sizes:
        print(f"\nparameters of {args.sizes} default-space samples, built for each task:")
        sizes(args.sizes, args.seed)


if __name__ == "__main__":
    main()
