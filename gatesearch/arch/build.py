"""Architecture graph -> nn.Module, and what is measured on the built model.

Each graph node becomes the module the registry builds for its op and params; the model runs
the nodes in a topological order fixed at construction, so forward does no graph work.
"""

from __future__ import annotations

import copy
import re
import statistics
import time
from typing import Any

import networkx as nx
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gatesearch.arch.graph import INPUT_OP, OUTPUT_OP, canonical_order, validate_graph
from gatesearch.primitives.base import Prunable, collect_aux_losses, decode_state
from gatesearch.registry import Context, InputKind, build_module

_NOT_NAME = re.compile(r"[^0-9A-Za-z_]+")


def _module_names(g: nx.DiGraph, order: list[str]) -> dict[str, str]:
    """A valid, unique ModuleDict key per node, from its derivation path (else its op).

    "model.stack.block[2].mixer" -> "model_stack_block_2_mixer". Assigned in `order`, which is
    canonical, so the names (and the state_dict keys) do not depend on node labels or
    insertion order; clashes get "_2", "_3", ... in that order.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for node in order:
        attrs = g.nodes[node]
        base = _NOT_NAME.sub("_", attrs.get("path") or "").strip("_") or attrs["op"]
        if base[0].isdigit():
            base = "n_" + base
        # ModuleDict refuses keys that shadow its own attributes (keys, update, ...).
        if hasattr(nn.ModuleDict, base):
            base += "_"
        names[node] = unique_name(base, taken)
    return names


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`, ... — the first not in `taken`, which it joins."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class GraphModel(nn.Module):
    """The network an architecture graph describes, for one task context.

    `nodes` holds one module per primitive node (inputs are not modules), keyed by names from
    the derivation paths; `graph` is the architecture it was built from and `node_names` maps
    graph node ids to those keys. forward(x, lengths=None): x is tokens (B, T) or features
    (B, T, n_in), lengths the real length of each padded sequence; the result is (B, T, n_out).
    """

    def __init__(self, graph: nx.DiGraph, ctx: Context) -> None:
        super().__init__()
        validate_graph(graph, ctx)
        self.graph = copy.deepcopy(graph)
        self.ctx = ctx
        rank = {node: i for i, node in enumerate(canonical_order(graph))}
        order = list(nx.lexicographical_topological_sort(graph, key=rank.__getitem__))
        primitives = [n for n in order if graph.nodes[n]["op"] not in (INPUT_OP, OUTPUT_OP)]
        self.node_names = _module_names(graph, primitives)
        self.nodes = nn.ModuleDict(
            {
                self.node_names[node]: build_module(
                    graph.nodes[node]["op"], graph.nodes[node]["params"], ctx
                )
                for node in primitives
            }
        )
        self._compile_plan(order)

    def _compile_plan(self, order: list[str]) -> None:
        """Steps (module, input slots in port order, slots to free after it) and the result slot.

        Slots are positions in a list of tensors; freeing a slot after its last reader keeps
        inference memory at the live set rather than every intermediate.
        """
        g = self.graph
        slot = {node: i for i, node in enumerate(order)}
        steps = []
        for node in order:
            if node not in self.node_names:
                continue
            preds = sorted(g.pred[node].items(), key=lambda kv: kv[1]["port"])
            steps.append((node, tuple(slot[src] for src, _ in preds)))
        sink = next(n for n in order if g.nodes[n]["op"] == OUTPUT_OP)
        (result_node,) = g.pred[sink]
        self._n_slots = len(order)
        self._input_slot = next(slot[n] for n in order if g.nodes[n]["op"] == INPUT_OP)
        self._result_slot = slot[result_node]
        last_read: dict[int, int] = {}
        for step, (_, args) in enumerate(steps):
            for a in args:
                last_read[a] = step
        frees: list[list[int]] = [[] for _ in steps]
        for a, step in last_read.items():
            if a != self._result_slot:
                frees[step].append(a)
        self._steps = tuple(
            (self.nodes[self.node_names[node]], args, slot[node], tuple(free))
            for (node, args), free in zip(steps, frees)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x: tokens (B, T) or features (B, T, n_in); lengths: (B,) the real length of each
        sequence when the batch is padded at the end (None: no padding). The primitives that
        mix positions non-causally get `lengths` and keep padding away from real positions;
        causal models give the same outputs with or without it."""
        values: list[torch.Tensor | None] = [None] * self._n_slots
        values[self._input_slot] = x
        for module, args, out, free in self._steps:
            if lengths is not None and getattr(module, "takes_lengths", False):
                values[out] = module(*[values[a] for a in args], lengths=lengths)
            elif len(args) == 1:
                values[out] = module(values[args[0]])
            else:
                values[out] = module(*[values[a] for a in args])
            for a in free:
                values[a] = None
        result = values[self._result_slot]
        assert result is not None
        return result

    def named_node_modules(self) -> list[tuple[str, nn.Module]]:
        """(graph node id, module) for every primitive node."""
        return [(node, self.nodes[name]) for node, name in self.node_names.items()]


