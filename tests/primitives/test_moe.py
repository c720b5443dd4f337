"""Mixture-of-experts routing: every router end to end, its aux losses, causality, capacity,
annealing, and each router's output against a dense reference computed here independently."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from reference import Tolerance, assert_matches_reference
from torch import nn

from gatesearch.primitives import AUX_MOE_BALANCE, AUX_MOE_Z, Primitive, collect_aux_losses
from gatesearch.primitives.moe import ROUTERS, MoE
from gatesearch.registry import REGISTRY, Context, IntRange, ParamSpec, PrimitiveSpec, Role

# Float64 reference vs dispatch: only summation order differs.
REF = Tolerance(atol=1e-10, rtol=1e-8)
D_MODEL = 8
BATCH, SEQ = 2, 16

TINY = "test_moe_tiny_expert"  # a test-only channel primitive, registered by a fixture
CAUSAL_ROUTERS = [name for name, router in ROUTERS.items() if router.causal]
ALL_ROUTERS = list(ROUTERS)
# Aux-loss keys each router must report in training.
AUX_KEYS = {
    "noisy_topk": {AUX_MOE_BALANCE},
    "switch": {AUX_MOE_BALANCE, AUX_MOE_Z},
    "expert_choice": set(),
    "softmax_d2s": set(),
    "activation_d2s": set(),
}
EXPERT_OPS = [TINY, "mlp", "glu"]


class TinyExpert(Primitive):
    """y = W₂ tanh(W₁ x + b): the smallest channel primitive with a nonlinearity and bias."""

    def __init__(self, d_model: int, hidden: int = 4) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.tanh(self.up(x)))


@pytest.fixture(scope="module", autouse=True)
def tiny_expert() -> Iterator[str]:
    spec = PrimitiveSpec(
        name=TINY,
        role=Role.CHANNEL,
        module=TinyExpert,
        params=(ParamSpec("hidden", IntRange(1, 64), default=4),),
    )
    REGISTRY.add(spec)
    yield TINY
    # Other test modules walk the registry's channel primitives; keep this one out of them.
    REGISTRY._specs.pop(TINY)


def expert_slot(op: str) -> dict:
    if op not in REGISTRY:
        pytest.skip(f"{op} is not registered")
    params = {"expand": 2.0} if op in ("mlp", "glu") else {}
    return {"op": op, "params": params}


def make_moe(router: str, *, causal: bool | None = None, dtype=torch.float32, **params) -> MoE:
    if causal is None:
        causal = ROUTERS[router].causal
    params.setdefault("experts", 4)
    params.setdefault("expert", {"op": TINY, "params": {}})
    moe = MoE(d_model=D_MODEL, causal=causal, router=router, **params)
    return moe.to(dtype)


def randomise_router(moe: MoE, std: float = 1.0) -> None:
    """noisy_topk starts with zero router weights; give every router distinct logits."""
    with torch.no_grad():
        for p in moe.router.parameters():
            p.normal_(0.0, std)


# ------------------------------------------------------------------------- forward, backward


@pytest.mark.parametrize("expert_op", EXPERT_OPS)
@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_forward_backward(router: str, expert_op: str) -> None:
    torch.manual_seed(0)
    moe = make_moe(router, k=2, capacity_factor=2.0, expert=expert_slot(expert_op))
    moe.train()
    x = torch.randn(BATCH, SEQ, D_MODEL, requires_grad=True)
    y = moe(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in moe.experts.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert moe.router.w_gate.grad is not None
    assert moe.router.w_gate.grad.abs().sum() > 0, "the task loss must reach the router"


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_aux_losses(router: str) -> None:
    torch.manual_seed(1)
    moe = make_moe(router, k=2, experts=4)
    moe.train()
    moe(torch.randn(BATCH, SEQ, D_MODEL))
    aux = collect_aux_losses(nn.Sequential(moe))
    assert set(aux) == AUX_KEYS[router]
    if not aux:
        return
    for value in aux.values():
        assert value.dim() == 0 and torch.isfinite(value)
    sum(aux.values()).backward()
    router_grads = [p.grad for p in moe.router.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in router_grads)
    assert all(g.abs().sum() > 0 for g in router_grads)


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_no_aux_losses_in_eval(router: str) -> None:
    moe = make_moe(router).eval()
    moe(torch.randn(BATCH, SEQ, D_MODEL))
    assert moe.aux_losses() == {}


# ------------------------------------------------------------------------------ causality


def assert_causal(moe: MoE, *, train: bool) -> None:
    """Outputs at positions ≤ t do not move when positions > t change."""
    moe.train(train)
    x = torch.randn(BATCH, SEQ, D_MODEL)
    for t in (0, SEQ // 2, SEQ - 2):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn(BATCH, SEQ - t - 1, D_MODEL) * 3.0
        torch.manual_seed(7)  # the same noise draws in training
        y = moe(x)
        torch.manual_seed(7)
        y2 = moe(x2)
        # Not bit-exact: when later tokens route elsewhere, an expert's matmul sees a batch of
        # another size, and on AVX-512 CPUs the GEMM then sums in another order (1 ulp, seen
        # at 3e-8). A leak of the 3x-scaled future moves outputs by orders of magnitude more.
        torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("router", CAUSAL_ROUTERS)
def test_causal_routers_are_causal(router: str, train: bool) -> None:
    # Switch drops tokens past an expert's capacity, so a token's output depends on which
    # other tokens took that expert's slots. capacity_factor = experts makes the capacity the
    # whole batch: nothing drops, and the check is about routing alone (dropping is checked
    # in test_switch_dropping_is_causal).
    torch.manual_seed(2)
    moe = make_moe(router, experts=4, k=2, capacity_factor=4.0)
    randomise_router(moe)
    assert_causal(moe, train=train)


def test_switch_dropping_is_causal() -> None:
    """Time-major dispatch: an earlier position always wins an expert's slot over a later one."""
    torch.manual_seed(3)
    moe = make_moe("switch", experts=4, capacity_factor=1.0)
    randomise_router(moe, std=3.0)
    moe.eval()
    x = torch.randn(BATCH, SEQ, D_MODEL)
    dropped = (moe(x).abs().sum(-1) == 0).sum()
    assert dropped > 0, "the case must actually drop tokens"
    assert_causal(moe, train=False)


