"""Fidelity: how well cheap scores rank architectures the way full-budget training does.

N distinct architectures are sampled from a space. Each is trained

- (a) by the self-tuning proxy at the proxy budget (what a campaign scores it with),
- (b) at the same budget with fixed default hyperparameters (`fixed_evaluate`),
- and at the full budget (the reference; self-tuning by default, `full_trainer="fixed"` for
  fixed defaults),
- (a) and (b) with the request's proxy options (`--proxy-option`), the full runs with the
  full options only (`--full-option`; by default a cosine-decayed learning rate, as retrain
  trains), so a change to the proxy is measured against an unchanged reference,
- with `reference` (an earlier fidelity run on the same task, space, seed, architectures
  and full budget), its full-budget runs are reused instead of trained again — a proxy
  setting is compared in a tenth of the time,
- with `repeat_full`, at the full budget again with another seed: (d), how well the reference
  ranks itself — about the ceiling any proxy can reach, since seed noise reorders close
  architectures,

and (c) its parameter count is read off. Every score is turned into a goodness (the task's
metric where higher is better, its negative otherwise; parameters as they are: the naive
"bigger is better" guess) and ranked against the full-budget goodness with Kendall's τ-b and
Spearman's ρ. Correlations are also reported on the validation loss. All runs of one
architecture share a seed; all run as Ray tasks, the longest first, and the driver alone
writes the run directory:

```
runs/NAME/
  config.json        the request as resolved (space, task spec, budgets, seed)
  space.space        copy of the space
  graphs/<hash>.parquet
  fidelity.json      per architecture: every run's metrics (or failure) and CPU-seconds;
                     the correlations; CPU-seconds totals by kind
  fidelity.png       full-budget score against each proxy, one panel per proxy
```
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from gatesearch.arch.graph import describe, write_graph
from gatesearch.arch.space import DEFAULT_SPACE, Architecture, load_space
from gatesearch.atomic import temp_path_beside, write_atomic
from gatesearch.budget import Budget, parse_budget
from gatesearch.errors import GatesearchError
from gatesearch.evaluate import ProxyEvaluator, resolve_task
from gatesearch.grammar import Grammar
from gatesearch.proxy.config import ProxyOptionError, proxy_config
from gatesearch.tasks import TaskSpec

PROXIES = ("self_tuning", "fixed", "params")
REPEAT = "full_repeat"  # (d): reported beside the proxies when the full runs are repeated
PROXY_TITLES = {
    "self_tuning": "(a) self-tuning proxy",
    "fixed": "(b) fixed hyperparameters",
    "params": "(c) parameter count",
    REPEAT: "(d) full, another seed",
}
# The same, short enough for a terminal table's first column.
PROXY_LABELS = {
    "self_tuning": "(a) self-tuning",
    "fixed": "(b) fixed hypers",
    "params": "(c) params",
    REPEAT: "(d) full, seed 2",
}
RUN_KINDS = ("full", REPEAT, "self_tuning", "fixed")  # dispatch order: the longest runs first
FULL_TRAINERS = ("self-tuning", "fixed")
RESULT = "fidelity.json"
PLOT = "fidelity.png"
FULL_BUDGET_FACTOR = 10
# The reference trains with a decaying learning rate, as `retrain` does. Measured on tiny
# Shakespeare (benchmarks/RESULTS.md): at a constant rate the end of training is noisy enough
# that two seeds of the same 20 full runs ranked each other at τ 0.54; decayed, at τ 0.84.
DEFAULT_FULL_OPTIONS: dict[str, Any] = {"lr_schedule": "cosine"}
# The small MQAR of the default campaign: a fidelity check that ends in minutes.
DEFAULT_PROXY_BUDGET = "20s"


class FidelityError(GatesearchError):
    """A fidelity request that cannot run as asked (user input)."""


@dataclass
class FidelityRequest:
    space: Path | None = None
    task: str = "mqar"
    task_params: dict[str, Any] = field(default_factory=dict)
    archs: int = 20
    proxy_budget: str | None = None  # None: DEFAULT_PROXY_BUDGET
    full_budget: str | None = None  # None: FULL_BUDGET_FACTOR x the proxy budget
    full_trainer: str = "self-tuning"
    runs_dir: Path = Path("runs")
    name: str | None = None
    workers: int = 2
    seed: int = 0
    address: str | None = None
    max_params: int | None = None  # sample only architectures at most this large
    repeat_full: bool = False  # train the full budget twice (another seed): the ceiling (d)
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields for (a) and (b)
    reference: Path | None = None  # an earlier fidelity run whose full-budget runs are reused
    # ProxyConfig fields for the full runs, over DEFAULT_FULL_OPTIONS.
    full: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ statistics


def _finite_pairs(x: list[float | None], y: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    keep = [
        (a, b)
        for a, b in zip(x, y)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    ]
    if not keep:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(keep, dtype=float)
    return arr[:, 0], arr[:, 1]


def rank_correlations(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
    """Kendall's τ-b and Spearman's ρ of the pairs where both are finite; None where
    undefined (fewer than 3 pairs, or one side constant)."""
    from scipy.stats import spearmanr

    a, b = _finite_pairs(x, y)
    out: dict[str, Any] = {"n": int(a.size), "tau": _tau(a, b), "rho": None}
    if _ranked(a, b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(spearmanr(a, b).statistic)
        out["rho"] = rho if math.isfinite(rho) else None
    return out


def _ranked(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether finite pairs `a`, `b` have a rank correlation: 3 or more, neither constant."""
    return bool(a.size >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0)


