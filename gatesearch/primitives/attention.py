"""Multi-head self-attention with the gate positions of Qiu et al. 2025 ("Gated Attention for
LLMs"), RoPE, QK-norm, local sliding windows and trainable pruning gates over heads."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.base import NoDecodeState, Primitive, Prunable
from gatesearch.primitives.channel import shrink_linear
from gatesearch.primitives.pruning import make_gate, prune_param
from gatesearch.registry import (
    Categorical,
    Context,
    IntRange,
    ParamSpec,
    Role,
    divides_width,
    register,
)

GATE_POSITIONS = ("none", "g1", "g2", "g3", "g4", "g5")
# Where each position sits: g1 SDPA output per head, g2 value, g3 key, g4 query, g5 after W_O.
_HEAD_POSITIONS = ("g1", "g2", "g3", "g4")
# Any, not Callable[[Tensor], Tensor]: this file's imports are copied into exported models,
# which import only torch and a few stdlib modules (collections.abc is not among them).
_GATE_ACTS: dict[str, Any] = {
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
}
ROPE_BASE = 10_000.0
QK_NORM_EPS = 1e-6


def _heads_fit(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    # A pruned attention pins head_dim; then heads·head_dim need not equal d_model.
    if params.get("head_dim") is not None:
        return None
    return divides_width(value, params, ctx)


def _rope_fits(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    heads = params.get("heads")
    if not value or heads is None:
        return None
    head_dim = params.get("head_dim") or ctx.d_model // int(heads)
    if head_dim % 2:
        return f"RoPE rotates pairs of channels and needs an even head size, not {head_dim}"
    return None


def _granularity_fits(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    if value == "headwise" and params.get("gate") == "g5":
        return "a g5 gate sits after W_O where there are no heads; use elementwise"
    return None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def local_window_mask(t: int, window: int, causal: bool, device: torch.device) -> torch.Tensor:
    """(T, T) boolean mask, True where query i may attend to key j.

    Causal: i − window < j ≤ i (the last `window` tokens, itself included).
    Non-causal: |i − j| < window (`window` tokens on each side, itself included).
    """
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    if causal:
        return (j <= i) & (i - j < window)
    return (i - j).abs() < window


def _gated(params: dict[str, Any]) -> bool:
    """Gate options matter only when there is a gate."""
    return params.get("gate", "none") != "none"


@register(
    "attention",
    Role.MIXER,
    [
        # head_dim comes first so that the `heads` check sees it (see _heads_fit).
        ParamSpec(
            "head_dim",
            IntRange(1, 4096),
            default=None,
            internal=True,
            doc="size of one head; None means d_model // heads. Set by pruning.",
        ),
        ParamSpec("heads", IntRange(1, 64), default=4, check=_heads_fit, doc="number of heads"),
        ParamSpec("rope", Categorical((True, False)), default=True, check=_rope_fits),
        ParamSpec("qk_norm", Categorical((False, True)), default=False, doc="RMSNorm on q, k"),
        ParamSpec(
            "window",
            IntRange(0, 1 << 16),
            default=0,
            doc="0: global; w > 0: a query sees w tokens, itself included, back (causal) or each side",
        ),
        ParamSpec("gate", Categorical(GATE_POSITIONS), default="none"),
        ParamSpec(
            "gate_granularity",
            Categorical(("elementwise", "headwise")),
            default="elementwise",
            active=_gated,
            check=_granularity_fits,
        ),
        ParamSpec("gate_act", Categorical(("sigmoid", "silu")), default="sigmoid", active=_gated),
        ParamSpec(
            "gate_mode",
            Categorical(("multiplicative", "additive")),
            default="multiplicative",
            active=_gated,
        ),
        prune_param("trainable gates over heads; pruning removes heads"),
    ],
    context=("d_model", "causal"),
)
class Attention(Primitive, Prunable):
    """Multi-head self-attention, optionally gated (Qiu et al. 2025).

    q, k, v = x W_Q, x W_K, x W_V split into H heads of size d_h (no biases);
    q, k ← RMSNorm(q), RMSNorm(k) per head (qk_norm); q, k ← RoPE(q), RoPE(k) (rope);
    o_h = softmax(q_h k_hᵀ / √d_h + M) v_h, M = causal and/or local-window mask;
    y = concat_h(o_h) W_O.
    Gate: Y' = Y ⊙ φ(x W_θ) (multiplicative) or Y + φ(x W_θ) (additive), φ ∈ {σ, SiLU}, x the
    block input at the token of Y. Y is o_h (g1), v (g2), k (g3), q (g4) or y (g5). Elementwise
    gates have one value per channel of Y, headwise ones one per head (not for g5). A query or
    key gate acts after QK-norm, so a headwise scale is not normalised away, and before RoPE.
    W_θ is fused into the query projection: one d → H·d_h + gate-width GEMM, then split.
    Pruning gates z_h (prune ≠ none) scale o_h; prune_() removes heads with z_h = 0 and folds
    the others into W_O's columns; d_h stays, so W_O becomes H'·d_h → d.

    Parameters, with D = H·d_h (= d when unpruned): 3·d·D + D·d for W_Q, W_K, W_V, W_O (LLaMA:
    4·d²); + 2·d_h with qk_norm; gate W_θ: g1–g4 elementwise + d·D (= d²), headwise + d·H,
    g5 elementwise + d²; pruning gates + H.
    """

    def __init__(
        self,
        d_model: int,
        causal: bool,
        heads: int = 4,
        rope: bool = True,
        qk_norm: bool = False,
        window: int = 0,
        gate: str = "none",
        gate_granularity: str = "elementwise",
        gate_act: str = "sigmoid",
        gate_mode: str = "multiplicative",
        prune: str = "none",
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if d_model % heads:
                raise ValueError(f"heads={heads} does not divide d_model={d_model}")
            head_dim = d_model // heads
        if rope and head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got head_dim={head_dim}")
        if gate not in GATE_POSITIONS:
            raise ValueError(f"gate must be one of {GATE_POSITIONS}, got {gate!r}")
        if gate_granularity not in ("elementwise", "headwise"):
            raise ValueError(f"unknown gate_granularity {gate_granularity!r}")
        if gate == "g5" and gate_granularity == "headwise":
            raise ValueError("a g5 gate sits after W_O where there are no heads; use elementwise")
        if gate_act not in _GATE_ACTS:
            raise ValueError(f"gate_act must be one of {tuple(_GATE_ACTS)}, got {gate_act!r}")
        if gate_mode not in ("multiplicative", "additive"):
            raise ValueError(f"unknown gate_mode {gate_mode!r}")
        if window < 0:
            raise ValueError(f"window must be 0 (global) or positive, got {window}")
        self.d_model = d_model
        self.causal = bool(causal)
        self.heads = heads
        self.head_dim = head_dim
        self.rope = rope
        self.window = window
        self.gate = gate
        self.gate_granularity = gate_granularity
        self.gate_act = gate_act
        self.gate_mode = gate_mode
        self.prune = prune

        inner = heads * head_dim
        self.q_proj = nn.Linear(d_model, inner + self._gate_width(), bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        if qk_norm:
            self.q_norm: nn.Parameter | None = nn.Parameter(torch.ones(head_dim))
            self.k_norm: nn.Parameter | None = nn.Parameter(torch.ones(head_dim))
        else:
            self.q_norm = self.k_norm = None
        self.head_gate = make_gate(prune, heads)

    def _gate_width(self) -> int:
        if self.gate == "none":
            return 0
        if self.gate == "g5":
            return self.d_model
        if self.gate_granularity == "headwise":
            return self.heads
        return self.heads * self.head_dim

    def _apply_gate(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        phi = _GATE_ACTS[self.gate_act](g)
        return y * phi if self.gate_mode == "multiplicative" else y + phi

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H, d_h); rotate-half pairing: channel i with channel i + d_h/2. Angles are
        # made in float64: t·θ_i in float32 loses the phase at long positions.
        f64 = torch.float64
        dh = self.head_dim
        inv_freq = ROPE_BASE ** (-torch.arange(0, dh, 2, device=x.device, dtype=f64) / dh)
        t = torch.arange(x.shape[1], device=x.device, dtype=f64)
        angles = torch.outer(t, inv_freq)  # (T, d_h/2)
        angles = torch.cat((angles, angles), dim=-1)[None, :, None, :]  # (1, T, 1, d_h)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        return x * cos + _rotate_half(x) * sin

    takes_lengths = True

    def decode_state(self, context: int) -> int:
        """The KV cache: keys and values of every position the next query reads besides its
        own — all `context` of them, or the window's last `window` − 1 (pruned heads gone)."""
        if not self.causal:
            raise NoDecodeState("non-causal attention reads later positions")
        kept = context if self.window == 0 else min(context, self.window - 1)
        return 2 * kept * self.heads * self.head_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h, dh = self.heads, self.head_dim
        q, g = self.q_proj(x).split([h * dh, self._gate_width()], dim=-1)
        q = q.view(b, t, h, dh)  # (B, T, H, d_h)
        k = self.k_proj(x).view(b, t, h, dh)  # (B, T, H, d_h)
        v = self.v_proj(x).view(b, t, h, dh)  # (B, T, H, d_h)
        if self.gate in _HEAD_POSITIONS:
            g = g.view(b, t, h, -1)  # (B, T, H, d_h) elementwise or (B, T, H, 1) headwise

        if self.gate == "g2":
            v = self._apply_gate(v, g)
        if self.q_norm is not None and self.k_norm is not None:
            q = F.rms_norm(q, (dh,), self.q_norm, QK_NORM_EPS)
            k = F.rms_norm(k, (dh,), self.k_norm, QK_NORM_EPS)
        if self.gate == "g3":
            k = self._apply_gate(k, g)
        elif self.gate == "g4":
            q = self._apply_gate(q, g)
        if self.rope:
            q, k = self._rope(q), self._rope(k)

        mask = None
        if self.window > 0:
            mask = local_window_mask(t, self.window, self.causal, x.device)
        if lengths is not None and not self.causal:
            # Keys at padded positions are hidden. A query still sees itself, so a padded query
            # beyond every key of its window gets no all-masked row (NaN that the next layer's
            # zero weights would not cancel); real queries see only real keys either way.
            pos = torch.arange(t, device=x.device)
            real = pos < lengths.to(x.device)[:, None]  # (B, T_k)
            keys = real[:, None, :] | torch.eye(t, dtype=torch.bool, device=x.device)  # (B, T, T)
            if mask is not None:
                keys = keys & mask
            mask = keys[:, None]  # (B, 1, T_q, T_k), broadcast over heads
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),  # (B, H, T, d_h)
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=self.causal and mask is None,
        )
        y = y.transpose(1, 2)  # (B, T, H, d_h)

        if self.gate == "g1":
            y = self._apply_gate(y, g)
        if self.head_gate is not None:
            y = y * self.head_gate()[:, None]
        out = self.o_proj(y.reshape(b, t, h * dh))  # (B, T, d)
        if self.gate == "g5":
            out = self._apply_gate(out, g)
        return out

    # ------------------------------------------------------------------------------ pruning

    def open_units(self) -> int:
        if self.head_gate is None:
            return self.heads
        return max(1, int(self.head_gate.keep_mask().sum()))

    @torch.no_grad()
    def prune_(self) -> dict[str, Any]:
        """Drop heads whose gate is 0, fold the other gate values into W_O's columns.

        When every gate is closed one head is kept: its zero gate folded into W_O makes its
        contribution zero, as it was, and the module keeps a valid shape.
        """
        if self.head_gate is not None:
            values = self.head_gate.final_values().to(self.o_proj.weight)
            keep = torch.nonzero(values > 0).flatten()
            if keep.numel() == 0:
                keep = torch.zeros(1, dtype=torch.long, device=values.device)
            dh = self.head_dim
            # Channel indices of the kept heads inside an (H·d_h)-wide projection.
            channels = (keep[:, None] * dh + torch.arange(dh, device=keep.device)).flatten()
            gate_rows = self._kept_gate_rows(keep, channels)
            q_rows = torch.cat((channels, gate_rows + self.heads * dh))
            self.q_proj = shrink_linear(self.q_proj, out_index=q_rows)
            self.k_proj = shrink_linear(self.k_proj, out_index=channels)
            self.v_proj = shrink_linear(self.v_proj, out_index=channels)
            self.o_proj = shrink_linear(
                self.o_proj, in_index=channels, in_scale=values[keep].repeat_interleave(dh)
            )
            self.heads = int(keep.numel())
            self.head_gate = None
            self.prune = "none"
        return {"heads": self.heads, "head_dim": self.head_dim, "prune": "none"}

    def _kept_gate_rows(self, keep: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Rows of W_θ (counted from its start) that belong to the kept heads."""
        if self.gate in _HEAD_POSITIONS:
            return keep if self.gate_granularity == "headwise" else channels
        # g5 gates the d-wide output, which has no heads; none has no rows.
        return torch.arange(self._gate_width(), device=keep.device)


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out (pruning is done before
# export; Prunable's own methods are always left out).
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "Attention": (
        "GATE_POSITIONS",
        "QK_NORM_EPS",
        "ROPE_BASE",
        "_GATE_ACTS",
        "_HEAD_POSITIONS",
        "_rotate_half",
        "local_window_mask",
        "make_gate",
    ),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {"Attention": ("_kept_gate_rows",)}
