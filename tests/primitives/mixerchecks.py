"""Checks every sequence mixer owes, whatever its family (imported by the recurrent,
delta-rule and xLSTM tests): registered as a causal mixer whose defaults are admissible, finite outputs
and gradients on every parameter, and outputs that ignore the future."""

from __future__ import annotations

import torch
from reference import Tolerance, assert_matches_reference
from torch import nn

from gatesearch.registry import REGISTRY, Context, Role

# A fast form against its reference, in float64: equal to rounding.
F64 = Tolerance(atol=1e-10, rtol=1e-8)

ATOL_CAUSAL = 1e-12


def assert_registered_causal_mixer(name: str, ctx: Context) -> None:
    """A mixer that may be causal, each default in its domain and passing its context check
    given the defaults before it."""
    spec = REGISTRY[name]
    assert spec.role is Role.MIXER and spec.causal_ok
    chosen: dict = {}
    for param in spec.grammar_params():
        assert param.domain is not None and param.domain.contains(param.default), param.name
        if param.check is not None:
            assert param.check(param.default, chosen, ctx) is None, param.name
        chosen[param.name] = param.default


def assert_forward_backward(module: nn.Module, length: int, width: int) -> None:
    """(2, length, width) in and out; the input's and every parameter's gradient finite (and
    the input's not all zero)."""
    x = torch.randn(2, length, width, requires_grad=True)
    y = module(x)
    assert y.shape == (2, length, width)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def assert_causal(module: nn.Module, width: int, length: int = 16, cut: int = 9) -> None:
    """Outputs up to `cut` do not move when the inputs after it change; later ones do
    (float64)."""
    torch.manual_seed(1)
    x = torch.randn(2, length, width, dtype=torch.float64)
    x_changed = x.clone()
    x_changed[:, cut + 1 :] = torch.randn(2, length - cut - 1, width, dtype=torch.float64)
    y, y_changed = module(x), module(x_changed)
    torch.testing.assert_close(y[:, : cut + 1], y_changed[:, : cut + 1], atol=ATOL_CAUSAL, rtol=0)
    assert not torch.allclose(y[:, cut + 1 :], y_changed[:, cut + 1 :])


def assert_fast_form_matches_reference(
    module: nn.Module, length: int, width: int, allow_unused: bool = False
) -> None:
    """`module`'s forward (its chunked or parallel form) against its `forward_reference` (the
    step loop, or the paper's equations) on a float64 (2, length, width) input seeded by the
    length: values and every gradient within F64. `allow_unused`: for parameters a length-1
    sequence never reaches (a decay, a recurrent matrix reading h_0 = 0)."""
    torch.manual_seed(length)
    x = torch.randn(2, length, width, dtype=torch.float64)
    assert_matches_reference(
        module,
        module.forward_reference,  # type: ignore[arg-type]
        {"x": x},
        values=F64,
        grads=F64,
        module=module,
        allow_unused=allow_unused,
    )