def test_expert_choice_refused_on_causal_tasks() -> None:
    check = REGISTRY["moe"].param("router").check
    causal = Context(d_model=D_MODEL, causal=True)
    noncausal = Context(d_model=D_MODEL, causal=False)
    why = check("expert_choice", {}, causal)
    assert why is not None and "future" in why
    assert check("expert_choice", {}, noncausal) is None
    for router in CAUSAL_ROUTERS:
        assert check(router, {}, causal) is None
    with pytest.raises(ValueError, match="future"):
        make_moe("expert_choice", causal=True)


def test_param_checks() -> None:
    spec = REGISTRY["moe"]
    ctx = Context(d_model=D_MODEL, causal=True)
    assert spec.param("k").check(3, {"experts": 2}, ctx) is not None
    assert spec.param("k").check(2, {"experts": 2}, ctx) is None
    expert_check = spec.param("expert").check
    assert expert_check({"op": "mlp", "params": {}}, {}, ctx) is None
    assert expert_check({"op": "rmsnorm", "params": {}}, {}, ctx) is not None
    assert expert_check("mlp", {}, ctx) is not None
    with pytest.raises(ValueError, match="needs an expert"):
        MoE(d_model=D_MODEL, causal=True, router="switch")


# ----------------------------------------------------------------------------- capacity


def test_switch_capacity_drops_overflow() -> None:
    """All 32 tokens prefer expert 0; capacity ⌈32/2 · 1⌉ = 16 keeps the first 8 positions of
    both rows (time-major) and the rest leave the MoE as exact zeros."""
    torch.manual_seed(4)
    moe = make_moe("switch", experts=2, capacity_factor=1.0, dtype=torch.float64).eval()
    with torch.no_grad():
        moe.router.w_gate[0].fill_(1.0)
        moe.router.w_gate[1].fill_(-1.0)
    x = torch.rand(BATCH, SEQ, D_MODEL, dtype=torch.float64) + 0.1  # positive: expert 0 wins
    y = moe(x)
    kept = SEQ // 2
    assert (y[:, kept:] == 0).all()
    p0 = torch.softmax(x @ moe.router.w_gate.T, dim=-1)[..., 0:1]  # (B, T, 1)
    expected = p0[:, :kept] * moe.experts[0](x[:, :kept])
    torch.testing.assert_close(y[:, :kept], expected, atol=REF.atol, rtol=REF.rtol)


# ------------------------------------------------------------------------------- annealing


@pytest.mark.parametrize("router", ["softmax_d2s", "activation_d2s"])
def test_d2s_annealing(router: str) -> None:
    torch.manual_seed(5)
    moe = make_moe(router, experts=8, tau_start=4.0, tau_end=0.05, threshold=0.05)
    randomise_router(moe, std=0.2)  # logits of std ≈ 0.6: nearly uniform at τ = 4
    moe.eval()
    tokens = torch.randn(64, D_MODEL)
    rows = torch.arange(8)
    taus, active = [], []
    for frac in (0.0, 0.5, 1.0):
        moe.set_progress(frac)
        taus.append(float(moe.router.tau))
        active.append(int(moe.router(tokens, rows).dispatch.sum()))
    assert taus[0] == pytest.approx(4.0)
    assert taus[1] == pytest.approx(math.sqrt(4.0 * 0.05))
    assert taus[2] == pytest.approx(0.05)
    assert active[0] > active[1] > active[2], "annealing τ must make routing sparser"
    assert active[0] == 64 * 8, "at τ_start every expert is above the threshold"


def test_softmax_d2s_noise_only_in_training() -> None:
    torch.manual_seed(6)
    moe = make_moe("softmax_d2s", experts=4)
    x = torch.randn(BATCH, SEQ, D_MODEL)
    moe.eval()
    torch.testing.assert_close(moe(x), moe(x), rtol=0, atol=0)
    moe.train()
    assert not torch.equal(moe(x), moe(x))


