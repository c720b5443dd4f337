"""`gatesearch retrain runs/NAME --top K`: the campaign's best K, trained at the full budget.

Each architecture is trained by the proxy's trainer with self-tuning off and its regularisation
hyperparameters fixed where the campaign's proxy left them:
`ProxyConfig(self_tuning=False, start=trial hyperparameters, lr_schedule=COSINE)`. The learning
rate peaks at the highest rate the proxy's hypergradient reached (its trajectory's maximum) and
decays by a cosine to a tenth: the proxy's own rate rose while training was easy and fell
near its end, and its final value, held as the peak of a decaying schedule, undertrains (on
tiny Shakespeare, 1.879 against the proxy's own 1.784 at an equal number of steps). The
training runs as Ray tasks; the driver (this process) is the only writer and stores, per architecture:

```
runs/NAME/retrained/<hash>/
  weights.safetensors   the model's state_dict (keys as GraphModel names them)
  graph.parquet         the architecture the weights belong to: the pruned graph when the
                        model had pruning gates (their closed units removed), else the trial's
  metrics.json          validation and test loss and metric, params, FLOPs, latency, the
                        hyperparameters, budget and seed, the trial it came from
```

`build_model(read_graph(graph.parquet), ctx)` then `load_state_dict(load_file(weights))`
gives back the scored model. <hash> is the campaign trial's architecture hash.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.atomic import temp_path_beside
from gatesearch.budget import Budget, parse_budget
from gatesearch.campaign import ensure_ray, ranked, trial_seed
from gatesearch.evaluate import resolve_task, spec_of
from gatesearch.graph import arch_hash, read_graph, write_graph
from gatesearch.store import RunStore, StoreError, TrialRecord

RETRAINED = "retrained"
WEIGHTS = "weights.safetensors"
GRAPH = "graph.parquet"
METRICS = "metrics.json"
# Full budget when none is given: ten times the campaign's per-trial budget, the ratio of a
# proxy to a full run that the fidelity benchmark measures.
FULL_BUDGET_FACTOR = 10


class RetrainError(Exception):
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


def retrain_body(
    graph: nx.DiGraph,
    task: dict[str, Any],
    budget: str,
    seed: int,
    hyperparameters: dict[str, float],
    threads: int,
) -> dict[str, Any]:
    """Body of the Ray task: train, prune when gated, score on valid and test; returns the
    weights as safetensors bytes, the graph they belong to and the metrics."""
    import torch
    from safetensors.torch import save

    from gatesearch.build import count_params, example_input, flops_per_token, prune_model
    from gatesearch.proxy import ProxyConfig, train_proxy
    from gatesearch.proxy.trainer import LRSchedule, measure_latency, split_scores, task_context
    from gatesearch.tasks import Split, make_task

    torch.set_num_threads(threads)
    task_obj = make_task(spec_of(task))
    # A full-budget run is judged at its end: decay the tuned learning rate (cosine) as a
    # researcher's own training script would, rather than holding it where the proxy left it.
    config = ProxyConfig(
        self_tuning=False, start=dict(hyperparameters), lr_schedule=LRSchedule.COSINE
    )
    cpu = time.process_time()
    result = train_proxy(graph, task_obj, parse_budget(budget), seed, config)
    model = result.model.cpu().eval()
    pruned = result.pruned_graph is not None
    final_graph = prune_model(model) if pruned else nx.DiGraph(model.graph)
    ctx = task_context(final_graph, task_obj)
    batch = config.eval_batch_size
    scores = {}
    for split in (Split.VALID, Split.TEST):
        loss, metric = split_scores(model, task_obj, split, batch)
        scores[split.value] = {"loss": loss, "metric": metric}
    x = example_input(ctx, task_obj.seq_len, batch=config.batch_size)
    metrics = {
        "valid": scores["valid"],
        "test": scores["test"],
        "metric_name": task_obj.metric_name,
        "higher_is_better": bool(task_obj.higher_is_better),
        "params": float(count_params(model)),
        "flops": float(flops_per_token(model, ctx, seq_len=task_obj.seq_len)),
        "latency": measure_latency(model, x, config.latency_runs),
        "steps": result.metrics["steps"],
        "tokens": result.metrics["tokens"],
        "train_seconds": result.metrics["train_seconds"],
        "cpu_seconds": time.process_time() - cpu,
        "pruned": pruned,
        "hyperparameters": dict(result.hyperparameters),
    }
    # Tied tensors would make safetensors refuse the dict; each key gets its own copy.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return {"weights": save(state), "graph": final_graph, "metrics": metrics}


def peak_lr(hypers: dict[str, Any], trajectory: Any) -> float | None:
    """The highest learning rate among a trial's final `lr` and its trajectory's records;
    None when neither holds a usable one (the trainer's default then applies)."""
    points = [hypers, *(trajectory if isinstance(trajectory, list) else [])]
    rates = [
        float(p["lr"])
        for p in points
        if isinstance(p, dict)
        and isinstance(p.get("lr"), int | float)
        and not isinstance(p.get("lr"), bool)
        and math.isfinite(p["lr"])
        and p["lr"] > 0
    ]
    return max(rates) if rates else None


def select(store: RunStore, top: int) -> list[RetrainJob]:
    """The best `top` completed trials with the graph and hyperparameters each needs."""
    if top < 1:
        raise RetrainError("--top must be at least 1")
    evaluator = resolve_task(spec_of(store.config["task"]))
    if not evaluator.trains:
        raise RetrainError(
            f"{store.root}: task {evaluator.spec.name} trains no model; nothing to retrain"
        )
    rows = ranked(store)
    if not rows:
        raise RetrainError(f"{store.root}: no completed trial to retrain yet")
    jobs = []
    for rank, record in enumerate(rows[:top], start=1):
        try:
            graph = read_graph(store.graph_path(record.arch_hash))
        except FileNotFoundError:
            raise StoreError(
                f"{store.graph_path(record.arch_hash)}: graph artifact of trial "
                f"{record.number} is missing"
            ) from None
        doc = store.load_trial_metrics(record.number) or {}
        hypers = (doc.get("metrics") or {}).get("hyperparameters")
        if hypers is None:
            hypers = record.metrics.get("hyperparameters")
        if not isinstance(hypers, dict):
            raise RetrainError(
                f"{store.root}: trial {record.number} stored no tuned hyperparameters"
            )
        peak = peak_lr(hypers, (doc.get("metrics") or {}).get("trajectory"))
        if peak is not None:
            hypers = {**hypers, "lr": peak}
        seed = trial_seed(store.config["seed"], record.slot, 1)  # the trial's training seed
        jobs.append(RetrainJob(rank, record, graph, hypers, seed))
    return jobs


def write_result(store: RunStore, job: RetrainJob, result: dict[str, Any], budget: Budget) -> Path:
    """Write one architecture's files into a temporary folder, then rename it into place
    (replacing an earlier retrain of the same architecture)."""
    parent = store.root / RETRAINED
    parent.mkdir(exist_ok=True)
    target = parent / job.record.arch_hash
    tmp = temp_path_beside(target)
    tmp.mkdir()
    try:
        (tmp / WEIGHTS).write_bytes(result["weights"])
        write_graph(result["graph"], tmp / GRAPH)
        doc = {
            "arch_hash": job.record.arch_hash,
            "graph_hash": arch_hash(result["graph"]),
            "trial": job.record.number,
            "rank": job.rank,
            "task": store.config["task"],
            "budget": str(budget),
            "seed": job.seed,
            "proxy_values": dict(zip(store.config["objectives"], job.record.values or ())),
            **result["metrics"],
        }
        (tmp / METRICS).write_text(json.dumps(doc, indent=2) + "\n")
        old = None
        if target.exists():
            old = parent / f".{job.record.arch_hash}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def retrain(
    root: Path,
    top: int,
    budget: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    on_done: Any = None,
) -> list[dict[str, Any]]:
    """Retrain the best `top` trials of the run at `root`; returns one row per architecture
    ({"job", "path", "metrics"} or {"job", "error"}). `on_done(row)` is called as each ends."""
    import ray

    from gatesearch.campaign import _failure_reason

    with RunStore.open(Path(root), writer=False) as store:
        full = (
            parse_budget(budget)
            if budget
            else default_full_budget(parse_budget(store.config["budget"]))
        )
        jobs = select(store, top)
        if workers is not None and workers < 1:
            raise RetrainError("--workers must be at least 1")
        res = store.config["trial"]
        cpus = int(res["cpus"])
        n_workers = workers or int(store.config["workers"])
        ensure_ray(address or store.config.get("address"), n_workers * cpus)
        options: dict[str, Any] = {"num_cpus": cpus, "max_retries": int(res["retries"])}
        if float(res["gpus"]):
            options["num_gpus"] = float(res["gpus"])
        remote = ray.remote(retrain_body).options(**options)
        task = spec_of(store.config["task"]).to_dict()
        pending = {
            remote.remote(j.graph, task, str(full), j.seed, j.hyperparameters, cpus): j
            for j in jobs
        }
        rows = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # the trial's own failure: report it, keep the others
                row = {"job": job, "error": _failure_reason(exc)}
            else:
                path = write_result(store, job, result, full)
                row = {"job": job, "path": path, "metrics": result["metrics"]}
            rows.append(row)
            if on_done is not None:
                on_done(row)
    rows.sort(key=lambda r: r["job"].rank)
    return rows


__all__ = [
    "FULL_BUDGET_FACTOR",
    "GRAPH",
    "METRICS",
    "RETRAINED",
    "WEIGHTS",
    "RetrainError",
    "default_full_budget",
    "retrain",
    "retrain_body",
    "select",
]
