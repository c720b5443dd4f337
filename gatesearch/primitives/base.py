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
    # Why an ONNX export must fix this module's time axis at one length (a loop over T, or over
    # T/C chunks, that a traced graph unrolls); None: its forward keeps T symbolic, so the
    # exported graph takes any length.
    fixed_time: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self._aux: dict[str, torch.Tensor] = {}

    def aux_losses(self) -> dict[str, torch.Tensor]:
        return self._aux

    def decode_state(self, context: int) -> int:
        """How many values this module keeps per sequence, after reading `context`
        positions, to produce the next one step by step (its decode state: a KV cache, a
        recurrent state, a convolution's last inputs).

        Position-wise modules keep nothing of their own; a container keeps what its parts
        keep. Every sequence mixer states its own (`register` refuses one that does not), so
        a new mixer cannot pass for stateless."""
        return sum(decode_state(child, context) for child in self.children())


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


class NoDecodeState(TypeError):
    """Asked for the decode state of a module that reads later positions (bidirectional or
    non-causal mixing): it has no step-by-step decoding, so no such state."""


def decode_state(module: nn.Module, context: int) -> int:
    """Values `module` keeps per sequence to decode the position after `context` ones (see
    `Primitive.decode_state`); modules that are not primitives (an nn.Linear, a model's
    Sequential) keep what the primitives inside them keep."""
    if isinstance(module, Primitive):
        return module.decode_state(context)
    return sum(decode_state(child, context) for child in module.children())


def collect_aux_losses(model: nn.Module) -> dict[str, torch.Tensor]:
    """Sum the auxiliary losses of every primitive in `model` by kind, after a forward pass."""
    totals: dict[str, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, Primitive):
            for key, value in module.aux_losses().items():
                totals[key] = totals[key] + value if key in totals else value
    return totals
