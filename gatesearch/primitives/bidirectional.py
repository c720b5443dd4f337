"""Bidirectional mixers: two copies of a one-directional mixer, one reading the sequence
forward and one reading it reversed, for tasks that see the whole sequence (classification).

Residual and highway wrap a *sequence* of blocks and become graph structure (a body and a
combine node). A bidirectional mixer instead needs a second, independently weighted copy of its
body run on the time-reversed sequence, so it wraps one mixer given as a slot (as a mixture
holds its experts): `bidirectional(cell=recurrence, merge=concat)`, where the `cell` rule
derives one mixer and both directions build it with the same parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gatesearch.primitives.base import NoDecodeState, Primitive
from gatesearch.registry import (
    REGISTRY,
    Categorical,
    Context,
    ParamSpec,
    Role,
    build_module,
    nested_error,
    register,
)

MERGES = ("add", "concat", "gate")


def _cell_fits(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    why = nested_error(value, Role.MIXER, "cell")
    if why is not None:
        return why
    spec = REGISTRY[value["op"]]
    if issubclass(spec.module, Bidirectional):
        return "a bidirectional cell cannot itself be bidirectional"
    if not spec.causal_ok:
        # Each direction must read one way, or the reversed copy would add nothing.
        return f"cell {value['op']!r} looks at future positions; each direction reads one way"
    return None


def build_cell(cell: dict[str, Any], d_model: int) -> nn.Module:
    """One direction's mixer from its description {"op": <mixer>, "params": {...}}, built for a
    causal context: each direction reads only what came before it in its own order.

    The one place a bidirectional mixer looks mixers up in the registry: an exported file
    replaces it with a lookup among the classes it defines (gatesearch.export.bridges).
    """
    ctx = Context(d_model=d_model, causal=True)
    why = _cell_fits(cell, {}, ctx)
    if why is not None:
        raise ValueError(why)
    return build_module(cell["op"], dict(cell.get("params", {})), ctx)


def reversed_prefix_index(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) time indices that reverse each row's first lengths[b] positions and keep the rest:
    idx[b, s] = lengths[b] − 1 − s for s < lengths[b], else s."""
    pos = torch.arange(t, device=lengths.device).expand(len(lengths), t)  # (B, T)
    last = lengths[:, None] - 1  # (B, 1)
    return torch.where(pos <= last, last - pos, pos)


@register(
    "bidirectional",
    Role.MIXER,
    [
        ParamSpec(
            "cell",
            None,
            default=None,
            check=_cell_fits,
            ref=Role.MIXER,
            slot=True,
            doc="the mixer run in each direction: {'op': <mixer primitive>, 'params': {...}}",
        ),
        ParamSpec(
            "merge",
            Categorical(MERGES),
            default="concat",
            doc="how the two directions combine: sum, projection of both, or a gate",
        ),
    ],
    causal_ok=False,
)
class Bidirectional(Primitive):
    """Bidirectional mixer over a one-directional cell M (two copies, F and R, own weights):
    f = F(x);  r = flip(R(flip(x))), flip reversing time, so r_t has read x_t … x_{T−1};
    y = f + r (add) | W [f; r] (concat, W: 2d → d, as a BiLSTM's projection)
      | g ⊙ f + (1 − g) ⊙ r, g = σ(W_g x + b_g) (gate).

    Both copies are built causal whatever the task: that is what makes the pair read the whole
    sequence, each half from one side. Given `lengths`, R reads each sequence's real prefix
    reversed (from its last real position), so end padding never reaches a real position.
    Parameters: twice the cell's, plus 2·d² (concat) or d² + d (gate).
    """

    def __init__(
        self, d_model: int, cell: dict[str, Any] | None = None, merge: str = "concat"
    ) -> None:
        super().__init__()
        if cell is None:
            raise ValueError("bidirectional needs a cell: {'op': <mixer primitive>, ...}")
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        self.merge = merge
        self.forward_cell = build_cell(cell, d_model)
        self.backward_cell = build_cell(cell, d_model)
        self.mix: nn.Module | None = None
        if merge == "concat":
            self.mix = nn.Linear(2 * d_model, d_model, bias=False)
        elif merge == "gate":
            self.mix = nn.Linear(d_model, d_model)

    takes_lengths = True

    def decode_state(self, context: int) -> int:
        raise NoDecodeState("a bidirectional mixer reads the whole sequence before any output")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f = self.forward_cell(x)  # (B, T, d)
        if lengths is None:
            r = self.backward_cell(x.flip(1)).flip(1)  # (B, T, d)
        else:
            # Reverse each sequence's real prefix only, so R starts at its last real position;
            # padded positions stay where they are, after the prefix, where R reads them last.
            idx = reversed_prefix_index(lengths.to(x.device), x.shape[1])  # (B, T)
            idx = idx.unsqueeze(-1).expand_as(x)  # (B, T, d)
            # The permutation is its own inverse: the same gather puts R's outputs back.
            r = self.backward_cell(x.gather(1, idx)).gather(1, idx)  # (B, T, d)
        if self.mix is None:
            return f + r
        if self.merge == "concat":
            return self.mix(torch.cat([f, r], dim=-1))  # (B, T, 2d) -> (B, T, d)
        g = torch.sigmoid(self.mix(x))  # (B, T, d)
        return torch.lerp(r, f, g)  # g⊙f + (1−g)⊙r


__all__ = ["MERGES", "Bidirectional", "build_cell", "reversed_prefix_index"]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "Bidirectional": ("MERGES", "build_cell", "reversed_prefix_index")
}
