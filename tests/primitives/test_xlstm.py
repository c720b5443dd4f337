"""xLSTM mixers (mlstm, slstm): registration, forward + backward, causality, parameter counts,
initial gates, and each `forward` against its `forward_reference` in values and gradients
(float64, fixed tolerances)."""

from __future__ import annotations

import pytest
import torch
from mixerchecks import (
    assert_causal,
    assert_fast_form_matches_reference,
    assert_forward_backward,
    assert_registered_causal_mixer,
)

from gatesearch.primitives.xlstm import MLSTM, SLSTM, XLSTM_MIXERS
from gatesearch.primitives.xlstm_cells import FORGET_GATES
from gatesearch.registry import REGISTRY, Context, build_module

D = 8
CTX = Context(d_model=D, causal=True)
CHUNK = 5  # divides none of the parity lengths: the last chunk is always padded
# Gate weights and R start at zero: parity checks move every parameter off its initial value,
# so the gates vary over time and h feeds back through R.
PERTURB = 0.3

# Settings worth a parity check of their own: the defaults, and every option moved.
VARIANTS = {
    "mlstm": [
        {},
        {"forget": "exp", "expand": 1.0, "heads": 2, "conv_kernel": 0, "qkv_block": 2},
    ],
    "slstm": [{}, {"forget": "exp", "heads": 2, "conv_kernel": 0}],
}
CASES = [
    pytest.param(
        name, params, id=f"{name}-{'-'.join(f'{k}{v}' for k, v in params.items()) or 'default'}"
    )
    for name, variants in VARIANTS.items()
    for params in variants
]


def _build(name: str, params: dict, dtype=torch.float64, perturb: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"chunk_size": CHUNK} if name == "mlstm" else {}
    module = build_module(name, {**params, **kwargs}, CTX).to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * perturb)
    return module


def test_variants_cover_every_xlstm_mixer() -> None:
    assert set(VARIANTS) == set(XLSTM_MIXERS)


@pytest.mark.parametrize("name", XLSTM_MIXERS)
def test_registered_as_causal_mixer_with_admissible_defaults(name: str) -> None:
    assert_registered_causal_mixer(name, CTX)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_builds_and_runs_forward_backward(name: str, params: dict) -> None:
    assert_forward_backward(_build(name, params, torch.float32, PERTURB), 12, D)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_causal(name: str, params: dict) -> None:
    """Outputs up to a position do not move when later inputs change, across chunks."""
    assert_causal(_build(name, params, perturb=PERTURB), D)


@pytest.mark.parametrize("T", [1, 7, 64, 257], ids=lambda t: f"B2-T{t}-D{D}-C{CHUNK}")
@pytest.mark.parametrize(("name", "params"), CASES)
def test_fast_form_matches_reference_values_and_grads(name: str, params: dict, T: int) -> None:
    """mlstm: chunkwise against the step loop; slstm: the stabilised loop against the paper's
    unstabilised equations."""
    module = _build(name, params, perturb=PERTURB)
    assert_fast_form_matches_reference(module, T, D, allow_unused=True)


def test_every_setting_the_default_space_offers_builds_at_every_width() -> None:
    """The default space offers these mixers at widths 64–256 with 2, 4 or 8 heads, either forget
    gate, the mLSTM at expand 1 or 2: each combination builds and gives finite outputs and
    gradients."""
    torch.manual_seed(0)
    for width in (64, 128, 192, 256):
        ctx = Context(d_model=width, causal=True)
        x = torch.randn(1, 6, width)
        for heads in (2, 4, 8):
            for forget in FORGET_GATES:
                settings = [("slstm", {}), ("mlstm", {"expand": 1}), ("mlstm", {"expand": 2})]
                for name, params in settings:
                    params = {**params, "heads": heads, "forget": forget}
                    module = build_module(name, params, ctx)
                    y = module(x)
                    y.square().mean().backward()
                    assert y.shape == x.shape and torch.isfinite(y).all(), (name, params, width)
                    assert all(
                        p.grad is not None and torch.isfinite(p.grad).all()
                        for p in module.parameters()
                    ), (name, params, width)


# ------------------------------------------------------------------------ parameters, sizes


def test_heads_and_blocks_must_divide_the_widths() -> None:
    heads = REGISTRY["mlstm"].param("heads").check
    assert heads(8, {}, CTX) is None  # the mLSTM width is 2·8 = 16
    assert "does not divide the mLSTM width 12" in heads(8, {"expand": 1.5}, CTX)
    block = REGISTRY["mlstm"].param("qkv_block").check
    assert "does not divide the mLSTM width 16" in block(32, {}, CTX)
    assert "does not divide" in REGISTRY["slstm"].param("heads").check(16, {}, CTX)
    with pytest.raises(ValueError, match="heads=3 does not divide the mLSTM width 16"):
        MLSTM(d_model=D, heads=3)
    with pytest.raises(ValueError, match="qkv_block=32"):
        MLSTM(d_model=D, qkv_block=32)
    with pytest.raises(ValueError, match="heads=3 does not divide the model width 8"):
        SLSTM(d_model=D, heads=3)
    with pytest.raises(ValueError, match="forget='relu'"):
        SLSTM(d_model=D, forget="relu")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_hand() -> None:
    """d = 16, 4 heads, conv 4 (depthwise, with bias), no other biases but the gates'."""
    d, H = 16, 4
    w = 2 * d  # mLSTM width at expand 2
    # W_up (d → 2w), conv, q/k/v block-diagonal with blocks of 4 (w·4 each), gates from
    # [q; k; v] to ĩ, f̃ per head with biases, per-head norm weight, skip, W_down.
    mlstm = d * 2 * w + (w * 4 + w) + 3 * w * 4 + (3 * w * 2 * H + 2 * H) + w + w + w * d
    assert _count(MLSTM(d_model=d)) == mlstm
    assert _count(MLSTM(d_model=d, expand=1, qkv_block=8, conv_kernel=0)) == (
        d * 2 * d + 3 * d * 8 + (3 * d * 2 * H + 2 * H) + d + d + d * d
    )
    # sLSTM: conv; per head W (i, f from the conv, z, o from x) and R, d_h × 4·d_h each;
    # the four gates' biases; per-head norm weight.
    dh = d // H
    slstm = (d * 4 + d) + H * dh * 4 * dh + H * dh * 4 * dh + 4 * d + d
    assert _count(SLSTM(d_model=d)) == slstm


@pytest.mark.parametrize("forget", FORGET_GATES)
def test_gates_start_as_the_reference_initialises_them(forget: str) -> None:
    """Either form starts with the same forget values, f ∈ [σ(3), σ(6)], independent of x (zero
    weights; R = 0 in the sLSTM)."""
    low, high = torch.sigmoid(torch.tensor([3.0, 6.0])).tolist()

    def forget_values(bias: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(bias) if forget == "sigmoid" else bias.exp()

    mlstm = MLSTM(d_model=32, forget=forget)
    assert not mlstm.gates.weight.any()
    f = forget_values(mlstm.gates.bias.detach()[mlstm.heads :])
    assert f.min() >= low - 1e-6 and f.max() <= high + 1e-6
    slstm = SLSTM(d_model=32, forget=forget)
    assert not slstm.recurrent.any()
    f = forget_values(slstm.bias.detach().reshape(slstm.heads, 4, -1)[:, 1])
    assert f.min() >= low - 1e-6 and f.max() <= high + 1e-6
