"""`gatesearch retrain runs/NAME --top K`: the campaign's best K, trained at the full budget.

Each architecture is trained by the proxy's trainer with self-tuning off and its regularisation
hyperparameters fixed where the campaign's proxy left them:
`ProxyConfig(self_tuning=False, start=trial hyperparameters, lr_schedule=COSINE)`, the
campaign's other proxy options (`--proxy-option`: batch size, warm-up, clipping) kept. The learning
rate peaks at the highest rate the proxy's hypergradient reached (its trajectory's maximum) and
decays by a cosine to a tenth: the proxy's own rate rose while training was easy and fell
near its end, and its final value, held as the peak of a decaying schedule, undertrains (on
tiny Shakespeare, 1.879 against the proxy's own 1.784 at an equal number of steps).

Like a careful hand-written loop, the training scores the whole validation split at
`eval_points` evenly spaced points of the budget, keeps the weights of the best point and stops
after `patience` points without a better one: the budget is a maximum, and the result is the
best of the points scored, not the last (on a small dataset the last point is often far
worse than the best). The curve and the best point's step are stored.

The training runs as Ray tasks that stream their validation points (the driver shows progress);
the driver (this process) is the only writer and stores, per architecture:

```
runs/NAME/retrained/<hash>/
  weights.safetensors   the model's state_dict at its best validation point
  graph.parquet         the architecture the weights belong to: the pruned graph when the
                        model had pruning gates (their closed units removed), else the trial's
  metrics.json          validation and test loss and metric, params, FLOPs, latency, the
                        hyperparameters, budget and seed, the trial it came from, the
                        validation curve, the best point's step and whether it stopped early
```

`build_model(read_graph(graph.parquet), ctx)` then `load_state_dict(load_file(weights))`
gives back the scored model. <hash> is the campaign trial's architecture hash.

A suite campaign's finalists (a `suite` task: one model per member) are trained the same way,
each member at an equal share of the budget (by default the trial's own: a suite screens
capabilities at the budget its campaign chose), at `--seeds` seeds (2 by default: the same
seeds for every finalist, so that they are compared on equal draws). A member's dropout
variant is chosen on its own validation split, seed by seed; the finalist's score is the
suite's weighted mean of normalised member scores (as a trial's), averaged over the seeds.
No weights are kept (one model per member and seed, none of them the suite's model); its
folder holds graph.parquet and metrics.json, with every member's and every seed's scores.
A campaign's best is the maximum of many one-seed scores: measured on the MAD suite, its
top five lay within one design's seed-to-seed range (benchmarks/RESULTS.md), so a suite's
finalists are ranked on several seeds before one is called best.

Once architectures are retrained, their retrained validation score is what ranks them:
`final_order` puts them first, best first, then the others in the campaign's order; `export
--rank K` and `report` use it.
"""

from __future__ import annotations

import functools
import json
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.arch.graph import arch_hash, read_graph, write_graph
from gatesearch.atomic import AtomicFolder, remove_temps
from gatesearch.budget import Budget, parse_budget
from gatesearch.errors import GatesearchError
from gatesearch.evaluate import SuiteEvaluator, resolve_task, spec_of
from gatesearch.formats import MISSING
from gatesearch.proxy.config import ProxyOptionError, proxy_config
from gatesearch.proxy.hyper import DROPOUT_PREFIX
from gatesearch.proxy.lr import peak_lr
from gatesearch.runs.dispatch import Dispatcher, EventKind
from gatesearch.runs.ranking import joint_ranks, rank_records, ranked, tie_key
from gatesearch.runs.request import trial_seed
from gatesearch.runs.store import RunStore, StoreError, TrialRecord
from gatesearch.tasks import TaskSpec, make_task
from gatesearch.tasks.registry import task_label
from gatesearch.tasks.suite import (
    SUITE_TASK,
    Suite,
    SuiteMember,
    chance_loss,
    member_budget,
    member_score,
)

