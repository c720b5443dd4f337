"""Channel mixers (mlp, glu) and the gated convolution: einsum references for values and
gradients, causality, hand-counted parameters, and pruning hidden channels without changing
the function."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from reference import Tolerance, assert_matches_reference
from torch import nn

from gatesearch.primitives import collect_aux_losses
from gatesearch.primitives.channel import GLU, MLP, GatedConv
from gatesearch.registry import REGISTRY, Context, Role, build_module

B, T, D = 2, 16, 24
VALUES = Tolerance(atol=1e-10, rtol=0)  # float64 fast path vs reference
GRADS = Tolerance(atol=1e-10, rtol=0)
PRUNE_ATOL = 1e-10  # float64 outputs before vs after prune_()
CHANGED = 1e-6


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


# Written out here so the references do not reuse the registry's activations.
REFERENCE_ACTS = {
    "relu": lambda x, m: torch.where(x > 0, x, torch.zeros_like(x)),
    "gelu": lambda x, m: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "silu": lambda x, m: x * _sigmoid(x),
    "sigmoid": lambda x, m: _sigmoid(x),
    "squared_relu": lambda x, m: torch.where(x > 0, x, torch.zeros_like(x)) ** 2,
    "swish_beta": lambda x, m: x * _sigmoid(m.act.beta * x),
    "identity": lambda x, m: x,
}
GLU_ACT = {"glu": "sigmoid", "bilinear": "identity", "reglu": "relu"}
GLU_ACT |= {"geglu": "gelu", "swiglu": "silu"}


def reference_mlp(m: MLP, act: str, x: torch.Tensor) -> torch.Tensor:
    h = REFERENCE_ACTS[act](torch.einsum("btd,hd->bth", x, m.up.weight), m)
    return torch.einsum("bth,dh->btd", h, m.down.weight)


def reference_glu(m: GLU, x: torch.Tensor) -> torch.Tensor:
    w, v = m.up.weight[: m.hidden], m.up.weight[m.hidden :]
    a = torch.einsum("btd,hd->bth", x, w)
    b = torch.einsum("btd,hd->bth", x, v)
    h = REFERENCE_ACTS[GLU_ACT[m.variant]](a, m) * b
    return torch.einsum("bth,dh->btd", h, m.down.weight)


def reference_gcnn(m: GatedConv, x: torch.Tensor) -> torch.Tensor:
    """u_t = Σ_j W_j x_{t+j−left} + bias (zero outside [0, T)); h = u[:d] ⊙ σ(u[d:])."""
    k, d = m.kernel, x.shape[-1]
    left = k - 1 if m.causal else (k - 1) // 2
    u = m.conv.bias.expand(x.shape[0], x.shape[1], 2 * d).clone()
    for t in range(x.shape[1]):
        for j in range(k):
            s = t + j - left
            if 0 <= s < x.shape[1]:
                u[:, t] = u[:, t] + torch.einsum("bd,ed->be", x[:, s], m.conv.weight[:, :, j])
    h = u[..., :d] * _sigmoid(u[..., d:])
    return torch.einsum("bte,de->btd", h, m.proj.weight)


def _check_against_reference(m: nn.Module, reference: Any) -> None:
    """Values and gradients (input and every parameter) of m vs reference(x), float64."""
    torch.manual_seed(1)
    x = torch.randn(B, T, D, dtype=torch.float64)
    y = assert_matches_reference(m, reference, {"x": x}, values=VALUES, grads=GRADS, module=m)
    assert y.shape == (B, T, D)


def _build(op: str, causal: bool = True, **params: Any) -> nn.Module:
    return build_module(op, params, Context(d_model=D, causal=causal)).double()


def _randomise_beta(m: nn.Module) -> None:
    # β starts at 1 (= SiLU); random per-channel values check that it is sliced per channel.
    beta = getattr(m.act, "beta", None)
    if beta is not None:
        with torch.no_grad():
            beta.uniform_(0.5, 2.0)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------- registry


def test_registered_roles_and_params() -> None:
    roles = {name: REGISTRY[name].role for name in ("mlp", "glu", "gcnn")}
    assert roles == {"mlp": Role.CHANNEL, "glu": Role.CHANNEL, "gcnn": Role.MIXER}
    assert REGISTRY["gcnn"].context == ("d_model", "causal")
    mlp, glu = REGISTRY["mlp"], REGISTRY["glu"]
    assert [p.name for p in mlp.grammar_params()] == ["expand", "act", "prune"]
    assert [p.name for p in glu.grammar_params()] == ["variant", "expand", "prune"]
    assert mlp.param("act").ref is Role.ACTIVATION and mlp.param("act").default == "gelu"
    assert mlp.param("hidden").internal and glu.param("hidden").internal
    assert set(glu.param("variant").domain.values) == set(GLU_ACT)


@pytest.mark.parametrize(
    ("op", "params", "message"),
    [
        ("glu", {"variant": "tanhglu"}, "variant must be one of"),
        ("mlp", {"expand": 0.0}, "expand must be positive"),
        ("mlp", {"hidden": 0}, "hidden must be at least 1"),
        ("gcnn", {"kernel": 0}, "kernel must be at least 1"),
    ],
    ids=["glu-variant", "mlp-expand0", "mlp-hidden0", "gcnn-kernel0"],
)
def test_invalid_params_raise(op: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _build(op, **params)


# ----------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("expand", [1.0, 4.0], ids=["E1", "E4"])
@pytest.mark.parametrize("act", ["relu", "gelu", "silu", "squared_relu", "swish_beta"])
def test_mlp_matches_reference(act: str, expand: float) -> None:
    torch.manual_seed(0)
    m = _build("mlp", expand=expand, act=act)
    _randomise_beta(m)
    assert m.hidden == round(expand * D)
    _check_against_reference(m, lambda x: reference_mlp(m, act, x))


@pytest.mark.parametrize("expand", [8.0 / 3.0, 3.0], ids=["E8of3", "E3"])
@pytest.mark.parametrize("variant", list(GLU_ACT))
def test_glu_matches_reference(variant: str, expand: float) -> None:
    torch.manual_seed(0)
    m = _build("glu", variant=variant, expand=expand)
    assert m.hidden == round(expand * D)
    _check_against_reference(m, lambda x: reference_glu(m, x))


@pytest.mark.parametrize("kernel", [1, 3, 4], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gcnn_matches_reference(causal: bool, kernel: int) -> None:
    torch.manual_seed(0)
    m = _build("gcnn", causal=causal, kernel=kernel)
    _check_against_reference(m, lambda x: reference_gcnn(m, x))


@pytest.mark.parametrize("kernel", [1, 4], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gcnn_sees_only_its_receptive_field(causal: bool, kernel: int) -> None:
    torch.manual_seed(0)
    m = _build("gcnn", causal=causal, kernel=kernel)
    x = torch.randn(B, T, D, dtype=torch.float64)
    x2 = x.clone()
    s = 7
    x2[:, s] += 1.0
    with torch.no_grad():
        effect = (m(x2) - m(x)).abs().amax(dim=(0, 2))
    t = torch.arange(T)
    left = kernel - 1 if causal else (kernel - 1) // 2
    # y_t reads x_{t−left .. t−left+k−1}.
    sees = (s >= t - left) & (s <= t - left + kernel - 1)
    if causal:
        assert effect[:s].max() == 0.0
    assert effect[~sees].max() == 0.0
    assert (effect[sees] > CHANGED).all()


def test_training_mode_pruning_gates_report_sparsity() -> None:
    torch.manual_seed(0)
    m = GLU(d_model=D, prune="trainable")
    x = torch.randn(B, T, D, requires_grad=True)
    m(x).square().mean().backward()
    assert m.channel_gate.w.grad is not None
    assert "sparsity" in collect_aux_losses(m)


# ---------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("op", "params", "expected"),
    [
        ("glu", {"variant": "swiglu", "expand": 8.0 / 3.0}, 3 * 48 * 128),  # LLaMA: h = 128
        ("glu", {"variant": "geglu", "expand": 3.0}, 9 * 48 * 48),  # Hawk: 3·d·3d
        ("mlp", {"expand": 4.0}, 8 * 48 * 48),
        ("mlp", {"expand": 4.0, "act": "swish_beta"}, 8 * 48 * 48 + 192),  # + β per channel
        ("mlp", {"expand": 4.0, "hidden": 100}, 2 * 48 * 100),  # hidden overrides expand
        ("glu", {"prune": "trainable", "expand": 2.0}, 3 * 48 * 96 + 96),  # + a gate per channel
        ("gcnn", {"kernel": 4}, 2 * 4 * 48 * 48 + 2 * 48 + 48 * 48),
    ],
    ids=["swiglu-8of3", "hawk-geglu-3", "mlp-4", "mlp-swish-beta", "mlp-hidden", "glu-gated",
         "gcnn-k4"],
)  # fmt: skip
def test_parameter_counts_match_hand_counts(op: str, params: dict[str, Any], expected: int) -> None:
    m = build_module(op, params, Context(d_model=48, causal=True))
    assert _count(m) == expected


# ---------------------------------------------------------------------------------- pruning

CLOSED = [0, 3, 4, 10, 17, 30, 47]


def _close_channels(m: MLP | GLU, kind: str, all_closed: bool) -> None:
    gate = m.channel_gate
    with torch.no_grad():
        if kind == "trainable":
            gate.w.uniform_(0.1, 2.0)
            gate.w[CLOSED] = -1.0
            if all_closed:
                gate.w.fill_(-1.0)
        else:  # l0: values strictly between 0 and 1 exercise the folding into W₂
            gate.log_alpha.uniform_(-1.0, 3.0)
            gate.log_alpha[CLOSED] = -10.0
            if all_closed:
                gate.log_alpha.fill_(-10.0)


PRUNABLE = [
    ("mlp", {"act": "gelu", "expand": 2.0}),
    ("mlp", {"act": "swish_beta", "expand": 2.0}),
    ("glu", {"variant": "swiglu", "expand": 2.0}),
    ("glu", {"variant": "geglu", "expand": 2.0}),
]


@pytest.mark.parametrize("all_closed", [False, True], ids=["some-closed", "all-closed"])
@pytest.mark.parametrize("kind", ["trainable", "l0"])
@pytest.mark.parametrize(
    ("op", "params"), PRUNABLE, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values()))
)  # fmt: skip
def test_prune_removes_closed_channels_and_keeps_the_function(
    op: str, params: dict[str, Any], kind: str, all_closed: bool
) -> None:
    torch.manual_seed(0)
    params = {**params, "prune": kind}
    m = _build(op, **params)
    _randomise_beta(m)
    _close_channels(m, kind, all_closed)
    hidden = m.hidden
    kept = 1 if all_closed else hidden - len(CLOSED)
    assert m.open_units() == kept
    m.eval()
    x = torch.randn(B, T, D, dtype=torch.float64)
    before = m(x)
    n_before = _count(m)

    updates = m.prune_()
    assert updates == {"hidden": kept, "prune": "none"}
    assert m.hidden == kept and m.channel_gate is None
    assert m.down.in_features == kept
    assert _count(m) < n_before
    torch.testing.assert_close(m(x), before, atol=PRUNE_ATOL, rtol=0)

    # The updated parameters rebuild the same architecture, so the graph can carry the result.
    rebuilt = _build(op, **{**params, **updates})
    rebuilt.load_state_dict(m.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), before, atol=PRUNE_ATOL, rtol=0)


@pytest.mark.parametrize("op", ["mlp", "glu"])
def test_prune_without_gates_changes_nothing(op: str) -> None:
    m = _build(op)
    n = _count(m)
    assert m.open_units() == m.hidden
    assert m.prune_() == {"hidden": m.hidden, "prune": "none"}
    assert _count(m) == n
