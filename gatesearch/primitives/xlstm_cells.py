"""The two cells of xLSTM (Beck et al. 2024): the mLSTM's matrix memory as a step loop beside a
chunkwise form, and the sLSTM's scalar memory as a stabilised step loop beside the paper's
unstabilised equations.

mLSTM, per head, with the memory held transposed as S_t = C_tᵀ ∈ R^{d_k×d_v} (a key row per key
channel, as `delta_rule` holds its state), an exponential input gate i_t = e^{ĩ_t} and a forget
gate f_t = σ(f̃_t) or e^{f̃_t} (the caller passes ĩ_t and log f_t):

    S_t = f_t S_{t−1} + i_t k_t v_tᵀ,   n_t = f_t n_{t−1} + i_t k_t,
    h_t = S_tᵀ q_t / max(|n_tᵀ q_t|, 1).

The gates are unbounded, so the states are kept scaled by e^{−m_t}, with the stabiliser
m_t = max(log f_t + m_{t−1}, ĩ_t) (m_1 = ĩ_1): S̃_t = e^{−m_t} S_t, ñ_t = e^{−m_t} n_t, and

    S̃_t = e^{log f_t + m_{t−1} − m_t} S̃_{t−1} + e^{ĩ_t − m_t} k_t v_tᵀ   (both exponents ≤ 0),
    h_t = S̃_tᵀ q_t / max(|ñ_tᵀ q_t|, e^{−m_t}).

That is the same h_t for any m: the e^{−m_t} cancels between numerator and denominator. So m is
a constant to autograd (computed from detached gates): its exact gradient contribution is zero,
and leaving it out keeps the backward pass free of terms that only cancel.

- `mlstm_reference`: that loop over t.
- `mlstm_chunked`: T cut into chunks of C steps. Inside a chunk, with F_t = Σ_{r≤t} log f_r
  (in-chunk, cumulative) and the state (S̃₀, ñ₀, m₀) entering it, the log weight of the write at
  s in row t is D_ts = F_t − F_s + ĩ_s (s ≤ t) and that of the entering state F_t + m₀, so

      m_t = max(F_t + m₀, max_{s≤t} D_ts),
      h_t = [e^{F_t+m₀−m_t} S̃₀ᵀ q_t + Σ_{s≤t} e^{D_ts−m_t} (q_t·k_s) v_s]
            / max(|e^{F_t+m₀−m_t} ñ₀·q_t + Σ_{s≤t} e^{D_ts−m_t} q_t·k_s|, e^{−m_t}).

  The in-chunk sums are matrix products for every chunk at once, taken against the chunk's own
  row maxima max_s D_ts and rescaled afterwards (every exponent stays ≤ 0); the state leaving a
  chunk is the entering one decayed by e^{F_C} plus the chunk's writes weighted e^{F_C−F_s+ĩ_s}.
  A loop over the chunks carries only that state (T/C elementwise updates); the products with
  the entering states are then one batched product. Any T and chunk size: the last chunk is
  padded after the real steps, which no real output reads.

sLSTM (per unit, heads = blocks of the recurrent matrix), with pre-activations
x̃_t = W x_t + R h_{t−1} + b for ĩ, f̃, z̃, õ and R block-diagonal (one d_h×4d_h block per head):

    c_t = f_t c_{t−1} + i_t tanh(z̃_t),   n_t = f_t n_{t−1} + i_t,   h_t = σ(õ_t) c_t / n_t,

with i_t = e^{ĩ_t} and f_t = σ(f̃_t) or e^{f̃_t}. h feeds back through R, so it is a step loop
whatever the form. `slstm_recurrence` runs it stabilised as above (c̃ = e^{−m} c, ñ = e^{−m} n,
the same m rule; c/n does not depend on m, so m is again a constant to autograd);
`slstm_reference` runs the equations as written, exact only while the gates' products stay
within the dtype's range (tests use it in float64 at moderate pre-activations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gatesearch.primitives.delta_rule import heads_first_chunks, pad_steps_to

FORGET_GATES = ("sigmoid", "exp")


def log_forget(f_pre: torch.Tensor, forget: str) -> torch.Tensor:
    """log f from the forget gate's pre-activation: logsigmoid(f̃) (sigmoid) or f̃ (exp)."""
    if forget == "sigmoid":
        return F.logsigmoid(f_pre)
    if forget == "exp":
        return f_pre
    raise ValueError(f"forget={forget!r} is not one of {', '.join(FORGET_GATES)}")


# ------------------------------------------------------------------------------- mLSTM


