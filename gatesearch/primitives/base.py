"""What every primitive module shares: the forward contract, auxiliary losses, pruning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

# Keys of auxiliary losses. The proxy trainer weights each kind with its own (self-tuned)
# coefficient, so they are reported separately rather than pre-summed.
AUX_MOE_BALANCE = "moe_balance"  # importance/load or switch balance losses
AUX_MOE_Z = "moe_z"  # router z-loss
AUX_SPARSITY = "sparsity"  # pruning-gate sparsity / L0 penalty


class Primitive(nn.Module):
    """Base of every registered module.

    Contract: unary primitives map (B, T, d_in) -> (B, T, d_out) with `forward(x)`; combine
    primitives take `forward(skip, body)`. Modules that produce auxiliary losses store them in
    `self._aux` during forward; `aux_losses()` hands them to the trainer.

    Primitives that mix positions non-causally set `takes_lengths`: their forward also takes
    `lengths` (B,) int64, the real length of each sequence of a batch padded at the end (None:
    no padding), and never lets a real position read a padded one, so a sequence's outputs do
    not depend on how far its batch pads it. Position-wise and causal primitives need no
    lengths: a real position never reads a later one.
    """

    takes_lengths: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._aux: dict[str, torch.Tensor] = {}

    def aux_losses(self) -> dict[str, torch.Tensor]:
        return self._aux


class Prunable(ABC):
    """A primitive with trainable pruning gates on some of its units (channels, heads, experts).

    `prune_()` physically removes the units whose gates are closed, folds the remaining gate
    values into the weights so the function is unchanged, drops the gates, and returns the
    parameter updates for the architecture graph (e.g. {"hidden": 300, "prune": "none"}).
    """

    @abstractmethod
    def prune_(self) -> dict[str, Any]: ...

    @abstractmethod
    def open_units(self) -> int:
        """How many units would survive `prune_()` now."""


def collect_aux_losses(model: nn.Module) -> dict[str, torch.Tensor]:
    """Sum the auxiliary losses of every primitive in `model` by kind, after a forward pass."""
    totals: dict[str, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, Primitive):
            for key, value in module.aux_losses().items():
                totals[key] = totals[key] + value if key in totals else value
    return totals
