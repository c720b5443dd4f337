"""Stand-ins, in an exported file, for the engine functions that look primitives up by name.

The engine finds an activation, a pruning gate, an expert block or a bidirectional mixer's
cell through the registry. An
exported file has no registry: each of these functions looks the name up in a table of the
classes the file defines, and the exporter writes each table with only the entries the
architecture uses (`TABLES`). The definitions below are copied as they are; the tables' values
here are placeholders.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gatesearch.registry import Role

# Activations by name (`act=` parameters).
ACTIVATIONS: dict[str, type[nn.Module]] = {}
# Pruning gates by name (`prune=` parameters).
PRUNING_GATES: dict[str, type[nn.Module]] = {}
# Expert blocks by name, with the context arguments each constructor takes.
EXPERTS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {}
# Mixers by name, with the context arguments each constructor takes (bidirectional cells).
CELLS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {}


def make_activation(name: str, width: int) -> nn.Module:
    """The activation named `name` for tensors whose last dimension is `width`."""
    return ACTIVATIONS[name](d_model=width)


def make_gate(kind: str, n: int) -> nn.Module | None:
    """A pruning gate of kind `kind` over `n` units, or None for "none"."""
    if kind == "none":
        return None
    return PRUNING_GATES[kind](d_model=n)


def build_expert(expert: dict[str, Any], d_model: int, causal: bool) -> nn.Module:
    """One expert block from its description {"op": <a name in EXPERTS>, "params": {...}}."""
    module, context = EXPERTS[expert["op"]]
    given = {"d_model": d_model, "causal": causal}
    return module(**{name: given[name] for name in context}, **expert.get("params", {}))


def build_cell(cell: dict[str, Any], d_model: int) -> nn.Module:
    """One direction of a bidirectional mixer from its description {"op": <a name in CELLS>,
    "params": {...}}; each direction reads one way, so it is built causal."""
    module, context = CELLS[cell["op"]]
    given = {"d_model": d_model, "causal": True}
    return module(**{name: given[name] for name in context}, **cell.get("params", {}))


# Engine function (module, name) -> the stand-in of the same name defined above.
BRIDGED: frozenset[tuple[str, str]] = frozenset(
    {
        ("gatesearch.primitives.activations", "make_activation"),
        ("gatesearch.primitives.pruning", "make_gate"),
        ("gatesearch.primitives.moe", "build_expert"),
        ("gatesearch.primitives.bidirectional", "build_cell"),
    }
)

# Which registry entries each table lists: (role, whether an entry carries its context
# arguments). Only the names an exported architecture uses are written.
TABLES: dict[str, tuple[Role, bool]] = {
    "ACTIVATIONS": (Role.ACTIVATION, False),
    "PRUNING_GATES": (Role.PRUNING_GATE, False),
    "EXPERTS": (Role.CHANNEL, True),
    "CELLS": (Role.MIXER, True),
}

EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "make_activation": ("ACTIVATIONS",),
    "make_gate": ("PRUNING_GATES",),
    "build_expert": ("EXPERTS",),
    "build_cell": ("CELLS",),
}
