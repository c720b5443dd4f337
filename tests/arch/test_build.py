"""The model builder: graph -> GraphModel, parameter and FLOP counts, pruning."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.arch.build import (
    GraphModel,
    aux_losses,
    build_model,
    count_params,
    example_input,
    flops_per_token,
    prune_model,
)
from gatesearch.arch.graph import GraphError, arch_hash, validate_graph
from gatesearch.primitives.base import AUX_SPARSITY, Primitive, Prunable
from gatesearch.primitives.pruning import make_gate, prune_param
from gatesearch.registry import (
    REGISTRY,
    Categorical,
    Context,
    InputKind,
    IntRange,
    ParamSpec,
    Role,
    register,
)

# float64 everywhere a pruned model is compared with its unpruned self.
PRUNE_ATOL = 1e-10
N_IN, N_OUT = 11, 7

# ------------------------------------------------------------------- test-only primitives


class _Linear(Primitive):
    """y = x·W (+ b) — test-only channel primitive."""

    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _GatedMLP(Primitive, Prunable):
    """y = W₂ (z ⊙ ReLU(W₁x + b₁)) + b₂, z a pruning gate per hidden unit — test-only."""

    def __init__(self, d_model: int, hidden: int = 8, prune: str = "none") -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.gate = make_gate(prune, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.up(x))  # (B, T, hidden)
        if self.gate is not None:
            h = h * self.gate()
        return self.down(h)

    def open_units(self) -> int:
        return self.up.out_features if self.gate is None else int(self.gate.keep_mask().sum())

    def prune_(self) -> dict[str, object]:
        if self.gate is None:
            return {}
        z = self.gate.final_values()
        keep = z > 0
        # z ≥ 0 commutes with ReLU, so folding it into W₂'s columns keeps the function.
        up = nn.Linear(self.up.in_features, int(keep.sum())).to(self.up.weight)
        down = nn.Linear(int(keep.sum()), self.down.out_features).to(self.down.weight)
        with torch.no_grad():
            up.weight.copy_(self.up.weight[keep])
            up.bias.copy_(self.up.bias[keep])
            down.weight.copy_(self.down.weight[:, keep] * z[keep])
            down.bias.copy_(self.down.bias)
        self.up, self.down, self.gate = up, down, None
        return {"hidden": int(keep.sum()), "prune": "none"}


@pytest.fixture(scope="module", autouse=True)
def test_primitives() -> Iterator[None]:
    """Register the test-only primitives for this module only, so that suites iterating the
    registry elsewhere never see them."""
    added = [
        register(
            "test_build_linear",
            Role.CHANNEL,
            [ParamSpec("bias", Categorical((True, False)), default=True)],
        )(_Linear),
        register(
            "test_build_gated_mlp",
            Role.CHANNEL,
            [
                ParamSpec("hidden", IntRange(1, 4096), default=8, internal=True),
                prune_param("gates on hidden units"),
            ],
        )(_GatedMLP),
    ]
    yield
    for cls in added:
        name = next(s.name for s in REGISTRY.specs() if s.module is cls)
        REGISTRY._specs.pop(name)  # the registry has no removal; tests only


# ------------------------------------------------------------------------------- graphs


def residual_graph(channel: str = "test_build_linear", **params: object) -> nx.DiGraph:
    """embed -> residual(rmsnorm -> channel) -> rmsnorm -> head."""
    g = nx.DiGraph()
    nodes = {
        "in": ("input", {}, "model.input"),
        "emb": ("embed", {}, "model.stem"),
        "n1": ("rmsnorm", {}, "model.block[0].norm"),
        "ch": (channel, dict(params), "model.block[0].channel"),
        "add": ("add", {}, "model.block[0].add"),
        "nf": ("rmsnorm", {}, "model.norm"),
        "head": ("head", {}, "model.head"),
        "out": ("output", {}, "model.output"),
    }
    for node, (op, p, path) in nodes.items():
        g.add_node(node, op=op, params=p, path=path)
    for src, dst, port in [
        ("in", "emb", 0),
        ("emb", "n1", 0),
        ("n1", "ch", 0),
        ("emb", "add", 0),
        ("ch", "add", 1),
        ("add", "nf", 0),
        ("nf", "head", 0),
        ("head", "out", 0),
    ]:
        g.add_edge(src, dst, port=port)
    return g


def ctx_for(kind: InputKind, d: int = 16) -> Context:
    return Context(d_model=d, causal=True, input_kind=kind, n_in=N_IN, n_out=N_OUT)


def hand_params(kind: InputKind, d: int) -> int:
    stem = N_IN * d if kind is InputKind.TOKENS else N_IN * d + d  # table, or Linear + bias
    norms = 2 * d
    channel = d * d + d
    head = d * N_OUT
    return stem + norms + channel + head


def hand_flops(kind: InputKind, d: int) -> int:
    # Matrix products only: 2 per multiply-add; lookups, norms, the add are not counted.
    stem = 0 if kind is InputKind.TOKENS else 2 * N_IN * d
    return stem + 2 * d * d + 2 * d * N_OUT


KINDS = {"tokens": InputKind.TOKENS, "continuous": InputKind.CONTINUOUS}


# --------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_forward_and_backward(kind: InputKind) -> None:
    torch.manual_seed(0)
    ctx = ctx_for(kind)
    model = build_model(residual_graph(), ctx)
    x = example_input(ctx, seq_len=16, batch=2)
    assert x.shape == ((2, 16) if kind is InputKind.TOKENS else (2, 16, N_IN))
    y = model(x)
    assert y.shape == (2, 16, N_OUT)
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_matches_hand_written_network() -> None:
    torch.manual_seed(0)
    ctx = ctx_for(InputKind.TOKENS)
    model = build_model(residual_graph(), ctx)
    m = model.nodes
    x = example_input(ctx, seq_len=16, batch=2)
    h = m["model_stem"](x)
    h = h + m["model_block_0_channel"](m["model_block_0_norm"](h))
    expected = m["model_head"](m["model_norm"](h))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("d", [8, 16, 32], ids=lambda d: f"D{d}")
@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_param_count_equals_hand_count(kind: InputKind, d: int) -> None:
    assert count_params(build_model(residual_graph(), ctx_for(kind, d))) == hand_params(kind, d)


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_flops_per_token_scale_with_width(kind: InputKind) -> None:
    flops = {}
    for d in (8, 16, 32):
        model = build_model(residual_graph(), ctx_for(kind, d))
        flops[d] = flops_per_token(model, ctx_for(kind, d), seq_len=16)
        assert flops[d] == hand_flops(kind, d) > 0
    # The d×d channel dominates as width grows: doubling d a bit more than doubles FLOPs.
    assert 2 * flops[16] < flops[32] < 4 * flops[16]


def test_flops_leave_the_mode_alone() -> None:
    ctx = ctx_for(InputKind.TOKENS)
    model = build_model(residual_graph(), ctx)
    model.train()
    flops_per_token(model, ctx, seq_len=4)
    assert model.training
    model.eval()
    flops_per_token(model, ctx, seq_len=4)
    assert not model.training


def test_module_names_come_from_paths() -> None:
    model = build_model(residual_graph(), ctx_for(InputKind.TOKENS))
    assert list(model.nodes) == [
        "model_stem",
        "model_block_0_norm",
        "model_block_0_channel",
        "model_block_0_add",
        "model_norm",
        "model_head",
    ]
    assert model.node_names["ch"] == "model_block_0_channel"


def test_module_names_are_valid_and_unique_without_good_paths() -> None:
    g = residual_graph()
    g.nodes["n1"]["path"] = "9.norm"
    g.nodes["nf"]["path"] = "9 norm"  # sanitises to the same name as n1's
    del g.nodes["ch"]["path"]
    g.nodes["head"]["path"] = "update"  # would shadow ModuleDict.update
    g.nodes["add"]["path"] = "..."
    model = build_model(g, ctx_for(InputKind.TOKENS))
    names = list(model.nodes)
    assert names == ["model_stem", "n_9_norm", "test_build_linear", "add", "n_9_norm_2", "update_"]
    assert all(name.isidentifier() for name in names)


def _relabelled(g: nx.DiGraph, rng: random.Random) -> nx.DiGraph:
    nodes = list(g.nodes(data=True))
    rng.shuffle(nodes)
    labels = {node: f"x{i}" for i, (node, _) in enumerate(nodes)}
    h = nx.DiGraph()
    h.add_nodes_from((labels[n], copy.deepcopy(a)) for n, a in nodes)
    edges = list(g.edges(data=True))
    rng.shuffle(edges)
    h.add_edges_from((labels[s], labels[d], dict(a)) for s, d, a in edges)
    return h


def test_same_architecture_same_model_whatever_the_labels() -> None:
    ctx = ctx_for(InputKind.TOKENS)
    g = residual_graph()
    torch.manual_seed(3)
    a = build_model(g, ctx)
    torch.manual_seed(3)
    b = build_model(_relabelled(g, random.Random(1)), ctx)
    assert list(a.state_dict()) == list(b.state_dict())
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    x = example_input(ctx, seq_len=8, batch=2)
    assert torch.equal(a(x), b(x))


def test_build_rejects_invalid_graphs() -> None:
    ctx = ctx_for(InputKind.TOKENS)
    g = residual_graph()
    g.remove_edge("ch", "add")
    with pytest.raises(GraphError, match="takes 2 input"):
        build_model(g, ctx)
    with pytest.raises(GraphError, match="has no parameter 'width'"):
        build_model(residual_graph(width=3), ctx)
    with pytest.raises(GraphError, match="bias=1 is not one of True, False"):
        build_model(residual_graph(bias=1), ctx)


def test_model_keeps_its_own_copy_of_the_graph() -> None:
    g = residual_graph(bias=False)
    model = build_model(g, ctx_for(InputKind.TOKENS))
    g.nodes["ch"]["params"]["bias"] = True
    assert model.graph.nodes["ch"]["params"] == {"bias": False}
    assert isinstance(model, GraphModel)


def test_aux_losses_are_collected() -> None:
    ctx = ctx_for(InputKind.TOKENS)
    model = build_model(residual_graph("test_build_gated_mlp", prune="trainable"), ctx)
    model.train()
    model(example_input(ctx, seq_len=4, batch=2))
    losses = aux_losses(model)
    assert set(losses) == {AUX_SPARSITY}
    assert losses[AUX_SPARSITY].requires_grad


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
def test_prune_model(kind: InputKind) -> None:
    torch.manual_seed(0)
    ctx = ctx_for(kind)
    g = residual_graph("test_build_gated_mlp", hidden=12, prune="trainable")
    model = build_model(g, ctx).double().eval()
    mlp = model.nodes[model.node_names["ch"]]
    with torch.no_grad():
        mlp.gate.w[[1, 4, 5, 9]] = -1.0  # close 4 of the 12 hidden units
    x = example_input(ctx, seq_len=16, batch=2)
    x = x.double() if x.is_floating_point() else x
    before = model(x)
    n_before = count_params(model)

    pruned = prune_model(model)

    assert pruned.nodes["ch"]["params"] == {"hidden": 8, "prune": "none"}
    assert g.nodes["ch"]["params"] == {"hidden": 12, "prune": "trainable"}  # input untouched
    assert arch_hash(pruned) != arch_hash(g)
    assert arch_hash(model.graph) == arch_hash(pruned)
    torch.testing.assert_close(model(x), before, rtol=0, atol=PRUNE_ATOL)
    assert count_params(model) == n_before - 4 * (16 + 1 + 16) - 12  # units and the gate

    fresh = build_model(pruned, ctx).double()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(x), before, rtol=0, atol=PRUNE_ATOL)


@pytest.mark.parametrize("open_experts", [[2], []], ids=["one-open", "none-open"])
def test_a_mixture_pruned_to_one_or_no_expert_still_builds(open_experts: list[int]) -> None:
    """Pruning can leave one expert, or none (then one is kept at scale 0): the pruned graph
    must pass the registry's checks and rebuild the same function (export and retrain read
    it back)."""
    torch.manual_seed(0)
    ctx = ctx_for(InputKind.TOKENS)
    params = {"router": "switch", "experts": 4, "expert": {"op": "mlp", "params": {}}}
    g = residual_graph("moe", **params, prune="trainable")
    model = build_model(g, ctx).double().eval()
    moe = model.nodes[model.node_names["ch"]]
    with torch.no_grad():
        for p in moe.router.parameters():
            p.normal_()
        moe.expert_gate.w.fill_(-1.0)
        moe.expert_gate.w[open_experts] = 1.0
    x = example_input(ctx, seq_len=16, batch=2)
    before = model(x)

    pruned = prune_model(model)

    assert pruned.nodes["ch"]["params"]["experts"] == 1
    validate_graph(pruned, ctx)
    fresh = build_model(pruned, ctx).double()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(x), before, rtol=0, atol=PRUNE_ATOL)


def test_prune_model_without_prunable_nodes_keeps_the_graph() -> None:
    g = residual_graph()
    model = build_model(g, ctx_for(InputKind.TOKENS))
    assert arch_hash(prune_model(model)) == arch_hash(g)


def test_deepcopy_runs_its_own_modules() -> None:
    # The execution plan holds module references; a copy must run the copied modules.
    ctx = ctx_for(InputKind.TOKENS)
    model = build_model(residual_graph(), ctx)
    clone = copy.deepcopy(model)
    x = example_input(ctx, seq_len=8, batch=2)
    before = model(x)
    with torch.no_grad():
        clone.nodes["model_head"].proj.weight.zero_()
    assert torch.equal(model(x), before)
    assert torch.count_nonzero(clone(x)) == 0
