"""The fidelity driver: resolve and check a request, sample the architectures, train every
run on Ray through the dispatcher, and write the folder (see the package's docstring)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import networkx as nx

from gatesearch.arch.describe import describe
from gatesearch.arch.graph import write_graph
from gatesearch.arch.space import Architecture, default_space, load_space
from gatesearch.atomic import AtomicFolder, write_atomic
from gatesearch.budget import Budget, parse_budget
from gatesearch.evaluate import ProxyEvaluator, SuiteEvaluator, resolve_task
from gatesearch.experiments.fidelity.config import (
    DEFAULT_FULL_OPTIONS,
    DEFAULT_PROXY_BUDGET,
    FULL_BUDGET_FACTOR,
    FULL_TRAINERS,
    PLOT,
    REPEAT,
    RESULT,
    RUN_KINDS,
    FidelityConfig,
    FidelityError,
    FidelityRequest,
)
from gatesearch.experiments.fidelity.plot import plot
from gatesearch.experiments.fidelity.stats import analyse
from gatesearch.grammar import Grammar
from gatesearch.proxy.config import ProxyOptionError, proxy_config
from gatesearch.runs.config import TrialResources
from gatesearch.tasks import TaskSpec
from gatesearch.tasks.suite import one_task_only

CONFIG = "config.json"
SPACE_COPY = "space.space"
GRAPHS = "graphs"


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


def load_reference(
    path: Path, config: FidelityConfig, archs: list[Architecture], space_text: str
) -> dict[str, dict[str, Any]]:
    """The full-budget runs (and repeats) of the earlier fidelity run at `path` (its folder or
    its fidelity.json), by architecture hash, for a run resolved to `config` over `archs`.
    FidelityError, one line, when it cannot be read or measured anything else. Only runs
    that finished are reused; a failed one is trained again."""
    file = path / RESULT if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
        old_doc, rows = doc["config"], doc["archs"]
        hashes = [row["arch_hash"] for row in rows]
    except FileNotFoundError:
        raise FidelityError(f"--reference {path}: no {RESULT} there") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FidelityError(f"--reference {file}: not a fidelity result ({exc})") from None
    # Compared as JSON: each side as it would be written, the old one with its migrations.
    was = FidelityConfig.from_dict(old_doc, f"--reference {file}").to_dict()
    now = config.to_dict()
    for key in REFERENCE_KEYS:
        if was[key] != now[key]:
            raise FidelityError(
                f"--reference {file}: measured with {key} {was[key]!r}, this run has {now[key]!r}"
            )
    space_copy = file.parent / SPACE_COPY
    if space_copy.is_file() and space_copy.read_text() != space_text:
        raise FidelityError(f"--reference {file}: its space differs from {config.space}")
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


def _check(req: FidelityRequest) -> None:
    """The request's own numbers and names, before anything is loaded."""
    if req.archs < 3:
        raise FidelityError("--archs must be at least 3 (a rank correlation needs 3 pairs)")
    if req.workers < 1:
        raise FidelityError("--workers must be at least 1")
    if req.cpus < 1:
        raise FidelityError(f"--cpus must be at least 1, got {req.cpus}")
    if not req.gpus >= 0:
        raise FidelityError(f"--gpus must be at least 0, got {req.gpus}")
    if req.full_trainer not in FULL_TRAINERS:
        raise FidelityError(
            f"--full-trainer {req.full_trainer!r}: choose {' or '.join(FULL_TRAINERS)}"
        )
    if req.max_params is not None and req.max_params < 1:
        raise FidelityError(f"--max-params must be at least 1, got {req.max_params}")


def _budgets(req: FidelityRequest) -> tuple[Budget, Budget]:
    proxy = parse_budget(req.proxy_budget or DEFAULT_PROXY_BUDGET)
    full = (
        parse_budget(req.full_budget)
        if req.full_budget
        else Budget(proxy.amount * FULL_BUDGET_FACTOR, proxy.unit)
    )
    return proxy, full


def prepare(req: FidelityRequest) -> tuple[FidelityConfig, Grammar, list[Architecture]]:
    """Check every input, resolve the config and sample the architectures; nothing written."""
    from gatesearch.runs.request import RUN_NAME, causal_for, default_run_name

    _check(req)
    space_path = Path(req.space) if req.space else default_space(req.task)
    grammar = load_space(space_path)
    evaluator = resolve_task(TaskSpec(req.task, dict(req.task_params)), req.proxy)
    full_options = {**DEFAULT_FULL_OPTIONS, **req.full}
    try:
        proxy_config(full_options)  # checked as the proxy's are
    except ProxyOptionError as exc:
        raise FidelityError(f"--full-option: {exc}") from None
    if isinstance(evaluator, SuiteEvaluator):
        raise FidelityError(one_task_only("fidelity", evaluator.spec))
    if not isinstance(evaluator, ProxyEvaluator):
        raise FidelityError(f"task {req.task} trains no model; fidelity needs a real task")
    proxy, full = _budgets(req)
    name = req.name or default_run_name("fidelity", evaluator.spec.name)
    if not RUN_NAME.match(name):
        raise FidelityError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    if (req.runs_dir / name).exists():
        raise FidelityError(f"{req.runs_dir / name} already exists: choose another --name")
    causal = causal_for(grammar, evaluator, space_path)
    limit = req.max_params

    def fits(arch: Architecture) -> bool:
        return limit is None or evaluator.count_params(arch.graph) <= limit

    archs = sample_distinct(grammar, req.archs, req.seed, causal, fits if limit else None)
    config = FidelityConfig(
        name=name,
        created=datetime.now().isoformat(timespec="seconds"),
        space=str(space_path),
        task=evaluator.spec,
        metric_name=evaluator.metric_name,
        higher_is_better=evaluator.higher_is_better,
        archs=req.archs,
        proxy_budget=proxy,
        full_budget=full,
        full_trainer=req.full_trainer,
        workers=req.workers,
        seed=req.seed,
        causal=causal,
        max_params=req.max_params,
        repeat_full=req.repeat_full,
        proxy=dict(req.proxy),
        full=full_options,
        reference=None if req.reference is None else str(req.reference),
        trial=TrialResources(cpus=req.cpus, gpus=req.gpus, retries=1),
    )
    return config, grammar, archs


