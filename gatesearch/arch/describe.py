"""One-line and tree descriptions of an architecture graph: what the CLI, the leaderboard, the
report and the exported file's docstring show of it (the one describer and labeller)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from gatesearch.arch.graph import INPUT_OP, OUTPUT_OP, inputs_in_port_order, validate_graph
from gatesearch.registry import REGISTRY, Role


@dataclass
class _Item:
    """One step of the trunk: a plain node, or a wrapper (combine node) around a body."""

    node: str
    body: list[_Item] | None = None  # set for combine nodes
    partial: bool = False  # the body's walk did not meet the skip's fork point


def _chain(g: nx.DiGraph, end: str, stop: str, known: set[str]) -> tuple[list[_Item], bool]:
    """Items after `stop` up to `end`, following port 0 backwards, in forward order.

    The walk also ends at a node in `known` (already shown upstream); it returns whether it
    met `stop`, since a body that does not is not a plain wrapper around the skip.
    """
    items: list[_Item] = []
    node = end
    pred = g.pred
    while node != stop and node not in known:
        inputs = inputs_in_port_order(node, pred[node])
        if len(inputs) == 2:
            skip = inputs[0]
            body, met = _chain(g, inputs[1], skip, nx.ancestors(g, skip))
            items.append(_Item(node, body, partial=not met))
        else:
            items.append(_Item(node))
        node = inputs[0]
    items.reverse()
    return items, node == stop


def _trunk(g: nx.DiGraph) -> list[_Item]:
    validate_graph(g)
    source = next(n for n, op in g.nodes(data="op") if op == INPUT_OP)
    sink = next(n for n, op in g.nodes(data="op") if op == OUTPUT_OP)
    (last,) = g.pred[sink]
    return _chain(g, last, source, set())[0]


def _shown_params(op: str, params: dict[str, Any]) -> list[tuple[str, Any]]:
    """Parameters that differ from the registry default and play a part (all when the op has
    no spec): what a label shows. An inactive parameter (a gate's activation without a gate)
    takes its default and would only be noise."""
    spec = REGISTRY.get(op)
    shown = []
    for name, value in params.items():
        p = spec.param(name) if spec is not None else None
        if p is not None and p.active is not None and not p.active(params):
            continue
        if p is None or p.default != value or type(p.default) is not type(value):
            shown.append((name, value))
    return shown


def _value_text(value: Any, limit: int | None) -> str:
    """One parameter's value in a label. A nested primitive (a mixture's expert) is labelled
    the same way; with a `limit` (a short label) any other nested value is `…`, without one it
    is written out as JSON. Floats as `%g` in a short label, exactly in a complete one."""
    if isinstance(value, dict) and isinstance(value.get("op"), str):
        return primitive_label(value["op"], value.get("params") or {}, limit)
    if isinstance(value, dict | list):
        if limit is not None:
            return "…"
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if isinstance(value, float):
        return f"{value:g}" if limit is not None else repr(value)
    return str(value)


def primitive_label(op: str, params: dict[str, Any], limit: int | None = None) -> str:
    """`op(name=value, ...)`: the parameters that differ from the registry defaults, each
    named (a bare `True` or `2` says nothing). With `limit`, at most that many, then `…` (a
    short label, for tight columns); without, all of them."""
    shown = [f"{k}={_value_text(v, limit)}" for k, v in _shown_params(op, params)]
    if not shown:
        return op
    if limit is not None and len(shown) > limit:
        shown = [*shown[:limit], "…"]
    return f"{op}({', '.join(shown)})"


# A short label's parameters per primitive: enough to tell most architectures apart in a
# terminal's column; `describe(..., complete=True)` and the tree have them all.
SHORT_PARAMS = 2


def node_label(op: str, params: dict[str, Any], max_params: int = 4) -> str:
    """`op(k=v, ...)` for a drawing's box: at most `max_params` parameters, a combine op with
    the wrapper it closes."""
    spec = REGISTRY.get(op)
    label = primitive_label(op, params, max_params)
    if spec is not None and spec.role is Role.COMBINE:
        head = f"{op}  [{wrapper_of(op)}]"
        return head + label[len(op) :]
    return label


def wrapper_of(combine_op: str) -> str:
    """The wrapper that a combine op closes (residual for add), read from the registry."""
    for spec in REGISTRY.specs():
        if spec.role is Role.WRAPPER and spec.combine == combine_op:
            return spec.name
    return combine_op


def _groups(keys: list[str]) -> Iterable[tuple[int, int, int]]:
    """Runs of a repeated block: (start, period, count), greedy by the longest run covered."""
    i, n = 0, len(keys)
    while i < n:
        best_period, best_count = 1, 1
        for period in range(1, (n - i) // 2 + 1):
            count = 1
            block = keys[i : i + period]
            while keys[i + count * period : i + (count + 1) * period] == block:
                count += 1
            if count > 1 and period * count > best_period * best_count:
                best_period, best_count = period, count
        yield i, best_period, best_count
        i += best_period * best_count


def _render_line(g: nx.DiGraph, items: list[_Item], sep: str, limit: int | None) -> str:
    tokens = []
    for item in items:
        attrs = g.nodes[item.node]
        label = primitive_label(attrs["op"], attrs["params"], limit)
        if item.body is not None:
            wrapper = wrapper_of(attrs["op"])
            head = wrapper if label == attrs["op"] else f"{wrapper}[{label}]"
            body = _render_line(g, item.body, " ", limit)
            inner = f"… {body}" if item.partial and body else ("…" if item.partial else body)
            tokens.append(f"{head}({inner})")
        else:
            tokens.append(label)
    parts = []
    for start, period, count in _groups(tokens):
        if count == 1:
            parts.append(tokens[start])
        elif period == 1:
            parts.append(f"{count}×{tokens[start]}")
        else:
            parts.append(f"{count}×[{sep.join(tokens[start : start + period])}]")
    return sep.join(parts)


def describe(g: nx.DiGraph, complete: bool = False) -> str:
    """One line: `embed > 4×[residual(rmsnorm attention(heads=2, gate=g1, …)) >
    residual(rmsnorm glu)] > rmsnorm > head`. The trunk is the chain of skip inputs (port 0)
    from the output back; a combine node shows as its wrapper around the body that feeds
    port 1; repeated blocks are folded; only parameters that differ from the registry
    defaults are shown, each by name. Short (the default, for a terminal's column): at most
    SHORT_PARAMS per primitive. `complete`: every one, nested values written out — what a
    file (CSV, JSON, the report page) or `--wide` shows."""
    return _render_line(g, _trunk(g), " > ", None if complete else SHORT_PARAMS)


def _render_tree(g: nx.DiGraph, items: list[_Item], indent: str) -> list[str]:
    blocks: list[list[str]] = []
    for item in items:
        attrs = g.nodes[item.node]
        label = primitive_label(attrs["op"], attrs["params"])
        if item.body is not None:
            wrapper = wrapper_of(attrs["op"])
            head = wrapper if label == attrs["op"] else f"{wrapper} [{label}]"
            lines = [head + (" (body does not start at the skip)" if item.partial else "")]
            lines += [indent + line for line in _render_tree(g, item.body, indent)]
        else:
            lines = [label]
        blocks.append(lines)
    keys = ["\n".join(lines) for lines in blocks]
    out: list[str] = []
    for start, period, count in _groups(keys):
        if count == 1:
            out += blocks[start]
        else:
            out.append(f"{count}×")
            for lines in blocks[start : start + period]:
                out += [indent + line for line in lines]
    return out


def tree_lines(g: nx.DiGraph, indent: str = "  ") -> list[str]:
    """A multi-line view: one line per primitive with its non-default parameters, wrapper
    bodies indented under the wrapper, repeated blocks folded under `N×`."""
    return ["input", *_render_tree(g, _trunk(g), indent), "output"]