def build_model(graph: nx.DiGraph, ctx: Context) -> GraphModel:
    """The model for `graph` in task context `ctx`; GraphError when the graph is invalid there."""
    return GraphModel(graph, ctx)


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters())


def example_input(
    ctx: Context, seq_len: int, batch: int = 1, seed: int | None = None
) -> torch.Tensor:
    """A task-shaped input: token ids (batch, seq_len) or features (batch, seq_len, n_in);
    drawn from `seed` when given (the same input on every call), else from torch's RNG."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    if InputKind(ctx.input_kind) is InputKind.TOKENS:
        return torch.randint(0, ctx.n_in, (batch, seq_len), generator=gen)
    return torch.randn(batch, seq_len, ctx.n_in, generator=gen)


def flops_per_token(model: nn.Module, ctx: Context, seq_len: int = 128) -> float:
    """Forward FLOPs per token on one sequence of `seq_len`, in eval mode.

    Counted by torch's FlopCounterMode, which counts matrix products, convolutions and
    attention kernels (2 FLOPs per multiply-add) but not elementwise work (activations, gates'
    products, norms, scans written elementwise) nor embedding lookups. Mixers whose cost grows
    with length (attention) make this depend on `seq_len`.
    """
    param = next(model.parameters(), None)
    # A fixed input: a mixture's FLOPs depend on where its router sends the tokens, so a fresh
    # random input per call would make the count (and pruned vs unpruned) vary by chance.
    x = example_input(ctx, seq_len, seed=0)
    if param is not None:
        x = x.to(param) if x.is_floating_point() else x.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / seq_len


# Bytes per value of a decode state: float32, the dtype gatesearch trains, scores and exports.
STATE_BYTES_PER_VALUE = 4


def decode_state_bytes(model: nn.Module, ctx: Context, context: int) -> int | None:
    """Bytes one sequence's decode state takes after `context` positions: what a causal
    model keeps to produce the next position step by step (KV caches, recurrent states,
    convolution buffers; STAR's cache size), summed over its layers. None for a model that is
    not causal: it has no step-by-step decoding."""
    if not ctx.causal:
        return None
    return STATE_BYTES_PER_VALUE * decode_state(model, context)


def aux_losses(model: nn.Module) -> dict[str, torch.Tensor]:
    """The auxiliary losses of the last forward pass, summed by kind."""
    return collect_aux_losses(model)


def prune_model(model: GraphModel) -> nx.DiGraph:
    """Prune every Prunable node in place and return the architecture that remains.

    Each node's `prune_()` removes its closed units and returns parameter updates; they are
    written into a copy of the model's graph, which becomes `model.graph` and is returned (as
    another copy, so the caller cannot edit the model's record by accident).
    """
    pruned = copy.deepcopy(model.graph)
    for node, module in model.named_node_modules():
        if isinstance(module, Prunable):
            updates: dict[str, Any] = module.prune_()
            attrs = pruned.nodes[node]
            attrs["params"] = {**attrs["params"], **updates}
    validate_graph(pruned)
    model.graph = pruned
    return copy.deepcopy(pruned)


def measure_latency(model: nn.Module, x: torch.Tensor, runs: int) -> float:
    """Median milliseconds of one eval-mode forward on `x`, after one untimed warm-up run."""
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    try:
        with torch.no_grad():
            model(x)
            for _ in range(runs):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)


def model_costs(
    model: nn.Module, ctx: Context, seq_len: int, batch: int, latency_runs: int
) -> dict[str, float]:
    """What a trained model costs: its parameters, forward FLOPs per token, the median
    milliseconds of a forward on `batch` random sequences of `seq_len` (`latency_runs` runs),
    and, for a causal model, its decode state in bytes after `seq_len` positions."""
    param = next(model.parameters())
    x = example_input(ctx, seq_len, batch=batch).to(param.device)
    if x.is_floating_point():
        x = x.to(param.dtype)
    latency = measure_latency(model, x, latency_runs)
    costs = {
        "params": float(count_params(model)),
        "flops": float(flops_per_token(model, ctx, seq_len=seq_len)),
        "latency": latency,
    }
    state = decode_state_bytes(model, ctx, seq_len)
    if state is not None:
        costs["state"] = float(state)
    return costs