RETRAINED = "retrained"
WEIGHTS = "weights.safetensors"
GRAPH = "graph.parquet"
METRICS = "metrics.json"
# Full budget when none is given: ten times the campaign's per-trial budget, the ratio of a
# proxy to a full run that the fidelity benchmark measures.
FULL_BUDGET_FACTOR = 10
# Validation points over the full budget, and how many in a row without a better score stop
# it: a quarter of the budget, the patience of a hand-written loop that checks once an epoch
# and waits a few epochs on a dataset that a full budget covers dozens of times.
DEFAULT_EVAL_POINTS = 20
DEFAULT_PATIENCE = 5
# A suite's finalists train the whole budget (the best point still kept): it is the trial's
# own budget, with nothing to overfit past, and MAD's recall tasks sit at chance for a
# quarter of it or more before they are learnt. Measured (RESULTS, "A campaign on
# suites/mad.toml"): with patience 5 LLaMA's noisy recall stopped at step 31 of 586 in both
# seeds (0.39 against 1.00 with patience 0).
SUITE_PATIENCE = 0
# `--dropout`: the proxy's tuned rates and every rate at 0.25, the better on validation kept.
# Measured (benchmarks/RESULTS.md, "Which dropout retrain should use"): on Palestrina frames
# 0.25 beat the tuned rates on validation for all 3 of a campaign's top 3 (by 0.13-0.20
# nats/step), on a 100k-character corpus for all 3 too (by 0.004-0.046 nats/char); a
# data-rich task keeps the tuned rates by the same validation. Twice the retrain's cost.
DEFAULT_DROPOUTS = "tuned,0.25"
# A suite's finalists retrain at the trial's own budget, not 10x (see `retrain`): nothing for
# more dropout to correct, and a known design scored by the same recipe trains the proxy's
# rates (benchmarks/capabilities.py --recipe retrain); a second variant would give finalists
# a best-of-two per member that the designs they are compared with do not get.
SUITE_DROPOUTS = "tuned"
# `--seeds` for a suite's finalists: two, the fewest that show a spread; one for a single
# task (its retrain keeps the weights of one training).
DEFAULT_SUITE_SEEDS = 2
# The Optuna-independent stream of `trial_seed` a suite retrain's seeds come from (streams 0
# and 1 are a trial's proposal and training seeds).
SUITE_SEED_STREAM = 2
# The proxy options retrain's recipe sets itself, whatever the campaign's were (whether the
# hyperparameters tune, the schedule and its shape, the validation points); its other options
# (batch size, warm-up, clipping, the STN's settings for --dropout self-tune) shape a retrain
# as they shaped the campaign's trials: a campaign that trained at batch size 8 found
# architectures that are good at batch size 8.
RECIPE_OPTIONS = frozenset(
    {
        *("self_tuning", "hd_beta", "centred"),
        *("lr_schedule", "lr_final", "cooldown"),
        *("eval_points", "keep_best", "patience"),
    }
)
# `--schedule`: how the learning rate decays over the budget (proxy/config.py's LRSchedule).
SCHEDULES = ("cosine", "plateau")
DEFAULT_SCHEDULE = "cosine"


@dataclass(frozen=True)
class SelfTune:
    """Retrain with the proxy's self-tuning regularisers left on, starting where the campaign's
    proxy left them: over a 10x budget the validation loss does overfit, so the hypergradient
    has the signal a short proxy lacks."""

    # Delta-STN's centred response, the proxy's default. Over a retrain both forms raised the
    # mixer's dropout to 0.5-0.9; the centred one retrained better on Palestrina (mean valid
    # 4.174 against 4.264, benchmarks/RESULTS.md "Which dropout retrain should use").
    centred: bool = True


# `--dropout self-tune`: the regularisers go on tuning themselves through the retrain.
SELF_TUNE = "self-tune"


class RetrainError(GatesearchError):
    """A retrain request that cannot be carried out as asked (user input)."""


def default_full_budget(proxy_budget: Budget) -> Budget:
    return Budget(proxy_budget.amount * FULL_BUDGET_FACTOR, proxy_budget.unit)


@dataclass(frozen=True)
class RetrainJob:
    rank: int
    record: TrialRecord
    graph: nx.DiGraph
    hyperparameters: dict[str, float]
    seed: int
    # Every dropout rate set to this; None: the tuned rates; SELF_TUNE: the tuned rates as the
    # start of a retrain that goes on tuning them.
    dropout: float | str | None = None
    # A suite run's job: the member whose task it trains, and which of the `--seeds` draws
    # it is (0, 1, ...); None for a run on one task.
    member: SuiteMember | None = None
    draw: int = 0

    @property
    def variant(self) -> str:
        if self.dropout is None:
            return "tuned"
        if self.dropout == SELF_TUNE:
            return SELF_TUNE
        return f"dropout {self.dropout:g}"

    @property
    def self_tune(self) -> SelfTune | None:
        return SelfTune() if self.dropout == SELF_TUNE else None