def _tau(a: np.ndarray, b: np.ndarray) -> float | None:
    """Kendall's τ-b of finite pairs, None where undefined."""
    from scipy.stats import kendalltau

    if not _ranked(a, b):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = float(kendalltau(a, b).statistic)
    return tau if math.isfinite(tau) else None


def top_agreement(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
    """What a search keeps of a proxy's ranking: over the pairs where both are finite
    (higher is better on both sides), `overlap`: how many of the proxy's top k are among the
    reference's top k (k = a quarter of the pairs, at least 1), and `pick_rank`, where the proxy's
    best architecture ranks in the reference (1 = the reference's best; ties share the
    better rank). None where there are no pairs."""
    a, b = _finite_pairs(x, y)
    n = int(a.size)
    out: dict[str, Any] = {"k": max(1, n // 4) if n else None, "overlap": None, "pick_rank": None}
    if n == 0:
        return out
    k = out["k"]
    # A stable sort keeps the first of tied proxy scores: the pick does not depend on luck.
    top_a = np.argsort(-a, kind="stable")[:k]
    # Tie-aware: one of the proxy's top k counts when its reference score reaches the
    # reference's k-th best, so how ties in the reference are broken cannot change the count.
    kth_best = np.sort(b)[::-1][k - 1]
    out["overlap"] = int(np.sum(b[top_a] >= kth_best))
    out["pick_rank"] = 1 + int(np.sum(b > b[int(np.argmax(a))]))
    return out


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


def bootstrap_taus(
    scores: dict[str, list[float | None]],
    reference: list[float | None],
    pairs: tuple[tuple[str, str], ...],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """How far each τ (`scores[p]` against `reference`) and each paired difference
    τ(p) − τ(q) can be trusted with this few architectures: percentile intervals over
    `resamples` resamples of the architectures with replacement (the same resample for every
    proxy, so a difference is paired). Why: with N = 20, τ moves by ±0.1–0.15 between samples
    of architectures; a difference whose interval holds 0 is not a difference. Resamples where
    a τ is undefined (a constant side) are left out of that τ's interval."""
    n = len(reference)
    rng = np.random.default_rng(seed)
    ref = np.array([np.nan if v is None else v for v in reference], dtype=float)
    arrays = {
        p: np.array([np.nan if v is None else v for v in xs], dtype=float)
        for p, xs in scores.items()
    }
    draws: dict[str, list[float]] = {p: [] for p in scores}
    diffs: dict[str, list[float]] = {f"{p}-{q}": [] for p, q in pairs}
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        taus = {}
        for p, a in arrays.items():
            x, y = a[idx], ref[idx]
            keep = np.isfinite(x) & np.isfinite(y)  # what rank_correlations keeps
            taus[p] = _tau(x[keep], y[keep])
        for p, tau in taus.items():
            if tau is not None:
                draws[p].append(tau)
        for p, q in pairs:
            tp, tq = taus[p], taus[q]
            if tp is not None and tq is not None:
                diffs[f"{p}-{q}"].append(tp - tq)
    tail = 100 * (1 - BOOTSTRAP_LEVEL) / 2

    def interval(values: list[float]) -> list[float] | None:
        if len(values) < resamples // 2:  # mostly undefined: no interval worth printing
            return None
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]

    return {
        "resamples": resamples,
        "level": BOOTSTRAP_LEVEL,
        "tau": {p: interval(v) for p, v in draws.items()},
        "difference": {k: interval(v) for k, v in diffs.items()},
    }


# ---------------------------------------------------------------------------------- on Ray


def fidelity_run(
    graph: nx.DiGraph,
    task: dict[str, Any],
    budget: str,
    seed: int,
    self_tuning: bool,
    threads: int,
    proxy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Body of one Ray task: one training (the trainer's defaults changed by `proxy`); the
    scalar metrics and the CPU-seconds it took."""
    import torch

    from gatesearch.evaluate import spec_of
    from gatesearch.proxy.trainer import fixed_evaluate, proxy_evaluate

    torch.set_num_threads(threads)
    train = proxy_evaluate if self_tuning else fixed_evaluate
    cpu, wall = time.process_time(), time.perf_counter()
    metrics = train(graph, spec_of(task), budget, seed, proxy_config(proxy))
    metrics.pop("trajectory", None)
    metrics["cpu_seconds"] = time.process_time() - cpu
    metrics["wall_seconds"] = time.perf_counter() - wall
    return metrics


# ------------------------------------------------------------------------------ the driver


def sample_distinct(
    grammar: Grammar,
    n: int,
    seed: int,
    causal: bool,
    fits: Callable[[Architecture], bool] | None = None,
) -> list[Architecture]:
    """`n` architectures with distinct hashes, drawn from the space's PCFG in a seeded order;
    with `fits`, only those it accepts (a parameter limit: the campaign's regime)."""
    import random

    from gatesearch.grammar import sample

    rng = random.Random(seed)
    found: dict[str, Architecture] = {}
    draws = 200 * n if fits else 50 * n
    for _ in range(draws):
        arch = Architecture.from_derivation(sample(grammar, rng, causal))
        if arch.hash in found or (fits is not None and not fits(arch)):
            continue
        found[arch.hash] = arch
        if len(found) == n:
            return list(found.values())
    limit = " within --max-params" if fits else ""
    raise FidelityError(
        f"the space yields only {len(found)} distinct architectures{limit} in {draws} "
        f"draws; ask for fewer than {n} with --archs"
    )


# What must be equal for an earlier run's full-budget scores to be this run's reference.
REFERENCE_KEYS = (
    "task", "archs", "full_budget", "full_trainer", "full", "seed", "causal", "max_params",
)  # fmt: skip
# What a key meant when a run made before it existed lacks it (the trainer's defaults then).
_REFERENCE_DEFAULTS: dict[str, Any] = {"full": {}}


def load_reference(
    path: Path, config: dict[str, Any], archs: list[Architecture], space_text: str
) -> dict[str, dict[str, Any]]:
    """The full-budget runs (and repeats) of the earlier fidelity run at `path` (its folder or
    its fidelity.json), by architecture hash, for a run resolved to `config` over `archs`.
    FidelityError, one line, when it cannot be read or measured anything else. Only runs
    that finished are reused; a failed one is trained again."""
    file = path / RESULT if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
        old, rows = doc["config"], doc["archs"]
        hashes = [row["arch_hash"] for row in rows]
    except FileNotFoundError:
        raise FidelityError(f"--reference {path}: no {RESULT} there") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FidelityError(f"--reference {file}: not a fidelity result ({exc})") from None
    for key in REFERENCE_KEYS:
        was = old.get(key, _REFERENCE_DEFAULTS.get(key))
        if was != config.get(key):
            raise FidelityError(
                f"--reference {file}: measured with {key} {was!r}, this run has {config.get(key)!r}"
            )
    space_copy = file.parent / "space.space"
    if space_copy.is_file() and space_copy.read_text() != space_text:
        raise FidelityError(f"--reference {file}: its space differs from {config['space']}")
    if hashes != [a.hash for a in archs]:
        raise FidelityError(f"--reference {file}: sampled other architectures than this run")
    reused: dict[str, dict[str, Any]] = {}
    for row in rows:
        runs = row.get("runs") or {}
        kept = {
            kind: {**runs[kind], "reused": True}
            for kind in ("full", REPEAT)
            if isinstance(runs.get(kind), dict) and runs[kind].get("metrics")
        }
        reused[row["arch_hash"]] = kept
    return reused


def prepare(req: FidelityRequest) -> tuple[dict[str, Any], Grammar, list[Architecture]]:
    """Check every input, resolve the config and sample the architectures; nothing written."""
    from gatesearch.runs.request import RUN_NAME, causal_for, default_run_name

    if req.archs < 3:
        raise FidelityError("--archs must be at least 3 (a rank correlation needs 3 pairs)")
    if req.workers < 1:
        raise FidelityError("--workers must be at least 1")
    if req.full_trainer not in FULL_TRAINERS:
        raise FidelityError(
            f"--full-trainer {req.full_trainer!r}: choose {' or '.join(FULL_TRAINERS)}"
        )
    space_path = Path(req.space) if req.space else DEFAULT_SPACE
    grammar = load_space(space_path)
    evaluator = resolve_task(TaskSpec(req.task, dict(req.task_params)), req.proxy)
    full_options = {**DEFAULT_FULL_OPTIONS, **req.full}
    try:
        proxy_config(full_options)  # checked as the proxy's are
    except ProxyOptionError as exc:
        raise FidelityError(f"--full-option: {exc}") from None
    if not isinstance(evaluator, ProxyEvaluator):
        raise FidelityError(f"task {req.task} trains no model; fidelity needs a real task")
    proxy = parse_budget(req.proxy_budget or DEFAULT_PROXY_BUDGET)
    full = (
        parse_budget(req.full_budget)
        if req.full_budget
        else Budget(proxy.amount * FULL_BUDGET_FACTOR, proxy.unit)
    )
    name = req.name or default_run_name("fidelity", evaluator.spec.name)
    if not RUN_NAME.match(name):
        raise FidelityError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    if (req.runs_dir / name).exists():
        raise FidelityError(f"{req.runs_dir / name} already exists: choose another --name")
    causal = causal_for(grammar, evaluator, space_path)
    if req.max_params is not None and req.max_params < 1:
        raise FidelityError(f"--max-params must be at least 1, got {req.max_params}")
    limit = req.max_params

    def fits(arch: Architecture) -> bool:
        return limit is None or evaluator.count_params(arch.graph) <= limit

    archs = sample_distinct(grammar, req.archs, req.seed, causal, fits if limit else None)
    config = {
        "kind": "fidelity",
        "name": name,
        "created": datetime.now().isoformat(timespec="seconds"),
        "space": str(space_path),
        "task": evaluator.spec.to_dict(),
        "metric_name": evaluator.metric_name,
        "higher_is_better": evaluator.higher_is_better,
        "archs": req.archs,
        "proxy_budget": str(proxy),
        "full_budget": str(full),
        "full_trainer": req.full_trainer,
        "workers": req.workers,
        "seed": req.seed,
        "causal": causal,
        "max_params": req.max_params,
        "repeat_full": req.repeat_full,
        "proxy": dict(req.proxy),
        "full": full_options,
        "reference": None if req.reference is None else str(req.reference),
    }
    return config, grammar, archs


def _create_dir(root: Path, config: dict[str, Any], space: Path) -> None:
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_beside(root)
        tmp.mkdir()
    except OSError as exc:
        raise FidelityError(f"cannot write runs directory {root.parent}: {exc.strerror}") from None
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.copyfile(space, tmp / "space.space")
        (tmp / "graphs").mkdir()
        os.rename(tmp, root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FidelityError(f"cannot create {root}: {exc}") from None


def _goodness(value: float | None, higher_is_better: bool) -> float | None:
    if value is None:
        return None
    return value if higher_is_better else -value


def compared(config: dict[str, Any]) -> tuple[str, ...]:
    """What is ranked against the full budget: the proxies, and the repeat when there is one."""
    return (*PROXIES, REPEAT) if config.get("repeat_full") else PROXIES


def analyse(config: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank agreement of each proxy's goodness (and the repeated full run's) with the full
    budget's, on the metric and on the validation loss: τ, ρ and the top-k agreement, and
    bootstrap intervals of the metric's τ and of (a) − (b), (a) − (c). With a repeat,
    `two_seeds` ranks the proxies against the mean of both full runs as well — a reference
    with half the seed noise. CPU-seconds by run kind."""
    hib = bool(config["higher_is_better"])
    kinds = compared(config)
    repeated = bool(config.get("repeat_full"))

    def score(row: dict[str, Any], kind: str, key: str) -> float | None:
        if kind == "params":
            return row["params"]
        run = row["runs"].get(kind) or {}
        value = (run.get("metrics") or {}).get(key)
        return None if value is None else float(value)

    def agreement(x: list[float | None], y: list[float | None]) -> dict[str, Any]:
        return {**rank_correlations(x, y), **top_agreement(x, y)}

    correlations: dict[str, Any] = {}
    two_seeds: dict[str, Any] = {}
    intervals: dict[str, Any] = {}
    for key, higher in (("metric", hib), ("loss", False)):
        goodness = {
            p: [
                score(r, p, key) if p == "params" else _goodness(score(r, p, key), higher)
                for r in rows
            ]
            for p in ("full", *kinds)
        }
        full = goodness["full"]
        correlations[key] = {p: agreement(goodness[p], full) for p in kinds}
        if key == "metric":
            pairs = (("self_tuning", "fixed"), ("self_tuning", "params"))
            intervals = bootstrap_taus({p: goodness[p] for p in kinds}, full, pairs)
        if repeated:
            mean = [
                None if a is None or b is None else (a + b) / 2
                for a, b in zip(full, goodness[REPEAT])
            ]
            two_seeds[key] = {p: agreement(goodness[p], mean) for p in PROXIES}
    run_kinds = [k for k in RUN_KINDS if k != REPEAT or config.get("repeat_full")]
    cpu: dict[str, Any] = {}
    for kind in run_kinds:
        secs = [
            r["runs"][kind]["cpu_seconds"]
            for r in rows
            if r["runs"].get(kind) and r["runs"][kind].get("cpu_seconds") is not None
        ]
        cpu[kind] = {
            "total": float(sum(secs)),
            "mean": float(np.mean(secs)) if secs else None,
            "runs": len(secs),
        }
    failures = {
        kind: sum(1 for r in rows if (r["runs"].get(kind) or {}).get("error")) for kind in run_kinds
    }
    result = {
        "correlations": correlations,
        "bootstrap": intervals,
        "cpu_seconds": cpu,
        "failures": failures,
    }
    if repeated:
        result["two_seeds"] = two_seeds
    return result


def run_fidelity(
    req: FidelityRequest, progress: Callable[[int, int], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Run the measurement; returns the run directory and the result written to
    fidelity.json. `progress(done, total)` is called as runs finish."""
    from gatesearch.arch.build import build_model, count_params
    from gatesearch.proxy.trainer import task_context
    from gatesearch.runs.config import TrialResources
    from gatesearch.runs.dispatch import Dispatcher, EventKind, call_streamed
    from gatesearch.runs.request import trial_seed
    from gatesearch.tasks import make_task

    config, _, archs = prepare(req)
    # Checked before anything is written or started, as prepare's checks are.
    reused = (
        load_reference(Path(req.reference), config, archs, Path(config["space"]).read_text())
        if req.reference is not None
        else {}
    )
    root = req.runs_dir / config["name"]
    # One CPU per training (a reference run is one process, like a trial's default).
    dispatch = Dispatcher[tuple[int, str]](
        TrialResources(cpus=1, retries=1), req.workers, req.address
    )
    space_path = Path(config["space"])
    _create_dir(root, config, space_path)
    task = config["task"]
    task_obj = make_task(TaskSpec.from_dict(task))
    rows: list[dict[str, Any]] = []
    for i, arch in enumerate(archs):
        write_graph(arch.graph, root / "graphs" / f"{arch.hash}.parquet")
        model = build_model(arch.graph, task_context(arch.graph, task_obj))
        rows.append(
            {
                "index": i,
                "arch_hash": arch.hash,
                "arch": describe(arch.graph),
                "params": float(count_params(model)),
                "seed": trial_seed(req.seed, i, 1),
                "repeat_seed": trial_seed(req.seed, i, 2),
                "runs": {
                    kind: entry
                    for kind, entry in reused.get(arch.hash, {}).items()
                    if kind != REPEAT or req.repeat_full
                },
            }
        )
        del model
    full_self_tuning = req.full_trainer == "self-tuning"
    budgets = {  # kind: (budget, self-tuning, proxy options)
        "full": (config["full_budget"], full_self_tuning, config["full"]),
        REPEAT: (config["full_budget"], full_self_tuning, config["full"]),
        "self_tuning": (config["proxy_budget"], True, config["proxy"]),
        "fixed": (config["proxy_budget"], False, config["proxy"]),
    }
    # Ctrl-C, or a failure while submitting, cancels what is already on Ray.
    with dispatch:
        total = 0
        for kind in RUN_KINDS:
            if kind == REPEAT and not req.repeat_full:
                continue
            budget, self_tuning, proxy = budgets[kind]
            for row, arch in zip(rows, archs):
                if kind in row["runs"]:  # reused from the reference
                    continue
                # The repeat differs from the reference by its seed only (initialisation, batch
                # order, dropout masks, STN perturbations).
                seed = row["repeat_seed"] if kind == REPEAT else row["seed"]
                args = (fidelity_run, arch.graph, task, budget, seed, self_tuning, 1, proxy)
                dispatch.submit((row["index"], kind), call_streamed, *args)
                total += 1
        done = 0
        if progress is not None:
            progress(done, total)
        while len(dispatch):
            for event in dispatch.poll(timeout=1.0):
                if not event.kind.done:
                    continue
                index, kind = event.key
                if event.kind is EventKind.RESULT:
                    metrics = event.value
                    entry = {"metrics": metrics, "cpu_seconds": metrics.get("cpu_seconds")}
                else:  # a diverged or crashed run: recorded, left out of ranks
                    entry = {"error": event.value, "cpu_seconds": None}
                rows[index]["runs"][kind] = entry
                done += 1
                if progress is not None:
                    progress(done, total)
    result = {"config": config, "archs": rows, **analyse(config, rows)}
    write_atomic(root / RESULT, (json.dumps(result, indent=2) + "\n").encode())
    plot(result, root / PLOT)
    return root, result


# ---------------------------------------------------------------------------------- plot


def plot(result: dict[str, Any], path: Path) -> None:
    """Full-budget metric against each proxy's score (and the repeated full run's), one panel
    each, τ in each title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    config = result["config"]
    metric_name = config["metric_name"]
    rows = result["archs"]

    def value(row: dict[str, Any], kind: str) -> float | None:
        if kind == "params":
            return row["params"]
        run = row["runs"].get(kind) or {}
        return (run.get("metrics") or {}).get("metric")

    kinds = compared(config)
    fig = Figure(figsize=(4 * len(kinds), 4), constrained_layout=True)
    axes = fig.subplots(1, len(kinds), sharey=True)
    for ax, proxy in zip(axes, kinds):
        xy = [(value(r, proxy), value(r, "full")) for r in rows]
        xy = [(x, y) for x, y in xy if x is not None and y is not None]
        if xy:
            xs, ys = zip(*xy)
            ax.scatter(xs, ys, s=22, alpha=0.8, color="#1f77b4", edgecolors="none")
        stats = result["correlations"]["metric"][proxy]
        tau = "n/a" if stats["tau"] is None else f"{stats['tau']:.2f}"
        rho = "n/a" if stats["rho"] is None else f"{stats['rho']:.2f}"
        ax.set_title(f"{PROXY_TITLES[proxy]}\nτ = {tau}, ρ = {rho} (n = {stats['n']})", fontsize=10)
        if proxy == "params":
            ax.set_xscale("log")
            ax.set_xlabel("parameters")
        elif proxy == REPEAT:
            ax.set_xlabel(f"{metric_name} at {config['full_budget']}, another seed")
        else:
            ax.set_xlabel(f"{metric_name} at {config['proxy_budget']}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"{metric_name} at {config['full_budget']} ({config['full_trainer']})")
    fig.suptitle(
        f"proxy fidelity on {config['task']['name']}: {len(rows)} architectures", fontsize=11
    )
    fig.savefig(path, dpi=120)


__all__ = [
    "FULL_TRAINERS",
    "PROXIES",
    "REPEAT",
    "FidelityError",
    "FidelityRequest",
    "analyse",
    "compared",
    "fidelity_run",
    "load_reference",
    "plot",
    "prepare",
    "rank_correlations",
    "run_fidelity",
    "sample_distinct",
    "top_agreement",
]
