"""Gating primitives. Importing this package registers every primitive in the registry."""

from gatesearch.primitives import (  # noqa: F401
    activations,
    attention,
    bidirectional,
    channel,
    deltanet,
    mamba2,
    moe,
    pruning,
    recurrent,
    structure,
    xlstm,
)
from gatesearch.primitives.base import (
    AUX_MOE_BALANCE,
    AUX_MOE_Z,
    AUX_SPARSITY,
    NoDecodeState,
    Primitive,
    Prunable,
    collect_aux_losses,
    decode_state,
)

__all__ = [
    "AUX_MOE_BALANCE",
    "AUX_MOE_Z",
    "AUX_SPARSITY",
    "NoDecodeState",
    "Primitive",
    "Prunable",
    "collect_aux_losses",
    "decode_state",
]