def _create_dir(root: Path, config: FidelityConfig, space: Path) -> None:
    folder = AtomicFolder(root)
    try:
        tmp = folder.create()
    except OSError as exc:
        raise FidelityError(f"cannot write runs directory {root.parent}: {exc.strerror}") from None
    try:
        with folder:
            (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            shutil.copyfile(space, tmp / SPACE_COPY)
            (tmp / GRAPHS).mkdir()
    except OSError as exc:
        raise FidelityError(f"cannot create {root}: {exc}") from None


def _rows(
    root: Path,
    config: FidelityConfig,
    archs: list[Architecture],
    reused: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per architecture, its graph written: hash, description, parameters, seeds,
    and the runs reused from the reference."""
    from gatesearch.arch.build import build_model, count_params
    from gatesearch.proxy.trainer import task_context
    from gatesearch.runs.request import trial_seed
    from gatesearch.tasks import make_task

    task_obj = make_task(config.task)
    rows: list[dict[str, Any]] = []
    for i, arch in enumerate(archs):
        write_graph(arch.graph, root / GRAPHS / f"{arch.hash}.parquet")
        model = build_model(arch.graph, task_context(arch.graph, task_obj))
        rows.append(
            {
                "index": i,
                "arch_hash": arch.hash,
                "arch": describe(arch.graph),
                "params": float(count_params(model)),
                "seed": trial_seed(config.seed, i, 1),
                "repeat_seed": trial_seed(config.seed, i, 2),
                "runs": {
                    kind: entry
                    for kind, entry in reused.get(arch.hash, {}).items()
                    if kind != REPEAT or config.repeat_full
                },
            }
        )
        del model
    return rows


def _trainings(
    config: FidelityConfig, rows: list[dict[str, Any]], archs: list[Architecture]
) -> list[tuple[tuple[int, str], tuple[Any, ...]]]:
    """Every training still to run, the longest kinds first: its key (row index, run kind) and
    `fidelity_run`'s arguments."""
    full = (str(config.full_budget), config.full_self_tuning, dict(config.full))
    budgets = {  # kind: (budget, self-tuning, proxy options)
        "full": full,
        REPEAT: full,
        "self_tuning": (str(config.proxy_budget), True, dict(config.proxy)),
        "fixed": (str(config.proxy_budget), False, dict(config.proxy)),
    }
    task = config.task.to_dict()
    out = []
    for kind in RUN_KINDS:
        if kind == REPEAT and not config.repeat_full:
            continue
        budget, self_tuning, proxy = budgets[kind]
        for row, arch in zip(rows, archs):
            if kind in row["runs"]:  # reused from the reference
                continue
            # The repeat differs from the reference by its seed only (initialisation, batch
            # order, dropout masks, STN perturbations).
            seed = row["repeat_seed"] if kind == REPEAT else row["seed"]
            threads = config.trial.cpus
            args = (arch.graph, task, budget, seed, self_tuning, threads, proxy)
            out.append(((row["index"], kind), args))
    return out


def run_fidelity(
    req: FidelityRequest, progress: Callable[[int, int], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Run the measurement; returns the run directory and the result written to
    fidelity.json. `progress(done, total)` is called as runs finish."""
    from gatesearch.runs.dispatch import Dispatcher, EventKind, call_streamed

    config, _, archs = prepare(req)
    # Checked before anything is written or started, as prepare's checks are.
    reused = (
        load_reference(Path(req.reference), config, archs, Path(config.space).read_text())
        if req.reference is not None
        else {}
    )
    root = req.runs_dir / config.name
    # Ray first: an address that does not answer fails before the folder is written.
    dispatch = Dispatcher[tuple[int, str]](config.trial, req.workers, req.address)
    try:
        _create_dir(root, config, Path(config.space))
        rows = _rows(root, config, archs, reused)
        todo = _trainings(config, rows, archs)
    except BaseException:
        dispatch.close()  # its watch on a cluster must not outlive the command
        raise
    # Ctrl-C, or a failure while submitting, cancels what is already on Ray.
    with dispatch:
        for key, args in todo:
            dispatch.submit(key, call_streamed, fidelity_run, *args)
        done, total = 0, len(todo)
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
    stats = analyse(rows, config.higher_is_better, config.repeat_full)
    result = {"config": config.to_dict(), "archs": rows, **stats}
    write_atomic(root / RESULT, (json.dumps(result, indent=2) + "\n").encode())
    plot(config, result, root / PLOT)
    return root, result
