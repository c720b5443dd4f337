"""Delta-rule mixers: DeltaNet and Gated DeltaNet (with Kimi Delta Attention's channel-wise decay
as an option), (B, T, d) -> (B, T, d), causal by construction.

Both follow the layers of flash-linear-attention: q, k, v from one projection, a short causal
depthwise convolution and SiLU on each, q and k L2-normalised per head (q also scaled by
1/√d_k), a write strength β = σ(W_β x) per head, the recurrence of
`gatesearch.primitives.delta_rule`, an RMSNorm per head (optionally times a SiLU output gate)
and an output projection. `forward` runs the chunked form, `forward_reference` the step loop;
both share everything else, and tests hold them equal in values and gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.primitives.delta_rule import delta_rule_chunked, delta_rule_reference
from gatesearch.registry import (
    Categorical,
    IntRange,
    ParamSpec,
    Role,
    divides_width,
    register,
)

DECAYS = ("scalar", "channel")
DELTA_NORM_EPS = 1e-5
DELTA_CHUNK = 32  # chunk length of the parallel form (an implementation setting)
# Mamba-2's initial ranges: the decay rate A ~ U(1, 16), the step Δ log-uniform in [1e-3, 0.1]
# (held as softplus⁻¹(Δ) in dt_bias), so a step starts at α = e^{−AΔ} between ≈ 0.2 and 0.999.
DECAY_RATE_INIT = (1.0, 16.0)
DECAY_STEP_INIT = (1e-3, 0.1)


def delta_key_dim(d_model: int, heads: int, key_dim: int) -> int:
    """Key (and query) channels per head: `key_dim`, or d_model / heads when it is 0."""
    return key_dim if key_dim > 0 else d_model // heads


def _delta_params(output_gate: bool) -> list[ParamSpec]:
    return [
        ParamSpec(
            "heads",
            Categorical((1, 2, 4, 8, 16)),
            4,
            check=divides_width,
            doc="heads (must divide d_model: each holds d_model / heads value channels)",
        ),
        ParamSpec(
            "key_dim",
            IntRange(0, 256),
            0,
            doc="key and query channels per head, the state's rows; 0: d_model / heads",
        ),
        ParamSpec(
            "conv_kernel",
            IntRange(0, 8),
            4,
            doc="width of the causal depthwise Conv1D on q, k and v (0: none, SiLU only)",
        ),
        ParamSpec(
            "output_gate",
            Categorical((output_gate, not output_gate)),
            output_gate,
            doc="output RMSNorm(o) ⊙ SiLU(W_g x) instead of RMSNorm(o)",
        ),
    ]


class _DeltaMixer(Primitive):
    """What DeltaNet and Gated DeltaNet share: projections, short convolution, normalisation,
    write strength, decay (`decay`: "none", "scalar" or "channel"), output norm and gate.

    One GEMM gives [W_q; W_k; W_v; W_g (output gate); W_β; W_a (scalar decay)]: H heads,
    d_k = key_dim (or d/H) and d_v = d/H. The channel decay's pre-activation comes instead from a
    rank-d_k projection d → d_k → H·d_k, as in KDA. log α = −e^{A_log}·softplus(a + dt_bias),
    with A_log per head and dt_bias per head (scalar) or per key channel (channel).
    """

    # A matrix state, carried chunk to chunk by a product with (I − β k kᵀ) terms: no
    # diagonal form to compute every chunk at once.
    fixed_time = "the delta rule's state crosses chunks by a loop over T/C chunks"

    def __init__(
        self,
        d_model: int,
        heads: int,
        key_dim: int,
        conv_kernel: int,
        output_gate: bool,
        decay: str,
        chunk_size: int,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"heads={heads} does not divide the model width {d_model}")
        if decay not in ("none", *DECAYS):
            raise ValueError(f"decay={decay!r} is not one of none, {', '.join(DECAYS)}")
        self.heads, self.decay, self.chunk_size = heads, decay, chunk_size
        self.conv_kernel, self.output_gate = conv_kernel, output_gate
        self.head_k = delta_key_dim(d_model, heads, key_dim)
        self.head_v = d_model // heads
        self.key_width = heads * self.head_k
        self.qkv_width = 2 * self.key_width + d_model
        self.gate_width = d_model if output_gate else 0
        self.a_width = heads if decay == "scalar" else 0
        self.in_proj = nn.Linear(
            d_model, self.qkv_width + self.gate_width + heads + self.a_width, bias=False
        )
        self.conv = (
            nn.Conv1d(
                self.qkv_width, self.qkv_width, conv_kernel, groups=self.qkv_width, bias=False
            )
            if conv_kernel > 0
            else None
        )
        self.decay_down = (
            nn.Linear(d_model, self.head_k, bias=False) if decay == "channel" else None
        )
        self.decay_up = (
            nn.Linear(self.head_k, self.key_width, bias=False) if decay == "channel" else None
        )
        if decay != "none":
            rate = torch.empty(heads).uniform_(*DECAY_RATE_INIT)
            self.A_log = nn.Parameter(torch.log(rate))
            low, high = (math.log(s) for s in DECAY_STEP_INIT)
            step = torch.exp(
                torch.empty(heads if decay == "scalar" else self.key_width).uniform_(low, high)
            )
            self.dt_bias = nn.Parameter(step + torch.log(-torch.expm1(-step)))  # softplus⁻¹(Δ)
        self.norm_weight = nn.Parameter(torch.ones(self.head_v))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """S (d_k × d_v per head), and the short convolution's last k − 1 inputs of q, k, v."""
        conv = (self.conv_kernel - 1) * self.qkv_width if self.conv is not None else 0
        return self.heads * self.head_k * self.head_v + conv

    def _short_conv(self, u: torch.Tensor) -> torch.Tensor:
        """SiLU(causal depthwise Conv1D(u)), or SiLU(u) without a convolution. u: (B, T, w)."""
        if self.conv is not None:
            u = F.pad(u.transpose(1, 2), (self.conv_kernel - 1, 0))  # (B, w, k − 1 + T)
            u = self.conv(u).transpose(1, 2)  # (B, T, w)
        return F.silu(u)

    def _log_alpha(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor | None:
        """log α ≤ 0: (B, T, H) for a scalar decay, (B, T, H, d_k) per channel, None without."""
        if self.decay == "none":
            return None
        rate = self.A_log.exp()  # (H,)
        if self.decay == "scalar":
            return -rate * F.softplus(a + self.dt_bias)  # (B, T, H)
        assert self.decay_down is not None and self.decay_up is not None
        Bn, T, _ = x.shape
        a = self.decay_up(self.decay_down(x)) + self.dt_bias  # (B, T, H·d_k)
        a = a.reshape(Bn, T, self.heads, self.head_k)  # (B, T, H, d_k)
        return -rate[:, None] * F.softplus(a)

    def _inputs(self, x: torch.Tensor) -> tuple[Any, ...]:
        """(q, k, v, β, log α, g) for the recurrence and the output gate."""
        Bn, T, d = x.shape
        qkv, g, b, a = self.in_proj(x).split(
            [self.qkv_width, self.gate_width, self.heads, self.a_width], dim=-1
        )  # (B, T, ·)
        q, k, v = self._short_conv(qkv).split([self.key_width, self.key_width, d], dim=-1)
        H = self.heads
        q = q.reshape(Bn, T, H, self.head_k)  # (B, T, H, dk)
        k = k.reshape(Bn, T, H, self.head_k)  # (B, T, H, dk)
        v = v.reshape(Bn, T, H, self.head_v)  # (B, T, H, dv)
        # Unit keys keep every (I − β k kᵀ) a contraction for β ∈ (0, 1).
        q = F.normalize(q, dim=-1) * self.head_k**-0.5
        k = F.normalize(k, dim=-1)
        return q, k, v, torch.sigmoid(b), self._log_alpha(x, a), g

    def _output(self, o: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        o = F.rms_norm(o, (self.head_v,), self.norm_weight, DELTA_NORM_EPS)  # (B, T, H, dv)
        o = o.reshape(*o.shape[:2], -1)  # (B, T, H, dv) -> (B, T, d)
        if self.output_gate:
            o = o * F.silu(g)
        return self.out_proj(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, beta, log_alpha, g = self._inputs(x)
        o = delta_rule_chunked(q, k, v, beta, log_alpha, self.chunk_size)
        return self._output(o, g)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, beta, log_alpha, g = self._inputs(x)
        return self._output(delta_rule_reference(q, k, v, beta, log_alpha), g)


@register("deltanet", Role.MIXER, _delta_params(output_gate=False))
class DeltaNet(_DeltaMixer):
    """DeltaNet (Yang et al. 2024), H heads, d_k = key_dim or d/H, d_v = d/H:
    q, k, v = SiLU(Conv1D_k(x W_q)), …, k ← k/‖k‖, q ← q/(‖q‖ √d_k) per head, β = σ(x W_β);
    S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ;  o_t = S_tᵀ q_t;
    out = W_o( RMSNorm(o) ) or, with output_gate, W_o( RMSNorm(o) ⊙ SiLU(x W_g) ).
    RMSNorm per head over d_v (weight shared by heads); no biases. Conv1D is causal and
    depthwise (conv_kernel 0: SiLU only).

    `forward` is the chunked WY/UT form (`delta_rule.delta_rule_chunked`), `forward_reference`
    the step loop; `chunk_size` is an implementation setting, not a grammar parameter.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        key_dim: int = 0,
        conv_kernel: int = 4,
        output_gate: bool = False,
        chunk_size: int = DELTA_CHUNK,
    ) -> None:
        super().__init__(d_model, heads, key_dim, conv_kernel, output_gate, "none", chunk_size)


@register(
    "gated_deltanet",
    Role.MIXER,
    [
        *_delta_params(output_gate=True),
        ParamSpec(
            "decay",
            Categorical(DECAYS),
            "scalar",
            doc="α_t one per head (Gated DeltaNet) or one per key channel (Kimi Delta Attention)",
        ),
    ],
)
class GatedDeltaNet(_DeltaMixer):
    """Gated DeltaNet (Yang, Kautz, Hatamizadeh 2025), DeltaNet's block with a decay:
    S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ;  o_t = S_tᵀ q_t;
    log α_t = −e^{A_log}·softplus(x W_a + dt_bias) (Mamba-2's parameterisation, A_log per head).
    decay=scalar: α_t one number per head (W_a: d → H), the paper's gate.
    decay=channel: α_t per key channel, as Kimi Delta Attention (W_a low-rank, d → d_k → H·d_k,
    dt_bias per channel); the rest of KDA's block (its sigmoid output gate) is not reproduced.
    out = W_o( RMSNorm(o) ⊙ SiLU(x W_g) ) (output_gate, the default) or W_o( RMSNorm(o) ).
    A_log starts at log U(1, 16), dt_bias at softplus⁻¹ of a log-uniform step in [1e-3, 0.1].

    `forward` is the chunked form (`delta_rule.delta_rule_chunked`; with a channel decay it
    falls back to an exact, larger in-chunk form when a chunk decays by more than half the
    dtype's exponent range), `forward_reference` the step loop.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = 4,
        key_dim: int = 0,
        conv_kernel: int = 4,
        output_gate: bool = True,
        decay: str = "scalar",
        chunk_size: int = DELTA_CHUNK,
    ) -> None:
        super().__init__(d_model, heads, key_dim, conv_kernel, output_gate, decay, chunk_size)


DELTA_RULES = ("deltanet", "gated_deltanet")

__all__ = ["DECAYS", "DELTA_RULES", "DeltaNet", "GatedDeltaNet", "delta_key_dim"]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_DeltaMixer": (
        "DECAYS",
        "DECAY_RATE_INIT",
        "DECAY_STEP_INIT",
        "DELTA_NORM_EPS",
        "delta_key_dim",
        "delta_rule_chunked",
    ),
    "DeltaNet": ("DELTA_CHUNK",),
    "GatedDeltaNet": ("DELTA_CHUNK",),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {"_DeltaMixer": ("forward_reference",)}
