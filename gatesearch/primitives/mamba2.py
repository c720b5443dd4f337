"""The Mamba-2 mixer (Dao & Gu 2024): the SSD layer, (B, T, d) -> (B, T, d), causal by
construction.

It follows the layer of state-spaces/mamba (`Mamba2Simple`): one input projection gives the
gate z, the SSM input x, B, C and the step's pre-activation; a short causal depthwise
convolution (with bias) and SiLU run over (x, B, C); Δ = softplus(· + dt_bias) per head; the
recurrence of `gatesearch.primitives.ssd` with A = −e^{A_log} and the D skip; the gated RMSNorm,
RMSNorm(y ⊙ SiLU(z)) (gate before norm, per group of heads); an output projection. `forward`
runs the chunked form, `forward_reference` the step loop; both share everything else, and
tests hold them equal in values and gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.primitives.deltanet import DECAY_RATE_INIT, DECAY_STEP_INIT
from gatesearch.primitives.ssd import ssd_chunked, ssd_reference
from gatesearch.registry import (
    Categorical,
    Context,
    IntRange,
    ParamSpec,
    Role,
    divides_width,
    register,
)

MAMBA2_HEADS = 4  # the default; Mamba-2's own default (64 channels a head) gives 4 at d = 128
MAMBA2_NORM_EPS = 1e-5
MAMBA2_CHUNK = 64  # chunk length of the parallel form (an implementation setting)


def _heads_fit(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    why = divides_width(value, params, ctx)
    if why is None and "groups" in params and int(value) % int(params["groups"]):
        why = f"heads={value} is not a multiple of groups={params['groups']}"
    return why


def _groups_fit(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    # Heads not chosen yet are read at their default: strict, never too lenient.
    heads = params.get("heads", MAMBA2_HEADS)
    if int(heads) % int(value):
        return f"groups={value} does not divide heads={heads}"
    return None


@register(
    "mamba2",
    Role.MIXER,
    [
        ParamSpec(
            "heads",
            Categorical((1, 2, 4, 8, 16)),
            MAMBA2_HEADS,
            check=_heads_fit,
            doc="heads (must divide d_model: each holds expand·d_model / heads channels)",
        ),
        ParamSpec(
            "d_state",
            Categorical((16, 32, 64, 128)),
            64,
            doc="N: rows of each head's state, the length of B_t and C_t",
        ),
        ParamSpec(
            "expand",
            Categorical((1, 2)),
            2,
            doc="inner width expand·d_model, which the heads split",
        ),
        ParamSpec(
            "groups",
            Categorical((1, 2, 4, 8)),
            1,
            check=_groups_fit,
            doc="groups of heads sharing one B and one C (must divide heads)",
        ),
        ParamSpec(
            "conv_kernel",
            IntRange(0, 8),
            4,
            doc="width of the causal depthwise Conv1D on x, B and C (0: none, SiLU only)",
        ),
    ],
)
class Mamba2(Primitive):
    """Mamba-2 (Dao & Gu 2024), inner width E = expand·d, H heads of P = E/H channels, G groups,
    state size N:
    [z, x, B, C, δ] = u W_in;  x, B, C ← SiLU(Conv1D_k([x, B, C]));  Δ = softplus(δ + dt_bias);
    h_t = e^{Δ_t A} h_{t−1} + Δ_t B_t x_tᵀ (per head, h_t ∈ R^{N×P}, A = −e^{A_log} per head);
    y_t = h_tᵀ C_t + D x_t;  out = W_out( w ⊙ RMSNorm(y ⊙ SiLU(z)) ),
    the RMSNorm over each group's E/G channels. B and C are shared by the H/G heads of a group.
    No biases but the convolution's (as Mamba-2's defaults). A starts at −U(1, 16), dt_bias at
    softplus⁻¹ of a log-uniform step in [1e-3, 0.1], D at 1.

    `forward` is the chunked SSD form (`ssd.ssd_chunked`), `forward_reference` the step loop;
    `chunk_size` is an implementation setting, not a grammar parameter.
    """

    def __init__(
        self,
        d_model: int,
        heads: int = MAMBA2_HEADS,
        d_state: int = 64,
        expand: int = 2,
        groups: int = 1,
        conv_kernel: int = 4,
        chunk_size: int = MAMBA2_CHUNK,
    ) -> None:
        super().__init__()
        inner = expand * d_model
        if inner % heads:
            raise ValueError(f"heads={heads} does not divide the inner width {inner}")
        if heads % groups:
            raise ValueError(f"groups={groups} does not divide heads={heads}")
        self.heads, self.groups, self.d_state = heads, groups, d_state
        self.inner, self.head_dim = inner, inner // heads
        self.conv_kernel, self.chunk_size = conv_kernel, chunk_size
        self.bc_width = groups * d_state
        self.conv_width = inner + 2 * self.bc_width  # x, B and C: what the convolution sees
        # One GEMM gives [z; x; B; C; δ], Mamba-2's order.
        self.in_proj = nn.Linear(d_model, inner + self.conv_width + heads, bias=False)
        self.conv = (
            nn.Conv1d(self.conv_width, self.conv_width, conv_kernel, groups=self.conv_width)
            if conv_kernel > 0
            else None
        )
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(*DECAY_RATE_INIT)))
        low, high = (math.log(s) for s in DECAY_STEP_INIT)
        step = torch.exp(torch.empty(heads).uniform_(low, high))
        self.dt_bias = nn.Parameter(step + torch.log(-torch.expm1(-step)))  # softplus⁻¹(Δ)
        self.D = nn.Parameter(torch.ones(heads))
        self.norm_weight = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """h (head_dim × d_state per head), and the convolution's last k − 1 inputs of x, B
        and C."""
        conv = (self.conv_kernel - 1) * self.conv_width if self.conv is not None else 0
        return self.heads * self.head_dim * self.d_state + conv

    def _short_conv(self, u: torch.Tensor) -> torch.Tensor:
        """SiLU(causal depthwise Conv1D(u)), or SiLU(u) without a convolution. u: (B, T, w)."""
        if self.conv is not None:
            u = F.pad(u.transpose(1, 2), (self.conv_kernel - 1, 0))  # (B, w, k − 1 + T)
            u = self.conv(u).transpose(1, 2)  # (B, T, w)
        return F.silu(u)

    def _inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x, Δ, A, B, C, z): the recurrence's arguments and the output gate."""
        Bn, T, _ = u.shape
        z, xbc, dt = self.in_proj(u).split([self.inner, self.conv_width, self.heads], dim=-1)
        x, B, C = self._short_conv(xbc).split(
            [self.inner, self.bc_width, self.bc_width], dim=-1
        )  # (B, T, E), (B, T, G·N), (B, T, G·N)
        x = x.reshape(Bn, T, self.heads, self.head_dim)  # (B, T, H, P)
        B = B.reshape(Bn, T, self.groups, self.d_state)  # (B, T, G, N)
        C = C.reshape(Bn, T, self.groups, self.d_state)  # (B, T, G, N)
        step = F.softplus(dt + self.dt_bias)  # (B, T, H), Δ > 0
        return x, step, -self.A_log.exp(), B, C, z

    def _output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        Bn, T = y.shape[:2]
        # Mamba-2's gated RMSNorm gates first, then normalises each group's channels.
        y = y.reshape(Bn, T, self.groups, -1) * F.silu(z).reshape(Bn, T, self.groups, -1)
        # (B, T, H, P) and (B, T, E) -> (B, T, G, E/G)
        y = F.rms_norm(y, (y.shape[-1],), eps=MAMBA2_NORM_EPS)
        y = y.reshape(Bn, T, self.inner) * self.norm_weight  # (B, T, G, E/G) -> (B, T, E)
        return self.out_proj(y)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x, step, A, B, C, z = self._inputs(u)
        return self._output(ssd_chunked(x, step, A, B, C, self.D, self.chunk_size), z)

    def forward_reference(self, u: torch.Tensor) -> torch.Tensor:
        x, step, A, B, C, z = self._inputs(u)
        return self._output(ssd_reference(x, step, A, B, C, self.D), z)


__all__ = ["MAMBA2_CHUNK", "Mamba2"]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "Mamba2": (
        "DECAY_RATE_INIT",
        "DECAY_STEP_INIT",
        "MAMBA2_CHUNK",
        "MAMBA2_HEADS",
        "MAMBA2_NORM_EPS",
        "ssd_chunked",
    ),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {"Mamba2": ("forward_reference",)}
