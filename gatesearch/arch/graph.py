"""The architecture graph (phenotype): validation, canonical identity, Parquet I/O, summaries.

An architecture is a `networkx.DiGraph` whose nodes carry
    op:     a registry name, or the special ops "input" (0 inputs) and "output" (1 input);
    params: a dict of JSON values (nested dicts and lists allowed: a mixture's `expert` is
            {"op": "glu", "params": {...}});
    path:   the derivation path ("model.stack.block[2].mixer"), informational only,
and whose edges carry `port`, the input position at the destination. COMBINE ops (add,
highway_gate) take two inputs, port 0 = skip and port 1 = body; every other op takes one.

Identity: two graphs are the same architecture when a node bijection preserves op, params and
port-labelled edges. Because every node reaches the single sink and each node's inputs are
ordered by port, a depth-first walk backwards from the output, visiting inputs in port order,
numbers the nodes the same way for every labelling of the same architecture; the graph written
with those numbers is a canonical form, and its sha256 the architecture hash. A networkx DiGraph
has no parallel edges, so one node never feeds two ports of the same node.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq

from gatesearch.atomic import temp_path_beside
from gatesearch.errors import GatesearchError
from gatesearch.registry import REGISTRY, Context, PrimitiveSpec, RegistryError, Role, TensorKind

INPUT_OP = "input"
OUTPUT_OP = "output"

# 16 hex chars = 64 bits. The hash names runs' artifacts and appears in logs and tables; at a
# million distinct architectures the chance of any collision is about 1e6² / 2^65 ≈ 3e-8, so
# the full 256 bits would buy nothing but longer names. `canonical_form` is there when a caller
# wants to compare exactly.
HASH_CHARS = 16

FORMAT_VERSION = "1"
_META_FORMAT = b"gatesearch.format"
_META_VERSION = b"gatesearch.format_version"
_META_HASH = b"gatesearch.arch_hash"
_META_GRAPH_ATTRS = b"gatesearch.graph_attrs"
_FORMAT_NAME = b"architecture-graph"

TABLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),  # JSON object
        pa.field("path", pa.string()),  # null when the node has no path
        pa.field("inputs", pa.list_(pa.string()), nullable=False),  # source ids in port order
    ]
)


class GraphError(GatesearchError, ValueError):
    """An architecture graph is malformed or cannot be read; the message says where."""


# ----------------------------------------------------------------------------- validation


def _arity(op: str, spec: PrimitiveSpec | None) -> int:
    if op == INPUT_OP:
        return 0
    if spec is not None and spec.role is Role.COMBINE:
        return 2
    return 1


def _kinds(op: str, spec: PrimitiveSpec | None) -> tuple[TensorKind | None, TensorKind | None]:
    """(kind consumed, kind produced) by a node; None where the node has no such side."""
    if op == INPUT_OP:
        return None, TensorKind.INPUT
    if op == OUTPUT_OP:
        return TensorKind.OUTPUT, None
    assert spec is not None
    return spec.signature


def _json_problem(value: Any, where: str) -> str | None:
    """Why `value` would not survive a JSON round trip unchanged, or None."""
    if value is None or type(value) in (bool, int, str):
        return None
    if type(value) is float:
        # NaN breaks equality (NaN != NaN) and neither NaN nor inf is valid JSON.
        return None if math.isfinite(value) else f"{where} is {value!r}, not a finite number"
    if type(value) is list:
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{where} has a non-string key {key!r}"
            problem = _json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__} ({value!r}); only JSON values are allowed"


def _node_spec(node: Hashable, attrs: dict[str, Any]) -> PrimitiveSpec | None:
    """The node's registry spec (None for input/output); raises GraphError on a bad op."""
    if type(node) is not str:
        raise GraphError(f"node id {node!r} is a {type(node).__name__}; node ids must be str")
    if "op" not in attrs:
        raise GraphError(f"node {node!r} has no 'op' attribute")
    op = attrs["op"]
    if op in (INPUT_OP, OUTPUT_OP):
        return None
    if type(op) is not str:
        raise GraphError(f"node {node!r} has op {op!r}; ops are registry names (str)")
    try:
        spec = REGISTRY[op]
    except RegistryError:
        raise GraphError(f"node {node!r} has unknown op {op!r}") from None
    try:
        spec.signature  # noqa: B018
    except KeyError:
        raise GraphError(
            f"node {node!r}: {op!r} is a {spec.role.value}, named by parameters, not a graph node"
        ) from None
    if spec.role is Role.WRAPPER:
        raise GraphError(
            f"node {node!r}: {op!r} is a wrapper; the graph holds its body and a "
            f"{spec.combine!r} node instead"
        )
    return spec


