"""Structure: residual and highway wrappers, the nodes that merge skip and body, norms, and the
input/output ends (stem and head) that adapt a model to a task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.primitives.scan import linear_scan
from gatesearch.registry import Categorical, InputKind, ParamSpec, Role, register

POOLS = ("mean", "max", "attention")


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


@register(
    "pool_head",
    Role.HEAD,
    [ParamSpec("pool", Categorical(POOLS), "mean", doc="how the positions s ≤ t are pooled")],
    context=("d_model", "n_out"),
)
class PoolHead(Primitive):
    """(B, T, d) -> p_t·W (B, T, n_out), p_t pooling the positions s ≤ t of x:
    mean: p_t = Σ_{s≤t} x_s / (t + 1);  max: p_t = max_{s≤t} x_s (per channel);
    attention: p_t = Σ_{s≤t} softmax_{s≤t}(x_s·w) x_s, w a learned score (d → 1).

    A prefix, not the whole sequence, is pooled so that the head stays causal and fits how a
    classification task reads the output: at the last real position of each sequence, where
    the prefix is exactly the real positions, whatever padding the batch adds after them.
    `forward` pools by cumulative sums, maxima and (attention) a scan that keeps the sums
    relative to the running maximum score, so every exponent is ≤ 0; `forward_reference`
    pools with an explicit (T, T) mask of prefixes.
    """

    def __init__(self, d_model: int, n_out: int, pool: str = "mean") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.score = nn.Linear(d_model, 1, bias=False) if pool == "attention" else None
        self.proj = nn.Linear(d_model, n_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.score is not None:
            s = self.score(x)  # (B, T, 1)
            # The pooled value does not depend on the reference point m, so no gradient
            # flows through it; the running maximum keeps e^{s − m} ≤ 1.
            m = s.detach().cummax(dim=1).values  # (B, T, 1)
            rescale = torch.exp(torch.cat([m[:, :1], m[:, :-1]], dim=1) - m)  # e^{m_{t−1} − m_t}
            w = torch.exp(s - m)  # (B, T, 1)
            # Numerator and normaliser in one scan: h_t = Σ_{s≤t} e^{s_s − m_t} [x_s, 1].
            h = linear_scan(rescale, torch.cat([w * x, w], dim=-1))  # (B, T, d + 1)
            pooled = h[..., :-1] / h[..., -1:]
        elif self.pool == "max":
            pooled = x.cummax(dim=1).values
        else:
            count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)  # (T,)
            pooled = x.cumsum(dim=1) / count[:, None]
        return self.proj(pooled)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        prefix = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T_t, T_s)
        if self.pool == "max":
            masked = x[:, None].masked_fill(~prefix[None, :, :, None], -torch.inf)
            pooled = masked.amax(dim=2)  # (B, T_t, T_s, d) -> (B, T_t, d)
        else:
            scores = torch.zeros(T, T, dtype=x.dtype, device=x.device)  # mean: equal weights
            if self.score is not None:
                scores = self.score(x).transpose(1, 2).expand(-1, T, -1)  # (B, T_t, T_s)
            weights = scores.masked_fill(~prefix, -torch.inf).softmax(dim=-1)
            pooled = weights @ x  # (B, T_t, d)
        return self.proj(pooled)


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "Embed": ("InputKind",),
    "PoolHead": ("POOLS", "linear_scan"),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {"PoolHead": ("forward_reference",)}
