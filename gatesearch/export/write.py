"""Write an export to disk: the source file and, on request, its weights beside it."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from torch import nn

from gatesearch.arch.build import GraphModel, prune_model
from gatesearch.arch.graph import arch_hash as compute_arch_hash
from gatesearch.atomic import write_atomic
from gatesearch.export.codegen import export_source
from gatesearch.export.docinfo import About
from gatesearch.export.errors import ExportError
from gatesearch.export.weights import export_weights
from gatesearch.registry import Context


@dataclass(frozen=True)
class ExportPaths:
    source: Path
    weights: Path | None  # beside the source, same stem, ".safetensors"


def write_export(
    graph: nx.DiGraph,
    ctx: Context,
    out_path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    weights: bool = False,
    prune: bool = False,
    title: str,
    arch_hash: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    class_name: str = "Model",
    about: About | None = None,
) -> ExportPaths:
    """Write the standalone source for `graph` to `out_path` and, with `weights`, `model`'s
    weights as safetensors beside it (same stem).

    `prune`: prune a copy of `model` first (closed gates removed, open ones folded into the
    weights; see `gatesearch.arch.build.prune_model`) and export the architecture that remains, so
    the file has no pruning gates. `arch_hash` defaults to the hash of `graph`. `about`: the
    scores and output reading the docstring states (see `export_source`).
    Both files are written to temporary files and moved into place.
    """
    if weights and model is None:
        raise ExportError("weights=True needs the model whose weights to write")
    if prune:
        if not isinstance(model, GraphModel):
            raise ExportError("prune=True needs the engine model (a GraphModel)")
        model = copy.deepcopy(model)
        given_hash = arch_hash or compute_arch_hash(graph)
        graph = prune_model(model)
        arch_hash = given_hash
    if isinstance(model, GraphModel):
        if compute_arch_hash(model.graph) != compute_arch_hash(graph):
            raise ExportError("the model was built from a different architecture than the graph")
        # The same architecture; the model's own record also fixes the node names its
        # weights are written under.
        graph = model.graph
    target = Path(out_path)
    source = export_source(
        graph,
        ctx,
        title=title,
        arch_hash=arch_hash or compute_arch_hash(graph),
        metrics=metrics or {},
        class_name=class_name,
        weights_name=target.with_suffix(".safetensors").name,
        model=model if isinstance(model, GraphModel) else None,
        about=about,
    )
    write_atomic(target, source.encode("utf-8"))
    weights_path = None
    if weights:
        assert model is not None
        weights_path = export_weights(model, target.with_suffix(".safetensors"))
    return ExportPaths(target, weights_path)
