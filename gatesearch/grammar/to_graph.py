"""Derivation (genotype) -> architecture graph (phenotype).

Sequences chain; a wrapper feeds its input both to its body and, as the skip, to its combine
node (residual -> `add`, highway -> `highway_gate`); repeats and rules vanish into their
children. The `input` node carries what every node's construction shares: the model width and
whether the task is causal, so the graph alone determines the model (and its hash).
"""

from __future__ import annotations

import networkx as nx

from gatesearch.grammar.derive import Derivation, DNode
from gatesearch.registry import REGISTRY

INPUT = "input"
OUTPUT = "output"


def derivation_to_graph(derivation: Derivation) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(
        INPUT,
        op=INPUT,
        params={"d_model": derivation.width, "causal": derivation.causal},
        path="",
    )
    last = _emit(g, derivation.tree, INPUT)
    g.add_node(OUTPUT, op=OUTPUT, params={}, path="")
    g.add_edge(last, OUTPUT, port=0)
    return g


def _emit(g: nx.DiGraph, node: DNode, src: str) -> str:
    """Add `node`'s operations fed by tensor `src`; return the id producing its output."""
    if node.kind == "prim":
        g.add_node(node.path, op=node.name, params=dict(node.params), path=node.path)
        g.add_edge(src, node.path, port=0)
        return node.path
    if node.kind == "wrap":
        body = src
        for child in node.children:
            body = _emit(g, child, body)
        combine = REGISTRY[node.name].combine
        assert combine is not None
        cid = f"{node.path}+{combine}"
        g.add_node(cid, op=combine, params={}, path=node.path)
        g.add_edge(src, cid, port=0)  # skip
        g.add_edge(body, cid, port=1)  # body
        return cid
    for child in node.children:  # rule, repeat, identity
        src = _emit(g, child, src)
    return src
