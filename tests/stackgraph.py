"""A plain stack of blocks around chosen primitives, for tests that need one model holding
exactly the ops they name (not what a space's rules would derive)."""

from __future__ import annotations

from typing import Any

import networkx as nx


def stack_graph(d_model: int, blocks: list[tuple[str, dict[str, Any]]]) -> nx.DiGraph:
    """input → embed → [x + op(rmsnorm(x))]·len(blocks) → rmsnorm → head → output."""
    g = nx.DiGraph()
    g.add_node("input", op="input", params={"d_model": d_model, "causal": True}, path="model.input")
    g.add_node("emb", op="embed", params={}, path="model.stem")
    g.add_edge("input", "emb", port=0)
    last = "emb"
    for i, (op, params) in enumerate(blocks):
        norm, body, add = f"n{i}", f"b{i}", f"a{i}"
        g.add_node(norm, op="rmsnorm", params={}, path=f"model.block[{i}].norm")
        g.add_node(body, op=op, params=dict(params), path=f"model.block[{i}].body")
        g.add_node(add, op="add", params={}, path=f"model.block[{i}].add")
        g.add_edge(last, norm, port=0)
        g.add_edge(norm, body, port=0)
        g.add_edge(last, add, port=0)
        g.add_edge(body, add, port=1)
        last = add
    g.add_node("nf", op="rmsnorm", params={}, path="model.norm")
    g.add_node("head", op="head", params={}, path="model.head")
    g.add_node("output", op="output", params={}, path="model.output")
    g.add_edge(last, "nf", port=0)
    g.add_edge("nf", "head", port=0)
    g.add_edge("head", "output", port=0)
    return g