def validate_graph(g: nx.DiGraph, ctx: Context | None = None) -> None:
    """Raise GraphError with one clear message when `g` is not a well-formed architecture.

    Structural checks always; with `ctx`, also what depends on the context: that each op may be
    used there (causality), and each parameter's registry domain and check.
    """
    if not isinstance(g, nx.DiGraph) or g.is_multigraph():
        raise GraphError(f"an architecture is a networkx.DiGraph, not a {type(g).__name__}")
    specs: dict[str, PrimitiveSpec | None] = {}
    ends: dict[str, list[str]] = {INPUT_OP: [], OUTPUT_OP: []}
    for node, attrs in g.nodes(data=True):
        specs[node] = _node_spec(node, attrs)
        if attrs["op"] in ends:
            ends[attrs["op"]].append(node)
        if type(attrs.get("params")) is not dict:
            raise GraphError(f"node {node!r} ({attrs['op']}) needs a 'params' dict")
        problem = _json_problem(attrs["params"], "params")
        if problem:
            raise GraphError(f"node {node!r} ({attrs['op']}): {problem}")
        path = attrs.get("path")
        if path is not None and type(path) is not str:
            raise GraphError(f"node {node!r} has a path {path!r} that is not a str")
    for op, nodes in ends.items():
        if len(nodes) != 1:
            raise GraphError(f"an architecture has exactly one {op!r} node; found {len(nodes)}")
    source, sink = ends[INPUT_OP][0], ends[OUTPUT_OP][0]

    for node, spec in specs.items():
        op = g.nodes[node]["op"]
        ports = []
        for src, attrs in g.pred[node].items():
            port = attrs.get("port")
            if type(port) is not int:
                raise GraphError(f"edge {src!r} -> {node!r} has port {port!r}; ports are ints")
            ports.append(port)
        arity = _arity(op, spec)
        if len(ports) != arity:
            raise GraphError(f"node {node!r} ({op}) takes {arity} input(s); it has {len(ports)}")
        if sorted(ports) != list(range(arity)):
            raise GraphError(f"node {node!r} ({op}) has ports {sorted(ports)}; need 0..{arity - 1}")
    if g.out_degree(sink):
        raise GraphError(f"the output node {sink!r} feeds other nodes")

    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise GraphError("the graph has a cycle: " + " -> ".join(str(u) for u, _ in cycle))
    on_path = (nx.descendants(g, source) | {source}) & (nx.ancestors(g, sink) | {sink})
    for node in g:
        if node not in on_path:
            raise GraphError(
                f"node {node!r} ({g.nodes[node]['op']}) is not on a path from input to output"
            )

    for src, dst in g.edges:
        produced = _kinds(g.nodes[src]["op"], specs[src])[1]
        consumed = _kinds(g.nodes[dst]["op"], specs[dst])[0]
        if produced is not consumed:
            raise GraphError(
                f"edge {src!r} ({g.nodes[src]['op']}) -> {dst!r} ({g.nodes[dst]['op']}) "
                f"carries {produced.value if produced else None} where "
                f"{consumed.value if consumed else None} is expected"
            )

    if ctx is not None:
        for node, spec in specs.items():
            if spec is not None:
                _check_in_context(node, spec, g.nodes[node]["params"], ctx)


