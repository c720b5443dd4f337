"""Structure: residual and highway wrappers, the nodes that merge skip and body, norms, and the
input/output ends (stem and head) that adapt a model to a task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.registry import InputKind, Role, register


@register("add", Role.COMBINE)
class Add(Primitive):
    """y = skip + body"""

    def __init__(self, d_model: int) -> None:
        super().__init__()

    def forward(self, skip: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        return skip + body


@register("highway_gate", Role.COMBINE)
class HighwayGate(Primitive):
    """y = g⊙body + (1 − g)⊙skip, g = σ(B·skip + b), b initialised to +1 (Srivastava et al.).

    The +1 bias starts the gate mostly open to the body's transform, as in the paper's carry
    bias heuristic read from the body's side.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_model)
        nn.init.constant_(self.gate.bias, 1.0)

    def forward(self, skip: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(skip))
        return g * body + (1.0 - g) * skip


@register("residual", Role.WRAPPER, combine="add")
class Residual(Primitive):
    """x + f(x). A graph-level wrapper: the graph holds f's nodes and an `add` node."""

    def __init__(self, d_model: int) -> None:  # never built: wrappers become graph structure
        super().__init__()


@register("highway", Role.WRAPPER, combine="highway_gate")
class Highway(Primitive):
    """g⊙f(x) + (1 − g)⊙x. A graph-level wrapper: f's nodes and a `highway_gate` node."""

    def __init__(self, d_model: int) -> None:
        super().__init__()


@register("rmsnorm", Role.NORM)
class RMSNorm(Primitive):
    """y = w ⊙ x / sqrt(mean(x²) + ε)"""

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


@register("layernorm", Role.NORM)
class LayerNorm(Primitive):
    """y = w ⊙ (x − mean(x)) / sqrt(var(x) + ε) + b"""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


@register("embed", Role.STEM, context=("d_model", "input_kind", "n_in"))
class Embed(Primitive):
    """Token ids (B, T) -> E[ids] (B, T, d); continuous (B, T, n_in) -> x·W + b (B, T, d)."""

    def __init__(self, d_model: int, input_kind: InputKind, n_in: int) -> None:
        super().__init__()
        self.input_kind = InputKind(input_kind)
        if self.input_kind is InputKind.TOKENS:
            self.proj: nn.Module = nn.Embedding(n_in, d_model)
        else:
            self.proj = nn.Linear(n_in, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@register("head", Role.HEAD, context=("d_model", "n_out"))
class Head(Primitive):
    """(B, T, d) -> x·W (B, T, n_out): logits for tokens or classes, or per-dimension outputs."""

    def __init__(self, d_model: int, n_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {"Embed": ("InputKind",)}
