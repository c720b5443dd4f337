"""Export from a run folder: which architecture (`--rank` / `--arch`), which graph (the
retrained one when there is one) and weights, written as PyTorch source or ONNX.

The architecture is the rank-K one (or the one whose hash is given): once architectures are
retrained, they rank first by their retrained validation score, then the others in the
campaign's order. When it was retrained (`gatesearch retrain`), the retrained graph — pruned,
when it had pruning gates — and its weights are exported; otherwise the searched graph, whose
weights the proxy does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from gatesearch.errors import GatesearchError
from gatesearch.export.docinfo import About, Scores, ScoreSource, finite, plain_name
from gatesearch.registry import Context
from gatesearch.runs.store import RunStore
from gatesearch.tasks import Task, TaskError, TaskSpec
from gatesearch.tasks.suite import SUITE_TASK, Suite, suite_text

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
    member: str | None = None  # a suite campaign's member whose task's ends the model takes

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


# How the title names where the exported graph comes from.
_SOURCE_WORD = {ScoreSource.RETRAINED: "retrained", ScoreSource.PROXY: "searched"}


@dataclass(frozen=True)
class Chosen:
    """The architecture to export, as found in the run."""

    arch_hash: str
    placed: Placed | None  # its place in the final order; None when it has none
    graph: nx.DiGraph
    metrics: dict[str, Any]
    source: ScoreSource  # retrained, or only searched (scored by the campaign's proxy)
    weights: Path | None  # the retrained weights, when there are any
    task: Task | None  # None: the null task, a model-less evaluator or a moved data file
    task_name: str
    ctx: Context
    tie: list[Placed] = field(default_factory=list)  # the places it ties with, itself included


def pick(
    store: RunStore, rank: int | None, arch: str | None
) -> tuple[str, Placed | None, list[Placed]]:
    """(architecture hash, its place in `final_order` or None, the places it ties with, itself
    included: empty when its scores are its own) of the requested architecture: retrained
    architectures rank first, by their retrained validation score, then the rest in the
    campaign's order. A tie is taken in that order, so `--rank K` always means one
    architecture."""
    from gatesearch.experiments.retrain import final_order

    rows = final_order(store)
    if arch is not None:
        matches = sorted({r.arch_hash for r in store.records() if r.arch_hash.startswith(arch)})
        if len(matches) != 1:
            what = "no architecture" if not matches else f"{len(matches)} architectures"
            raise ExportCommandError(f"{store.root}: {what} with a hash starting {arch!r}")
        full = matches[0]
        placed = next((p for p in rows if p.arch_hash == full), None)
    else:
        k = rank or 1
        if not rows:
            raise ExportCommandError(f"{store.root}: no completed trial to export yet")
        if not 1 <= k <= len(rows):
            raise ExportCommandError(
                f"--rank {k}: the campaign has {len(rows)} ranked architectures"
            )
        full, placed = rows[k - 1].arch_hash, rows[k - 1]
    tie = [p for p in rows if placed and placed.tied and p.joint_rank == placed.joint_rank]
    return full, placed, tie


def tie_line(placed: Placed, tie: list[Placed]) -> str:
    """What `export` prints when the architecture it took shares its scores with others."""
    ranks = ", ".join(str(p.rank) for p in tie)
    trials = ", ".join(str(p.record.number) for p in tie)
    scores = "retrained validation scores" if placed.retrained is not None else "campaign scores"
    order = "the campaign's order" if placed.retrained is not None else "trial-number order"
    return (
        f"ranks {ranks} tie (trials {trials}, equal {scores}); rank {placed.rank} is trial "
        f"{placed.record.number}, number {tie.index(placed) + 1} of the tie in {order}"
    )


def scalars(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The metrics worth printing in a docstring: numbers under plain names, not
    trajectories, and no text (the docstring's text is the exporter's own)."""
    keep: dict[str, float | int] = {}
    # A retrained result holds its scores per split: {"valid": {"loss", "metric"}, "test": …}.
    flat = dict(metrics)
    for split in ("valid", "test"):
        scores = flat.pop(split, None)
        if isinstance(scores, dict):
            flat.update({f"{split}_{k}": v for k, v in scores.items()})
    for key, value in flat.items():
        if type(value) in (int, float) and isinstance(key, str) and key.isidentifier():
            keep[key] = value
    return keep


def about(chosen: Chosen, metric_name: str, suite: bool = False) -> About:
    """The scores and output reading the docstring states: the task's metric name (or the
    campaign's, without a task; `metric` when it is not a plain word), the retrained
    validation and test scores, or without a retrain the proxy's validation score. A suite
    campaign's (`suite`) are the suite's scores, named so, whichever member's ends the model
    takes."""
    name = chosen.task.metric_name if chosen.task is not None and not suite else metric_name
    name = name if plain_name(name) else "metric"
    m = chosen.metrics
    if chosen.source is ScoreSource.RETRAINED:
        valid, test = m.get("valid") or {}, m.get("test") or {}
        scores = Scores(
            name,
            chosen.source,
            valid=finite(valid.get("metric")),
            valid_loss=None if suite else finite(valid.get("loss")),
            test=finite(test.get("metric")),
            test_loss=None if suite else finite(test.get("loss")),
            suite=suite,
        )
    else:  # a trial's metrics: `metric` and `loss` are its validation scores
        # A suite's `loss` is its members' losses over their chance losses, no loss of
        # the exported model's: left out.
        scores = Scores(
            name,
            chosen.source,
            valid=finite(m.get("metric")),
            valid_loss=None if suite else finite(m.get("loss")),
            suite=suite,
        )
    return About(scores, chosen.task.readout if chosen.task is not None else None)