def _check_in_context(node: str, spec: PrimitiveSpec, params: dict[str, Any], ctx: Context) -> None:
    why = spec.allowed(ctx)
    if why:
        raise GraphError(f"node {node!r}: {why}")
    for name in params:
        if spec.param(name) is None:
            known = ", ".join(p.name for p in spec.params) or "none"
            raise GraphError(
                f"node {node!r}: {spec.name} has no parameter {name!r} (parameters: {known})"
            )
    seen: dict[str, Any] = {}
    for p in spec.params:
        if p.name not in params:
            continue
        value = params[p.name]
        domain = p.admissible()
        if domain is not None and not domain.contains(value):
            raise GraphError(
                f"node {node!r}: {spec.name}.{p.name}={value!r} is not {domain.describe()}"
            )
        if p.check is not None:
            why = p.check(value, dict(seen), ctx)
            if why:
                raise GraphError(f"node {node!r}: {spec.name}.{p.name}={value!r}: {why}")
        seen[p.name] = value


# ------------------------------------------------------------------------- canonical identity


def canonical_order(g: nx.DiGraph) -> list[str]:
    """Nodes in canonical order: first visits of a DFS back from the output, inputs by port.

    Raises GraphError when the walk is not well defined (not one output, bad ports) or does not
    reach every node (then nodes would be left out of the identity).
    """
    sinks = [n for n, op in g.nodes(data="op") if op == OUTPUT_OP]
    if len(sinks) != 1:
        raise GraphError(f"an architecture has exactly one 'output' node; found {len(sinks)}")
    pred = g.pred
    order: list[str] = []
    seen: set[str] = set()
    stack = [sinks[0]]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        order.append(node)
        inputs = inputs_in_port_order(node, pred[node])
        # Reversed onto the stack so port 0 is walked first: the same order as the recursion.
        stack.extend(reversed(inputs))
    if len(order) != len(g):
        stray = next(n for n in g if n not in seen)
        raise GraphError(f"node {stray!r} does not lead to the output")
    return order


def inputs_in_port_order(node: str, preds: Any) -> list[str]:
    """Source nodes of `node` ordered by port; ports must be exactly 0..k-1."""
    if len(preds) == 1:
        ((src, attrs),) = preds.items()
        if attrs.get("port") != 0:
            raise GraphError(f"node {node!r} has its one input on port {attrs.get('port')!r}")
        return [src]
    try:
        ranked = sorted((attrs["port"], src) for src, attrs in preds.items())
    except (KeyError, TypeError):
        raise GraphError(f"node {node!r} has an input edge without an int port") from None
    if [port for port, _ in ranked] != list(range(len(ranked))):
        raise GraphError(f"node {node!r} has ports {[p for p, _ in ranked]}; need 0..k-1")
    return [src for _, src in ranked]


def canonical_form(g: nx.DiGraph) -> str:
    """The architecture as canonical JSON: {"nodes": [[op, params]...], "edges": [[src, dst,
    port]...]} with nodes numbered in canonical order, sorted keys, floats written by repr."""
    order = canonical_order(g)
    index = {node: i for i, node in enumerate(order)}
    nodes_attrs = g.nodes
    pred = g.pred
    nodes = []
    edges = []
    for i, node in enumerate(order):
        attrs = nodes_attrs[node]
        try:
            nodes.append((attrs["op"], attrs["params"]))
        except KeyError as exc:
            raise GraphError(f"node {node!r} has no {exc.args[0]!r} attribute") from None
        for src, eattrs in pred[node].items():
            edges.append((index[src], i, eattrs["port"]))
    edges.sort()
    try:
        # json writes floats with float.__repr__, the shortest string that reads back exactly.
        return json.dumps(
            {"nodes": nodes, "edges": edges},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise GraphError(f"params are not JSON values: {exc}") from None


def arch_hash(g: nx.DiGraph) -> str:
    """The architecture's identity: sha256 of the canonical form, first 16 hex characters."""
    return hashlib.sha256(canonical_form(g).encode()).hexdigest()[:HASH_CHARS]


# ------------------------------------------------------------------------------ Arrow/Parquet


def graph_to_table(g: nx.DiGraph) -> pa.Table:
    """One row per node (insertion order): id, op, params (JSON), path, inputs in port order.

    The schema metadata carries the format version, the arch hash and the graph's own
    attributes (JSON).
    """
    validate_graph(g)
    ids, ops, params, paths, inputs = [], [], [], [], []
    for node, attrs in g.nodes(data=True):
        ids.append(node)
        ops.append(attrs["op"])
        # Key order kept as written: the round trip gives back the same dicts, order included.
        params.append(json.dumps(attrs["params"], ensure_ascii=False, allow_nan=False))
        paths.append(attrs.get("path"))
        inputs.append(inputs_in_port_order(node, g.pred[node]) if g.pred[node] else [])
    problem = _json_problem(dict(g.graph), "graph attributes")
    if problem:
        raise GraphError(problem)
    metadata = {
        _META_FORMAT: _FORMAT_NAME,
        _META_VERSION: FORMAT_VERSION.encode(),
        _META_HASH: arch_hash(g).encode(),
        _META_GRAPH_ATTRS: json.dumps(dict(g.graph), ensure_ascii=False).encode(),
    }
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(ops, pa.string()),
            pa.array(params, pa.string()),
            pa.array(paths, pa.string()),
            pa.array(inputs, pa.list_(pa.string())),
        ],
        schema=TABLE_SCHEMA.with_metadata(metadata),
    )