def mlstm_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
) -> torch.Tensor:
    """h_t = S_tᵀ q_t / max(|n_tᵀ q_t|, 1) with S_t = f_t S_{t−1} + i_t k_t v_tᵀ, n_t likewise,
    stabilised, by a loop over t (module docstring).

    q, k: (B, T, H, K); v: (B, T, H, V); log_i = ĩ and log_f = log f: (B, T, H).
    Returns (B, T, H, V). Scaling k by 1/√d_k is the caller's.
    """
    S: torch.Tensor | None = None  # (B, H, K, V), scaled by e^{−m}
    n = m = q.new_zeros(())
    out = []
    # unbind, not q[:, t]: each indexing op's backward would zero-fill a full-size gradient.
    for q_t, k_t, v_t, li_t, lf_t in zip(
        q.unbind(1), k.unbind(1), v.unbind(1), log_i.unbind(1), log_f.unbind(1)
    ):
        kv = k_t[..., :, None] * v_t[..., None, :]  # (B, H, K, V)
        if S is None:  # empty memory: m_1 = ĩ_1
            m = li_t.detach()  # (B, H)
            write = (li_t - m).exp()
            S, n = write[..., None, None] * kv, write[..., None] * k_t
        else:
            m_new = torch.maximum(lf_t.detach() + m, li_t.detach())
            decay, write = (lf_t + m - m_new).exp(), (li_t - m_new).exp()  # (B, H), ≤ 1
            S = decay[..., None, None] * S + write[..., None, None] * kv
            n = decay[..., None] * n + write[..., None] * k_t  # (B, H, K)
            m = m_new
        num = torch.einsum("bhk,bhkv->bhv", q_t, S)  # (B, H, V)
        den = (q_t * n).sum(-1)  # (B, H)
        out.append(num / _mlstm_normaliser(den, m)[..., None])
    return torch.stack(out, dim=1)  # (B, T, H, V)