# ---------------------------------------------------------------- dense reference outputs


def dense_reference(moe: MoE, x: torch.Tensor, weights_fn: Callable) -> torch.Tensor:
    """Σ_e W[:, e] · E_e(x), every expert run on every token: W from `weights_fn(tokens)`."""
    tokens = x.reshape(-1, x.shape[-1])  # (B·T, d)
    outs = torch.stack([e(tokens.unsqueeze(0)).squeeze(0) for e in moe.experts], 1)  # (n, E, d)
    weights = weights_fn(tokens)  # (n, E)
    return (weights.unsqueeze(-1) * outs).sum(1).reshape(x.shape)


def noisy_topk_weights(moe: MoE, tokens: torch.Tensor) -> torch.Tensor:
    logits = tokens @ moe.router.w_gate.T
    top = logits.topk(moe.k, dim=1)
    return torch.zeros_like(logits).scatter(1, top.indices, torch.softmax(top.values, 1))


def switch_weights(moe: MoE, tokens: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(tokens @ moe.router.w_gate.T, dim=1)
    return probs * F.one_hot(probs.argmax(1), probs.shape[1])


def expert_choice_weights(moe: MoE, tokens: torch.Tensor) -> torch.Tensor:
    scores = torch.softmax(tokens @ moe.router.w_gate.T, dim=1)  # (n, E)
    n, e = scores.shape
    k = math.ceil(n * moe.router.capacity_factor / e)
    chosen = torch.zeros_like(scores)
    for j in range(e):
        chosen[scores[:, j].topk(k).indices, j] = 1.0
    return scores * chosen


def d2s_weights(moe: MoE, tokens: torch.Tensor, act: Callable) -> torch.Tensor:
    probs = torch.softmax(act(tokens @ moe.router.w_gate.T) / moe.router.tau, dim=1)
    return probs * (probs >= moe.router.threshold)


REFERENCES: dict[str, tuple[dict, Callable]] = {
    # k = experts: G is the softmax over all experts (the 1-expert-equivalent configuration).
    "noisy_topk-k_all": ({"router": "noisy_topk", "k": 4}, noisy_topk_weights),
    "noisy_topk-k2": ({"router": "noisy_topk", "k": 2}, noisy_topk_weights),
    # capacity_factor = experts: nothing drops.
    "switch": ({"router": "switch", "capacity_factor": 4.0}, switch_weights),
    "expert_choice-c1": (
        {"router": "expert_choice", "capacity_factor": 1.0},
        expert_choice_weights,
    ),
    # c = experts: every expert takes every token, a plain softmax mixture.
    "expert_choice-c_all": (
        {"router": "expert_choice", "capacity_factor": 4.0},
        expert_choice_weights,
    ),
    "softmax_d2s": (
        {"router": "softmax_d2s", "tau_start": 0.5, "threshold": 0.1},
        lambda moe, t: d2s_weights(moe, t, lambda z: z),
    ),
    "activation_d2s": (
        {"router": "activation_d2s", "tau_start": 0.3, "threshold": 0.1},
        lambda moe, t: d2s_weights(moe, t, torch.tanh),
    ),
}


@pytest.mark.parametrize("case", list(REFERENCES))
def test_matches_dense_reference(case: str) -> None:
    params, weights_fn = REFERENCES[case]
    torch.manual_seed(8)
    moe = make_moe(experts=4, causal=False, dtype=torch.float64, **params).eval()
    randomise_router(moe)
    x = torch.randn(BATCH, SEQ, D_MODEL, dtype=torch.float64)
    # Same gradients too: the dispatch must not cut a path the dense form has. An expert no
    # token was routed to, and w_noise outside training, get zero gradients on both sides.
    assert_matches_reference(
        moe,
        lambda x: dense_reference(moe, x, lambda t: weights_fn(moe, t)),
        {"x": x},
        values=REF,
        grads=REF,
        module=moe,
        allow_unused=True,
    )


def test_sparse_dispatch_runs_experts_on_their_tokens_only() -> None:
    """Top-1 routing: the experts together see each token once, not E times."""
    torch.manual_seed(9)
    moe = make_moe("switch", experts=4, capacity_factor=4.0)
    randomise_router(moe)
    seen: list[int] = []
    for e in moe.experts:
        e.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    moe(torch.randn(BATCH, SEQ, D_MODEL))
    assert sum(seen) == BATCH * SEQ


@pytest.mark.parametrize("router", ALL_ROUTERS)
def test_router_float32_under_autocast(router: str) -> None:
    """bf16 autocast runs the experts in bf16 but keeps the routing logits in float32."""
    torch.manual_seed(10)
    moe = make_moe(router, experts=4, expert={"op": "mlp", "params": {"expand": 2.0}}).train()
    randomise_router(moe)
    x = torch.randn(BATCH, SEQ, D_MODEL)
    tokens = x.transpose(0, 1).reshape(-1, D_MODEL)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = moe(x)
        logits = moe.router.logits(tokens, moe.router.w_gate, torch.arange(4))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert logits.dtype == torch.float32
    for value in moe.aux_losses().values():
        assert value.dtype == torch.float32
