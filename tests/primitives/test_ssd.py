"""Mamba-2's SSD recurrence: the chunked form against the step loop in values and gradients
(float64, fixed tolerances), and the step loop against the equation where it has a closed form."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from reference import Tolerance, assert_matches_reference

from gatesearch.primitives.ssd import ssd_chunked, ssd_reference

F64 = Tolerance(atol=1e-10, rtol=1e-8)
ATOL_F32_VS_F64 = 1e-4

LENGTHS = [1, 7, 64, 257]
DT = torch.float64
B, H, P, N = 2, 4, 3, 5


def _inputs(
    T: int, groups: int, decay_scale: float = 1.0, dtype: torch.dtype = DT
) -> dict[str, torch.Tensor]:
    """Δ = softplus(·) > 0, A = −U(0.5, 2)·scale < 0, D any sign, as the module feeds them."""
    return {
        "x": torch.randn(B, T, H, P, dtype=dtype),
        "dt": F.softplus(torch.randn(B, T, H, dtype=dtype)),
        "A": -(torch.rand(H, dtype=dtype) * 1.5 + 0.5) * decay_scale,
        "B": torch.randn(B, T, groups, N, dtype=dtype),
        "C": torch.randn(B, T, groups, N, dtype=dtype),
        "D": torch.randn(H, dtype=dtype),
    }


@pytest.mark.parametrize("chunk", [5, 16], ids=["C5", "C16"])
@pytest.mark.parametrize("T", LENGTHS, ids=lambda t: f"B{B}-T{t}-H{H}P{P}N{N}")
@pytest.mark.parametrize("groups", [1, 2], ids=["G1", "G2"])
def test_chunked_matches_step_loop(groups: int, T: int, chunk: int) -> None:
    """C = 5 divides none of the lengths: every case has a padded last chunk; C = 16 > 7.
    Two groups: each B and C feeds two of the four heads."""
    torch.manual_seed(T)
    assert_matches_reference(
        partial(ssd_chunked, chunk_size=chunk),
        ssd_reference,
        _inputs(T, groups),
        values=F64,
        grads=F64,
    )


def test_chunked_matches_step_loop_under_strong_decay() -> None:
    """Decays of tens of nats a step: a chunk spans far more than any dtype's exponent range,
    and every factor stays finite because each exponent is masked to ≤ 0 before `exp`."""
    torch.manual_seed(0)
    inputs = _inputs(64, 2, decay_scale=40.0)
    assert (inputs["dt"][:, :16] * inputs["A"]).sum(dim=1).min() < -800  # e^{800} overflows
    assert_matches_reference(
        partial(ssd_chunked, chunk_size=16), ssd_reference, inputs, values=F64, grads=F64
    )


def test_float32_chunked_is_close_to_the_float64_loop() -> None:
    torch.manual_seed(0)
    inputs64 = _inputs(100, 2)
    inputs32 = [t.float().requires_grad_() for t in inputs64.values()]
    out32 = ssd_chunked(*inputs32, chunk_size=16)
    out32.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in inputs32)
    expected = ssd_reference(*inputs64.values())
    torch.testing.assert_close(out32.double(), expected, atol=ATOL_F32_VS_F64, rtol=1e-4)


def test_the_loop_computes_the_recurrence_where_it_has_a_closed_form() -> None:
    """A decay e^{ΔA} that underflows to 0: nothing is remembered, y_t = (C_t·B_t) Δ_t x_t + D x_t; Δ = 0: no
    write and no decay, y = D x; no D: the skip is gone."""
    torch.manual_seed(0)
    x, dt, _, Bm, Cm, D = _inputs(9, 2).values()
    forget = torch.full((H,), -1e6, dtype=DT)
    per_head = (Cm * Bm).sum(-1).repeat_interleave(H // 2, dim=2)  # (B, T, H): C_t·B_t
    expected = per_head[..., None] * dt[..., None] * x + D[:, None] * x
    for fn in (ssd_reference, partial(ssd_chunked, chunk_size=4)):
        torch.testing.assert_close(fn(x, dt, forget, Bm, Cm, D), expected, atol=1e-12, rtol=0)
        silent = fn(x, torch.zeros_like(dt), -torch.ones(H, dtype=DT), Bm, Cm, D)
        torch.testing.assert_close(silent, D[:, None] * x, atol=1e-12, rtol=0)
        skip = fn(x, dt, -torch.ones(H, dtype=DT), Bm, Cm, D) - D[:, None] * x
        no_skip = fn(x, dt, -torch.ones(H, dtype=DT), Bm, Cm)
        torch.testing.assert_close(no_skip, skip, atol=1e-12, rtol=0)


def test_groups_must_divide_the_heads() -> None:
    x, dt, A, Bm, Cm, D = _inputs(4, 3).values()
    for fn in (ssd_reference, ssd_chunked):
        with pytest.raises(ValueError, match="dividing the 4 heads"):
            fn(x, dt, A, Bm, Cm, D)
