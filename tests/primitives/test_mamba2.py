"""The Mamba-2 mixer: registration, forward + backward, causality, parameter counts, and the
chunked `forward` against the step-loop `forward_reference` in values and gradients (float64,
fixed tolerances)."""

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

from gatesearch.primitives.mamba2 import Mamba2
from gatesearch.registry import REGISTRY, Context, build_module

D = 16
CTX = Context(d_model=D, causal=True)
CHUNK = 5  # divides none of the parity lengths: the last chunk is always padded

# Settings worth a parity check of their own: the defaults (4 heads, one group), and every
# option moved (two groups of one head, no convolution, no expansion, a small state).
VARIANTS = [{}, {"heads": 2, "d_state": 16, "expand": 1, "groups": 2, "conv_kernel": 0}]
CASES = [
    pytest.param(params, id="-".join(f"{k}{v}" for k, v in params.items()) or "default")
    for params in VARIANTS
]


def _build(params: dict, dtype=torch.float64, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_module("mamba2", {**params, **kwargs}, CTX).to(dtype)


def test_registered_as_causal_mixer_with_admissible_defaults() -> None:
    assert_registered_causal_mixer("mamba2", CTX)


@pytest.mark.parametrize("params", CASES)
def test_builds_and_runs_forward_backward(params: dict) -> None:
    assert_forward_backward(_build(params, dtype=torch.float32), 40, D)


def test_every_setting_the_default_space_offers_builds_at_every_width() -> None:
    """The default space offers mamba2 at widths 64–256 with 2, 4 or 8 heads, d_state 16 or 64,
    expand 1 or 2 and conv kernel 2 or 4: each combination builds and gives finite outputs
    and gradients (conv kernel is swept at one width: it meets no other setting)."""
    torch.manual_seed(0)
    settings = [
        (width, {"heads": heads, "d_state": d_state, "expand": expand})
        for width in (64, 128, 192, 256)
        for heads in (2, 4, 8)
        for d_state in (16, 64)
        for expand in (1, 2)
    ]
    settings.append((64, {"conv_kernel": 2}))
    for width, params in settings:
        module = build_module("mamba2", params, Context(d_model=width, causal=True))
        x = torch.randn(1, 12, width)
        y = module(x)
        y.square().mean().backward()
        assert y.shape == x.shape and torch.isfinite(y).all(), (width, params)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize("params", CASES)
def test_causal(params: dict) -> None:
    """Outputs up to a position do not move when later inputs change, across chunks."""
    assert_causal(_build(params, chunk_size=CHUNK), D)


@pytest.mark.parametrize("T", [1, 7, 64, 257], ids=lambda t: f"B2-T{t}-D{D}-C{CHUNK}")
@pytest.mark.parametrize("params", CASES)
def test_chunked_matches_step_loop_values_and_grads(params: dict, T: int) -> None:
    module = _build(params, chunk_size=CHUNK)
    assert_fast_form_matches_reference(module, T, D)


# ------------------------------------------------------------------------ parameters, sizes


def test_heads_and_groups_must_fit() -> None:
    spec = REGISTRY["mamba2"]
    heads, groups = spec.param("heads").check, spec.param("groups").check
    assert heads(8, {}, CTX) is None and groups(2, {"heads": 8}, CTX) is None
    assert "does not divide" in heads(16, {}, Context(d_model=24, causal=True))
    assert "multiple of groups" in heads(2, {"groups": 4}, CTX)
    assert "does not divide heads" in groups(8, {}, CTX)  # heads at its default, 4
    with pytest.raises(ValueError, match="does not divide the inner width"):
        Mamba2(d_model=6, heads=4, expand=1)
    with pytest.raises(ValueError, match="groups=4 does not divide heads=2"):
        Mamba2(d_model=D, heads=2, groups=4)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_hand() -> None:
    """d = 16, expand 2 (E = 32), H = 4, N = 64, one group, conv 4."""
    d, E, H, N = D, 32, 4, 64
    # W_in gives z (E), x (E), B and C (N each) and δ (H); the depthwise conv has a bias;
    # A_log, dt_bias and D per head; the norm's weight E; W_out E·d; no other biases.
    conv = (E + 2 * N) * (4 + 1)
    assert _count(Mamba2(d_model=d)) == d * (2 * E + 2 * N + H) + conv + 3 * H + E + E * d
    # Groups multiply B and C (and their conv channels); expand 1 and no conv shrink the rest.
    small = Mamba2(d_model=d, heads=2, d_state=16, expand=1, groups=2, conv_kernel=0)
    assert _count(small) == d * (2 * d + 2 * 2 * 16 + 2) + 3 * 2 + d + d * d


def test_decay_step_and_skip_start_in_mamba2s_range() -> None:
    """A ∈ −[1, 16], Δ = softplus(dt_bias) ∈ [1e-3, 0.1] at a zero pre-activation, D = 1."""
    module = Mamba2(d_model=64, heads=8)
    rate = module.A_log.detach().exp()
    step = F.softplus(module.dt_bias.detach())
    assert rate.min() >= 1.0 - 1e-5 and rate.max() <= 16.0 + 1e-5
    assert step.min() >= 1e-3 * (1 - 1e-4) and step.max() <= 0.1 * (1 + 1e-4)
    assert torch.equal(module.D.detach(), torch.ones(8))


def test_the_gated_norm_normalises_each_group_after_the_gate() -> None:
    """RMSNorm(y ⊙ SiLU(z)) over each group's E/G channels (gate first, as Mamba-2), times w."""
    module = _build({"heads": 4, "groups": 2})
    torch.manual_seed(2)
    y, z = torch.randn(2, 3, 4, 8, dtype=torch.float64), torch.randn(2, 3, 32, dtype=torch.float64)
    with torch.no_grad():
        module.norm_weight.uniform_(0.5, 1.5)
        module.out_proj.weight.copy_(torch.eye(D, 32, dtype=torch.float64))  # keep E[:d]
        got = module._output(y, z)
    gated = (y.reshape(2, 3, 32) * F.silu(z)).reshape(2, 3, 2, 16)
    normed = gated / gated.square().mean(-1, keepdim=True).add(1e-5).sqrt()
    expected = (normed.reshape(2, 3, 32) * module.norm_weight.detach())[..., :D]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
