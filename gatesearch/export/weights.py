"""Weights for an exported file: the engine model's tensors under the exported class's names."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gatesearch.arch.build import GraphModel
from gatesearch.atomic import write_atomic
from gatesearch.export.codegen import attribute_names, primitive_nodes
from gatesearch.export.errors import ExportError


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state_dict keyed as the exported class's.

    A GraphModel keeps node `n`'s tensors under "nodes.<engine name>."; the exported class
    keeps them under "<attribute name>.", the name `attribute_names` gives the node. Any other
    module (an instance of an exported class) is taken as it is.
    """
    state = model.state_dict()
    if not isinstance(model, GraphModel):
        return dict(state)
    names = attribute_names(model.graph, primitive_nodes(model.graph))
    prefix = {f"nodes.{model.node_names[node]}.": f"{name}." for node, name in names.items()}
    out = {}
    for key, value in state.items():
        head = key[: key.index(".", len("nodes.")) + 1]
        if head not in prefix:
            raise ExportError(f"state_dict key {key!r} belongs to no node of the graph")
        out[prefix[head] + key[len(head) :]] = value
    return out


def export_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write `model`'s weights as safetensors, keyed as the exported class's state_dict.

    Written to a temporary file, then moved into place. Returns the path.
    """
    from safetensors.torch import save

    # safetensors refuses views and tensors that share storage: give it plain copies.
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in export_state_dict(model).items()
    }
    target = Path(path)
    # Serialised here and written by write_atomic: safetensors' own save_file makes its file
    # private (0600).
    write_atomic(target, save(tensors, metadata={"format": "pt"}))
    return target
