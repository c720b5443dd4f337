"""`gatesearch export`: a campaign's architecture as one standalone PyTorch file, or as ONNX.

The architecture is the rank-K one (or the one whose hash is given): once architectures are
retrained, they rank first by their retrained validation score, then the others in the
campaign's order. When it was retrained (`gatesearch retrain`), the retrained graph — pruned,
when it had pruning gates — and its weights are exported; otherwise the searched graph, whose
weights the proxy does not keep.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from gatesearch.errors import GatesearchError
from gatesearch.runs.store import RunStore
from gatesearch.tasks import TaskError

if TYPE_CHECKING:
    from gatesearch.experiments.retrain import Placed

out = Console(highlight=False)


class ExportFormat(StrEnum):
    PY = "py"
    ONNX = "onnx"


class ExportCommandError(GatesearchError):
    """A request `gatesearch export` cannot carry out as given (user input)."""


def _pick(store: RunStore, rank: int | None, arch: str | None) -> tuple[str, Placed | None]:
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


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
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


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A campaign directory, e.g. runs/NAME.")],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="The file to write: .py, or .onnx with --format onnx."),
    ],
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank",
            min=1,
            help="Export the K-th best (default 1): by retrained validation score once "
            "retrained, else the campaign's rank.",
        ),
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Export the architecture with this hash (prefix).")
    ] = None,
    weights: Annotated[
        bool,
        typer.Option(
            "--weights",
            help="Also write the retrained weights (safetensors); with --format onnx, "
            "put them in the ONNX file (else it holds a fresh initialisation).",
        ),
    ] = False,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="py: readable PyTorch source; onnx: an ONNX graph."),
    ] = ExportFormat.PY,
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            min=1,
            help="ONNX only: the fixed sequence length of its input [default: the task's].",
        ),
    ] = None,
) -> None:
    """Write the architecture as one PyTorch file that imports only torch, or as ONNX."""
    import torch
    from safetensors.torch import load_file

    from gatesearch.arch.build import build_model
    from gatesearch.arch.graph import read_graph
    from gatesearch.arch.space import graph_context
    from gatesearch.experiments.retrain import GRAPH, RETRAINED, WEIGHTS, read_retrained
    from gatesearch.export import write_export
    from gatesearch.export.onnx import export_onnx
    from gatesearch.registry import InputKind
    from gatesearch.tasks import make_task

    if rank is not None and arch is not None:
        raise ExportCommandError("give --rank or --arch, not both")
    suffix = f".{fmt.value}"
    if output.suffix != suffix:
        raise ExportCommandError(
            f"{output}: with --format {fmt.value} the output must end {suffix}"
        )
    if seq_len is not None and fmt is not ExportFormat.ONNX:
        raise ExportCommandError("--seq-len is for --format onnx")
    if not output.parent.is_dir():
        raise ExportCommandError(f"{output.parent}: no such directory")
    store = RunStore.open(run_dir, writer=False)
    try:
        arch_hash, placed = _pick(store, rank, arch)
        position = placed.rank if placed else None
        campaign_rank = placed.campaign_rank if placed else None
        spec = store.config.task
        retrained = store.root / RETRAINED / arch_hash
        doc = placed.retrained if placed else read_retrained(store.root, arch_hash)
        if doc is not None:  # checked by read_retrained, the graph beside it included
            graph = read_graph(retrained / GRAPH)
            metrics = dict(doc)
            source = "retrained"
        else:
            graph = read_graph(store.graph_path(arch_hash))
            metrics = dict(placed.record.metrics) if placed else {}
            source = "searched"
        if weights and (doc is None or not (retrained / WEIGHTS).is_file()):
            raise ExportCommandError(
                f"{run_dir}: no trained weights for {arch_hash} (the proxy keeps none): run "
                f"`gatesearch retrain {run_dir} --top {campaign_rank or 1}` first"
            )
        try:
            task = make_task(spec)
        except TaskError:  # the null task, model-less evaluators, a moved data file
            task = None
        ctx = (
            task.context(int(graph.nodes["input"]["params"]["d_model"]))
            if task is not None
            else graph_context(graph)
        )
        model = None
        if weights or fmt is ExportFormat.ONNX:
            torch.manual_seed(0)  # without --weights: a fresh initialisation, the same each time
            model = build_model(graph, ctx)
            if weights:
                model.load_state_dict(load_file(str(retrained / WEIGHTS)))
        if fmt is ExportFormat.ONNX:
            assert model is not None  # built above for every ONNX export
            length = seq_len or (task.seq_len if task is not None else None)
            if length is None:
                raise ExportCommandError(
                    f"the task {spec.name} has no sequence length: give --seq-len"
                )
            done = export_onnx(model, ctx, output, length)
            checked = (
                f"checked with ONNX Runtime (max difference {done.max_diff:.1g})"
                if done.max_diff is not None
                else "not checked: pip install onnxruntime to check it"
            )
            what = "retrained weights" if weights else "a fresh initialisation (no --weights)"
            shape = (
                f"(batch, {length}) token ids"
                if ctx.input_kind is InputKind.TOKENS
                else f"(batch, {length}, {ctx.n_in}) features"
            )
            out.print(f"wrote {output}: input x {shape}, {what}; {checked}")
            return
        title = (
            f"gatesearch campaign {store.root.name}, rank {position or '-'} ({source}; "
            f"campaign rank {campaign_rank or '-'})"
        )
        paths = write_export(
            graph,
            ctx,
            output,
            model=model,
            weights=weights,
            title=title,
            arch_hash=arch_hash,
            metrics=_scalars(metrics),
        )
    finally:
        store.close()
    out.print(f"wrote {paths.source}" + (f" and {paths.weights}" if paths.weights else ""))
    usage = f"load('{paths.weights.name}')" if paths.weights else "Model()"
    out.print(f"use: from {paths.source.stem} import load, Model; model = {usage}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
