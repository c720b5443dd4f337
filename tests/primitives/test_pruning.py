"""Pruning gates (trainable straight-through and hard-concrete L0), and expert pruning in a
mixture of experts: closed experts are removed and the eval function is unchanged."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gatesearch.primitives import AUX_SPARSITY, collect_aux_losses
from gatesearch.primitives.moe import ROUTERS, MoE
from gatesearch.primitives.pruning import (
    HardConcreteGate,
    PruningGate,
    TrainableGate,
    make_gate,
)
from gatesearch.registry import REGISTRY, Context, RegistryError, build_module

GATES = ["trainable", "l0"]
N_UNITS = 64
# Float64 pruned vs unpruned: the folded gate value only reorders one multiplication.
PRUNE_ATOL = 1e-10
PRUNE_RTOL = 1e-8
D_MODEL = 8


def make(kind: str, n: int = N_UNITS) -> PruningGate:
    gate = make_gate(kind, n)
    assert gate is not None
    return gate


# ------------------------------------------------------------------------------ the gates


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", GATES)
def test_gate_values_in_unit_interval(kind: str, train: bool) -> None:
    torch.manual_seed(0)
    gate = make(kind)
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_(0.0, 3.0)  # gates spread over open, closed and in between
    gate.train(train)
    z = gate()
    assert z.shape == (N_UNITS,)
    assert ((z >= 0) & (z <= 1)).all()
    final = gate.final_values()
    assert ((final >= 0) & (final <= 1)).all()
    assert torch.equal(gate.keep_mask(), final > 0)


def test_trainable_gate_straight_through() -> None:
    gate = TrainableGate(d_model=6)
    w = torch.tensor([2.0, 0.5, 1e-3, -1e-3, -0.5, -2.0])
    with torch.no_grad():
        gate.w.copy_(w)
    gate.train()
    z = gate()
    assert torch.equal(z.detach(), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    coeff = torch.arange(1.0, 7.0)
    (z * coeff).sum().backward()
    s = torch.sigmoid(4.0 * w)
    torch.testing.assert_close(gate.w.grad, coeff * 4.0 * s * (1.0 - s))
    assert (gate.w.grad != 0).all(), "closed gates must still get a gradient (they can reopen)"
    gate.eval()
    assert torch.equal(gate().detach(), gate.final_values())


def test_hard_concrete_training_draws() -> None:
    """log α = 0: P(z = 0) = P(z = 1) = P(u ≤ σ(β·logit(1/12))) ≈ 0.168, the rest in (0, 1)."""
    torch.manual_seed(1)
    n = 20_000
    gate = HardConcreteGate(d_model=n)
    with torch.no_grad():
        gate.log_alpha.zero_()
    gate.train()
    z = gate()
    assert ((z >= 0) & (z <= 1)).all()
    expected_edge = torch.sigmoid(torch.tensor(gate.beta * math.log(1.0 / 11.0))).item()
    for frac in ((z == 0).float().mean(), (z == 1).float().mean()):
        assert frac.item() == pytest.approx(expected_edge, abs=0.02)
    assert ((z > 0) & (z < 1)).any()
    assert not torch.equal(z, gate()), "training draws are random"


def test_hard_concrete_eval_deterministic() -> None:
    gate = HardConcreteGate(d_model=5)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-10.0, -3.0, -2.0, 1.0, 10.0]))
    gate.eval()
    z = gate()
    assert torch.equal(z, gate())
    expected = (torch.sigmoid(gate.log_alpha) * 1.2 - 0.1).clamp(0.0, 1.0)
    torch.testing.assert_close(z, expected.detach())
    assert z[0] == 0 and z[-1] == 1
    # Closed exactly when σ(log α) ≤ −γ/(ζ − γ) = 1/12, i.e. log α ≤ −log 11 ≈ −2.4.
    assert gate.keep_mask().tolist() == [False, False, True, True, True]


@pytest.mark.parametrize("kind", GATES)
def test_sparsity_loss_decreases_as_gates_close(kind: str) -> None:
    gate = make(kind)
    before = gate.sparsity_loss().item()
    with torch.no_grad():
        param = next(gate.parameters())
        param[: N_UNITS // 2] = -5.0  # close half of the units
    after = gate.sparsity_loss().item()
    assert after < before


@pytest.mark.parametrize("kind", GATES)
def test_sparsity_loss_reported_in_training_only(kind: str) -> None:
    gate = make(kind)
    holder = nn.ModuleDict({"gate": gate})
    gate.train()
    gate()
    aux = collect_aux_losses(holder)
    assert set(aux) == {AUX_SPARSITY}
    aux[AUX_SPARSITY].backward()
    assert next(gate.parameters()).grad.abs().sum() > 0
    gate.eval()
    gate()
    assert collect_aux_losses(holder) == {}


def test_make_gate() -> None:
    assert make_gate("none", 4) is None
    assert isinstance(make_gate("trainable", 4), TrainableGate)
    gate = make_gate("l0", 7)
    assert isinstance(gate, HardConcreteGate) and gate.n == 7 and gate().shape == (7,)
    for not_a_gate in ("relu", "mlp", "add"):
        with pytest.raises(ValueError, match="not a pruning gate"):
            make_gate(not_a_gate, 4)
    with pytest.raises(RegistryError):
        make_gate("no_such_gate", 4)


# --------------------------------------------------------------------- mixture of experts

N_EXPERTS = 6
# Per-expert gate parameters: experts 1 and 3 closed, the rest open at various values.
L0_LOG_ALPHA = [3.0, -10.0, 0.2, -10.0, 10.0, 1.0]
TRAINABLE_W = [1.0, -1.0, 0.5, -0.2, 2.0, 0.1]
OPEN_EXPERTS = [0, 2, 4, 5]
MOE_CASES = {
    "noisy_topk-k2": {"router": "noisy_topk", "k": 2},
    "noisy_topk-k_all": {"router": "noisy_topk", "k": N_EXPERTS},
    "switch": {"router": "switch", "capacity_factor": 1.25},
    "expert_choice": {"router": "expert_choice", "capacity_factor": 1.0},
    "softmax_d2s": {"router": "softmax_d2s", "tau_start": 0.5},
    "activation_d2s": {"router": "activation_d2s", "tau_start": 0.3},
    "activation_d2s-swish_beta": {"router": "activation_d2s", "router_act": "swish_beta"},
}


def gated_moe(case: str, kind: str) -> tuple[MoE, dict]:
    params = {
        **MOE_CASES[case],
        "experts": N_EXPERTS,
        "expert": {"op": "mlp", "params": {"expand": 2.0}},
        "prune": kind,
    }
    causal = ROUTERS[params["router"]].causal
    ctx = Context(d_model=D_MODEL, causal=causal)
    moe = build_module("moe", params, ctx).double()
    assert isinstance(moe, MoE)
    with torch.no_grad():
        for p in moe.router.parameters():
            p.normal_(0.0, 1.0)  # noisy_topk starts at zero; give every expert distinct logits
        values = L0_LOG_ALPHA if kind == "l0" else TRAINABLE_W
        next(moe.expert_gate.parameters()).copy_(torch.tensor(values))
    return moe, params


@pytest.mark.parametrize("kind", GATES)
@pytest.mark.parametrize("case", list(MOE_CASES))
def test_moe_expert_pruning_preserves_eval(case: str, kind: str) -> None:
    torch.manual_seed(2)
    moe, params = gated_moe(case, kind)
    moe.eval()
    x = torch.randn(2, 16, D_MODEL, dtype=torch.float64)
    kept_experts = [moe.experts[i] for i in OPEN_EXPERTS]
    y_before = moe(x)
    assert moe.open_units() == len(OPEN_EXPERTS)

    updates = moe.prune_()
    expected = {"experts": len(OPEN_EXPERTS), "prune": "none"}
    if params.get("k", 0) > len(OPEN_EXPERTS):
        expected["k"] = len(OPEN_EXPERTS)
    assert updates == expected
    assert moe.expert_gate is None
    assert list(moe.experts) == kept_experts
    for p in moe.router.parameters():
        assert p.shape[0] == len(OPEN_EXPERTS)
    torch.testing.assert_close(moe(x), y_before, atol=PRUNE_ATOL, rtol=PRUNE_RTOL)

    # The graph's updated parameters rebuild the same module from the pruned state.
    ctx = Context(d_model=D_MODEL, causal=ROUTERS[params["router"]].causal)
    rebuilt = build_module("moe", {**params, **updates}, ctx).double().eval()
    rebuilt.load_state_dict(moe.state_dict())
    torch.testing.assert_close(rebuilt(x), y_before, atol=PRUNE_ATOL, rtol=PRUNE_RTOL)


@pytest.mark.parametrize("kind", GATES)
def test_moe_expert_gates_train(kind: str) -> None:
    torch.manual_seed(3)
    moe, _ = gated_moe("noisy_topk-k2", kind)
    moe.train()
    y = moe(torch.randn(2, 16, D_MODEL, dtype=torch.float64))
    aux = collect_aux_losses(moe)
    assert AUX_SPARSITY in aux
    y.square().sum().backward()
    assert moe.expert_gate is not None
    grad = next(moe.expert_gate.parameters()).grad
    assert grad is not None and grad.abs().sum() > 0, "the task loss must reach the gates"


def test_moe_without_gates_prunes_nothing() -> None:
    moe = REGISTRY["moe"].module(
        d_model=D_MODEL, causal=True, experts=3, expert={"op": "mlp", "params": {}}
    )
    assert moe.open_units() == 3
    assert moe.prune_() == {"experts": 3, "prune": "none"}
    assert len(moe.experts) == 3
