"""What every primitive shares (gatesearch.primitives.base): the decode state each one keeps
per sequence, counted by hand here for each mixer, and summed over a model."""

from __future__ import annotations

import pytest
import torch

from gatesearch.arch.build import STATE_BYTES_PER_VALUE, build_model, decode_state_bytes
from gatesearch.arch.space import SPACES_DIR, graph_context, load_known
from gatesearch.primitives.attention import Attention
from gatesearch.primitives.base import NoDecodeState, Primitive, decode_state
from gatesearch.registry import REGISTRY, Context, Role, build_module, register

D = 32
CAUSAL = Context(d_model=D, causal=True)

# (op, params, values kept after any number of positions), counted from each paper's
# recurrence: what a step-by-step decoder carries to the next position.
FIXED_STATES = [
    ("lstm", {}, 2 * D),  # h and c
    ("gru", {}, D),
    ("mgu", {}, D),
    ("indrnn", {}, D),
    ("lem", {}, 2 * D),  # y and z
    ("mingru", {"expand": 2.0}, 2 * D),  # h at the recurrence width
    ("minlstm", {"expand": 1.0}, D),
    ("rglru", {"expand": 1.0, "conv_kernel": 4}, D + 3 * D),  # h, the conv's last 3 inputs
    ("hgrn", {}, D),
    ("gla", {"heads": 4}, 4 * (D // 2 // 4) * (D // 4)),  # S: d_k = d/2H, d_v = d/H per head
    # S (d/H × d/H per head), and the short conv's last 3 inputs of q, k and v (3d wide).
    ("deltanet", {"heads": 2}, 2 * 16 * 16 + 3 * 3 * D),
    ("gated_deltanet", {"heads": 2, "decay": "channel"}, 2 * 16 * 16 + 3 * 3 * D),
    ("deltanet", {"heads": 2, "conv_kernel": 0}, 2 * 16 * 16),
    ("gcnn", {"kernel": 4}, 3 * D),  # the causal convolution's last k − 1 inputs
    # h (d_head × d_state per head, inner width 2d), and the conv's last 3 of x, B, C.
    ("mamba2", {"heads": 4, "d_state": 16, "expand": 2}, 4 * 16 * 16 + 3 * (2 * D + 2 * 16)),
    # C (d_h × d_h), n (d_h) and m per head at the inner width 2d (d_h = 2d/4 = 16), and the
    # conv's last 3 inputs (2d wide); without the conv, the memory alone.
    ("mlstm", {"heads": 4}, 4 * (16 * 16 + 16 + 1) + 3 * 2 * D),
    ("mlstm", {"heads": 2, "expand": 1.0, "conv_kernel": 0}, 2 * (16 * 16 + 16 + 1)),
    ("slstm", {"heads": 4}, 4 * D + 3 * D),  # h, c, n, m; the conv's last 3 inputs
]


@pytest.mark.parametrize(("op", "params", "values"), FIXED_STATES, ids=lambda v: str(v))
def test_a_recurrence_keeps_a_fixed_state_whatever_the_context(op, params, values):
    module = build_module(op, params, CAUSAL)
    assert decode_state(module, 1) == decode_state(module, 4096) == values


def test_every_registered_causal_mixer_is_counted_here():
    counted = {op for op, _, _ in FIXED_STATES} | {"attention"}
    mixers = {name for name in REGISTRY.names(Role.MIXER) if REGISTRY[name].causal_ok}
    assert mixers <= counted, f"no hand count of the decode state of {mixers - counted}"


def test_attention_caches_keys_and_values_of_every_position_or_its_window():
    assert decode_state(build_module("attention", {"heads": 4}, CAUSAL), 100) == 2 * 100 * D
    local = build_module("attention", {"heads": 4, "window": 16}, CAUSAL)
    # The next query reads its own key and the window's 15 before it.
    assert decode_state(local, 100) == 2 * 15 * D
    assert decode_state(local, 5) == 2 * 5 * D


def test_pruned_heads_leave_the_kv_cache():
    attn = Attention(D, causal=True, heads=4, prune="trainable")
    with torch.no_grad():
        attn.head_gate.w[:2] = -1.0  # two heads closed
    attn.prune_()
    assert attn.heads == 2 and decode_state(attn, 10) == 2 * 10 * 2 * (D // 4)


def test_non_causal_mixing_has_no_decode_state():
    bidirectional = build_module(
        "bidirectional", {"cell": {"op": "gru", "params": {}}}, Context(D, causal=False)
    )
    for module in (bidirectional, build_module("attention", {}, Context(D, causal=False))):
        with pytest.raises(NoDecodeState):
            decode_state(module, 10)


def test_a_model_keeps_the_sum_of_its_layers_states_in_bytes():
    # LLaMA (4 attention blocks at width 128; SwiGLU channels keep nothing) and Griffin (two
    # RG-LRU blocks of width 4/3·192 with a 4-wide conv, one local attention of window 32).
    llama = load_known(SPACES_DIR / "known" / "llama.toml").graph
    ctx = graph_context(llama)
    assert decode_state_bytes(build_model(llama, ctx), ctx, 64) == 4 * (4 * 2 * 64 * 128)
    griffin = load_known(SPACES_DIR / "known" / "griffin.toml").graph
    ctx = graph_context(griffin)
    width = 256  # round(192 · 4/3)
    values = 2 * (width + 3 * width) + 2 * 31 * 192
    assert decode_state_bytes(build_model(griffin, ctx), ctx, 64) == STATE_BYTES_PER_VALUE * values
    assert decode_state_bytes(build_model(griffin, ctx), Context(192, causal=False), 64) is None


def test_a_mixer_that_does_not_state_its_decode_state_is_refused():
    class Forgetful(Primitive):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.cumsum(1)  # mixes positions, yet would inherit "keeps nothing"

    with pytest.raises(TypeError, match="decode_state"):
        register("forgetful_test_mixer", Role.MIXER)(Forgetful)
    assert "forgetful_test_mixer" not in REGISTRY
