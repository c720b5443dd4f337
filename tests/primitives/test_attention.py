"""Attention: every gate option against an einsum reference (values and gradients), causality
and local windows, hand-counted parameters, and pruning heads without changing the function."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives import collect_aux_losses
from gatesearch.primitives.attention import Attention
from gatesearch.registry import REGISTRY, Context, Role, build_module

B, T, D, HEADS = 2, 16, 32, 4
VALUES = Tolerance(atol=1e-10, rtol=0)  # float64 fast path vs einsum reference
GRADS = Tolerance(atol=1e-10, rtol=0)
PRUNE_ATOL = 1e-10  # float64 outputs before vs after prune_()
CHANGED = 1e-6  # a perturbation is visible when some output moves by more than this
QK_EPS = 1e-6
ROPE_BASE = 10_000.0


# -------------------------------------------------------------------------- the reference


def _phi(g: torch.Tensor, act: str) -> torch.Tensor:
    sig = 1.0 / (1.0 + torch.exp(-g))
    return sig if act == "sigmoid" else g * sig


def _rope_matrices(t: int, dh: int) -> torch.Tensor:
    """(T, d_h, d_h) rotations: channel i pairs with i + d_h/2 at angle t·base^(−2i/d_h)."""
    half = dh // 2
    r = torch.zeros(t, dh, dh, dtype=torch.float64)
    for pos in range(t):
        for i in range(half):
            theta = pos * ROPE_BASE ** (-2.0 * i / dh)
            c, s = math.cos(theta), math.sin(theta)
            r[pos, i, i], r[pos, i, i + half] = c, -s
            r[pos, i + half, i + half], r[pos, i + half, i] = c, s
    return r


def _allowed(t: int, causal: bool, window: int) -> torch.Tensor:
    allowed = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            in_time = j <= i or not causal
            in_window = window == 0 or abs(i - j) < window
            allowed[i, j] = in_time and in_window
    return allowed


def reference_attention(m: Attention, x: torch.Tensor) -> torch.Tensor:
    """Gated multi-head attention written out with einsum, explicit masks and softmax."""
    b, t, _ = x.shape
    h, dh = m.heads, m.head_dim
    w_q, w_theta = m.q_proj.weight[: h * dh], m.q_proj.weight[h * dh :]
    q = torch.einsum("btd,ed->bte", x, w_q).reshape(b, t, h, dh)
    k = torch.einsum("btd,ed->bte", x, m.k_proj.weight).reshape(b, t, h, dh)
    v = torch.einsum("btd,ed->bte", x, m.v_proj.weight).reshape(b, t, h, dh)
    g = torch.einsum("btd,ed->bte", x, w_theta)
    if m.gate in ("g1", "g2", "g3", "g4"):
        g = g.reshape(b, t, h, -1)

    def gate(y: torch.Tensor) -> torch.Tensor:
        phi = _phi(g, m.gate_act)
        return y * phi if m.gate_mode == "multiplicative" else y + phi

    if m.gate == "g2":
        v = gate(v)
    if m.q_norm is not None:
        q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + QK_EPS) * m.q_norm
        k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + QK_EPS) * m.k_norm
    if m.gate == "g3":
        k = gate(k)
    if m.gate == "g4":
        q = gate(q)
    if m.rope:
        rot = _rope_matrices(t, dh)
        q = torch.einsum("tfe,bthe->bthf", rot, q)
        k = torch.einsum("tfe,bthe->bthf", rot, k)
    scores = torch.einsum("bihe,bjhe->bhij", q, k) / math.sqrt(dh)
    scores = scores.masked_fill(~_allowed(t, m.causal, m.window), -math.inf)
    p = torch.softmax(scores, dim=-1)
    o = torch.einsum("bhij,bjhe->bihe", p, v)
    if m.gate == "g1":
        o = gate(o)
    out = torch.einsum("bte,de->btd", o.reshape(b, t, h * dh), m.o_proj.weight)
    if m.gate == "g5":
        out = gate(out)
    return out


# ---------------------------------------------------------------------------- configurations

GATE_CONFIGS: list[dict[str, Any]] = [{"gate": "none"}] + [
    {"gate": gate, "gate_granularity": gran, "gate_act": act, "gate_mode": mode}
    for gate, gran, act, mode in itertools.product(
        ("g1", "g2", "g3", "g4", "g5"),
        ("elementwise", "headwise"),
        ("sigmoid", "silu"),
        ("multiplicative", "additive"),
    )
    if not (gate == "g5" and gran == "headwise")
]
POSITIONAL = [{"rope": True, "qk_norm": False}, {"rope": True, "qk_norm": True}]
POSITIONAL += [{"rope": False, "qk_norm": False}]


def _gate_id(cfg: dict[str, Any]) -> str:
    if cfg["gate"] == "none":
        return "nogate"
    mode = "mul" if cfg["gate_mode"] == "multiplicative" else "add"
    return f"{cfg['gate']}-{cfg['gate_granularity']}-{cfg['gate_act']}-{mode}"


def _pos_id(cfg: dict[str, Any]) -> str:
    return ("rope" if cfg["rope"] else "norope") + ("-qknorm" if cfg["qk_norm"] else "")


def _build(causal: bool, **params: Any) -> Attention:
    params.setdefault("heads", HEADS)
    m = build_module("attention", params, Context(d_model=D, causal=causal))
    assert isinstance(m, Attention)
    return m.double()


def _randomise_norms(m: Attention) -> None:
    # Norm weights start at 1; random ones make the reference check their placement.
    with torch.no_grad():
        for w in (m.q_norm, m.k_norm):
            if w is not None:
                w.uniform_(0.5, 1.5)


# ------------------------------------------------------------------------------------- tests


def test_registered_as_mixer_with_causal_context() -> None:
    spec = REGISTRY["attention"]
    assert spec.role is Role.MIXER
    assert spec.context == ("d_model", "causal")
    assert [p.name for p in spec.grammar_params()] == [
        "heads",
        "rope",
        "qk_norm",
        "window",
        "gate",
        "gate_granularity",
        "gate_act",
        "gate_mode",
        "prune",
    ]
    assert spec.param("head_dim").internal


def test_param_checks_explain_misfits() -> None:
    spec = REGISTRY["attention"]
    ctx = Context(d_model=D, causal=True)
    heads = spec.param("heads")
    assert heads.check(4, {}, ctx) is None
    assert "does not divide" in heads.check(5, {}, ctx)
    assert heads.check(3, {"head_dim": 8}, ctx) is None  # pruned: heads·head_dim ≠ d is fine
    assert "even head size" in spec.param("rope").check(True, {"heads": 32}, ctx)
    gran = spec.param("gate_granularity")
    assert "elementwise" in gran.check("headwise", {"gate": "g5"}, ctx)
    assert gran.check("headwise", {"gate": "g1"}, ctx) is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"heads": 5}, "does not divide"),
        ({"heads": 32}, "even head size"),
        ({"gate": "g5", "gate_granularity": "headwise"}, "no heads"),
        ({"gate": "g7"}, "gate must be one of"),
        ({"gate_act": "tanh"}, "gate_act must be one of"),
        ({"window": -1}, "window"),
    ],
    ids=["heads5", "odd-head-rope", "g5-headwise", "g7", "tanh", "window-neg"],
)
def test_invalid_params_raise(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Attention(d_model=D, causal=True, **params)


@pytest.mark.parametrize("pos", POSITIONAL, ids=_pos_id)
@pytest.mark.parametrize("window", [0, 4], ids=["W0", "W4"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("gate_cfg", GATE_CONFIGS, ids=_gate_id)
def test_forward_backward_matches_reference(
    gate_cfg: dict[str, Any], causal: bool, window: int, pos: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    m = _build(causal, window=window, **gate_cfg, **pos)
    _randomise_norms(m)
    x = torch.randn(B, T, D, dtype=torch.float64)
    y = assert_matches_reference(
        m, lambda x: reference_attention(m, x), {"x": x}, values=VALUES, grads=GRADS, module=m
    )
    assert y.shape == (B, T, D)


def test_float32_forward_backward_with_pruning_gate() -> None:
    torch.manual_seed(0)
    m = Attention(d_model=D, causal=True, heads=HEADS, gate="g1", qk_norm=True, prune="l0")
    x = torch.randn(B, T, D, requires_grad=True)
    m(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert "sparsity" in collect_aux_losses(m)


def _perturbation_effect(m: Attention, s: int) -> torch.Tensor:
    """(T,) max |Δy_t| when only x_s changes."""
    torch.manual_seed(1)
    x = torch.randn(B, T, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, s] += torch.randn(B, D, dtype=torch.float64)
    with torch.no_grad():
        return (m(x2) - m(x)).abs().amax(dim=(0, 2))


CAUSALITY_GATES = [c for c in GATE_CONFIGS if c["gate"] == "none" or c["gate_act"] == "sigmoid"]


@pytest.mark.parametrize("gate_cfg", [*CAUSALITY_GATES[::3], GATE_CONFIGS[-1]], ids=_gate_id)
def test_causal_output_ignores_the_future(gate_cfg: dict[str, Any]) -> None:
    torch.manual_seed(0)
    m = _build(True, qk_norm=True, **gate_cfg)
    s = 9
    effect = _perturbation_effect(m, s)
    assert effect[:s].max() == 0.0
    assert (effect[s:] > CHANGED).all()


@pytest.mark.parametrize("window", [1, 3, 6], ids=lambda w: f"W{w}")
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_local_window_sees_only_its_window(causal: bool, window: int) -> None:
    torch.manual_seed(0)
    m = _build(causal, window=window, gate="g2", gate_granularity="headwise")
    s = 8
    effect = _perturbation_effect(m, s)
    t = torch.arange(T)
    # x_s reaches y_t through key/value s (s inside t's window) or through the query (t = s).
    sees = (t >= s) & (t - s < window) if causal else (t - s).abs() < window
    assert effect[~sees].max() == 0.0
    assert (effect[sees] > CHANGED).all()


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, 4 * 64 * 64),  # LLaMA: W_Q, W_K, W_V, W_O
        ({"gate": "g1", "qk_norm": True}, 4 * 64 * 64 + 64 * 64 + 2 * 16),  # Qwen3 G1 elementwise
        # Qwen3 G1 headwise: + d·H gate, + 2·d_h QK-norm
        ({"gate": "g1", "gate_granularity": "headwise", "qk_norm": True}, 4 * 64 * 64 + 256 + 32),
        ({"gate": "g3", "gate_granularity": "headwise"}, 4 * 64 * 64 + 64 * 4),
        ({"gate": "g5"}, 5 * 64 * 64),
        ({"prune": "trainable"}, 4 * 64 * 64 + 4),
    ],
    ids=["llama", "qwen3-g1-elem", "qwen3-g1-head", "g3-head", "g5-elem", "pruning-gates"],
)
def test_parameter_counts_match_hand_counts(params: dict[str, Any], expected: int) -> None:
    m = Attention(d_model=64, causal=True, heads=4, **params)
    assert _count(m) == expected


PRUNE_GATES = [
    {"gate": "none"},
    {"gate": "g1"},
    {"gate": "g1", "gate_granularity": "headwise", "qk_norm": True},
    {"gate": "g2", "gate_mode": "additive"},
    {"gate": "g3", "gate_granularity": "headwise", "gate_act": "silu"},
    {"gate": "g4"},
    {"gate": "g5", "gate_mode": "additive"},
]


def _close_heads(m: Attention, kind: str, closed: list[int], all_closed: bool) -> None:
    gate = m.head_gate
    with torch.no_grad():
        if kind == "trainable":
            gate.w.copy_(torch.tensor([0.5, 1.0, 0.3, 2.0]))
            gate.w[closed] = -1.0
            if all_closed:
                gate.w.fill_(-1.0)
        else:  # l0: values strictly between 0 and 1 exercise the folding into W_O
            gate.log_alpha.copy_(torch.tensor([2.0, 0.5, 1.0, -0.5]))
            gate.log_alpha[closed] = -10.0
            if all_closed:
                gate.log_alpha.fill_(-10.0)


@pytest.mark.parametrize("all_closed", [False, True], ids=["two-closed", "all-closed"])
@pytest.mark.parametrize("kind", ["trainable", "l0"])
@pytest.mark.parametrize(
    "gate_cfg", PRUNE_GATES, ids=lambda c: "-".join(str(v) for v in c.values())
)
def test_prune_removes_closed_heads_and_keeps_the_function(
    gate_cfg: dict[str, Any], kind: str, all_closed: bool
) -> None:
    torch.manual_seed(0)
    params = {"heads": HEADS, "window": 5, "prune": kind, **gate_cfg}
    m = _build(True, **params)
    _randomise_norms(m)
    _close_heads(m, kind, closed=[1, 3], all_closed=all_closed)
    kept = 1 if all_closed else 2
    assert m.open_units() == kept
    m.eval()
    x = torch.randn(B, T, D, dtype=torch.float64)
    before = m(x)
    n_before = _count(m)

    updates = m.prune_()
    assert updates == {"heads": kept, "head_dim": D // HEADS, "prune": "none"}
    assert m.heads == kept and m.head_gate is None
    assert _count(m) < n_before
    assert m.o_proj.in_features == kept * (D // HEADS)
    torch.testing.assert_close(m(x), before, atol=PRUNE_ATOL, rtol=0)

    # The updated parameters rebuild the same architecture, so the graph can carry the result.
    rebuilt = _build(True, **{**params, **updates})
    rebuilt.load_state_dict(m.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), before, atol=PRUNE_ATOL, rtol=0)


def test_prune_without_gates_changes_nothing() -> None:
    m = Attention(d_model=D, causal=False, heads=HEADS)
    n = _count(m)
    assert m.open_units() == HEADS
    assert m.prune_() == {"heads": HEADS, "head_dim": D // HEADS, "prune": "none"}
    assert _count(m) == n
