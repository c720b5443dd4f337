"""xLSTM mixers (Beck et al. 2024): the mLSTM block and the sLSTM layer, (B, T, d) -> (B, T, d),
causal by construction.

Both follow NX-AI's reference layers. The mLSTM is the paper's pre-up-projection block (it
carries its own up- and down-projection, so an xLSTM LM gives it no separate channel mixer);
the sLSTM is the layer of the post-up-projection block, whose gated MLP is the next primitive
of the block. `forward` runs the fast form of each cell (`xlstm_cells`), `forward_reference`
the slow one; both share everything else, and tests hold them equal in values and gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import Primitive
from gatesearch.primitives.recurrent import recurrence_width
from gatesearch.primitives.xlstm_cells import (
    FORGET_GATES,
    log_forget,
    mlstm_chunked,
    mlstm_reference,
    slstm_recurrence,
    slstm_reference,
)
from gatesearch.registry import (
    Categorical,
    Context,
    FloatRange,
    IntRange,
    ParamSpec,
    Role,
    divides_width,
    register,
)

XLSTM_NORM_EPS = 1e-5
MLSTM_CHUNK = 64  # chunk length of the chunkwise form (an implementation setting)
MLSTM_EXPAND = 2.0  # the paper's up-projection factor of the mLSTM block
# Forget-gate biases start spread over [3, 6] (σ ≈ 0.95–0.998, memories of tens to hundreds of
# steps), the input gate's near 0, both with zero weights, as the reference initialises them.
FORGET_BIAS_INIT = (3.0, 6.0)
INPUT_BIAS_STD = 0.1


def _forget_bias(n: int, forget: str) -> torch.Tensor:
    """n forget-gate biases with σ(b) spread over σ(FORGET_BIAS_INIT): the same initial f for
    an exponential forget gate, whose f = e^{b}, as for a sigmoid one."""
    bias = torch.linspace(*FORGET_BIAS_INIT, n)
    return bias if forget == "sigmoid" else F.logsigmoid(bias)


def _small_init(*shape: int, fan: int) -> torch.Tensor:
    """N(0, 2/(5·fan)): the reference's "small init" (Nguyen & Salazar 2019) for the narrow
    block-diagonal projections, with fan the model width."""
    return torch.randn(*shape) * math.sqrt(2.0 / (5.0 * fan))


def head_layer_norm(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """LayerNorm of each head without bias (the reference's multi-head norm, a GroupNorm with a
    group per head), with a weight per channel. h: (B, T, H, d_h); weight: (H·d_h,).
    Returns (B, T, H·d_h)."""
    Bn, T, H, dh = h.shape
    h = F.layer_norm(h, (dh,), eps=XLSTM_NORM_EPS) * weight.reshape(H, dh)
    return h.reshape(Bn, T, H * dh)  # (B, T, H, d_h) -> (B, T, H·d_h)


def _causal_depthwise(conv: nn.Conv1d | None, u: torch.Tensor) -> torch.Tensor:
    """SiLU(causal depthwise Conv1D(u)), or SiLU(u) without a convolution. u: (B, T, w)."""
    if conv is not None:
        u = F.pad(u.transpose(1, 2), (conv.kernel_size[0] - 1, 0))  # (B, w, k − 1 + T)
        u = conv(u).transpose(1, 2)  # (B, T, w)
    return F.silu(u)


def _depthwise(width: int, kernel: int) -> nn.Conv1d | None:
    return nn.Conv1d(width, width, kernel, groups=width) if kernel > 0 else None


# ------------------------------------------------------------------------------- mLSTM


def _mlstm_width_fits(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    width = recurrence_width(ctx.d_model, params.get("expand", MLSTM_EXPAND))
    if width % int(value):
        return f"{value} does not divide the mLSTM width {width}"
    return None


def _forget_spec() -> ParamSpec:
    return ParamSpec(
        "forget",
        Categorical(FORGET_GATES),
        "sigmoid",
        doc="forget gate f = σ(f̃) (sigmoid) or e^{f̃} (exp), stabilised either way",
    )


@register(
    "mlstm",
    Role.MIXER,
    [
        ParamSpec(
            "expand",
            FloatRange(1.0, 4.0),
            MLSTM_EXPAND,
            doc="mLSTM width = round(expand · d_model), the block's up-projection",
        ),
        ParamSpec(
            "heads",
            Categorical((1, 2, 4, 8, 16)),
            4,
            check=_mlstm_width_fits,
            doc="heads of the matrix memory (must divide the mLSTM width)",
        ),
        _forget_spec(),
        ParamSpec(
            "conv_kernel",
            IntRange(0, 8),
            4,
            doc="width of the causal depthwise Conv1D before q and k (0: none, SiLU only)",
        ),
        ParamSpec(
            "qkv_block",
            Categorical((1, 2, 4, 8, 16, 32)),
            4,
            check=_mlstm_width_fits,
            doc="block size of the block-diagonal q, k, v projections (must divide the width)",
        ),
    ],
)
class MLSTM(Primitive):
    """mLSTM block (Beck et al. 2024, pre-up-projection), width w = round(expand·d), H heads,
    d_h = w/H:
    u, z = x W_up (d → 2w);  u_c = SiLU(Conv1D_k(u));
    q, k = BD_q u_c, BD_k u_c;  v = BD_v u  (block-diagonal, blocks of qkv_block);
    ĩ, f̃ = [q; k; v] W_if + b (one of each per head);  i = e^{ĩ}, f = σ(f̃) or e^{f̃};
    C_t = f_t C_{t−1} + i_t v_t k_tᵀ/√d_h;  n_t = f_t n_{t−1} + i_t k_t/√d_h;
    h_t = C_t q_t / max(|n_tᵀ q_t|, 1)  (stabilised by m_t = max(log f_t + m_{t−1}, ĩ_t));
    out = W_down( (LN_head(h) + s ⊙ u_c) ⊙ SiLU(z) ),
    LN_head a LayerNorm per head with a weight per channel and no bias, s a learnable skip
    (ones at init). Biases only on the conv and the gates. Gate weights start at zero, the
    forget biases spread so that f ∈ σ([3, 6]), the input biases N(0, 0.1²).

    `forward` is the chunkwise form (`xlstm_cells.mlstm_chunked`), `forward_reference` the
    step loop; `chunk_size` is an implementation setting, not a grammar parameter.
    """

    fixed_time = "its stabilised state crosses chunks by a loop over T/C chunks"

    def __init__(
        self,
        d_model: int,
        expand: float = MLSTM_EXPAND,
        heads: int = 4,
        forget: str = "sigmoid",
        conv_kernel: int = 4,
        qkv_block: int = 4,
        chunk_size: int = MLSTM_CHUNK,
    ) -> None:
        super().__init__()
        width = recurrence_width(d_model, expand)
        for name, value in (("heads", heads), ("qkv_block", qkv_block)):
            if width % value:
                raise ValueError(f"{name}={value} does not divide the mLSTM width {width}")
        log_forget(torch.zeros(()), forget)  # refuses an unknown form here, not at forward
        self.width, self.heads, self.forget = width, heads, forget
        self.qkv_block, self.chunk_size = qkv_block, chunk_size
        self.up_proj = nn.Linear(d_model, 2 * width, bias=False)
        self.conv = _depthwise(width, conv_kernel)
        blocks = width // qkv_block
        # q's and k's blocks side by side (they read the same u_c): (blocks, in, 2 · out).
        self.qk_weight = nn.Parameter(_small_init(blocks, qkv_block, 2 * qkv_block, fan=d_model))
        self.v_weight = nn.Parameter(_small_init(blocks, qkv_block, qkv_block, fan=d_model))
        self.gates = nn.Linear(3 * width, 2 * heads)  # [ĩ; f̃] from [q; k; v]
        with torch.no_grad():
            self.gates.weight.zero_()
            self.gates.bias[:heads].normal_(0.0, INPUT_BIAS_STD)
            self.gates.bias[heads:] = _forget_bias(heads, forget)
        self.norm_weight = nn.Parameter(torch.ones(width))
        self.skip = nn.Parameter(torch.ones(width))
        self.down_proj = nn.Linear(width, d_model, bias=False)

    def decode_state(self, context: int) -> int:
        """C (d_h × d_h per head), n (d_h per head) and m (one per head), and the
        convolution's last k − 1 inputs."""
        dh = self.width // self.heads
        conv = (self.conv.kernel_size[0] - 1) * self.width if self.conv is not None else 0
        return self.heads * (dh * dh + dh + 1) + conv

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(q, k, v, ĩ, log f) for the cell, and u_c and z for the output."""
        Bn, T, _ = x.shape
        u, z = self.up_proj(x).chunk(2, dim=-1)  # (B, T, w) each
        u_c = _causal_depthwise(self.conv, u)  # (B, T, w)
        blocks, bs = self.width // self.qkv_block, self.qkv_block
        qk = torch.einsum("btni,nio->btno", u_c.reshape(Bn, T, blocks, bs), self.qk_weight)
        q, k = qk.chunk(2, dim=-1)  # (B, T, blocks, bs) each
        q, k = q.reshape(Bn, T, self.width), k.reshape(Bn, T, self.width)  # (B, T, w)
        v = torch.einsum("btni,nio->btno", u.reshape(Bn, T, blocks, bs), self.v_weight)
        v = v.reshape(Bn, T, self.width)  # (B, T, blocks, bs) -> (B, T, w)
        i_pre, f_pre = self.gates(torch.cat([q, k, v], dim=-1)).chunk(2, dim=-1)  # (B, T, H)
        H, dh = self.heads, self.width // self.heads
        q = q.reshape(Bn, T, H, dh)  # (B, T, H, dh)
        k = k.reshape(Bn, T, H, dh) * dh**-0.5  # (B, T, H, dh)
        v = v.reshape(Bn, T, H, dh)  # (B, T, H, dh)
        return q, k, v, i_pre, log_forget(f_pre, self.forget), u_c, z

    def _output(self, h: torch.Tensor, u_c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = head_layer_norm(h, self.norm_weight) + self.skip * u_c  # (B, T, w)
        return self.down_proj(h * F.silu(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, log_i, log_f, u_c, z = self._inputs(x)
        return self._output(mlstm_chunked(q, k, v, log_i, log_f, self.chunk_size), u_c, z)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, log_i, log_f, u_c, z = self._inputs(x)
        return self._output(mlstm_reference(q, k, v, log_i, log_f), u_c, z)


# ------------------------------------------------------------------------------- sLSTM


@register(
    "slstm",
    Role.MIXER,
    [
        ParamSpec(
            "heads",
            Categorical((1, 2, 4, 8, 16)),
            4,
            check=divides_width,
            doc="heads: blocks of the block-diagonal recurrent and input weights (divide d_model)",
        ),
        _forget_spec(),
        ParamSpec(
            "conv_kernel",
            IntRange(0, 8),
            4,
            doc="width of the causal depthwise Conv1D before the input and forget gates (0: none)",
        ),
    ],
)
class SLSTM(Primitive):
    """sLSTM layer (Beck et al. 2024), width d, H heads of d_h = d/H:
    x_c = SiLU(Conv1D_k(x));  per head, with block-diagonal W (input) and R (recurrent),
    ĩ, f̃ = W_{i,f} x_c + R_{i,f} h_{t−1} + b;  z̃, õ = W_{z,o} x + R_{z,o} h_{t−1} + b;
    i = e^{ĩ}, f = σ(f̃) or e^{f̃};  c_t = f c_{t−1} + i tanh(z̃);  n_t = f n_{t−1} + i;
    h_t = σ(õ) c_t / n_t  (stabilised by m_t = max(log f_t + m_{t−1}, ĩ_t));
    out = LN_head(h), a LayerNorm per head with a weight per channel and no bias. No output
    projection: in the paper's sLSTM block a gated MLP follows (the next primitive).
    R starts at zero and the forget biases spread so that f ∈ σ([3, 6]); the input weights
    N(0, 2/(5d)).

    `forward` is the stabilised step loop (`xlstm_cells.slstm_recurrence`; h feeds back
    through R, so there is no parallel form), `forward_reference` the paper's unstabilised
    equations (`slstm_reference`, which overflow for large gate pre-activations).
    """

    fixed_time = "a nonlinear recurrence, computed by a loop over time"

    def __init__(
        self, d_model: int, heads: int = 4, forget: str = "sigmoid", conv_kernel: int = 4
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"heads={heads} does not divide the model width {d_model}")
        log_forget(torch.zeros(()), forget)  # refuses an unknown form here, not at forward
        self.heads, self.forget = heads, forget
        dh = d_model // heads
        self.conv = _depthwise(d_model, conv_kernel)
        # Per head: [W_i; W_f] reading x_c and [W_z; W_o] reading x, (H, d_h, 2·d_h) each.
        self.if_weight = nn.Parameter(_small_init(heads, dh, 2 * dh, fan=d_model))
        self.zo_weight = nn.Parameter(_small_init(heads, dh, 2 * dh, fan=d_model))
        self.recurrent = nn.Parameter(torch.zeros(heads, dh, 4 * dh))  # R, gates ĩ f̃ z̃ õ
        bias = torch.zeros(heads, 4, dh)
        bias[:, 1] = _forget_bias(dh, forget)
        self.bias = nn.Parameter(bias.reshape(heads, 4 * dh))
        self.norm_weight = nn.Parameter(torch.ones(d_model))

    def decode_state(self, context: int) -> int:
        """h, c, n and m (d each), and the convolution's last k − 1 inputs."""
        d = self.norm_weight.numel()
        conv = (self.conv.kernel_size[0] - 1) * d if self.conv is not None else 0
        return 4 * d + conv

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b for every t: (B, T, H, 4·d_h), gates in the order ĩ, f̃, z̃, õ."""
        Bn, T, d = x.shape
        H = self.heads
        x_c = _causal_depthwise(self.conv, x).reshape(Bn, T, H, d // H)  # (B, T, H, dh)
        wx_if = torch.einsum("bthi,hio->btho", x_c, self.if_weight)  # (B, T, H, 2·dh)
        wx_zo = torch.einsum("bthi,hio->btho", x.reshape(Bn, T, H, d // H), self.zo_weight)
        return torch.cat([wx_if, wx_zo], dim=-1) + self.bias  # (B, T, H, 4·dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = slstm_recurrence(self._inputs(x), self.recurrent, self.forget)
        return head_layer_norm(h, self.norm_weight)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        h = slstm_reference(self._inputs(x), self.recurrent, self.forget)
        return head_layer_norm(h, self.norm_weight)


XLSTM_MIXERS = ("mlstm", "slstm")

__all__ = ["MLSTM", "SLSTM", "XLSTM_MIXERS", "head_layer_norm"]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_forget_bias": ("FORGET_BIAS_INIT",),
    "head_layer_norm": ("XLSTM_NORM_EPS",),
    "MLSTM": (
        "INPUT_BIAS_STD",
        "MLSTM_CHUNK",
        "MLSTM_EXPAND",
        "_causal_depthwise",
        "_depthwise",
        "_forget_bias",
        "_small_init",
        "head_layer_norm",
        "log_forget",
        "mlstm_chunked",
        "recurrence_width",
    ),
    "SLSTM": (
        "_causal_depthwise",
        "_depthwise",
        "_forget_bias",
        "_small_init",
        "head_layer_norm",
        "log_forget",
        "slstm_recurrence",
    ),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {
    "MLSTM": ("forward_reference",),
    "SLSTM": ("forward_reference",),
}
