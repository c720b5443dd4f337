"""The delta rule's chunked form against its step loop: values and gradients, float64, fixed
tolerances, with no decay, a scalar decay per head and a decay per key channel."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives.delta_rule import (
    delta_rule_chunked,
    delta_rule_reference,
    unit_lower_inverse,
)

F64 = Tolerance(atol=1e-10, rtol=1e-8)
ATOL_F32_VS_F64 = 1e-4

LENGTHS = [1, 7, 64, 257]
DECAYS = ["none", "scalar", "channel"]
DT = torch.float64
B, H, K, V = 2, 3, 4, 5


def _inputs(
    T: int, decay: str, decay_scale: float = 1.0, dtype: torch.dtype = DT
) -> dict[str, torch.Tensor]:
    """Unit keys (as the modules feed them), β ∈ (0, 1), log α = logsigmoid(·)·scale."""
    inputs = {
        "q": torch.randn(B, T, H, K, dtype=dtype),
        "k": F.normalize(torch.randn(B, T, H, K, dtype=dtype), dim=-1),
        "v": torch.randn(B, T, H, V, dtype=dtype),
        "beta": torch.rand(B, T, H, dtype=dtype),
    }
    if decay != "none":
        shape = (B, T, H) if decay == "scalar" else (B, T, H, K)
        inputs["log_alpha"] = F.logsigmoid(torch.randn(*shape, dtype=dtype)) * decay_scale
    return inputs


def _check(fast: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor]) -> None:
    # An input the output does not depend on (the decay at T = 1) gets a zero gradient.
    assert_matches_reference(
        fast, delta_rule_reference, inputs, values=F64, grads=F64, allow_unused=True
    )


@pytest.mark.parametrize("chunk", [5, 16], ids=["C5", "C16"])
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B{B}-T{t}-H{H}K{K}V{V}")
@pytest.mark.parametrize("decay", DECAYS)
def test_chunked_matches_step_loop(decay: str, T: int, chunk: int) -> None:
    """C = 5 divides none of the lengths: every case has a padded last chunk; C = 16 > 7."""
    torch.manual_seed(T)
    _check(lambda *args: delta_rule_chunked(*args, chunk_size=chunk), _inputs(T, decay))


@pytest.mark.parametrize("T", [64, 257], ids=lambda t: f"B{B}-T{t}-H{H}K{K}V{V}")
@pytest.mark.parametrize("decay", ["scalar", "channel"])
def test_chunked_matches_step_loop_under_strong_decay(decay: str, T: int) -> None:
    """Decays of ~50 nats a step: a 16-step chunk spans more than float64's factorisable
    range, so the channel decay takes its exact in-chunk form."""
    torch.manual_seed(T)
    inputs = _inputs(T, decay, 70.0)
    span = -inputs["log_alpha"][:, :16].sum(dim=1).min()  # the most-decayed first chunk
    assert span > 0.5 * math.log(torch.finfo(DT).max)  # beyond what e^{±A} can hold
    _check(lambda *args: delta_rule_chunked(*args, chunk_size=16), inputs)


def test_float32_strong_channel_decay_stays_finite() -> None:
    torch.manual_seed(0)
    inputs64 = list(_inputs(64, "channel", decay_scale=10.0).values())
    inputs32 = [t.float().requires_grad_() for t in inputs64]
    out32 = delta_rule_chunked(*inputs32, chunk_size=16)
    out32.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs32)
    expected = delta_rule_reference(*inputs64)
    torch.testing.assert_close(out32.double(), expected, atol=ATOL_F32_VS_F64, rtol=1e-4)


def test_beta_zero_writes_nothing_and_beta_one_overwrites() -> None:
    """β = 0 leaves the state alone (zero output); β = 1 with one repeated key makes the
    state recall exactly the last value written under it."""
    torch.manual_seed(0)
    inputs = _inputs(9, "none")
    silent = delta_rule_chunked(*{**inputs, "beta": torch.zeros(B, 9, H, dtype=DT)}.values())
    assert silent.abs().max() == 0
    key = inputs["k"][:, :1].expand(B, 9, H, K)
    out = delta_rule_chunked(key, key, inputs["v"], torch.ones(B, 9, H, dtype=DT), chunk_size=4)
    torch.testing.assert_close(out, inputs["v"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("C", [1, 2, 5, 16, 33])
def test_unit_lower_inverse_inverts(C: int) -> None:
    torch.manual_seed(C)
    n = torch.randn(3, 2, C, C, dtype=DT).tril(-1)
    eye = torch.eye(C, dtype=DT)
    got = unit_lower_inverse(n)
    torch.testing.assert_close(got @ (eye + n), eye.expand_as(n), atol=1e-10, rtol=0)
    torch.testing.assert_close(got, torch.linalg.inv(eye + n), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("decay", "scale"),
    [("scalar", 1.0), ("channel", 1.0), ("channel", 70.0)],
    ids=["scalar", "channel-factorised", "channel-exact"],
)
def test_chunked_compiles_in_one_graph(decay: str, scale: float) -> None:
    """torch.compile traces the chunked form, forward and backward, without a graph break
    (fullgraph refuses one), and computes what eager does, on either channel formula."""
    torch.manual_seed(1)
    torch._dynamo.reset()
    compiled = torch.compile(delta_rule_chunked, backend="eager", fullgraph=True)
    assert_matches_reference(
        partial(compiled, chunk_size=16),
        partial(delta_rule_chunked, chunk_size=16),
        _inputs(37, decay, scale),
        values=F64,
        grads=F64,
    )
