"""Trainable pruning gates: one scalar gate per unit (channel, head or expert).

A primitive with `prune="trainable"` or `prune="l0"` multiplies each unit's output by its gate
during training and adds the gate's sparsity loss; `Prunable.prune_()` then removes the units
whose test-time gate is 0 and folds the others into the weights, so the pruned model computes
the same function with fewer units.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import nn

from gatesearch.primitives.base import AUX_SPARSITY, Primitive
from gatesearch.registry import REGISTRY, ParamSpec, Role, register


class PruningGate(Primitive):
    """Gate values z ∈ [0, 1]^n for n units; `forward()` takes no input."""

    n: int

    @abstractmethod
    def forward(self) -> torch.Tensor:
        """(n,) gate values: stochastic or straight-through in training, final in eval."""

    @abstractmethod
    def sparsity_loss(self) -> torch.Tensor:
        """Scalar penalty pushing gates closed; weighted by the trainer."""

    @abstractmethod
    def final_values(self) -> torch.Tensor:
        """(n,) deterministic test-time gates; units at exactly 0 are pruned."""

    def keep_mask(self) -> torch.Tensor:
        return self.final_values() > 0


@register("trainable", Role.PRUNING_GATE)
class TrainableGate(PruningGate):
    """Plug-in trainable gate (Kim et al., AAAI 2020).

    TG(w) = step(w) in the forward pass; the backward pass sees the shaping gradient
    g(w) = 4σ(4w)(1 − σ(4w)) through step(w) + g(w).detach()·(w − w.detach()).
    Sparsity loss: |mean(TG(w)) − target|, the resource (fraction of units kept) vs its target.
    w starts at 1 so every unit starts open.
    """

    def __init__(self, d_model: int, target: float = 0.5) -> None:
        super().__init__()
        self.n = d_model
        self.target = target
        self.w = nn.Parameter(torch.ones(d_model))

    def _tg(self) -> torch.Tensor:
        step = (self.w > 0).to(self.w.dtype)
        s = torch.sigmoid(4.0 * self.w)
        shaping = (4.0 * s * (1.0 - s)).detach()
        return step + shaping * (self.w - self.w.detach())

    def forward(self) -> torch.Tensor:
        tg = self._tg()
        self._aux = {AUX_SPARSITY: self.sparsity_loss_from(tg)} if self.training else {}
        return tg

    def sparsity_loss_from(self, tg: torch.Tensor) -> torch.Tensor:
        return (tg.mean() - self.target).abs()

    def sparsity_loss(self) -> torch.Tensor:
        return self.sparsity_loss_from(self._tg())

    def final_values(self) -> torch.Tensor:
        return (self.w > 0).to(self.w.dtype).detach()


@register("l0", Role.PRUNING_GATE)
class HardConcreteGate(PruningGate):
    """Hard-concrete L0 gate (Louizos et al. 2018).

    Training: u ~ U(0,1), s = σ((log u − log(1−u) + log α)/β), z = clamp(s(ζ−γ)+γ, 0, 1).
    Test: z = clamp(σ(log α)(ζ−γ)+γ, 0, 1). Penalty: mean σ(log α − β log(−γ/ζ)), the
    expected fraction of non-zero gates. γ = −0.1, ζ = 1.1, β = 2/3; log α starts at
    logit(init_keep), log 9 by default: every unit starts open (test-time z = 0.98, and a
    training draw is 0 with probability about 2%).
    """

    gamma = -0.1
    zeta = 1.1
    beta = 2.0 / 3.0

    def __init__(self, d_model: int, init_keep: float = 0.9) -> None:
        super().__init__()
        self.n = d_model
        self.log_alpha = nn.Parameter(
            torch.full((d_model,), math.log(init_keep) - math.log(1.0 - init_keep))
        )

    def forward(self) -> torch.Tensor:
        if not self.training:
            self._aux = {}
            return self.final_values()
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((u.log() - (1.0 - u).log() + self.log_alpha) / self.beta)
        self._aux = {AUX_SPARSITY: self.sparsity_loss()}
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def sparsity_loss(self) -> torch.Tensor:
        shift = self.beta * math.log(-self.gamma / self.zeta)
        return torch.sigmoid(self.log_alpha - shift).mean()

    def final_values(self) -> torch.Tensor:
        z = torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma
        return z.clamp(0.0, 1.0).detach()


def prune_param(doc: str) -> ParamSpec:
    """The `prune=` parameter shared by every primitive that can carry pruning gates."""
    return ParamSpec("prune", None, default="none", ref=Role.PRUNING_GATE, optional=True, doc=doc)


def make_gate(kind: str, n: int) -> PruningGate | None:
    """A pruning gate of registry name `kind` over `n` units, or None for "none"."""
    if kind == "none":
        return None
    spec = REGISTRY[kind]
    if spec.role is not Role.PRUNING_GATE:
        raise ValueError(f"{kind!r} is a {spec.role.value}, not a pruning gate")
    gate = spec.module(d_model=n)
    assert isinstance(gate, PruningGate)
    return gate


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "TrainableGate": ("AUX_SPARSITY",),
    "HardConcreteGate": ("AUX_SPARSITY",),
}
