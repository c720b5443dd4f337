"""Strategy cost and progress as the history grows, in process (no Ray, no training).

    python benchmarks/strategies.py                          # 400 trials, 2 seeds
    python benchmarks/strategies.py --trials 1000 --presets random,evolution,tpe-grouped

Each strategy proposes derivations of the default space through the campaign's own ask/tell
(slot seeds as a campaign derives them) and is told a cheap, structured, deterministic score:
how far the model built for MQAR 256/64/4 is from a target size, |log10(params / target)|,
its parameters counted on the meta device as `--max-params` counts them. The score is not a
stand-in for accuracy; it asks whether a sampler learns anything about a conditional space,
and what its proposals cost the driver as the study grows (Optuna #2172: sampler time
growing with history). Reported per strategy: ask time (median per block of 100 trials) and
the best score after 50, 100, 200, ... trials, medians over seeds.

Presets: the shipped `random`, `evolution`, `tpe` (multivariate TPE, `group = false`) and
`nsga2`, and two variants: `tpe-grouped` (`group = true`: a model per set of co-occurring
choice paths) and `evolution-32` (population 32, tournaments of 8).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import optuna

from gatesearch.arch.space import DEFAULT_SPACE, Architecture, load_space
from gatesearch.evaluate import resolve_task
from gatesearch.runs.request import trial_seed
from gatesearch.strategies import Observation
from gatesearch.strategies.presets import PRESETS_DIR, load_preset, make_strategy, parse_preset
from gatesearch.tasks import TaskSpec

VARIANTS = {
    "tpe-grouped": 'strategy = "tpe"\n[options]\ngroup = true\n',
    "evolution-32": 'strategy = "evolution"\n[options]\npopulation = 32\nsample_size = 8\n',
}


def preset(name: str):
    if name in VARIANTS:
        return parse_preset(VARIANTS[name], name)
    return load_preset(PRESETS_DIR / f"{name}.toml")


def run(name: str, trials: int, seed: int, target: float) -> tuple[list[float], list[float]]:
    """Ask times (s) and scores, trial by trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grammar = load_space(DEFAULT_SPACE)
    evaluator = resolve_task(TaskSpec("mqar", {"vocab": 256, "length": 64, "pairs": 4}), {})
    strategy = make_strategy(preset(name), grammar, True, ["minimize"])
    study = optuna.create_study(direction="minimize")
    asks, scores = [], []
    for slot in range(trials):
        t = time.perf_counter()
        proposal = strategy.ask(slot, trial_seed(seed, slot), study)
        asks.append(time.perf_counter() - t)
        arch = Architecture.from_derivation(proposal.derivation)
        score = abs(math.log10(evaluator.count_params(arch.graph) / target))
        scores.append(score)
        if proposal.trial is not None:
            study.tell(proposal.trial, score)
        choices = dict(proposal.derivation.choices)
        strategy.tell(Observation(slot, choices, (score,), proposal.derivation))
    return asks, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--presets", default="random,evolution,evolution-32,tpe,tpe-grouped,nsga2")
    parser.add_argument("--target", type=float, default=2e5, help="target parameter count")
    args = parser.parse_args()
    checkpoints = [c for c in (50, 100, 200, 400, 1000, 2000) if c <= args.trials]
    print(
        f"default space, MQAR 256/64/4 models, score |log10(params / {args.target:g})|, "
        f"{args.trials} trials, {args.seeds} seeds (medians over seeds)"
    )
    blocks = range(0, args.trials, 100)
    head = " ".join(f"{f'ask@{b}':>8}" for b in blocks)
    best_head = " ".join(f"{f'best@{c}':>8}" for c in checkpoints)
    print(f"{'preset':10} {head}   {best_head}   wall s")
    for name in args.presets.split(","):
        per_seed = []
        t = time.perf_counter()
        for seed in range(args.seeds):
            per_seed.append(run(name, args.trials, seed, args.target))
        wall = time.perf_counter() - t
        ask_ms = [np.median([np.median(a[b : b + 100]) * 1e3 for a, _ in per_seed]) for b in blocks]
        best = [np.median([min(s[:c]) for _, s in per_seed]) for c in checkpoints]
        print(
            f"{name:10} "
            + " ".join(f"{x:8.1f}" for x in ask_ms)
            + "   "
            + " ".join(f"{x:8.4f}" for x in best)
            + f"   {wall:6.0f}",
            flush=True,
        )
    print("ask@N: median ms per ask over trials N..N+99; best@N: best score after N trials")


if __name__ == "__main__":
    main()
