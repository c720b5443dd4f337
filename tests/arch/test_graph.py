"""The architecture graph: validation, canonical hash, Parquet round trip, summaries."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gatesearch.arch.describe import describe, tree_lines
from gatesearch.arch.graph import (
    GraphError,
    arch_hash,
    canonical_form,
    canonical_order,
    graph_to_table,
    read_graph,
    table_to_graph,
    validate_graph,
    write_graph,
)
from gatesearch.registry import Context

# Random graphs for the isomorphism cross-check: enough pairs that both outcomes (same and
# different architecture) occur many times, small enough to stay well under a second.
N_ISO_PAIRS = 600
MIN_EACH_OUTCOME = 100


# ------------------------------------------------------------------------------- graph helpers


class Builder:
    """Builds a graph step by step: `x = b.node("rmsnorm", [x])`."""

    def __init__(self) -> None:
        self.g = nx.DiGraph()
        self.count = 0
        self.input = self.node("input", [], path="model.input")

    def node(self, op: str, inputs: list[str], path: str | None = None, **params: object) -> str:
        name = f"{op}{self.count}"
        self.count += 1
        attrs: dict[str, object] = {"op": op, "params": dict(params)}
        if path is not None:
            attrs["path"] = path
        self.g.add_node(name, **attrs)
        for port, src in enumerate(inputs):
            self.g.add_edge(src, name, port=port)
        return name

    def wrap(self, combine: str, x: str, body: Callable[[str], str], path: str = "") -> str:
        return self.node(combine, [x, body(x)], path=path + ".combine" if path else None)

    def finish(self, x: str) -> nx.DiGraph:
        self.node("output", [x], path="model.output")
        return self.g


def lm_graph(n_blocks: int = 2, mixer_params: dict | None = None) -> nx.DiGraph:
    """embed > n×[residual(rmsnorm layernorm(...)) > highway(rmsnorm)] > rmsnorm > head."""
    b = Builder()
    x = b.node("embed", [b.input], path="model.stem")
    for i in range(n_blocks):
        p = f"model.stack.block[{i}]"
        x = b.wrap(
            "add",
            x,
            lambda h, p=p: b.node(
                "layernorm",
                [b.node("rmsnorm", [h], path=f"{p}.norm1")],
                path=f"{p}.mixer",
                **copy.deepcopy(mixer_params or {}),
            ),
            path=f"{p}.res1",
        )
        x = b.wrap("highway_gate", x, lambda h, p=p: b.node("rmsnorm", [h], path=f"{p}.norm2"))
    x = b.node("rmsnorm", [x], path="model.norm")
    x = b.node("head", [x], path="model.head")
    return b.finish(x)


NESTED = {
    "expert": {"op": "glu", "params": {"variant": "swiglu", "expand": 2.6666666666666665}},
    "scales": [0.1, 1e-300, 2.5e300, -0.0, 1 / 3],
    "flag": True,
    "none": None,
    "big": 2**63 + 1,
    "name": "schön",
    "list_of_dicts": [{"a": 1}, {"b": [1.5, "x"]}],
}


def scrambled(g: nx.DiGraph, rng: random.Random) -> nx.DiGraph:
    """The same architecture with fresh node labels, paths and shuffled insertion order."""
    nodes = list(g.nodes(data=True))
    rng.shuffle(nodes)
    labels = {node: f"n{rng.getrandbits(40):010x}" for node, _ in nodes}
    h = nx.DiGraph()
    for node, attrs in nodes:
        attrs = copy.deepcopy(attrs)
        attrs["path"] = f"elsewhere.{labels[node]}"
        # Reverse key order: dict order must not matter either.
        attrs["params"] = dict(reversed(list(attrs["params"].items())))
        h.add_node(labels[node], **attrs)
    edges = list(g.edges(data=True))
    rng.shuffle(edges)
    for src, dst, attrs in edges:
        h.add_edge(labels[src], labels[dst], **attrs)
    return h


def random_graph(rng: random.Random, n_ops: int) -> nx.DiGraph:
    """A random valid DAG: unary hidden ops and combines over any two earlier nodes; dangling
    nodes merged pairwise so that everything leads to the one output."""
    b = Builder()
    live = [b.node("embed", [b.input])]
    for _ in range(n_ops):
        if len(live) >= 2 and rng.random() < 0.4:
            skip, body = rng.sample(live, 2)
            live.append(b.node(rng.choice(["add", "highway_gate"]), [skip, body]))
        else:
            params = rng.choice([{}, {"k": 1}, {"k": 2}])
            live.append(b.node(rng.choice(["rmsnorm", "layernorm"]), [rng.choice(live)], **params))
    sinks = [n for n in live if b.g.out_degree(n) == 0]
    while len(sinks) > 1:
        rng.shuffle(sinks)
        sinks.append(b.node("add", [sinks.pop(), sinks.pop()]))
    return b.finish(b.node("head", [sinks[0]]))


def node_match(a: dict, b: dict) -> bool:
    # JSON text, not ==: the hash tells 1 from 1.0 and True, as the registry's domains do.
    return a["op"] == b["op"] and json.dumps(a["params"], sort_keys=True) == json.dumps(
        b["params"], sort_keys=True
    )


def edge_match(a: dict, b: dict) -> bool:
    return a["port"] == b["port"]


def swap_ports(g: nx.DiGraph, node: str) -> nx.DiGraph:
    h = copy.deepcopy(g)
    for src in h.pred[node]:
        h.edges[src, node]["port"] = 1 - h.edges[src, node]["port"]
    return h


def first(g: nx.DiGraph, op: str) -> str:
    return next(n for n, o in g.nodes(data="op") if o == op)


# ---------------------------------------------------------------------------------- validation


def test_valid_graphs_pass() -> None:
    validate_graph(lm_graph())
    validate_graph(lm_graph(mixer_params=NESTED))
    validate_graph(lm_graph(), Context(d_model=16, causal=True))
    rng = random.Random(0)
    for _ in range(20):
        validate_graph(random_graph(rng, rng.randint(1, 12)))


def _edit(edit: Callable[[nx.DiGraph], object]) -> nx.DiGraph:
    g = lm_graph(n_blocks=1)
    edit(g)
    return g


def _set_op(g: nx.DiGraph, op: str, new: str) -> None:
    g.nodes[first(g, op)]["op"] = new


def _set_params(value: object) -> Callable[[nx.DiGraph], None]:
    def edit(g: nx.DiGraph) -> None:
        g.nodes[first(g, "layernorm")]["params"] = {"v": value}

    return edit


def _add_cycle(g: nx.DiGraph) -> None:
    # Re-route the layernorm's input through the add that follows it.
    ln, add = first(g, "layernorm"), first(g, "add")
    g.remove_edge(first(g, "rmsnorm"), ln)
    g.add_edge(add, ln, port=0)


def _add_stray(g: nx.DiGraph) -> None:
    g.add_node("stray", op="rmsnorm", params={})
    g.add_edge(first(g, "embed"), "stray", port=0)


def _second_output(g: nx.DiGraph) -> None:
    g.add_node("out2", op="output", params={})
    g.add_edge(first(g, "head"), "out2", port=0)


def _port_gap(g: nx.DiGraph) -> None:
    node = first(g, "add")
    src = next(s for s, d in g.in_edges(node) if g.edges[s, d]["port"] == 1)
    g.edges[src, node]["port"] = 2


def _one_input_add(g: nx.DiGraph) -> None:
    node = first(g, "add")
    src = next(s for s, d in g.in_edges(node) if g.edges[s, d]["port"] == 1)
    g.remove_edge(src, node)


def _two_input_norm(g: nx.DiGraph) -> None:
    g.add_edge(first(g, "embed"), first(g, "layernorm"), port=1)


def _head_after_head(g: nx.DiGraph) -> None:
    # head -> head: OUTPUT flows where HIDDEN is expected.
    head, out = first(g, "head"), first(g, "output")
    g.remove_edge(head, out)
    g.add_node("head2", op="head", params={})
    g.add_edge(head, "head2", port=0)
    g.add_edge("head2", out, port=0)


def _skip_embed(g: nx.DiGraph) -> None:
    emb, inp = first(g, "embed"), first(g, "input")
    for dst in list(g.succ[emb]):
        g.add_edge(inp, dst, port=g.edges[emb, dst]["port"])
    g.remove_node(emb)


INVALID = {
    "unknown-op": (lambda g: _set_op(g, "layernorm", "no_such_op"), "unknown op 'no_such_op'"),
    "wrapper-op": (lambda g: _set_op(g, "layernorm", "residual"), "is a wrapper"),
    "activation-op": (lambda g: _set_op(g, "layernorm", "relu"), "not a graph node"),
    "non-str-op": (lambda g: _set_op(g, "layernorm", 3), "ops are registry names"),
    "no-op": (lambda g: g.add_node("bare"), "has no 'op'"),
    "non-str-id": (lambda g: g.add_node(7, op="rmsnorm", params={}), "node ids must be str"),
    "no-params": (lambda g: g.nodes[first(g, "head")].pop("params"), "needs a 'params' dict"),
    "tuple-param": (_set_params((1, 2)), "tuple"),
    "nan-param": (_set_params(math.nan), "not a finite number"),
    "set-param": (_set_params({1}), "set"),
    "int-key-param": (_set_params({1: 2}), "non-string key"),
    "bad-path": (lambda g: g.nodes[first(g, "head")].update(path=3), "not a str"),
    "two-outputs": (_second_output, "exactly one 'output'"),
    "no-input": (lambda g: _set_op(g, "input", "rmsnorm"), "exactly one 'input'"),
    "add-one-input": (_one_input_add, "takes 2 input(s); it has 1"),
    "norm-two-inputs": (_two_input_norm, "takes 1 input(s); it has 2"),
    "port-gap": (_port_gap, "ports [0, 2]"),
    "port-not-int": (
        lambda g: g.edges[first(g, "head"), first(g, "output")].update(port="0"),
        "ports are ints",
    ),
    "cycle": (_add_cycle, "cycle"),
    "stray-node": (_add_stray, "'stray' (rmsnorm) is not on a path"),
    "input-into-hidden": (_skip_embed, "carries input where hidden is expected"),
    "output-into-hidden": (_head_after_head, "carries output where hidden is expected"),
}


@pytest.mark.parametrize("edit,message", INVALID.values(), ids=INVALID.keys())
def test_invalid_graphs_raise_one_clear_error(edit: Callable, message: str) -> None:
    with pytest.raises(GraphError, match=None) as info:
        validate_graph(_edit(edit))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_a_digraph() -> None:
    with pytest.raises(GraphError, match="DiGraph"):
        validate_graph(nx.MultiDiGraph(lm_graph()))


def test_context_checks_reject_unknown_params() -> None:
    g = lm_graph(mixer_params={"width": 3})
    validate_graph(g)  # structurally fine
    with pytest.raises(GraphError, match="layernorm has no parameter 'width'"):
        validate_graph(g, Context(d_model=16, causal=True))


# ------------------------------------------------------------------------------ canonical hash


def test_hash_is_short_hex() -> None:
    h = arch_hash(lm_graph())
    assert len(h) == 16 and int(h, 16) >= 0


@pytest.mark.parametrize("seed", range(5), ids=lambda s: f"seed{s}")
def test_hash_ignores_labels_paths_and_insertion_order(seed: int) -> None:
    rng = random.Random(seed)
    g = lm_graph(n_blocks=3, mixer_params=NESTED)
    h = scrambled(g, rng)
    assert canonical_form(h) == canonical_form(g)
    assert arch_hash(h) == arch_hash(g)


def _changed_param(g: nx.DiGraph) -> None:
    g.nodes[first(g, "layernorm")]["params"]["expert"]["params"]["expand"] = math.nextafter(
        2.6666666666666665, 3.0
    )


def _int_to_float(g: nx.DiGraph) -> None:
    g.nodes[first(g, "layernorm")]["params"]["list_of_dicts"][0]["a"] = 1.0


def _changed_op(g: nx.DiGraph) -> None:
    g.nodes[first(g, "highway_gate")]["op"] = "add"


def _extra_node(g: nx.DiGraph) -> None:
    head = first(g, "head")
    (src,) = g.pred[head]
    g.remove_edge(src, head)
    g.add_node("extra", op="rmsnorm", params={})
    g.add_edge(src, "extra", port=0)
    g.add_edge("extra", head, port=0)


CHANGES = {
    "nested-param-value": _changed_param,
    "int-vs-float": _int_to_float,
    "op": _changed_op,
    "port-swap": lambda g: g.update(swap_ports(g, first(g, "add"))),
    "extra-node": _extra_node,
    "param-added": lambda g: g.nodes[first(g, "head")]["params"].update(bias=False),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_hash_changes_with_the_architecture(change: Callable[[nx.DiGraph], None]) -> None:
    g = lm_graph(n_blocks=2, mixer_params=copy.deepcopy(NESTED))
    before = arch_hash(g)
    h = copy.deepcopy(g)
    change(h)
    assert arch_hash(h) != before


def test_port_swap_is_a_different_graph() -> None:
    g = lm_graph(n_blocks=1)
    h = nx.DiGraph()
    h.add_nodes_from(g.nodes(data=True))
    add = first(g, "add")
    for src, dst, attrs in g.edges(data=True):
        port = 1 - attrs["port"] if dst == add else attrs["port"]
        h.add_edge(src, dst, port=port)
    assert arch_hash(h) != arch_hash(g)


def test_hash_rejects_graphs_it_cannot_order() -> None:
    g = lm_graph(n_blocks=1)
    _add_stray(g)
    with pytest.raises(GraphError, match="does not lead to the output"):
        arch_hash(g)
    g = lm_graph(n_blocks=1)
    _port_gap(g)
    with pytest.raises(GraphError, match="ports"):
        arch_hash(g)


def test_canonical_order_starts_at_output_and_follows_ports() -> None:
    b = Builder()
    e = b.node("embed", [b.input])
    a = b.node("rmsnorm", [e])
    c = b.node("layernorm", [e])
    add = b.node("add", [c, a])  # skip = layernorm, body = rmsnorm
    g = b.finish(b.node("head", [add]))
    order = canonical_order(g)
    assert [g.nodes[n]["op"] for n in order] == [
        "output", "head", "add", "layernorm", "embed", "input", "rmsnorm",
    ]  # fmt: skip


def test_hash_equality_is_isomorphism_on_random_pairs() -> None:
    rng = random.Random(1234)
    outcomes = {True: 0, False: 0}
    for i in range(N_ISO_PAIRS):
        n_ops = rng.randint(1, 5)
        a = random_graph(rng, n_ops)
        kind = i % 3
        if kind == 0:  # the same architecture, relabelled
            b = scrambled(a, rng)
        elif kind == 1:  # an independent draw from a small space: often the same
            b = scrambled(random_graph(rng, n_ops), rng)
        else:  # a port swap, which is the same graph when both inputs look alike
            combines = [n for n, op in a.nodes(data="op") if op in ("add", "highway_gate")]
            b = swap_ports(a, rng.choice(combines)) if combines else scrambled(a, rng)
        iso = nx.is_isomorphic(a, b, node_match=node_match, edge_match=edge_match)
        assert (arch_hash(a) == arch_hash(b)) == iso, (describe(a), describe(b))
        outcomes[iso] += 1
    assert min(outcomes.values()) >= MIN_EACH_OUTCOME, outcomes


# ---------------------------------------------------------------------------------- Parquet


def _edges(g: nx.DiGraph) -> set[tuple[str, str, int]]:
    return {(s, d, a["port"]) for s, d, a in g.edges(data=True)}


def _assert_same(g: nx.DiGraph, h: nx.DiGraph) -> None:
    assert list(h.nodes) == list(g.nodes)
    for node in g:
        assert h.nodes[node] == g.nodes[node]
        # Exact floats and types, not just ==: compare the JSON text (repr of every float).
        assert json.dumps(h.nodes[node]["params"]) == json.dumps(g.nodes[node]["params"])
    assert _edges(h) == _edges(g)
    assert h.graph == g.graph
    assert arch_hash(h) == arch_hash(g)


def test_table_round_trip_is_lossless() -> None:
    g = lm_graph(n_blocks=2, mixer_params=NESTED)
    g.graph["derivation"] = {"seed": 3, "choices": [1, 2.5, "x"]}
    t = graph_to_table(g)
    assert t.num_rows == len(g)
    assert t.schema.metadata[b"gatesearch.arch_hash"].decode() == arch_hash(g)
    _assert_same(g, table_to_graph(t))


def test_file_round_trip_is_lossless(tmp_path: Path) -> None:
    g = lm_graph(n_blocks=3, mixer_params=NESTED)
    del g.nodes[first(g, "head")]["path"]  # a node without a path stays without one
    path = tmp_path / "arch.parquet"
    write_graph(g, path)
    h = read_graph(path)
    _assert_same(g, h)
    assert "path" not in h.nodes[first(h, "head")]
    assert [p.name for p in tmp_path.iterdir()] == ["arch.parquet"]  # no temporary left


def test_inputs_column_lists_sources_in_port_order() -> None:
    g = lm_graph(n_blocks=1)
    t = graph_to_table(g).to_pylist()
    add = first(g, "add")
    (row,) = [r for r in t if r["id"] == add]
    ports = {src: g.edges[src, add]["port"] for src in g.pred[add]}
    assert [ports[s] for s in row["inputs"]] == [0, 1]


def test_write_refuses_invalid_graphs(tmp_path: Path) -> None:
    g = lm_graph(n_blocks=1)
    _add_cycle(g)
    with pytest.raises(GraphError, match="cycle"):
        write_graph(g, tmp_path / "x.parquet")
    assert not list(tmp_path.iterdir())


def _write_valid(path: Path) -> None:
    write_graph(lm_graph(n_blocks=2, mixer_params=NESTED), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not parquet at all" * 10)


def _truncated(path: Path) -> None:
    _write_valid(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _foreign_table(path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), path)


def _rewrite(path: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(edit(graph_to_table(lm_graph(n_blocks=2, mixer_params=NESTED))), path)


def _with_meta(key: bytes, value: bytes) -> Callable[[pa.Table], pa.Table]:
    def edit(t: pa.Table) -> pa.Table:
        return t.replace_schema_metadata({**t.schema.metadata, key: value})

    return edit


def _tamper_params(t: pa.Table) -> pa.Table:
    params = t.column("params").to_pylist()
    params = [p.replace("swiglu", "geglu") for p in params]
    return t.set_column(t.schema.get_field_index("params"), "params", pa.array(params))


def _drop_column(t: pa.Table) -> pa.Table:
    return t.drop_columns(["inputs"])


def _retype_column(t: pa.Table) -> pa.Table:
    i = t.schema.get_field_index("path")
    return t.set_column(i, "path", pa.array([1] * t.num_rows))


def _bad_json(t: pa.Table) -> pa.Table:
    params = ["{not json"] * t.num_rows
    return t.set_column(t.schema.get_field_index("params"), "params", pa.array(params))


def _dangling_input(t: pa.Table) -> pa.Table:
    inputs = t.column("inputs").to_pylist()
    inputs[-1] = ["ghost"]
    i = t.schema.get_field_index("inputs")
    return t.set_column(i, "inputs", pa.array(inputs, pa.list_(pa.string())))


BAD_FILES = {
    "garbage": (_garbage, "not a readable Parquet"),
    "truncated": (_truncated, "not a readable Parquet"),
    "empty": (_empty, "not a readable Parquet"),
    "foreign-table": (_foreign_table, "not an architecture graph"),
    "wrong-version": (
        lambda p: _rewrite(p, _with_meta(b"gatesearch.format_version", b"99")),
        "version 99",
    ),
    "tampered": (lambda p: _rewrite(p, _tamper_params), "does not match its stored hash"),
    "missing-column": (lambda p: _rewrite(p, _drop_column), "column 'inputs' is missing"),
    "wrong-type": (lambda p: _rewrite(p, _retype_column), "column 'path' is int64"),
    "bad-json": (lambda p: _rewrite(p, _bad_json), "params are not JSON"),
    "unknown-source": (lambda p: _rewrite(p, _dangling_input), "unknown node 'ghost'"),
}


@pytest.mark.parametrize("make,message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_raise_graph_error_naming_the_file(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "broken.parquet"
    make(path)
    with pytest.raises(GraphError) as info:
        read_graph(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    # One message, no pyarrow traceback chained underneath.
    error = info.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_missing_file_raises_graph_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.parquet"
    with pytest.raises(GraphError, match="no such graph file") as info:
        read_graph(path)
    assert str(path) in str(info.value)


def test_no_pickle_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "arch.parquet"
    _write_valid(path)
    # Parquet's own footer is Thrift; a pickle would start with the protocol marker 0x80 0x0N
    # followed by pickle opcodes; check pyarrow did not store a pandas/pickle blob either.
    meta = pq.read_schema(path).metadata
    assert b"pandas" not in meta
    assert set(meta) == {
        b"gatesearch.format",
        b"gatesearch.format_version",
        b"gatesearch.arch_hash",
        b"gatesearch.graph_attrs",
    }


# -------------------------------------------------------------------------------- summaries


def test_describe_folds_repeated_blocks() -> None:
    assert describe(lm_graph(n_blocks=4)) == (
        "embed > 4×[residual(rmsnorm layernorm) > highway(rmsnorm)] > rmsnorm > head"
    )


def test_describe_names_few_non_default_params_and_all_when_complete() -> None:
    g = lm_graph(n_blocks=1, mixer_params={"gate": "g1", "heads": 4, "qk_norm": True})
    # Every value by its name: a bare `True` would say nothing.
    assert "layernorm(gate=g1, heads=4, …)" in describe(g)
    assert "layernorm(gate=g1, heads=4, qk_norm=True)" in describe(g, complete=True)
    g = lm_graph(n_blocks=1, mixer_params={"expert": {"op": "glu", "params": {"v": "swiglu"}}})
    assert "layernorm(expert=glu(v=swiglu))" in describe(g)
    g = lm_graph(n_blocks=1, mixer_params={"sizes": [1, 2], "scale": 1 / 3})
    assert "layernorm(sizes=…, scale=0.333333)" in describe(g)
    assert "layernorm(sizes=[1,2], scale=0.3333333333333333)" in describe(g, complete=True)


def test_describe_nested_wrappers_and_odd_shapes() -> None:
    b = Builder()
    x = b.node("embed", [b.input])
    inner = lambda h: b.wrap("add", h, lambda y: b.node("rmsnorm", [y]))  # noqa: E731
    x = b.wrap("add", x, lambda h: b.node("layernorm", [inner(h)]))
    assert describe(b.finish(b.node("head", [x]))) == (
        "embed > residual(residual(rmsnorm) layernorm) > head"
    )
    # Bodies that do not start at the skip's source are marked, not hidden.
    rng = random.Random(5)
    for _ in range(50):
        line = describe(random_graph(rng, 8))
        assert line.startswith("embed") and line.endswith("head")


def test_tree_lines() -> None:
    g = lm_graph(n_blocks=2, mixer_params={"heads": 4})
    assert tree_lines(g) == [
        "input",
        "embed",
        "2×",
        "  residual",
        "    rmsnorm",
        "    layernorm(heads=4)",
        "  highway",
        "    rmsnorm",
        "rmsnorm",
        "head",
        "output",
    ]