def _mlstm_normaliser(den: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """max(|den|, e^{−m}), and never below the dtype's smallest normal number: e^{−m} underflows
    to 0 once m exceeds ≈ 87 in float32 (an exponential forget gate can make m grow by tens a
    step), and a zero den (a padded step, q = 0) would then divide 0 by 0."""
    return torch.maximum(den.abs(), (-m).exp()).clamp(min=torch.finfo(den.dtype).tiny)


def mlstm_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The chunkwise form of `mlstm_reference` (same arguments and result; module docstring).
    Any T and any chunk size."""
    Bn, T, H, K = q.shape
    C = chunk_size
    nc = -(-T // C)
    # (B, T, H, ·) -> (B, nc, H, C, ·) after padding T to nc·C.
    qc, kc, vc = (heads_first_chunks(pad_steps_to(x, nc * C), C) for x in (q, k, v))
    li = heads_first_chunks(pad_steps_to(log_i, nc * C), C)  # (B, nc, H, C)
    Fc = heads_first_chunks(pad_steps_to(log_f, nc * C), C).cumsum(dim=-1)  # (B, nc, H, C)

    # In-chunk: D_ts = F_t − F_s + ĩ_s for s ≤ t, taken against each row's own maximum.
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    D = Fc[..., :, None] - Fc[..., None, :] + li[..., None, :]  # (B, nc, H, C_t, C_s)
    D = D.masked_fill(~causal, -math.inf)
    m_own = D.detach().amax(dim=-1)  # (B, nc, H, C): finite, the diagonal is ĩ_t
    scores = (qc @ kc.transpose(-1, -2)) * (D - m_own[..., None]).exp()  # (B, nc, H, C, C)
    num_own = scores @ vc  # (B, nc, H, C, V)
    den_own = scores.sum(dim=-1)  # (B, nc, H, C)

    # Writes into the state leaving each chunk: log weights F_C − F_s + ĩ_s (D's last row).
    F_end = Fc[..., -1]  # (B, nc, H): the chunk's whole log decay
    m_write = m_own[..., -1]  # (B, nc, H)
    k_end = kc * (D[..., -1, :] - m_write[..., None]).exp()[..., None]  # (B, nc, H, C, K)
    S_write = k_end.transpose(-1, -2) @ vc  # (B, nc, H, K, V)
    n_write = k_end.sum(dim=-2)  # (B, nc, H, K)

    # The states entering each chunk. The first enters empty, with m = −∞: every weight on it
    # is e^{−∞} = 0 and its maximum never wins.
    S = q.new_zeros(Bn, H, K, v.shape[-1])  # (B, H, K, V)
    n = q.new_zeros(Bn, H, K)  # (B, H, K)
    m = q.new_full((Bn, H), -math.inf)  # (B, H)
    S_in, n_in, m_in = [S], [n], [m]
    # unbind, not x[:, c]: each indexing op's backward would zero-fill a full-size gradient.
    steps = zip(F_end.unbind(1), m_write.unbind(1), S_write.unbind(1), n_write.unbind(1))
    for c, (F_c, mw_c, Sw_c, nw_c) in enumerate(steps):
        if c + 1 == nc:
            break
        if c == 0:
            S, n, m = Sw_c, nw_c, mw_c
        else:
            m_new = torch.maximum(F_c.detach() + m, mw_c)  # (B, H)
            decay, write = (F_c + m - m_new).exp(), (mw_c - m_new).exp()  # (B, H), ≤ 1
            S = decay[..., None, None] * S + write[..., None, None] * Sw_c
            n = decay[..., None] * n + write[..., None] * nw_c
            m = m_new
        S_in.append(S)
        n_in.append(n)
        m_in.append(m)
    S_all = torch.stack(S_in, dim=1)  # (B, nc, H, K, V)
    n_all = torch.stack(n_in, dim=1)  # (B, nc, H, K)
    log_carry = Fc + torch.stack(m_in, dim=1)[..., None]  # (B, nc, H, C): weight of S̃₀ at t
    m_t = torch.maximum(log_carry.detach(), m_own)  # (B, nc, H, C)
    carry, own = (log_carry - m_t).exp(), (m_own - m_t).exp()  # (B, nc, H, C), ≤ 1
    num = carry[..., None] * (qc @ S_all) + own[..., None] * num_own  # (B, nc, H, C, V)
    den = carry * (qc @ n_all[..., None]).squeeze(-1) + own * den_own  # (B, nc, H, C)
    h = num / _mlstm_normaliser(den, m_t)[..., None]  # (B, nc, H, C, V)
    h = h.transpose(2, 3).reshape(Bn, nc * C, H, -1)  # (B, nc·C, H, V)
    return h[:, :T]


# ------------------------------------------------------------------------------- sLSTM


def slstm_recurrence(wx: torch.Tensor, recurrent: torch.Tensor, forget: str) -> torch.Tensor:
    """The sLSTM, stabilised, by a loop over t (module docstring).

    wx: (B, T, H, 4·d_h), the input part W x_t + b of the pre-activations, gates in the order
    ĩ, f̃, z̃, õ along the last dimension; recurrent: (H, d_h, 4·d_h), R per head, same order;
    forget: "sigmoid" or "exp". h_0 = 0. Returns h: (B, T, H, d_h).
    """
    # Heads first, (T, H, B, 4·d_h): each step's W x + R h is one batched product-add over the
    # heads (baddbmm), the fewest operations a step can take, which is what a loop pays for.
    wx = wx.permute(1, 2, 0, 3).contiguous()
    h: torch.Tensor | None = None  # (H, B, d_h)
    c = n = m = wx.new_zeros(())
    out = []
    for wx_t in wx.unbind(0):  # (H, B, 4·d_h)
        pre = wx_t if h is None else torch.baddbmm(wx_t, h, recurrent)
        i_pre, f_pre, z_pre, o_pre = pre.chunk(4, dim=-1)  # (H, B, d_h) each
        if h is None:  # empty memory: m_1 = ĩ_1
            m = i_pre.detach()
            write = (i_pre - m).exp()
            c, n = write * torch.tanh(z_pre), write
        else:
            lf = log_forget(f_pre, forget)
            m_new = torch.maximum(lf.detach() + m, i_pre.detach())
            decay, write = (lf + m - m_new).exp(), (i_pre - m_new).exp()  # ≤ 1
            c = decay * c + write * torch.tanh(z_pre)
            n = decay * n + write  # ≥ 1: the larger of the two weights is e^0
            m = m_new
        h = torch.sigmoid(o_pre) * c / n
        out.append(h)
    return torch.stack(out).permute(2, 0, 1, 3)  # (T, H, B, d_h) -> (B, T, H, d_h)


def slstm_reference(wx: torch.Tensor, recurrent: torch.Tensor, forget: str) -> torch.Tensor:
    """The sLSTM as the paper writes it, unstabilised: i = e^{ĩ}, f = σ(f̃) or e^{f̃},
    c_t = f c_{t−1} + i tanh(z̃), n_t = f n_{t−1} + i, h_t = σ(õ) c_t / n_t. Arguments and result
    as `slstm_recurrence`; overflows where the gates' products leave the dtype's range."""
    h = wx.new_zeros(wx.shape[0], wx.shape[2], wx.shape[3] // 4)  # (B, H, d_h)
    c, n = torch.zeros_like(h), torch.zeros_like(h)
    out = []
    for wx_t in wx.unbind(1):
        recurrent_part = torch.einsum("bhi,hio->bho", h, recurrent)  # R h per head
        i_pre, f_pre, z_pre, o_pre = (wx_t + recurrent_part).chunk(4, dim=-1)  # (B, H, d_h)
        i, f = i_pre.exp(), log_forget(f_pre, forget).exp()
        c = f * c + i * torch.tanh(z_pre)
        n = f * n + i
        h = torch.sigmoid(o_pre) * c / n
        out.append(h)
    return torch.stack(out, dim=1)


__all__ = [
    "FORGET_GATES",
    "log_forget",
    "mlstm_chunked",
    "mlstm_reference",
    "slstm_recurrence",
    "slstm_reference",
]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "log_forget": ("FORGET_GATES",),
    "mlstm_chunked": ("heads_first_chunks", "_mlstm_normaliser", "pad_steps_to"),
    "slstm_recurrence": ("log_forget",),
}
