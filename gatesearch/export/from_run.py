"""Export from a run folder: which architecture (`--rank` / `--arch`), which graph (the
retrained one when there is one) and weights, written as PyTorch source or ONNX.

The architecture is the rank-K one (or the one whose hash is given): once architectures are
retrained, they rank first by their retrained validation score, then the others in the
campaign's order. When it was retrained (`gatesearch retrain`), the retrained graph — pruned,
when it had pruning gates — and its weights are exported; otherwise the searched graph, whose
weights the proxy does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from gatesearch.errors import GatesearchError
from gatesearch.registry import Context
from gatesearch.runs.store import RunStore
from gatesearch.tasks import Task, TaskError

if TYPE_CHECKING:
    from torch import nn

    from gatesearch.experiments.retrain import Placed


class ExportFormat(StrEnum):
    PY = "py"
    ONNX = "onnx"


class ExportCommandError(GatesearchError):
    """A request `gatesearch export` cannot carry out as given (user input)."""


@dataclass(frozen=True)
class ExportRequest:
    run_dir: Path
    output: Path
    rank: int | None = None
    arch: str | None = None
    weights: bool = False
    fmt: ExportFormat = ExportFormat.PY
    seq_len: int | None = None

    def check(self) -> None:
        """What can be refused before the run is opened."""
        if self.rank is not None and self.arch is not None:
            raise ExportCommandError("give --rank or --arch, not both")
        suffix = f".{self.fmt.value}"
        if self.output.suffix != suffix:
            raise ExportCommandError(
                f"{self.output}: with --format {self.fmt.value} the output must end {suffix}"
            )
        if self.seq_len is not None and self.fmt is not ExportFormat.ONNX:
            raise ExportCommandError("--seq-len is for --format onnx")
        if not self.output.parent.is_dir():
            raise ExportCommandError(f"{self.output.parent}: no such directory")


@dataclass(frozen=True)
class Chosen:
    """The architecture to export, as found in the run."""

    arch_hash: str
    placed: Placed | None  # its place in the final order; None when it has none
    graph: nx.DiGraph
    metrics: dict[str, Any]
    source: str  # "retrained" or "searched"
    weights: Path | None  # the retrained weights, when there are any
    task: Task | None  # None: the null task, a model-less evaluator or a moved data file
    task_name: str
    ctx: Context


def pick(store: RunStore, rank: int | None, arch: str | None) -> tuple[str, Placed | None]:
    """(architecture hash, its place in `final_order` or None) of the requested architecture:
    retrained architectures rank first, by their retrained validation score, then the rest
    in the campaign's order."""
    from gatesearch.experiments.retrain import final_order

    rows = final_order(store)
    if arch is not None:
        matches = sorted({r.arch_hash for r in store.records() if r.arch_hash.startswith(arch)})
        if len(matches) != 1:
            what = "no architecture" if not matches else f"{len(matches)} architectures"
            raise ExportCommandError(f"{store.root}: {what} with a hash starting {arch!r}")
        full = matches[0]
        return full, next((p for p in rows if p.arch_hash == full), None)
    k = rank or 1
    if not rows:
        raise ExportCommandError(f"{store.root}: no completed trial to export yet")
    if not 1 <= k <= len(rows):
        raise ExportCommandError(f"--rank {k}: the campaign has {len(rows)} ranked architectures")
    return rows[k - 1].arch_hash, rows[k - 1]


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth printing in a docstring: numbers and short names, not trajectories."""
    keep = {}
    # A retrained result holds its scores per split: {"valid": {"loss", "metric"}, "test": …}.
    flat = dict(metrics)
    for split in ("valid", "test"):
        scores = flat.pop(split, None)
        if isinstance(scores, dict):
            flat.update({f"{split}_{k}": v for k, v in scores.items()})
    for key, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        if isinstance(value, str) and len(value) > 40:
            continue
        keep[key] = value
    return keep


def choose(store: RunStore, req: ExportRequest) -> Chosen:
    """The requested architecture with its graph, metrics, weights and build context;
    ExportCommandError when --weights asks for weights it does not have."""
    from gatesearch.arch.graph import read_graph
    from gatesearch.arch.space import graph_context
    from gatesearch.experiments.retrain import GRAPH, RETRAINED, WEIGHTS, read_retrained
    from gatesearch.tasks import make_task

    arch_hash, placed = pick(store, req.rank, req.arch)
    retrained = store.root / RETRAINED / arch_hash
    doc = placed.retrained if placed else read_retrained(store.root, arch_hash)
    if doc is not None:  # checked by read_retrained, the graph beside it included
        graph, metrics, source = read_graph(retrained / GRAPH), dict(doc), "retrained"
    else:
        graph = read_graph(store.graph_path(arch_hash))
        metrics = dict(placed.record.metrics) if placed else {}
        source = "searched"
    weights = retrained / WEIGHTS if doc is not None and (retrained / WEIGHTS).is_file() else None
    if req.weights and weights is None:
        campaign_rank = placed.campaign_rank if placed else None
        raise ExportCommandError(
            f"{req.run_dir}: no trained weights for {arch_hash} (the proxy keeps none): run "
            f"`gatesearch retrain {req.run_dir} --top {campaign_rank or 1}` first"
        )
    try:
        task: Task | None = make_task(store.config.task)
    except TaskError:
        task = None
    ctx = (
        task.context(int(graph.nodes["input"]["params"]["d_model"]))
        if task is not None
        else graph_context(graph)
    )
    return Chosen(
        arch_hash, placed, graph, metrics, source, weights, task, store.config.task.name, ctx
    )


def _model(chosen: Chosen, req: ExportRequest) -> nn.Module | None:
    """The model to export with, when one is needed: the retrained weights with --weights,
    and a fresh initialisation (the same each time) for ONNX without them."""
    import torch
    from safetensors.torch import load_file

    from gatesearch.arch.build import build_model

    if not (req.weights or req.fmt is ExportFormat.ONNX):
        return None
    torch.manual_seed(0)
    model = build_model(chosen.graph, chosen.ctx)
    if req.weights:
        assert chosen.weights is not None  # choose() refused --weights without them
        model.load_state_dict(load_file(str(chosen.weights)))
    return model


def export_onnx_from_run(chosen: Chosen, req: ExportRequest, model: nn.Module) -> str:
    """Write the ONNX file; the line saying what was written and how it was checked."""
    from gatesearch.export.onnx import export_onnx
    from gatesearch.registry import InputKind

    task = chosen.task
    length = req.seq_len or (task.seq_len if task is not None else None)
    if length is None:
        raise ExportCommandError(
            f"the task {chosen.task_name} has no sequence length: give --seq-len"
        )
    done = export_onnx(model, chosen.ctx, req.output, length)
    checked = (
        f"checked with ONNX Runtime (max difference {done.max_diff:.1g})"
        if done.max_diff is not None
        else "not checked: pip install onnxruntime to check it"
    )
    what = "retrained weights" if req.weights else "a fresh initialisation (no --weights)"
    shape = (
        f"(batch, {length}) token ids"
        if chosen.ctx.input_kind is InputKind.TOKENS
        else f"(batch, {length}, {chosen.ctx.n_in}) features"
    )
    return f"wrote {req.output}: input x {shape}, {what}; {checked}"


def export_from_run(req: ExportRequest) -> list[str]:
    """Export as asked; the lines to print."""
    from gatesearch.export.write import write_export

    req.check()
    with RunStore.open(req.run_dir, writer=False) as store:
        chosen = choose(store, req)
        model = _model(chosen, req)
        if req.fmt is ExportFormat.ONNX:
            assert model is not None  # built for every ONNX export
            return [export_onnx_from_run(chosen, req, model)]
        placed = chosen.placed
        title = (
            f"gatesearch campaign {store.root.name}, rank {placed.rank if placed else '-'} "
            f"({chosen.source}; campaign rank {placed.campaign_rank if placed else '-'})"
        )
        paths = write_export(
            chosen.graph,
            chosen.ctx,
            req.output,
            model=model,
            weights=req.weights,
            title=title,
            arch_hash=chosen.arch_hash,
            metrics=scalars(chosen.metrics),
        )
    usage = f"load('{paths.weights.name}')" if paths.weights else "Model()"
    return [
        f"wrote {paths.source}" + (f" and {paths.weights}" if paths.weights else ""),
        f"use: from {paths.source.stem} import load, Model; model = {usage}",
    ]
