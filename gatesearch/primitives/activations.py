"""Activations, registered so that `act=` parameters name them from the one registry."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.registry import REGISTRY, Role, register


@register("relu", Role.ACTIVATION)
class ReLU(Primitive):
    """y = max(x, 0)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


@register("gelu", Role.ACTIVATION)
class GELU(Primitive):
    """y = x·Φ(x) (exact, erf-based)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


@register("silu", Role.ACTIVATION)
class SiLU(Primitive):
    """y = x·σ(x)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


@register("tanh", Role.ACTIVATION)
class Tanh(Primitive):
    """y = tanh(x)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@register("sigmoid", Role.ACTIVATION)
class Sigmoid(Primitive):
    """y = σ(x)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@register("squared_relu", Role.ACTIVATION)
class SquaredReLU(Primitive):
    """y = max(x, 0)² (Primer)"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


@register("mish", Role.ACTIVATION)
class Mish(Primitive):
    """y = x·tanh(softplus(x))"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


@register("swish_beta", Role.ACTIVATION)
class SwishBeta(Primitive):
    """y = x·σ(β⊙x), β a learned vector (one per channel), initialised to 1 (= SiLU)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


def make_activation(name: str, width: int) -> nn.Module:
    """The activation named `name` for tensors whose last dimension is `width`."""
    spec = REGISTRY[name]
    if spec.role is not Role.ACTIVATION:
        raise ValueError(f"{name!r} is a {spec.role.value}, not an activation")
    return spec.module(d_model=width)
