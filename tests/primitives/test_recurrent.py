"""Recurrent mixers: registration, forward + backward, causality, and every linear recurrence's
parallel form against its step loop in values and gradients (float64, fixed tolerances)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mixerchecks import (
    assert_causal,
    assert_fast_form_matches_reference,
    assert_forward_backward,
    assert_registered_causal_mixer,
)

from gatesearch.primitives.recurrent import GLA, HGRN, LINEAR_RECURRENCES, RGLRU, IndRNN
from gatesearch.registry import REGISTRY, Context, build_module

D = 16
CTX = Context(d_model=D, causal=True)
ALL_RECURRENCES = ["lstm", "gru", "mgu", "indrnn", "lem", *LINEAR_RECURRENCES]

# Non-default parameter settings worth a parity check of their own.
VARIANTS = {
    "mingru": [{}, {"expand": 2.0}],
    "minlstm": [{}, {"expand": 1.5}],
    "rglru": [{}, {"expand": 1.5, "blocks": 4, "conv_kernel": 2}],
    "hgrn": [{}, {"lower_bound": 0.9}],
    "gla": [{}, {"heads": 2}],
}
PARITY_CASES = [
    pytest.param(
        name,
        params,
        T,
        id=f"{name}-{'-'.join(f'{k}{v}' for k, v in params.items()) or 'default'}-B2-T{T}-D{D}",
    )
    for name, variants in VARIANTS.items()
    for params in variants
    for T in (1, 7, 64, 257)
]


def _build(name: str, params: dict | None = None, dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_module(name, params or {}, CTX).to(dtype)


def test_linear_recurrence_variants_cover_every_linear_recurrence() -> None:
    assert set(VARIANTS) == set(LINEAR_RECURRENCES)


@pytest.mark.parametrize("name", ALL_RECURRENCES)
def test_registered_as_mixer_with_admissible_defaults(name: str) -> None:
    assert_registered_causal_mixer(name, CTX)


@pytest.mark.parametrize("name", ALL_RECURRENCES)
def test_forward_backward_shapes_and_finite_grads(name: str) -> None:
    assert_forward_backward(_build(name, dtype=torch.float32), 16, D)


@pytest.mark.parametrize("name", ALL_RECURRENCES)
def test_causal(name: str) -> None:
    assert_causal(_build(name), D)


@pytest.mark.parametrize(("name", "params", "T"), PARITY_CASES)
def test_parallel_matches_step_loop_values_and_grads(name: str, params: dict, T: int) -> None:
    module = _build(name, params)
    assert_fast_form_matches_reference(module, T, D, allow_unused=True)


# ------------------------------------------------------------------------------ parameters


def test_rglru_blocks_must_divide_recurrence_width() -> None:
    check = REGISTRY["rglru"].param("blocks").check
    # round(4/3 · 16) = 21: only 1 divides it.
    assert check(1, {}, CTX) is None
    assert "does not divide" in check(2, {}, CTX)
    assert check(4, {"expand": 1.5}, CTX) is None  # width 24
    with pytest.raises(ValueError, match="does not divide"):
        RGLRU(d_model=D, blocks=2)


def test_gla_heads_must_divide_model_and_key_widths() -> None:
    check = REGISTRY["gla"].param("heads").check
    assert check(8, {}, CTX) is None  # d = 16, key width 8
    assert "key width" in check(16, {}, CTX)
    with pytest.raises(ValueError, match="key width"):
        GLA(d_model=D, heads=16)


def test_rglru_decay_initialised_in_range() -> None:
    module = RGLRU(d_model=64)
    base = torch.exp(-F.softplus(module.lam.detach()))  # a_t^{1/8} at r = 1
    assert base.min() >= RGLRU.min_radius - 1e-6 and base.max() <= RGLRU.max_radius + 1e-6


def test_rglru_sqrt_gradient_is_capped() -> None:
    module = _build("rglru")
    with torch.no_grad():
        module.lam.fill_(-30.0)  # a → 1, so √(1 − a²) has a near-infinite derivative
    x = torch.randn(1, 8, D, dtype=torch.float64, requires_grad=True)
    module(x).sum().backward()
    assert torch.isfinite(module.lam.grad).all() and torch.isfinite(x.grad).all()


def test_hgrn_forget_gate_respects_lower_bound() -> None:
    gamma = 0.9
    module = HGRN(d_model=D, lower_bound=gamma).double()
    x = 50.0 * torch.randn(2, 32, D, dtype=torch.float64)
    f, _, _ = module._coefficients(x)
    assert f.min() >= gamma and f.max() <= 1.0
    with pytest.raises(ValueError, match="lower_bound"):
        HGRN(d_model=D, lower_bound=1.0)


def test_indrnn_clips_recurrent_weight() -> None:
    module = IndRNN(d_model=D, u_max=1.0).double()
    x = torch.randn(2, 12, D, dtype=torch.float64)
    with torch.no_grad():
        module.u.fill_(1.0)
    clipped = module(x)
    with torch.no_grad():
        module.u.fill_(5.0)
    torch.testing.assert_close(module(x), clipped, atol=0, rtol=0)
