"""Recurrent mixers: (B, T, d) -> (B, T, d), causal by construction.

Nonlinear recurrences (lstm, gru, mgu, indrnn, lem) are inherently sequential: the fused torch
kernels where they exist, otherwise one GEMM for every input projection followed by a loop over T.

Recurrences gated only on the input (mingru, minlstm, rglru, hgrn, gla) are linear in the state,
so `forward` runs a parallel scan from `gatesearch.primitives.scan`, and `forward_reference`
runs the same equations by the obvious loop over t; tests hold the two equal in values and
gradients. Both share the code that computes gates, so they differ only in the scan.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.primitives.scan import (
    gla_chunked,
    gla_reference,
    linear_scan,
    linear_scan_reference,
    log_linear_scan,
)
from gatesearch.registry import (
    Categorical,
    Context,
    FloatRange,
    IntRange,
    ParamSpec,
    Role,
    register,
)

# ============================================================================ fused torch RNNs


@register("lstm", Role.MIXER)
class LSTM(Primitive):
    """LSTM (torch.nn.LSTM, fused), hidden = d_model:
    i, f, o = σ(W x + U h + b); c̃ = tanh(W_c x + U_c h + b_c); c_t = f⊙c_{t−1} + i⊙c̃;
    h_t = o⊙tanh(c_t). Output h."""

    # torch's fused cells trace to a loop over the traced length (torch.export specialises T).
    fixed_time = "torch.export unrolls torch's fused LSTM over the traced length"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(d_model, d_model, batch_first=True)

    def decode_state(self, context: int) -> int:
        """h and c."""
        return 2 * self.rnn.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


@register("gru", Role.MIXER)
class GRU(Primitive):
    """GRU (torch.nn.GRU, fused), hidden = d_model:
    r, z = σ(W x + U h + b); n = tanh(W_n x + b_n + r⊙(U_n h + b_hn)); h_t = (1−z)⊙n + z⊙h_{t−1}."""

    # torch's fused cells trace to a loop over the traced length (torch.export specialises T).
    fixed_time = "torch.export unrolls torch's fused GRU over the traced length"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(d_model, d_model, batch_first=True)

    def decode_state(self, context: int) -> int:
        """h."""
        return self.rnn.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


# ====================================================================== nonlinear, sequential


@register("mgu", Role.MIXER)
class MGU(Primitive):
    """Minimal gated unit (Zhou et al. 2016), hidden = d_model:
    f = σ(W_f x + U_f h_{t−1} + b_f); h̃ = tanh(W_h x + U_h(f⊙h_{t−1}) + b_h);
    h_t = (1−f)⊙h_{t−1} + f⊙h̃. Output h."""

    fixed_time = "a nonlinear recurrence, computed by a loop over time"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(d_model, 2 * d_model)  # [W_f; W_h] with both biases
        self.u_f = nn.Linear(d_model, d_model, bias=False)
        self.u_h = nn.Linear(d_model, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """h."""
        return self.u_f.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wf, wh = self.in_proj(x).chunk(2, dim=-1)  # (B, T, d) each
        h = x.new_zeros(x.shape[0], x.shape[2])
        out = []
        # unbind, not wf[:, t]: indexing's backward zero-fills a full-size gradient per step.
        for wf_t, wh_t in zip(wf.unbind(1), wh.unbind(1)):
            f = torch.sigmoid(wf_t + self.u_f(h))
            cand = torch.tanh(wh_t + self.u_h(f * h))
            h = torch.lerp(h, cand, f)
            out.append(h)
        return torch.stack(out, dim=1)


@register("indrnn", Role.MIXER)
class IndRNN(Primitive):
    """Independently recurrent network (Li et al. 2018), hidden = d_model:
    h_t = ReLU(W x_t + b + u⊙h_{t−1}), u a vector clipped to |u| ≤ u_max.

    With ReLU and |u| ≤ 1 a unit's state can grow only through its input, never by the
    recurrence itself; u starts in [0, 1) so units begin with a spread of memory lengths.
    """

    fixed_time = "a nonlinear recurrence, computed by a loop over time"

    def __init__(self, d_model: int, u_max: float = 1.0) -> None:
        super().__init__()
        self.u_max = u_max
        self.in_proj = nn.Linear(d_model, d_model)
        self.u = nn.Parameter(torch.rand(d_model))

    def decode_state(self, context: int) -> int:
        """h."""
        return self.u.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wx = self.in_proj(x)  # (B, T, d)
        u = self.u.clamp(-self.u_max, self.u_max)
        h = x.new_zeros(x.shape[0], x.shape[2])
        out = []
        for wx_t in wx.unbind(1):
            h = F.relu(torch.addcmul(wx_t, u, h))
            out.append(h)
        return torch.stack(out, dim=1)


@register(
    "lem",
    Role.MIXER,
    [ParamSpec("dt", FloatRange(0.05, 1.0), 1.0, doc="base time step Δt̂ of both time scales")],
)
class LEM(Primitive):
    """Long expressive memory (Rusch & Mishra 2022), hidden = d_model, input u = x:
    Δt_n = Δt̂·σ(W_1 y_{n−1} + V_1 u_n + b_1);  Δt̄_n = Δt̂·σ(W_2 y_{n−1} + V_2 u_n + b_2);
    z_n = (1−Δt_n)⊙z_{n−1} + Δt_n⊙tanh(W_z y_{n−1} + V_z u_n + b_z);
    y_n = (1−Δt̄_n)⊙y_{n−1} + Δt̄_n⊙tanh(W_y z_n + V_y u_n + b_y). Output y."""

    fixed_time = "a nonlinear recurrence, computed by a loop over time"

    def __init__(self, d_model: int, dt: float = 1.0) -> None:
        super().__init__()
        self.dt = dt
        self.in_proj = nn.Linear(d_model, 4 * d_model)  # [V_1; V_2; V_z; V_y] with biases
        self.w_y_prev = nn.Linear(d_model, 3 * d_model, bias=False)  # [W_1; W_2; W_z]
        self.w_z = nn.Linear(d_model, d_model, bias=False)  # W_y, applied to z_n

    def decode_state(self, context: int) -> int:
        """y and z."""
        return 2 * self.w_z.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1, v2, vz, vy = self.in_proj(x).chunk(4, dim=-1)  # (B, T, d) each
        y = x.new_zeros(x.shape[0], x.shape[2])
        z = torch.zeros_like(y)
        out = []
        for v1_t, v2_t, vz_t, vy_t in zip(v1.unbind(1), v2.unbind(1), vz.unbind(1), vy.unbind(1)):
            r1, r2, rz = self.w_y_prev(y).chunk(3, dim=-1)
            dt_z = self.dt * torch.sigmoid(r1 + v1_t)
            dt_y = self.dt * torch.sigmoid(r2 + v2_t)
            z = torch.lerp(z, torch.tanh(rz + vz_t), dt_z)
            y = torch.lerp(y, torch.tanh(self.w_z(z) + vy_t), dt_y)
            out.append(y)
        return torch.stack(out, dim=1)


# ================================================================ linear in the state: scans


HAWK_EXPAND = 4.0 / 3.0  # Hawk's recurrence width is 4/3 of the model width


def recurrence_width(d_model: int, expand: float) -> int:
    """The recurrence width of expanded mixers: round(expand · d_model), at least 1."""
    return max(1, round(expand * d_model))


def _expand_spec(default: float, doc: str) -> ParamSpec:
    return ParamSpec("expand", FloatRange(1.0, 4.0), default, doc=doc)


def _blocks_divide_width(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    width = recurrence_width(ctx.d_model, params.get("expand", HAWK_EXPAND))
    if width % int(value):
        return f"blocks={value} does not divide the recurrence width {width}"
    return None


def _heads_divide_widths(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    key_width = gla_key_width(ctx.d_model)
    if ctx.d_model % int(value) or key_width % int(value):
        return (
            f"heads={value} must divide the model width {ctx.d_model} and the key width {key_width}"
        )
    return None


def _log_g(k: torch.Tensor) -> torch.Tensor:
    """log of minGRU's candidate map g(k) = k + 0.5 (k ≥ 0), σ(k) (k < 0), which keeps h̃ > 0.

    relu(k) + 0.5 ≥ 0.5 so the unused branch of the `where` never takes log of ≤ 0 (which would
    put a NaN into the gradient)."""
    return torch.where(k >= 0, torch.log(F.relu(k) + 0.5), -F.softplus(-k))


def _g(k: torch.Tensor) -> torch.Tensor:
    return torch.where(k >= 0, k + 0.5, torch.sigmoid(k))


class _ExpandedMin(Primitive):
    """Shared plumbing of minGRU / minLSTM: input GEMM to `n_gates` · width, output projection
    back to d_model only when the width differs (expand = 1 returns h itself)."""

    n_gates: int

    def __init__(self, d_model: int, expand: float) -> None:
        super().__init__()
        self.width = recurrence_width(d_model, expand)
        self.in_proj = nn.Linear(d_model, self.n_gates * self.width, bias=False)
        self.out_proj = (
            nn.Linear(self.width, d_model, bias=False) if self.width != d_model else nn.Identity()
        )

    def decode_state(self, context: int) -> int:
        """h, at the recurrence width."""
        return self.width

    def _log_coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_a, log_b = self._log_coefficients(x)
        return self.out_proj(log_linear_scan(log_a, log_b).exp())

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._coefficients(x)
        return self.out_proj(linear_scan_reference(a, b))


@register(
    "mingru",
    Role.MIXER,
    [_expand_spec(1.0, "recurrence width = round(expand · d_model); ≠ d_model adds W_out")],
)
class MinGRU(_ExpandedMin):
    """minGRU (Feng et al. 2024): z = σ(L_z x); h̃ = g(L_h x), g(k) = k + 0.5 (k ≥ 0) else σ(k);
    h_t = (1−z)⊙h_{t−1} + z⊙h̃; output W_out h (W_out only when the width ≠ d_model).

    Parallel form in log space (b = z⊙h̃ > 0): log a = −softplus(k_z), log b = −softplus(−k_z)
    + log g(k_h), scanned by `log_linear_scan`.
    """

    n_gates = 2

    def __init__(self, d_model: int, expand: float = 1.0) -> None:
        super().__init__(d_model, expand)

    def _log_coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kz, kh = self.in_proj(x).chunk(2, dim=-1)  # (B, T, w) each
        return -F.softplus(kz), -F.softplus(-kz) + _log_g(kh)

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kz, kh = self.in_proj(x).chunk(2, dim=-1)  # (B, T, w) each
        z = torch.sigmoid(kz)
        return 1.0 - z, z * _g(kh)


@register(
    "minlstm",
    Role.MIXER,
    [_expand_spec(1.0, "recurrence width = round(expand · d_model); ≠ d_model adds W_out")],
)
class MinLSTM(_ExpandedMin):
    """minLSTM (Feng et al. 2024): f = σ(L_f x), i = σ(L_i x), f' = f/(f+i), i' = i/(f+i);
    h̃ = g(L_h x); h_t = f'⊙h_{t−1} + i'⊙h̃; output W_out h (only when the width ≠ d_model).

    Log space: log f' = log f − logaddexp(log f, log i), same for i', log b = log i' + log g.
    """

    n_gates = 3

    def __init__(self, d_model: int, expand: float = 1.0) -> None:
        super().__init__(d_model, expand)

    def _log_coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kf, ki, kh = self.in_proj(x).chunk(3, dim=-1)  # (B, T, w) each
        log_f, log_i = F.logsigmoid(kf), F.logsigmoid(ki)
        norm = torch.logaddexp(log_f, log_i)
        return log_f - norm, log_i - norm + _log_g(kh)

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kf, ki, kh = self.in_proj(x).chunk(3, dim=-1)  # (B, T, w) each
        f, i = torch.sigmoid(kf), torch.sigmoid(ki)
        return f / (f + i), i / (f + i) * _g(kh)


class _SqrtBoundedGrad(torch.autograd.Function):
    """√x whose derivative 1/(2√x) is capped at `max_grad` (RG-LRU's √(1−a²) near a → 1)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, max_grad: float) -> torch.Tensor:
        y = torch.sqrt(x)
        ctx.save_for_backward(y)
        ctx.max_grad = max_grad
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return grad * (0.5 / y).clamp(max=ctx.max_grad), None


@register(
    "rglru",
    Role.MIXER,
    [
        _expand_spec(HAWK_EXPAND, "recurrence width = round(expand · d_model)"),
        ParamSpec(
            "blocks",
            Categorical((1, 2, 4, 8, 16)),
            1,
            check=_blocks_divide_width,
            doc="blocks of the block-diagonal gate linears (must divide the recurrence width)",
        ),
        ParamSpec("conv_kernel", IntRange(1, 8), 4, doc="width of the causal depthwise Conv1D"),
    ],
)
class RGLRU(Primitive):
    """Hawk recurrent block (De et al. 2024) around the RG-LRU, recurrence width w:
    out = W_out( RG-LRU(Conv1D_k(W_x x)) ⊙ GELU(W_y x) ), with, for u = Conv1D_k(W_x x),
    r = σ(BD_a u + b_a), i = σ(BD_x u + b_x) (block-diagonal linears, `blocks` blocks);
    log a_t = −8·r_t·softplus(Λ);  h_t = a_t⊙h_{t−1} + √(1−a_t²)⊙(i_t⊙u_t).

    Λ is initialised so that the base decay e^{−softplus(Λ)} = a_t^{1/8} at r = 1 lies in
    [0.9, 0.999] (its square uniform); √ has its gradient capped at 1000. As in the reference
    implementation the first position (h_{−1} = 0) is not scaled by √(1−a²). Conv1D is causal
    (left-padded k − 1), GELU is the tanh approximation.
    """

    c = 8.0  # fixed temperature of the recurrence gate
    max_sqrt_grad = 1000.0
    min_radius, max_radius = 0.9, 0.999

    def __init__(
        self,
        d_model: int,
        expand: float = HAWK_EXPAND,
        blocks: int = 1,
        conv_kernel: int = 4,
    ) -> None:
        super().__init__()
        width = recurrence_width(d_model, expand)
        if width % blocks:
            raise ValueError(f"blocks={blocks} does not divide the recurrence width {width}")
        self.width, self.blocks, self.conv_kernel = width, blocks, conv_kernel
        self.in_proj = nn.Linear(d_model, 2 * width)  # [W_x; W_y]
        self.conv = nn.Conv1d(width, width, conv_kernel, groups=width)
        block = width // blocks
        # Both gates' blocks side by side: (blocks, block_in, 2 · block_out).
        self.gate_weight = nn.Parameter(torch.randn(blocks, block, 2 * block) / math.sqrt(block))
        self.gate_bias = nn.Parameter(torch.zeros(2 * width))
        radius_sq = torch.empty(width).uniform_(self.min_radius**2, self.max_radius**2)
        softplus_lambda = -0.5 * torch.log(radius_sq)  # softplus(Λ) = −log(radius)
        self.lam = nn.Parameter(softplus_lambda + torch.log(-torch.expm1(-softplus_lambda)))
        self.out_proj = nn.Linear(width, d_model)

    def decode_state(self, context: int) -> int:
        """h, and the convolution's last k − 1 inputs."""
        return self.width + (self.conv_kernel - 1) * self.width

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, y): the recurrence h_t = a_t h_{t−1} + b_t and the GELU branch y."""
        Bn, T, _ = x.shape
        u, y = self.in_proj(x).chunk(2, dim=-1)  # (B, T, w) each
        u = F.pad(u.transpose(1, 2), (self.conv_kernel - 1, 0))  # (B, w, k − 1 + T)
        u = self.conv(u).transpose(1, 2)  # (B, T, w)
        ub = u.reshape(Bn, T, self.blocks, -1)  # (B, T, blocks, w / blocks)
        gates = torch.einsum("btni,nio->btno", ub, self.gate_weight)  # (B, T, blocks, 2 w/blocks)
        r_pre, i_pre = gates.chunk(2, dim=-1)  # (B, T, blocks, w / blocks) each
        r_pre = r_pre.reshape(Bn, T, self.width)  # (B, T, w)
        i_pre = i_pre.reshape(Bn, T, self.width)  # (B, T, w)
        b_r, b_i = self.gate_bias.chunk(2)
        r, i = torch.sigmoid(r_pre + b_r), torch.sigmoid(i_pre + b_i)
        log_a = -self.c * r * F.softplus(self.lam)
        a = log_a.exp()
        scale = _SqrtBoundedGrad.apply(-torch.expm1(2.0 * log_a), self.max_sqrt_grad)  # √(1−a²)
        scale = torch.cat([torch.ones_like(scale[:, :1]), scale[:, 1:]], dim=1)
        return a, scale * (i * u), F.gelu(y, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, y = self._coefficients(x)
        return self.out_proj(linear_scan(a, b) * y)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        a, b, y = self._coefficients(x)
        return self.out_proj(linear_scan_reference(a, b) * y)


def _gated_rms_out(
    h: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """RMSNorm(h) ⊙ SiLU(gate) over the last dimension."""
    return F.rms_norm(h, (h.shape[-1],), weight, eps) * F.silu(gate)


@register(
    "hgrn",
    Role.MIXER,
    [
        ParamSpec(
            "lower_bound",
            FloatRange(0.0, 0.99),
            0.0,
            doc="forget-gate lower bound γ of this layer (derivations raise it with depth)",
        )
    ],
)
class HGRN(Primitive):
    """HGRN (Qin et al. 2023), width d_model:
    f = γ + (1−γ)σ(W_f x);  i = SiLU(W_i x)⊙(1−f);  h_t = f⊙h_{t−1} + i;
    o = W_o(RMSNorm(h) ⊙ SiLU(W_g x)).

    Deviation from the paper: there γ_l = cumsum(softmax(Γ))_l over layers (shifted so γ_0 = 0),
    coupling all layers through a trainable Γ. Here each layer's γ is an explicit, fixed float
    `lower_bound`; a derivation assigns increasing values with depth, which keeps layers
    independent primitives of the grammar.
    """

    eps = 1e-6

    def __init__(self, d_model: int, lower_bound: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= lower_bound < 1.0:
            raise ValueError(f"lower_bound={lower_bound} must lie in [0, 1)")
        self.lower_bound = lower_bound
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=False)  # [W_f; W_i; W_g]
        self.norm_weight = nn.Parameter(torch.ones(d_model))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """h."""
        return self.norm_weight.numel()

    def _coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kf, ki, kg = self.in_proj(x).chunk(3, dim=-1)  # (B, T, d) each
        gamma = self.lower_bound
        f = gamma + (1.0 - gamma) * torch.sigmoid(kf)
        # 1 − f = (1−γ)σ(−k_f) avoids the cancellation of 1 − f when f → 1.
        i = F.silu(ki) * ((1.0 - gamma) * torch.sigmoid(-kf))
        return f, i, kg

    def _output(self, h: torch.Tensor, kg: torch.Tensor) -> torch.Tensor:
        return self.out_proj(_gated_rms_out(h, kg, self.norm_weight, self.eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, i, kg = self._coefficients(x)
        return self._output(linear_scan(f, i), kg)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        f, i, kg = self._coefficients(x)
        return self._output(linear_scan_reference(f, i), kg)


GLA_KEY_EXPANSION = 0.5  # key width = d_model / 2, as in the GLA paper
GLA_GATE_RANK = 16  # rank of the gate's low-rank projection
GLA_GATE_NORMALIZER = 16.0  # log α = logsigmoid(·) / 16 keeps α near 1 at init


def gla_key_width(d_model: int) -> int:
    return max(1, int(d_model * GLA_KEY_EXPANSION))


@register(
    "gla",
    Role.MIXER,
    [
        ParamSpec(
            "heads",
            Categorical((1, 2, 4, 8, 16)),
            4,
            check=_heads_divide_widths,
            doc="heads (must divide d_model and the key width d_model / 2)",
        )
    ],
)
class GLA(Primitive):
    """Gated linear attention (Yang et al. 2023), H heads, d_k = d/(2H), d_v = d/H:
    S_t = diag(α_t) S_{t−1} + k_tᵀ v_t;  o_t = q_t S_t / √d_k;
    log α_t = logsigmoid(x W_{α1} W_{α2} + b) / 16 (W_{α1}: d → 16);
    out = W_o( RMSNorm(o) ⊙ SiLU(W_g x) ), RMSNorm per head over d_v (weight shared by heads).

    `forward` is the chunked form (`scan.gla_chunked`, exact and overflow-free); `chunk_size`
    is an implementation setting, not a grammar parameter.
    """

    eps = 1e-6

    def __init__(self, d_model: int, heads: int = 4, chunk_size: int = 16) -> None:
        super().__init__()
        key_width = gla_key_width(d_model)
        if d_model % heads or key_width % heads:
            raise ValueError(
                f"heads={heads} must divide d_model={d_model} and the key width {key_width}"
            )
        self.heads, self.chunk_size = heads, chunk_size
        self.key_width = key_width
        self.head_k, self.head_v = key_width // heads, d_model // heads
        # [W_q; W_k; W_v; W_g] in one GEMM.
        self.in_proj = nn.Linear(d_model, 2 * key_width + 2 * d_model, bias=False)
        self.gate_down = nn.Linear(d_model, GLA_GATE_RANK, bias=False)
        self.gate_up = nn.Linear(GLA_GATE_RANK, key_width)
        self.norm_weight = nn.Parameter(torch.ones(self.head_v))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """S, d_k × d_v per head."""
        return self.heads * self.head_k * self.head_v

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        Bn, T, d = x.shape
        q, k, v, g = self.in_proj(x).split(
            [self.key_width, self.key_width, d, d], dim=-1
        )  # (B, T, ·)
        log_alpha = F.logsigmoid(self.gate_up(self.gate_down(x))) / GLA_GATE_NORMALIZER
        H = self.heads
        q = q.reshape(Bn, T, H, self.head_k) * self.head_k**-0.5  # (B, T, H, dk)
        k = k.reshape(Bn, T, H, self.head_k)  # (B, T, H, dk)
        v = v.reshape(Bn, T, H, self.head_v)  # (B, T, H, dv)
        log_alpha = log_alpha.reshape(Bn, T, H, self.head_k)  # (B, T, H, dk)
        return q, k, v, log_alpha, g

    def _output(self, o: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        o = F.rms_norm(o, (self.head_v,), self.norm_weight, self.eps)  # (B, T, H, dv)
        o = o.reshape(g.shape) * F.silu(g)  # (B, T, d)
        return self.out_proj(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, log_alpha, g = self._projections(x)
        return self._output(gla_chunked(q, k, v, log_alpha, self.chunk_size), g)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, log_alpha, g = self._projections(x)
        return self._output(gla_reference(q, k, v, log_alpha), g)


LINEAR_RECURRENCES = ("mingru", "minlstm", "rglru", "hgrn", "gla")

__all__ = [
    "GLA",
    "GRU",
    "HGRN",
    "LEM",
    "LINEAR_RECURRENCES",
    "LSTM",
    "MGU",
    "RGLRU",
    "IndRNN",
    "MinGRU",
    "MinLSTM",
    "gla_key_width",
    "recurrence_width",
]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out (pruning is done before
# export; Prunable's own methods are always left out).
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_ExpandedMin": ("log_linear_scan", "recurrence_width"),
    "MinGRU": ("_log_g",),
    "MinLSTM": ("_log_g",),
    "RGLRU": ("HAWK_EXPAND", "_SqrtBoundedGrad", "linear_scan", "recurrence_width"),
    "HGRN": ("_gated_rms_out", "linear_scan"),
    "gla_key_width": ("GLA_KEY_EXPANSION",),
    "GLA": ("GLA_GATE_NORMALIZER", "GLA_GATE_RANK", "gla_chunked", "gla_key_width"),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {
    "_ExpandedMin": ("_coefficients", "forward_reference"),
    "MinGRU": ("_coefficients",),
    "MinLSTM": ("_coefficients",),
    "RGLRU": ("forward_reference",),
    "HGRN": ("forward_reference",),
    "GLA": ("forward_reference",),
}
