"""The one check every fast path owes its reference: equal values, and equal gradients for the
same random cotangent, on every input and every parameter (imported by the primitive tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Tolerance:
    """Bounds handed to `torch.testing.assert_close`: |fast − ref| ≤ atol + rtol·|ref|."""

    atol: float
    rtol: float


def _leaves(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Each side gets its own leaves, so neither can see (or write into) the other's graph.
    return {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}


def _named(leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"input {name}": t for name, t in leaves.items()}


def _prefixed(label: str) -> Callable[[str], str]:
    # assert_close's own message (how many elements, the worst difference) stays readable.
    return lambda message: f"{label}: {message}"


def _gradients(
    out: torch.Tensor,
    wrt: dict[str, torch.Tensor],
    probe: torch.Tensor,
    allow_unused: bool,
) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(
        (out * probe).sum(),
        list(wrt.values()),
        allow_unused=allow_unused,
        materialize_grads=allow_unused,
    )
    return dict(zip(wrt, grads))


def assert_matches_reference(
    fast: Callable[..., torch.Tensor],
    reference: Callable[..., torch.Tensor],
    inputs: Mapping[str, torch.Tensor],
    *,
    values: Tolerance,
    grads: Tolerance,
    module: nn.Module | None = None,
    allow_unused: bool = False,
) -> torch.Tensor:
    """Run `fast` and `reference` on copies of `inputs` (passed positionally, in order);
    assert their outputs equal within `values`, then backpropagate one random cotangent (the
    probe) through both and assert the gradient of every input and of every parameter of
    `module` (the parameters both sides share) equal within `grads`. The fast path's output
    and gradients must also be finite (an inf on both sides would pass `assert_close`).

    `allow_unused`: a tensor one side never reaches gets a zero gradient instead of failing
    the check (a decay at T = 1, an expert no token was routed to). Without it every input and
    parameter must be reached by both sides. Returns the fast output, detached."""
    fast_in, ref_in = _leaves(inputs), _leaves(inputs)
    out_fast = fast(*fast_in.values())
    out_ref = reference(*ref_in.values())
    assert torch.isfinite(out_fast).all(), "the fast output is not finite"
    torch.testing.assert_close(out_fast, out_ref, atol=values.atol, rtol=values.rtol)

    params = {
        f"parameter {name}": p
        for name, p in (module.named_parameters() if module is not None else ())
        if p.requires_grad
    }
    probe = torch.randn_like(out_ref)
    g_fast = _gradients(out_fast, {**_named(fast_in), **params}, probe, allow_unused)
    g_ref = _gradients(out_ref, {**_named(ref_in), **params}, probe, allow_unused)
    for name, g in g_fast.items():
        assert torch.isfinite(g).all(), f"the fast gradient of {name} is not finite"
        torch.testing.assert_close(
            g,
            g_ref[name],
            atol=grads.atol,
            rtol=grads.rtol,
            msg=_prefixed(f"gradient of {name}"),
        )
    return out_fast.detach()
