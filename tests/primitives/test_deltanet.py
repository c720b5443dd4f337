"""Delta-rule mixers (deltanet, gated_deltanet): registration, forward + backward, causality,
parameter counts, and the chunked `forward` against the step-loop `forward_reference` in
values and gradients (float64, fixed tolerances)."""

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

from gatesearch.primitives.deltanet import DELTA_RULES, DeltaNet, GatedDeltaNet
from gatesearch.registry import REGISTRY, Context, build_module

D = 16
CTX = Context(d_model=D, causal=True)
CHUNK = 5  # divides none of the parity lengths: the last chunk is always padded

# Settings worth a parity check of their own: the defaults, and every option moved.
VARIANTS = {
    "deltanet": [{}, {"heads": 2, "key_dim": 6, "conv_kernel": 0, "output_gate": True}],
    "gated_deltanet": [
        {},
        {"decay": "channel"},
        {"heads": 2, "key_dim": 3, "conv_kernel": 2, "output_gate": False, "decay": "channel"},
    ],
}
CASES = [
    pytest.param(
        name, params, id=f"{name}-{'-'.join(f'{k}{v}' for k, v in params.items()) or 'default'}"
    )
    for name, variants in VARIANTS.items()
    for params in variants
]


def _build(name: str, params: dict | None = None, dtype=torch.float64, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_module(name, {**(params or {}), **kwargs}, CTX).to(dtype)


def test_variants_cover_every_delta_rule() -> None:
    assert set(VARIANTS) == set(DELTA_RULES)


@pytest.mark.parametrize("name", DELTA_RULES)
def test_registered_as_causal_mixer_with_admissible_defaults(name: str) -> None:
    assert_registered_causal_mixer(name, CTX)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_builds_and_runs_forward_backward(name: str, params: dict) -> None:
    assert_forward_backward(_build(name, params, dtype=torch.float32), 40, D)


def test_every_setting_the_default_space_offers_builds_at_every_width() -> None:
    """The default space offers these mixers at widths 64–256 with 2, 4 or 8 heads, DeltaNet with
    or without its output gate, Gated DeltaNet with either decay: each combination builds and
    gives finite outputs and gradients (a sweep, cheaper and surer than sampling for them)."""
    settings = [
        ("deltanet", {"output_gate": False}),
        ("deltanet", {"output_gate": True}),
        ("gated_deltanet", {"decay": "scalar"}),
        ("gated_deltanet", {"decay": "channel"}),
    ]
    torch.manual_seed(0)
    for width in (64, 128, 192, 256):
        ctx = Context(d_model=width, causal=True)
        x = torch.randn(1, 12, width)
        for heads in (2, 4, 8):
            for name, params in settings:
                module = build_module(name, {**params, "heads": heads}, ctx)
                y = module(x)
                y.square().mean().backward()
                grads = [p.grad for p in module.parameters()]
                assert y.shape == x.shape and torch.isfinite(y).all(), (name, params, width)
                assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_causal(name: str, params: dict) -> None:
    """Outputs up to a position do not move when later inputs change, across chunks."""
    assert_causal(_build(name, params, chunk_size=CHUNK), D)


@pytest.mark.parametrize("T", [1, 7, 64, 257], ids=lambda t: f"B2-T{t}-D{D}-C{CHUNK}")
@pytest.mark.parametrize(("name", "params"), CASES)
def test_chunked_matches_step_loop_values_and_grads(name: str, params: dict, T: int) -> None:
    module = _build(name, params, chunk_size=CHUNK)
    assert_fast_form_matches_reference(module, T, D, allow_unused=True)


# ------------------------------------------------------------------------ parameters, sizes


def test_heads_must_divide_the_width() -> None:
    check = REGISTRY["deltanet"].param("heads").check
    assert check(8, {}, CTX) is None
    assert "does not divide" in check(16, {}, Context(d_model=24, causal=True))
    with pytest.raises(ValueError, match="does not divide"):
        GatedDeltaNet(d_model=24, heads=16)
    with pytest.raises(ValueError, match="decay"):
        GatedDeltaNet(d_model=D, decay="vector")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_hand() -> None:
    """d = 16, H = 4 (d_k = d_v = 4), conv 4, no biases anywhere."""
    d, H = D, 4
    qkv = 3 * d
    conv, norm, out = qkv * 4, d // H, d * d
    assert _count(DeltaNet(d_model=d)) == d * (qkv + H) + conv + norm + out
    # + output gate W_g (d·d), decay pre-activation W_a (d·H), A_log and dt_bias per head.
    gated = d * (qkv + d + 2 * H) + conv + 2 * H + norm + out
    assert _count(GatedDeltaNet(d_model=d)) == gated
    # Channel decay: W_a is d -> d_k -> H·d_k instead, dt_bias per key channel.
    channel = d * (qkv + d + H) + (d * 4 + 4 * d) + conv + H + d + norm + out
    assert _count(GatedDeltaNet(d_model=d, decay="channel")) == channel
    # key_dim widens q and k (and the conv on them) only.
    wide = DeltaNet(d_model=d, key_dim=8, conv_kernel=0)
    assert _count(wide) == d * (2 * H * 8 + d + H) + norm + out


@pytest.mark.parametrize("decay", ["scalar", "channel"])
def test_decay_starts_in_mamba2s_range(decay: str) -> None:
    """α = e^{−A·softplus(dt_bias)} at a zero pre-activation lies in [e^{−16·0.1}, e^{−1e−3}]."""
    module = GatedDeltaNet(d_model=64, decay=decay)
    rate = module.A_log.detach().exp()
    step = F.softplus(module.dt_bias.detach())
    assert rate.min() >= 1.0 - 1e-5 and rate.max() <= 16.0 + 1e-5
    assert step.min() >= 1e-3 * (1 - 1e-4) and step.max() <= 0.1 * (1 + 1e-4)
    log_alpha = -rate.repeat_interleave(step.numel() // rate.numel()) * step
    assert log_alpha.max() <= -1e-3 * (1 - 1e-4) and log_alpha.min() >= -1.6 * (1 + 1e-4)