def choose(store: RunStore, req: ExportRequest, task_spec: TaskSpec | None = None) -> Chosen:
    """The requested architecture with its graph, metrics, weights and build context (for
    `task_spec`, default the run's task); ExportCommandError when --weights asks for weights
    it does not have."""
    from gatesearch.arch.graph import read_graph
    from gatesearch.arch.space import graph_context
    from gatesearch.experiments.retrain import GRAPH, RETRAINED, WEIGHTS, read_retrained
    from gatesearch.tasks import make_task

    arch_hash, placed, tie = pick(store, req.rank, req.arch)
    retrained = store.root / RETRAINED / arch_hash
    doc = placed.retrained if placed else read_retrained(store.root, arch_hash)
    if doc is not None:  # checked by read_retrained, the graph beside it included
        graph, metrics = read_graph(retrained / GRAPH), dict(doc)
        source = ScoreSource.RETRAINED
    else:
        graph = read_graph(store.graph_path(arch_hash))
        metrics = dict(placed.record.metrics) if placed else {}
        source = ScoreSource.PROXY
    weights = retrained / WEIGHTS if doc is not None and (retrained / WEIGHTS).is_file() else None
    if req.weights and weights is None:
        campaign_rank = placed.campaign_rank if placed else None
        raise ExportCommandError(
            f"{req.run_dir}: no trained weights for {arch_hash} (the proxy keeps none): run "
            f"`gatesearch retrain {req.run_dir} --top {campaign_rank or 1}` first"
        )
    spec = task_spec or store.config.task
    try:
        task: Task | None = make_task(spec)
    except TaskError:
        task = None
    ctx = (
        task.context(int(graph.nodes["input"]["params"]["d_model"]))
        if task is not None
        else graph_context(graph)
    )
    return Chosen(arch_hash, placed, graph, metrics, source, weights, task, spec.name, ctx, tie)


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
    time = "time" if done.dynamic_time else str(length)
    shape = (
        f"(batch, {time}) token ids"
        if chosen.ctx.input_kind is InputKind.TOKENS
        else f"(batch, {time}, {chosen.ctx.n_in}) features"
    )
    line = f"wrote {req.output}: input x {shape}, {what}; {checked}"
    if not done.dynamic_time:  # one line still: which primitives fix the length, and why
        why = "; ".join(f"{name}: {reason}" for name, reason in done.fixed_by)
        line += f"; time fixed at {length} ({why})"
    return line


def member_spec(store: RunStore, req: ExportRequest) -> TaskSpec | None:
    """The task whose ends (embedding, head) the model takes: None for the run's own task,
    or the member `--member` names in a suite campaign. ExportCommandError for a suite run
    without a valid --member, --member on a run of one task, or --weights with a suite (its
    trials and its retrain keep no weights)."""
    spec = store.config.task
    if spec.name != SUITE_TASK:
        if req.member is not None:
            raise ExportCommandError(
                f"--member is for a suite campaign; {store.root} ran on the task {spec.name}"
            )
        return None
    # Unchecked here: choose() builds the member's task.
    members = {m.name: m.spec for m in Suite.from_spec_unchecked(spec).members}
    if req.member is None:
        raise ExportCommandError(
            f"{store.root}: {suite_text(spec)} built one model per member, each with its "
            f"task's embedding and head: give --member NAME for the ends to export with "
            f"(one of: {', '.join(members)})"
        )
    if req.member not in members:
        raise ExportCommandError(
            f"{store.root}: the suite has no member {req.member!r} (its members: "
            f"{', '.join(members)})"
        )
    if req.weights:
        raise ExportCommandError(
            f"{store.root}: a suite campaign keeps no trained weights (its retrain scores "
            "finalists, one model per member and seed): export the architecture without "
            "--weights, or run a campaign on "
            f"{members[req.member].name} for a model to keep"
        )
    return members[req.member]


def export_from_run(req: ExportRequest) -> list[str]:
    """Export as asked; the lines to print."""
    from gatesearch.export.write import write_export

    req.check()
    with RunStore.open(req.run_dir, writer=False) as store:
        member = member_spec(store, req)
        chosen = choose(store, req, member)
        model = _model(chosen, req)
        if req.fmt is ExportFormat.ONNX:
            assert model is not None  # built for every ONNX export
            return [export_onnx_from_run(chosen, req, model)]
        placed = chosen.placed
        title = (
            f"gatesearch campaign {store.root.name}, rank {placed.rank if placed else '-'} "
            f"({_SOURCE_WORD[chosen.source]}; campaign rank "
            f"{placed.campaign_rank if placed else '-'})"
        )
        if req.member is not None:  # checked: a name of the suite's members
            title += f", with the ends of suite member {req.member} ({chosen.task_name})"
        paths = write_export(
            chosen.graph,
            chosen.ctx,
            req.output,
            model=model,
            weights=req.weights,
            title=title,
            arch_hash=chosen.arch_hash,
            metrics=scalars(chosen.metrics),
            about=about(chosen, store.config.metric_name, suite=member is not None),
        )
    usage = f"load('{paths.weights.name}')" if paths.weights else "Model()"
    lines = [] if placed is None or not chosen.tie else [tie_line(placed, chosen.tie)]
    return [
        *lines,
        f"wrote {paths.source}" + (f" and {paths.weights}" if paths.weights else ""),
        f"use: from {paths.source.stem} import load, Model; model = {usage}",
    ]