def retrain_body(
    graph: nx.DiGraph,
    task: dict[str, Any],
    budget: str,
    seed: int,
    hyperparameters: dict[str, float],
    threads: int,
    eval_points: int = DEFAULT_EVAL_POINTS,
    patience: int = DEFAULT_PATIENCE,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    self_tune: SelfTune | None = None,
    schedule: str = DEFAULT_SCHEDULE,
    proxy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (keeping the best validation point's weights), prune when gated, score on valid
    and test; returns the weights as safetensors bytes, the graph they belong to and the
    metrics. `on_eval` sees each validation point (see `train_proxy`). `self_tune`: the
    regularisers go on tuning themselves from `hyperparameters` (None: they stay there).
    `proxy`: the campaign's proxy options; those outside `RECIPE_OPTIONS` are kept."""
    import torch
    from safetensors.torch import save

    from gatesearch.arch.build import model_costs, prune_model
    from gatesearch.proxy import LRSchedule, train_proxy
    from gatesearch.proxy.trainer import task_context
    from gatesearch.tasks import Split, make_task, split_scores

    torch.set_num_threads(threads)
    task_obj = make_task(spec_of(task))
    # Decay the tuned learning rate (cosine) over the budget as a researcher's own training
    # script would, rather than holding it where the proxy left it; the best point is kept.
    kept = carried_options(proxy)
    config = replace(
        proxy_config(kept),
        self_tuning=self_tune is not None,
        # The learning rate follows the cosine alone: hypergradient steps on it would fight
        # the schedule. Only the regularisers tune themselves.
        hd_beta=0.0,
        centred=self_tune.centred if self_tune is not None else True,
        start=dict(hyperparameters),
        lr_schedule=LRSchedule(schedule),
        eval_points=eval_points,
        keep_best=True,
        patience=patience,
    )
    cpu = time.process_time()
    named = None
    if on_eval is not None:  # the driver's progress line names the metric
        named = functools.partial(_with_name, on_eval, task_obj.metric_name)
    result = train_proxy(graph, task_obj, parse_budget(budget), seed, config, on_eval=named)
    model = result.model.cpu().eval()
    pruned = result.pruned_graph is not None
    final_graph = prune_model(model) if pruned else nx.DiGraph(model.graph)
    ctx = task_context(final_graph, task_obj)
    batch = config.eval_batch_size
    scores = {}
    for split in (Split.VALID, Split.TEST):
        loss, metric = split_scores(model, task_obj, split, batch)
        scores[split.value] = {"loss": loss, "metric": metric}
    metrics = {
        "valid": scores["valid"],
        "test": scores["test"],
        "metric_name": task_obj.metric_name,
        "higher_is_better": bool(task_obj.higher_is_better),
        **model_costs(model, ctx, task_obj.seq_len, config.batch_size, config.latency_runs),
        "steps": result.metrics["steps"],
        "tokens": result.metrics["tokens"],
        "best_step": result.metrics.get("best_step"),
        "stopped_early": bool(result.metrics.get("stopped_early", False)),
        "eval_points": eval_points,
        "patience": patience,
        "schedule": schedule,
        "cooldown_start": result.metrics.get("cooldown_start"),
        "curve": result.curve,
        "train_seconds": result.metrics["train_seconds"],
        "cpu_seconds": time.process_time() - cpu,
        "pruned": pruned,
        "hyperparameters": dict(result.hyperparameters),
        "proxy_options": kept,
    }
    # Tied tensors would make safetensors refuse the dict; each key gets its own copy.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return {"weights": save(state), "graph": final_graph, "metrics": metrics}


def carried_options(proxy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The campaign's proxy options a retrain keeps: all but `RECIPE_OPTIONS`."""
    return {k: v for k, v in (proxy or {}).items() if k not in RECIPE_OPTIONS}


def _with_name(
    on_eval: Callable[[dict[str, Any]], None], metric_name: str, event: dict[str, Any]
) -> None:
    on_eval({**event, "metric_name": metric_name})


def retrain_streamed(
    graph: nx.DiGraph,
    task: dict[str, Any],
    budget: str,
    seed: int,
    hyperparameters: dict[str, float],
    threads: int,
    eval_points: int = DEFAULT_EVAL_POINTS,
    patience: int = DEFAULT_PATIENCE,
    self_tune: SelfTune | None = None,
    schedule: str = DEFAULT_SCHEDULE,
    proxy: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The Ray task: `retrain_body` in a thread of the task, yielding {"progress": …} at each
    validation point (with `elapsed` seconds since the task started), then {"result": …}.

    Why a thread: the trainer reports its points through a callback, and a generator cannot
    yield from inside one. An exception of the training is raised here, failing the task."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    t0 = time.monotonic()

    def report(event: dict[str, Any]) -> None:
        events.put(("progress", {**event, "elapsed": time.monotonic() - t0}))

    def work() -> None:
        try:
            result = retrain_body(
                graph,
                task,
                budget,
                seed,
                hyperparameters,
                threads,
                eval_points,
                patience,
                on_eval=report,
                self_tune=self_tune,
                schedule=schedule,
                proxy=proxy,
            )
            events.put(("result", result))
        except BaseException as exc:  # handed to the generator, which raises it
            events.put(("error", exc))

    threading.Thread(target=work, name="retrain", daemon=True).start()
    while True:
        kind, value = events.get()
        if kind == "error":
            raise value
        yield {kind: value}
        if kind == "result":
            return


def with_dropout(hypers: dict[str, float], dropout: float) -> dict[str, float]:
    """`hypers` with every dropout rate set to `dropout` (the other values kept)."""
    return {k: (dropout if k.startswith(DROPOUT_PREFIX) else v) for k, v in hypers.items()}


def parse_dropouts(text: str) -> list[float | str | None]:
    """`--dropout` text: values in [0, 1), `tuned` or `self-tune`, comma-separated ->
    [None (tuned) | SELF_TUNE | D]."""
    out: list[float | str | None] = []
    for item in (t.strip() for t in text.split(",")):
        value: float | str | None
        if item == "tuned":
            value = None
        elif item == SELF_TUNE:
            value = SELF_TUNE
        else:
            try:
                value = float(item)
            except ValueError:
                value = -1.0
            if not 0.0 <= value < 1.0:
                raise RetrainError(
                    f"--dropout {text!r}: each value must be 'tuned', 'self-tune' or a rate "
                    "in [0, 1)"
                )
        if value in out:
            raise RetrainError(f"--dropout {text!r} names {item} twice")
        out.append(value)
    return out


def default_dropouts(spec: TaskSpec) -> str:
    """`--dropout` when none is given, for a run on task `spec`."""
    return SUITE_DROPOUTS if spec.name == SUITE_TASK else DEFAULT_DROPOUTS


def default_patience(spec: TaskSpec) -> int:
    """`--patience` when none is given, for a run on task `spec`."""
    return SUITE_PATIENCE if spec.name == SUITE_TASK else DEFAULT_PATIENCE


def suite_seeds(campaign_seed: int, n: int) -> list[int]:
    """The seeds a suite run's finalists are all trained at: the same N for every finalist."""
    return [trial_seed(campaign_seed, k, SUITE_SEED_STREAM) for k in range(n)]


def run_suite(store: RunStore) -> Suite | None:
    """The suite a run searched on (checked, its members' tasks built), or None for one task."""
    evaluator = resolve_task(store.config.task)
    if isinstance(evaluator, SuiteEvaluator):
        return evaluator.suite
    if not evaluator.trains:
        raise RetrainError(
            f"{store.root}: task {evaluator.spec.name} trains no model; nothing to retrain"
        )
    return None


def select(
    store: RunStore,
    top: int,
    dropouts: Sequence[float | str | None] = (None,),
    seeds: int | None = None,
) -> list[RetrainJob]:
    """The best `top` completed trials with the graph and hyperparameters each needs, one job
    per entry of `dropouts`: None keeps the tuned rates, a number sets every dropout rate the
    trial tuned to it. On a suite run, one job per member, seed (`seeds` of them, default
    DEFAULT_SUITE_SEEDS) and dropout entry, each with the hyperparameters that member's
    training ended with."""
    if top < 1:
        raise RetrainError("--top must be at least 1")
    if not dropouts:
        raise RetrainError("--dropout names no value")
    if seeds is not None and seeds < 1:
        raise RetrainError("--seeds must be at least 1")
    suite = run_suite(store)
    if suite is None and seeds not in (None, 1):
        raise RetrainError(
            f"--seeds is for a suite campaign's finalists: {store.root} ran on one task, whose "
            "retrain keeps the model of one training, at the trial's seed"
        )
    rows = ranked(store)
    if not rows:
        raise RetrainError(f"{store.root}: no completed trial to retrain yet")
    draws = suite_seeds(store.config.seed, seeds or DEFAULT_SUITE_SEEDS) if suite else []
    jobs = []
    for rank, record in enumerate(rows[:top], start=1):
        try:
            graph = read_graph(store.graph_path(record.arch_hash))
        except FileNotFoundError:
            raise StoreError(
                f"{store.graph_path(record.arch_hash)}: graph artifact of trial "
                f"{record.number} is missing"
            ) from None
        doc = (store.load_trial_metrics(record.number) or {}).get("metrics") or {}
        if suite is not None:
            members = doc.get("members") or record.metrics.get("members") or {}
            for member in suite.members:
                kept = members.get(member.name) or {}
                hypers = kept.get("hyperparameters")
                if not isinstance(hypers, dict):
                    raise RetrainError(
                        f"{store.root}: trial {record.number} stored no tuned "
                        f"hyperparameters for member {member.name}"
                    )
                # Its highest rate, as for one task (runs before it was stored: the last).
                peak = peak_lr(hypers, [{"lr": kept.get("peak_lr")}])
                if peak is not None:
                    hypers = {**hypers, "lr": peak}
                for k, seed in enumerate(draws):
                    jobs += _variants(rank, record, graph, hypers, seed, dropouts, member, k)
            continue
        hypers = doc.get("hyperparameters")
        if hypers is None:
            hypers = record.metrics.get("hyperparameters")
        if not isinstance(hypers, dict):
            raise RetrainError(
                f"{store.root}: trial {record.number} stored no tuned hyperparameters"
            )
        peak = peak_lr(hypers, doc.get("trajectory"))
        if peak is not None:
            hypers = {**hypers, "lr": peak}
        seed = trial_seed(store.config.seed, record.slot, 1)  # the trial's training seed
        jobs += _variants(rank, record, graph, hypers, seed, dropouts)
    return jobs


def _variants(
    rank: int,
    record: TrialRecord,
    graph: nx.DiGraph,
    hypers: dict[str, float],
    seed: int,
    dropouts: Sequence[float | str | None],
    member: SuiteMember | None = None,
    draw: int = 0,
) -> list[RetrainJob]:
    """One job per `dropouts` entry."""
    return [
        RetrainJob(
            rank,
            record,
            graph,
            with_dropout(hypers, float(d)) if isinstance(d, int | float) else hypers,
            seed,
            d,
            member,
            draw,
        )
        for d in dropouts
    ]


def write_result(store: RunStore, job: RetrainJob, result: dict[str, Any], budget: Budget) -> Path:
    """Write one architecture's files into a temporary folder, then rename it into place
    (replacing an earlier retrain of the same architecture). A suite's result has no weights
    (None)."""
    target = store.root / RETRAINED / job.record.arch_hash
    with AtomicFolder(target, replace=True) as tmp:
        if result["weights"] is not None:
            (tmp / WEIGHTS).write_bytes(result["weights"])
        write_graph(result["graph"], tmp / GRAPH)
        doc = {
            "arch_hash": job.record.arch_hash,
            "graph_hash": arch_hash(result["graph"]),
            "trial": job.record.number,
            "rank": job.rank,
            "task": store.config.task.to_dict(),
            "budget": str(budget),
            "seed": job.seed if job.member is None else None,
            "proxy_values": dict(zip(store.config.objectives, job.record.values or ())),
            **result["metrics"],
        }
        (tmp / METRICS).write_text(json.dumps(doc, indent=2) + "\n")
    return target


def retrain(
    root: Path,
    top: int,
    budget: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    eval_points: int = DEFAULT_EVAL_POINTS,
    patience: int = DEFAULT_PATIENCE,
    on_progress: Callable[[RetrainJob, dict[str, Any]], None] | None = None,
    dropouts: Sequence[float | str | None] = (None,),
    schedule: str = DEFAULT_SCHEDULE,
    seeds: int | None = None,
) -> list[dict[str, Any]]:
    """Retrain the best `top` trials of the run at `root`; returns one row per architecture
    ({"job", "path", "metrics"} or {"job", "error"}), best retrained validation score first
    (failures last). With several `dropouts` each architecture is trained once per value and
    the variant with the best validation score is kept (the others' scores are stored beside
    it, under "variants"). On a suite run, each member at an equal share of the budget and at
    `seeds` seeds (see `select`), combined by `combine_suite`. `on_done(row)` is called as
    each architecture ends, `on_progress(job, event)` at each validation point of each
    variant (see `retrain_streamed`)."""
    if eval_points < 1:
        raise RetrainError("--eval-points must be at least 1")
    if patience < 0:
        raise RetrainError("--patience must be 0 (never stop early) or more")
    if schedule not in SCHEDULES:
        raise RetrainError(f"--schedule: choose from {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "plateau" and not patience:
        raise RetrainError(
            "--schedule plateau decays when validation stalls: --patience must be 1 or more"
        )
    if workers is not None and workers < 1:
        raise RetrainError("--workers must be at least 1")
    with RunStore.open(Path(root), writer=False) as store:
        jobs = select(store, top, dropouts, seeds)
        # Checked here, in one line, rather than by every training (a hand-edited config).
        proxy = carried_options(store.config.proxy)
        try:
            proxy_config(proxy)
        except ProxyOptionError as exc:
            raise RetrainError(f"the campaign's proxy options: {exc}") from None
        # Checked by select (its members' tasks built): read again as stored.
        suite = Suite.from_spec_unchecked(store.config.task) if jobs[0].member else None
        # A suite screens capabilities at the budget its campaign chose (MAD's protocol
        # scores every design at one budget): its finalists are rescored at that budget,
        # on more seeds, unless told otherwise. One task: the full budget.
        default = store.config.budget if suite else default_full_budget(store.config.budget)
        full = parse_budget(budget) if budget else default
        # A suite's members each train an equal share, as in its trials.
        each = member_budget(full, len(suite.members)) if suite else full
        # What a retrain killed while writing left behind (once, before any result is written).
        remove_temps(store.root / RETRAINED, dead_only=True)
        hib = store.config.higher_is_better
        cpus = int(store.config.trial.cpus)
        task = store.config.task.to_dict()
        rows: list[dict[str, Any]] = []
        # Per architecture: variants still running, and the finished ones (result or error).
        left = Counter(j.record.arch_hash for j in jobs)
        order = {d: i for i, d in enumerate(dict.fromkeys(j.dropout for j in jobs))}
        finished: dict[str, list[tuple[RetrainJob, dict[str, Any] | None, str | None]]] = {}
        # No per-task timeout: a preset's [trial] timeout is sized for the proxy's budget.
        resources = replace(store.config.trial, timeout=0.0)
        n_workers = workers or store.config.workers
        # Leaving the block by Ctrl-C (or a failed write) cancels the trainings still running.
        with Dispatcher[RetrainJob](
            resources, n_workers, address or store.config.address
        ) as dispatch:
            for j in jobs:
                dispatch.submit(
                    j,
                    retrain_streamed,
                    *(j.graph, j.member.spec.to_dict() if j.member else task, str(each)),
                    *(j.seed, j.hyperparameters, cpus),
                    *(eval_points, patience, j.self_tune, schedule, proxy),
                )
            while len(dispatch):
                for event in dispatch.poll(timeout=1.0):
                    job = event.key
                    if event.kind is EventKind.PROGRESS and on_progress is not None:
                        on_progress(job, event.value)
                    if not event.kind.done:
                        continue
                    result = event.value if event.kind is EventKind.RESULT else None
                    error = None if event.kind is EventKind.RESULT else event.value
                    arch = job.record.arch_hash
                    finished.setdefault(arch, []).append((job, result, error))
                    left[arch] -= 1
                    if left[arch]:
                        continue
                    # In `--dropout`'s order, not the order they ended in: a tie on
                    # validation then keeps the variant listed first, run after run.
                    variants = sorted(finished.pop(arch), key=lambda v: order[v[0].dropout])
                    if suite:
                        row = combine_suite(store, suite, variants, full)
                    else:
                        row = _keep_best(store, variants, full, bool(hib))
                    rows.append(row)
                    if on_done is not None:
                        on_done(row)
    done = sort_retrained([r for r in rows if "metrics" in r], lambda r: r["metrics"], bool(hib))
    return done + sorted((r for r in rows if "metrics" not in r), key=lambda r: r["job"].rank)


def _keep_best(
    store: RunStore,
    variants: list[tuple[RetrainJob, dict[str, Any] | None, str | None]],
    budget: Budget,
    higher_is_better: bool,
) -> dict[str, Any]:
    """Write the variant with the best validation score (its row), or the first error."""
    done = [(j, r) for j, r, _ in variants if r is not None]
    if not done:
        job, _, error = variants[0]
        return {"job": job, "error": error}
    job, result = sort_retrained(done, lambda jr: jr[1]["metrics"], higher_is_better)[0]
    if len(variants) > 1:
        result = dict(result)
        result["metrics"] = {
            **result["metrics"],
            "variants": [
                {
                    "variant": j.variant,
                    **(
                        {
                            "valid_metric": r["metrics"]["valid"]["metric"],
                            "best_step": r["metrics"]["best_step"],
                        }
                        if r is not None
                        else {"error": e}
                    ),
                }
                for j, r, e in variants
            ],
        }
    path = write_result(store, job, result, budget)
    return {"job": job, "path": path, "metrics": result["metrics"]}


@dataclass(frozen=True)
class MemberResult:
    """One member's kept training of a suite finalist at one seed: the seed, the dropout
    variant kept on that member's validation split, and its metrics (`retrain_body`'s)."""

    seed: int
    variant: str
    metrics: dict[str, Any]


def suite_metrics(
    suite: Suite, kept: dict[tuple[int, str], MemberResult], cpu_seconds: float
) -> dict[str, Any]:
    """A suite finalist's retrained metrics from each (draw, member name)'s kept training:
    per draw the suite's weighted mean of normalised member scores on valid and test (the
    formula of a trial's score), then the mean over draws (with `min`, `max`)."""
    tasks = {m.name: make_task(m.spec) for m in suite.members}
    draws = sorted({draw for draw, _ in kept})

    def member(draw: int, name: str, split: str) -> float:
        return member_score(tasks[name], kept[draw, name].metrics[split]["metric"])

    def combined(draw: int, split: str) -> dict[str, float]:
        """The trial's formula (`Suite.combine`) over this draw's kept trainings."""
        names = [m.name for m in suite.members]
        losses = {n: kept[draw, n].metrics[split]["loss"] / chance_loss(tasks[n]) for n in names}
        return {
            "metric": suite.combine({n: member(draw, n, split) for n in names}),
            "loss": suite.combine(losses),
        }

    per_seed: list[dict[str, Any]] = [
        {
            "seed": kept[draw, suite.members[0].name].seed,
            "valid": combined(draw, "valid"),
            "test": combined(draw, "test"),
            "members": {
                m.name: {
                    "valid": member(draw, m.name, "valid"),
                    "test": member(draw, m.name, "test"),
                    "variant": kept[draw, m.name].variant,
                    "best_step": kept[draw, m.name].metrics["best_step"],
                }
                for m in suite.members
            },
        }
        for draw in draws
    ]

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    def split_doc(split: str) -> dict[str, float]:
        values = [s[split]["metric"] for s in per_seed]
        return {
            "metric": mean(values),
            "loss": mean([s[split]["loss"] for s in per_seed]),
            "min": min(values),
            "max": max(values),
        }

    first = [kept[draws[0], m.name].metrics for m in suite.members]
    every = [k.metrics for k in kept.values()]
    return {
        "valid": split_doc("valid"),
        "test": split_doc("test"),
        "metric_name": "score",
        "higher_is_better": True,
        "suite": suite.name,
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "members": {
            m.name: {
                "task": task_label(m.spec),
                "weight": m.weight,
                "metric_name": tasks[m.name].metric_name,
                "valid": mean([s["members"][m.name]["valid"] for s in per_seed]),
                "test": mean([s["members"][m.name]["test"] for s in per_seed]),
            }
            for m in suite.members
        },
        # As a trial's: the largest member model's costs, the members' training summed (of
        # one seed: each seed trains as much).
        **{
            key: max(float(f[key]) for f in first)
            for key in ("params", "flops", "latency", "state")
            if all(key in f for f in first)
        },
        "steps": sum(f["steps"] for f in first),
        "tokens": sum(f["tokens"] for f in first),
        "best_step": None,
        "stopped_early": any(f["stopped_early"] for f in every),
        "eval_points": first[0]["eval_points"],
        "patience": first[0]["patience"],
        "schedule": first[0]["schedule"],
        "curve": [],
        "cpu_seconds": cpu_seconds,
        "pruned": any(f["pruned"] for f in every),
        "proxy_options": first[0].get("proxy_options", {}),
    }


def keep_members(
    suite: Suite, results: list[tuple[RetrainJob, dict[str, Any] | None, str | None]]
) -> tuple[dict[tuple[int, str], MemberResult], list[str]]:
    """Per seed (draw) and member, the variant best on that member's validation split; only
    the seeds at which every member trained, with one line per member that failed in every
    variant of a seed (that seed is left out: a finalist's score at a seed needs all its
    members). A seed lost costs the finalist that seed, not its other trainings."""
    kept: dict[tuple[int, str], MemberResult] = {}
    failures: list[str] = []
    hib = {m.name: bool(make_task(m.spec).higher_is_better) for m in suite.members}
    for draw in sorted({j.draw for j, _, _ in results}):
        mine: dict[tuple[int, str], MemberResult] = {}
        for member in suite.members:
            tried = [(j, r, e) for j, r, e in results if j.draw == draw and j.member == member]
            done = [(j, r) for j, r, _ in tried if r is not None]
            if not done:
                job, _, error = tried[0]
                # Seeds as the progress lines count them (1, 2, ...), the seed itself beside.
                failures.append(f"member {member.name}, seed {draw + 1} ({job.seed}): {error}")
                continue
            job, result = sort_retrained(done, lambda jr: jr[1]["metrics"], hib[member.name])[0]
            mine[draw, member.name] = MemberResult(job.seed, job.variant, result["metrics"])
        if len(mine) == len(suite.members):
            kept.update(mine)
    return kept, failures


def combine_suite(
    store: RunStore,
    suite: Suite,
    results: list[tuple[RetrainJob, dict[str, Any] | None, str | None]],
    budget: Budget,
) -> dict[str, Any]:
    """One suite finalist's row from its jobs (every member, seed and dropout variant): per
    member and seed the variant best on that member's validation split (`keep_members`),
    combined by `suite_metrics` over the seeds at which every member trained, the others'
    failures stored beside ("failures"). Written as a retrain result without weights, except
    where a result short of seeds leaves an earlier one in place (`outranks_short`): the row
    is then the earlier result, the new metrics under "not_stored". A finalist with no seed
    at which every member trained fails (its error says which member)."""
    kept, failures = keep_members(suite, results)
    if not kept:
        return {"job": results[0][0], "error": failures[0]}
    draw = min(d for d, _ in kept)
    first = next(j for j, r, _ in results if j.draw == draw and r is not None)
    cpu = sum(r["metrics"]["cpu_seconds"] for _, r, _ in results if r is not None)
    metrics = suite_metrics(suite, kept, cpu)
    if failures:
        metrics["failures"] = failures
        try:
            earlier = read_retrained(store.root, first.record.arch_hash)
        except StoreError:  # not a result (a damaged file): nothing worth keeping over this
            earlier = None
        if earlier is not None and outranks_short(earlier, metrics, budget):
            # The row is what is stored (tables, ranks and sorting agree with `report`);
            # the new scores ride beside it to be printed.
            path = store.root / RETRAINED / first.record.arch_hash
            return {"job": first, "path": path, "metrics": earlier, "not_stored": metrics}
    path = write_result(
        store, first, {"weights": None, "graph": first.graph, "metrics": metrics}, budget
    )
    return {"job": first, "path": path, "metrics": metrics}


def outranks_short(earlier: dict[str, Any], short: dict[str, Any], budget: Budget) -> bool:
    """Whether an earlier suite retrain stays in place of `short`, a result that lost seeds
    to failures: when the earlier one lost none, was trained at the same budget, and is the
    mean of at least as many seeds. A failure must not cost the user a better estimate; a
    short result that still has more seeds, or another budget's, replaces it as any retrain
    does."""
    seeds = earlier.get("seeds")
    return (
        not earlier.get("failures")
        and earlier.get("budget") == str(budget)
        and isinstance(seeds, list)
        and len(seeds) >= len(short["seeds"])
    )


def retrained_key(metrics: dict[str, Any], higher_is_better: bool) -> tuple[float, float]:
    """Sort key of a retrained result, best first: by the validation metric in the task's
    direction, ties by the validation loss."""
    sign = -1.0 if higher_is_better else 1.0
    return (sign * float(metrics["valid"]["metric"]), float(metrics["valid"]["loss"]))


def sort_retrained(items: list[Any], doc: Callable[[Any], dict[str, Any]], hib: bool) -> list[Any]:
    """`items` best retrained validation score first; `doc(item)` is its metrics.json."""
    return sorted(items, key=lambda item: retrained_key(doc(item), hib))


@dataclass(frozen=True)
class Placed:
    """One architecture in the order a user should take them: `rank` (1 = best),
    `campaign_rank` (its proxy rank), `retrained` (its retrained metrics.json, or None).
    `joint_rank` and `tied`: the rank it shares with others whose scores equal its own (the
    retrained ones by validation metric and loss, the rest by their campaign scores); the
    trial number orders a tie."""

    rank: int
    campaign_rank: int
    arch_hash: str
    record: TrialRecord
    retrained: dict[str, Any] | None
    joint_rank: int = 0
    tied: bool = False


def _score(doc: Any, split: str, key: str) -> float:
    value = doc[split][key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{split} {key} is {value!r}, not a finite number")
    return float(value)


def read_retrained(root: Path, arch_hash: str) -> dict[str, Any] | None:
    """The retrained metrics.json of `arch_hash` in the run at `root`, or None when it was not
    retrained. A file that is not what retrain writes (the scores `report` and `export`
    show, the graph beside it) is a StoreError (one line), never a guess."""
    folder = root / RETRAINED / arch_hash
    path = folder / METRICS
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        for split in ("valid", "test"):
            for key in ("metric", "loss"):
                _score(doc, split, key)
    except (OSError, ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
        raise StoreError(f"{path}: not a retrain result ({type(exc).__name__}: {exc})") from None
    if not (folder / GRAPH).is_file():
        raise StoreError(f"{folder}: {GRAPH} is missing beside {METRICS}")
    return doc


def protocol(doc: dict[str, Any]) -> str:
    """How a retrained result was trained, as one cell: its budget, and for a suite's
    finalist the number of seeds its score is the mean of. Results whose protocols differ
    are still ranked together (each is the best estimate of its architecture), so tables
    show it."""
    budget = str(doc.get("budget", MISSING))
    seeds = doc.get("seeds")
    if not isinstance(seeds, list):
        return budget
    return f"{budget} × {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def final_order(store: RunStore) -> list[Placed]:
    """The campaign's ranked architectures in the order to take them: those retrained first,
    by their retrained validation score (the proxy's order is only a forecast of it), then the
    others in the campaign's order."""
    hib = store.config.higher_is_better
    rows = rank_records(store.records(), store.config.directions)
    placed = [
        (k, level, r, read_retrained(store.root, r.arch_hash))
        for k, (level, r) in enumerate(rows, start=1)
    ]
    done = sort_retrained([p for p in placed if p[3] is not None], lambda p: p[3], hib)
    rest = [p for p in placed if p[3] is None]
    # A retrained score and a campaign score never tie: they are not the same measurement.
    keys = [
        ("retrained", *retrained_key(doc, bool(hib)))
        if doc is not None
        else ("campaign", *tie_key(level, r))
        for _, level, r, doc in done + rest
    ]
    return [
        Placed(i, k, r.arch_hash, r, doc, joint_rank, tied)
        for i, ((k, _, r, doc), (joint_rank, tied)) in enumerate(
            zip(done + rest, joint_ranks(keys)), start=1
        )
    ]


__all__ = [
    "DEFAULT_DROPOUTS",
    "DEFAULT_EVAL_POINTS",
    "DEFAULT_PATIENCE",
    "DEFAULT_SUITE_SEEDS",
    "FULL_BUDGET_FACTOR",
    "GRAPH",
    "METRICS",
    "RECIPE_OPTIONS",
    "RETRAINED",
    "SUITE_DROPOUTS",
    "SUITE_PATIENCE",
    "WEIGHTS",
    "MemberResult",
    "Placed",
    "RetrainError",
    "carried_options",
    "combine_suite",
    "default_dropouts",
    "default_full_budget",
    "default_patience",
    "final_order",
    "keep_members",
    "protocol",
    "read_retrained",
    "retrain",
    "retrain_body",
    "retrain_streamed",
    "retrained_key",
    "run_suite",
    "select",
    "sort_retrained",
    "suite_metrics",
    "suite_seeds",
    "with_dropout",
]