def table_to_graph(t: pa.Table, source: str = "table") -> nx.DiGraph:
    """The graph stored in `t`; GraphError (naming `source`) on a wrong schema or content."""
    meta = t.schema.metadata or {}
    if meta.get(_META_FORMAT) != _FORMAT_NAME:
        raise GraphError(f"{source}: not an architecture graph (no gatesearch format metadata)")
    version = meta.get(_META_VERSION, b"?").decode(errors="replace")
    if version != FORMAT_VERSION:
        raise GraphError(
            f"{source}: graph format version {version}; this gatesearch reads {FORMAT_VERSION}"
        )
    for expected in TABLE_SCHEMA:
        if expected.name not in t.schema.names:
            raise GraphError(f"{source}: column {expected.name!r} is missing")
        actual = t.schema.field(expected.name).type
        if actual != expected.type:
            raise GraphError(
                f"{source}: column {expected.name!r} is {actual}, expected {expected.type}"
            )
    try:
        graph_attrs = json.loads(meta.get(_META_GRAPH_ATTRS, b"{}"))
    except ValueError as exc:
        raise GraphError(f"{source}: graph attributes are not JSON: {exc}") from None
    g = nx.DiGraph(**graph_attrs)
    columns = {name: t.column(name).to_pylist() for name in TABLE_SCHEMA.names}
    rows = zip(*(columns[name] for name in TABLE_SCHEMA.names))
    for row, (node, op, params_json, path, _) in enumerate(rows):
        if node is None or op is None or params_json is None:
            raise GraphError(f"{source}: row {row} has a null id, op or params")
        if node in g:
            raise GraphError(f"{source}: node id {node!r} appears twice")
        try:
            params = json.loads(params_json)
        except ValueError as exc:
            raise GraphError(f"{source}: node {node!r} params are not JSON: {exc}") from None
        attrs: dict[str, Any] = {"op": op, "params": params}
        if path is not None:
            attrs["path"] = path
        g.add_node(node, **attrs)
    for node, inputs in zip(columns["id"], columns["inputs"]):
        for port, src in enumerate(inputs or ()):
            if src not in g:
                raise GraphError(f"{source}: node {node!r} reads from unknown node {src!r}")
            if g.has_edge(src, node):
                raise GraphError(f"{source}: node {node!r} reads {src!r} twice")
            g.add_edge(src, node, port=port)
    try:
        validate_graph(g)
    except GraphError as exc:
        raise GraphError(f"{source}: {exc}") from None
    stored = meta.get(_META_HASH, b"").decode(errors="replace")
    if stored != arch_hash(g):
        raise GraphError(f"{source}: content does not match its stored hash {stored!r}")
    return g


def write_graph(g: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Write `g` as Parquet, atomically (a temporary file, then os.replace)."""
    table = graph_to_table(g)
    target = Path(path)
    tmp = temp_path_beside(target)  # a fresh name: see gatesearch/atomic.py for why
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_graph(path: str | os.PathLike[str]) -> nx.DiGraph:
    """Read a graph written by `write_graph`; GraphError naming the file on any problem."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise GraphError(f"{path}: no such graph file") from None
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise GraphError(f"{path}: not a readable Parquet graph file ({exc})") from None
    return table_to_graph(table, source=str(path))
