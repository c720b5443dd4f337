"""Per-trial engine overhead of a campaign on the null evaluator, beside Ray Tune + OptunaSearch.

    python benchmarks/overhead.py                  # 1,000 trials, evolution, 2 workers
    python benchmarks/overhead.py --tune 40        # also Ray Tune + OptunaSearch, 40 trials
    python benchmarks/overhead.py --memory 5000    # driver RSS over 5,000 trials

Engine overhead per trial is the driver's time in the loop for that trial: ask the strategy
(grammar expansion), build the graph and hash it, write the graph artifact and the RUNNING
trial, submit the Ray task, and on its result store it and tell the strategy. Ray's round trip
runs concurrently with other trials' driver work and is reported as throughput (wall time per
trial at 2 workers). The null evaluator returns at once, so all of it is overhead.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from gatesearch.runs.campaign import Campaign
from gatesearch.runs.request import RunRequest, package_versions, prepare_run
from gatesearch.runs.store import RunStore


class TimedCampaign(Campaign):
    """Records, per trial, the time spent in each driver phase."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.launch_s: list[float] = []
        self.ask_s: list[float] = []
        self.finish_s: list[float] = []
        self.rss_mb: list[tuple[int, float]] = []
        ask = self.strategy.ask

        def timed_ask(*a, **k):
            t = time.perf_counter()
            try:
                return ask(*a, **k)
            finally:
                self.ask_s.append(time.perf_counter() - t)

        self.strategy.ask = timed_ask  # type: ignore[method-assign]

    def _launch(self) -> None:
        t = time.perf_counter()
        super()._launch()
        self.launch_s.append(time.perf_counter() - t)

    def _record(self, *args, **kwargs) -> None:
        t = time.perf_counter()
        super()._record(*args, **kwargs)
        self.finish_s.append(time.perf_counter() - t)
        if self.seq % 500 == 0:
            self.rss_mb.append((self.seq, _rss_mb()))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ms(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95))


def run_engine(trials: int, workers: int, strategy: str, root: Path) -> dict:
    req = RunRequest(
        task="null", trials=trials, workers=workers, strategy=strategy, runs_dir=root, name=strategy
    )
    config, space, preset = prepare_run(req)
    store = RunStore.create(root / strategy, config, space, preset.text, package_versions())
    with store:
        campaign = TimedCampaign(store)
        gc.collect()
        t = time.perf_counter()
        campaign.run()
        wall = time.perf_counter() - t
    n = len(campaign.finish_s)
    per_trial = [a + b for a, b in zip(campaign.launch_s, campaign.finish_s)]
    engine = [p - a for p, a in zip(per_trial, campaign.ask_s)]
    return {
        "name": f"gatesearch {strategy}",
        "trials": n,
        "total": _ms(per_trial),
        "ask": _ms(campaign.ask_s),
        "engine": _ms(engine),
        "wall_per_trial_ms": wall * 1e3 / n,
        "rss": campaign.rss_mb,
    }


_GRAMMAR = None


def _tune_space(trial) -> dict:
    """OptunaSearch's define-by-run space (module level: Tune pickles its searcher)."""
    global _GRAMMAR
    from gatesearch.arch.space import DEFAULT_SPACE, load_space
    from gatesearch.grammar import expand
    from gatesearch.strategies import OptunaChooser

    if _GRAMMAR is None:
        _GRAMMAR = load_space(DEFAULT_SPACE)
    return {"choices": expand(_GRAMMAR, OptunaChooser(trial), True).choices}


def run_tune(trials: int, workers: int, root: Path) -> dict:
    """Ray Tune + OptunaSearch on the same null workload: the define-by-run space expands the
    same grammar through Optuna, the trainable returns the same hash-derived pseudo-metric."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from gatesearch.arch.space import Architecture

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def trainable(config: dict) -> dict:
        from gatesearch.arch.space import DEFAULT_SPACE, load_space
        from gatesearch.grammar import replay

        g = load_space(DEFAULT_SPACE)
        arch = Architecture.from_derivation(replay(g, config["choices"], True))
        return {"loss": int(arch.hash[:8], 16) / 2**32}

    searcher = OptunaSearch(space=_tune_space, metric="loss", mode="min", seed=0)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=trials, max_concurrent_trials=workers
        ),
        run_config=tune.RunConfig(storage_path=str(root / "tune"), verbose=0),
    )
    t = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - t
    return {
        "name": "Ray Tune + OptunaSearch",
        "trials": trials,
        "wall_per_trial_ms": wall * 1e3 / trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategies", default="evolution,random,tpe")
    parser.add_argument("--tune", type=int, default=0, help="Ray Tune trials (0: skip)")
    parser.add_argument("--memory", type=int, default=0, help="trials for the RSS run (0: skip)")
    args = parser.parse_args()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for strategy in args.strategies.split(","):
            rows.append(run_engine(args.trials, args.workers, strategy, root))
        if args.memory:
            mem = run_engine(args.memory, args.workers, "random", root / "mem")
        if args.tune:
            rows.append(run_tune(args.tune, args.workers, root))
    print(f"\nnull evaluator, default space, {args.workers} workers (times in ms per trial)")
    print(f"{'system':28} {'trials':>6} {'driver med':>10} {'p95':>7} {'ask med':>8} "
          f"{'rest med':>8} {'rest p95':>8} {'wall/trial':>10}")  # fmt: skip
    for r in rows:
        if "total" in r:
            print(
                f"{r['name']:28} {r['trials']:6d} {r['total'][0]:10.2f} {r['total'][1]:7.2f} "
                f"{r['ask'][0]:8.2f} {r['engine'][0]:8.2f} {r['engine'][1]:8.2f} "
                f"{r['wall_per_trial_ms']:10.2f}"
            )
        else:
            print(f"{r['name']:28} {r['trials']:6d} {'':>10} {'':>7} {'':>8} {'':>8} {'':>8} "
                  f"{r['wall_per_trial_ms']:10.2f}")  # fmt: skip
    print("ask = the strategy's proposal (grammar expansion, mutation, sampler); "
          "rest = graph, hash, store, dispatch, tell")  # fmt: skip
    if args.memory:
        points = ", ".join(f"{n}: {mb:.0f} MB" for n, mb in mem["rss"])
        growth = mem["rss"][-1][1] - mem["rss"][0][1] if len(mem["rss"]) > 1 else 0.0
        print(f"driver RSS over {args.memory} random trials: {points} (growth {growth:.0f} MB)")


if __name__ == "__main__":
    main()
