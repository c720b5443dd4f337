"""Scans for diagonal linear recurrences and gated linear attention, each beside its step loop.

Time is dimension 1 everywhere: a sequence tensor is (B, T, *trailing).

Diagonal linear recurrence  h_t = a_t ⊙ h_{t−1} + b_t,  h_{−1} = h0 (zero by default).

- `linear_scan_reference`: the obvious loop over t.
- `linear_scan`: two-level chunked scan. T is cut into nc chunks of C ≈ √T steps. (1) Inside
  every chunk at once, a C-step loop computes the chunk-local state (as if h entered the chunk
  at zero) and the running product of a; (2) an nc-step loop carries the state across chunks;
  (3) one broadcast adds carry ⊙ running product to every position. About 2√T vectorised steps
  instead of T, exact (no division, no exponent of differences), stable for any sign of b.
- `log_linear_scan`: the same two-level scheme in log space for b > 0 (minGRU, minLSTM), with
  log h_t = logaddexp(log a_t + log h_{t−1}, log b_t).
- `log_linear_scan_cumsum`: the one-shot log-space form a* = cumsum(log a),
  log h = a* + logcumsumexp(log b − a*). Fully parallel, but |a*| grows with T, so the final
  a* + (…) cancels and loses float32 precision on long sequences; on CPU it is also slower
  (logcumsumexp's backward), so modules use the chunked form. Kept as a tested alternative.

Gated linear attention (per head, state S_t ∈ R^{d_k×d_v}):
  S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,   o_t = q_t S_t,   log α_t = g_t ≤ 0.

- `gla_reference`: the loop over t.
- `gla_chunked`: chunk C with in-chunk cumulative log gate A (A_t = Σ_{s≤t in chunk} g_s):
    O = (Q ⊙ e^{A}) S_prev + [Σ_k Q_tk K_sk e^{A_tk − A_sk}]_{s≤t} V
    S_end = e^{A_C} ⊙ S_prev + (K ⊙ e^{A_C − A})ᵀ V.
  The in-chunk term is two matmuls, tril((Q⊙e^{A})(K⊙e^{−A})ᵀ)V, whose e^{−A} overflows once a
  chunk's decay exceeds ~88 nats in float32. Guard: when any chunk's decay span exceeds half the
  dtype's exponent range, the in-chunk term is computed instead with the exponent of the
  *difference* A_t − A_s (masked to s ≤ t, so ≤ 0): exact for any decay, C× the memory. With
  C = 16 and log α = logsigmoid(·)/16 the fallback needs pre-activations below about −44 all
  along a chunk. All other exponents are of non-positive numbers.
  The chunk-to-chunk state recurrence is itself diagonal (per key row), so `linear_scan` runs it.
"""

from __future__ import annotations

import math

import torch

# ------------------------------------------------------------------------------------ helpers


def auto_chunk_size(length: int) -> int:
    """C ≈ √T balances the in-chunk loop (C steps) against the carry loop (T/C steps)."""
    return max(1, math.isqrt(max(length, 1)))


def _pad_time(x: torch.Tensor, pad: int, value: float) -> torch.Tensor:
    """Append `pad` positions filled with `value` along dim 1 (padding sits after real steps,
    so causality keeps it from touching them)."""
    if pad == 0:
        return x
    filler = x.new_full((x.shape[0], pad, *x.shape[2:]), value)
    return torch.cat([x, filler], dim=1)


def _chunk(x: torch.Tensor, n_chunks: int, chunk: int) -> torch.Tensor:
    return x.reshape(x.shape[0], n_chunks, chunk, *x.shape[2:])  # (B, nc, C, ...)


def _check_time(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != b.dim() or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same rank and length T"
        )


# ------------------------------------------------------------------ diagonal linear recurrence


def linear_scan_reference(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t by a loop over t. a broadcasts against b; returns b's shape."""
    _check_time(a, b)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t by the two-level chunked scan (see module docstring).

    a broadcasts against b (e.g. a per-row decay (B, T, H, K, 1) for a state (B, T, H, K, V)).
    """
    _check_time(a, b)
    T = b.shape[1]
    if h0 is not None:
        # Fold the initial state into the first input: h_0 = a_0 h0 + b_0.
        b = torch.cat([b[:, :1] + a[:, :1] * h0.unsqueeze(1), b[:, 1:]], dim=1)
    C = chunk_size or auto_chunk_size(T)
    nc = -(-T // C)
    pad = nc * C - T
    ac = _chunk(_pad_time(a, pad, 1.0), nc, C)  # (B, nc, C, ...)
    bc = _chunk(_pad_time(b, pad, 0.0), nc, C)  # (B, nc, C, ...)

    # (1) chunk-local states, all chunks at once.
    h = bc[:, :, 0]
    hs = [h]
    for t in range(1, C):
        h = torch.addcmul(bc[:, :, t], ac[:, :, t], h)
        hs.append(h)
    local = torch.stack(hs, dim=2)  # (B, nc, C, ...)
    if nc == 1:
        return local.reshape(b.shape[0], C, *local.shape[3:])[:, :T]
    prod = torch.cumprod(ac, dim=2)  # (B, nc, C, ...a's trailing) running products of a

    # (2) carry[n] = true state entering chunk n + 1.
    carry = local[:, 0, -1]
    carries = [carry]
    for n in range(1, nc - 1):
        carry = torch.addcmul(local[:, n, -1], prod[:, n, -1], carry)
        carries.append(carry)
    entering = torch.stack(carries, dim=1).unsqueeze(2)  # (B, nc − 1, 1, ...)

    # (3) add each chunk's entering state, decayed by the running product.
    rest = torch.addcmul(local[:, 1:], prod[:, 1:], entering)
    out = torch.cat([local[:, :1], rest], dim=1)  # (B, nc, C, ...)
    return out.reshape(b.shape[0], nc * C, *out.shape[3:])[:, :T]


def log_linear_scan(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    log_h0: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """log h for h_t = a_t h_{t−1} + b_t with b > 0, by the two-level scan in log space."""
    _check_time(log_a, log_b)
    T = log_b.shape[1]
    if log_h0 is not None:
        first = torch.logaddexp(log_b[:, :1], log_a[:, :1] + log_h0.unsqueeze(1))
        log_b = torch.cat([first, log_b[:, 1:]], dim=1)
    C = chunk_size or auto_chunk_size(T)
    nc = -(-T // C)
    pad = nc * C - T
    # Pad with finite values (a = b = 1): −inf would make logaddexp's gradient NaN.
    la = _chunk(_pad_time(log_a, pad, 0.0), nc, C)  # (B, nc, C, ...)
    lb = _chunk(_pad_time(log_b, pad, 0.0), nc, C)  # (B, nc, C, ...)

    h = lb[:, :, 0]
    hs = [h]
    for t in range(1, C):
        h = torch.logaddexp(la[:, :, t] + h, lb[:, :, t])
        hs.append(h)
    local = torch.stack(hs, dim=2)  # (B, nc, C, ...)
    if nc == 1:
        return local.reshape(log_b.shape[0], C, *local.shape[3:])[:, :T]
    decay = la.cumsum(dim=2)  # (B, nc, C, ...) log of the running product

    carry = local[:, 0, -1]
    carries = [carry]
    for n in range(1, nc - 1):
        carry = torch.logaddexp(decay[:, n, -1] + carry, local[:, n, -1])
        carries.append(carry)
    entering = torch.stack(carries, dim=1).unsqueeze(2)  # (B, nc − 1, 1, ...)

    rest = torch.logaddexp(local[:, 1:], decay[:, 1:] + entering)
    out = torch.cat([local[:, :1], rest], dim=1)  # (B, nc, C, ...)
    return out.reshape(log_b.shape[0], nc * C, *out.shape[3:])[:, :T]


def log_linear_scan_cumsum(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log h with h0 = 0 by a* = cumsum(log a), log h = a* + logcumsumexp(log b − a*)."""
    _check_time(log_a, log_b)
    a_star = log_a.cumsum(dim=1)
    return a_star + torch.logcumsumexp(log_b - a_star, dim=1)


def log_linear_scan_reference(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """log h with h0 = 0 by a loop over t in linear space (the obviously-correct version)."""
    return linear_scan_reference(log_a.exp(), log_b.exp()).log()


# ---------------------------------------------------------------------- gated linear attention


def gla_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor
) -> torch.Tensor:
    """o_t = q_t S_t with S_t = diag(e^{g_t}) S_{t−1} + k_tᵀ v_t, by a loop over t.

    q, k, log_g: (B, T, H, K); v: (B, T, H, V). Returns (B, T, H, V). Any 1/√K scale is the
    caller's (applied to q).
    """
    Bn, T, H, K = q.shape
    S = q.new_zeros(Bn, H, K, v.shape[-1])  # (B, H, K, V)
    alpha = log_g.exp()
    out = []
    for t in range(T):
        S = alpha[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1)  # (B, T, H, V)


def _factorisable(A: torch.Tensor) -> bool:
    """Whether e^{±A} stays finite and normal: every chunk's decay span is below half the
    dtype's exponent range (≈ 44 nats in float32, 354 in float64), so the masked-out products
    e^{A_t − A_s}, s > t, cannot overflow either."""
    limit = 0.5 * math.log(torch.finfo(A.dtype).max)
    return bool(A.numel() == 0 or -A.min() < limit)


def _gla_intra_factorised(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, A: torch.Tensor
) -> torch.Tensor:
    """In-chunk term as two matmuls: tril((Q⊙e^{A})(K⊙e^{−A})ᵀ) V. Chunked (B, nc, C, H, ·)."""
    C = q.shape[2]
    q_dec = (q * A.exp()).transpose(2, 3)  # (B, nc, H, C, K)
    k_inc = (k * (-A).exp()).transpose(2, 3)  # (B, nc, H, C, K)
    scores = q_dec @ k_inc.transpose(-1, -2)  # (B, nc, H, C_t, C_s)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, 0.0)
    return (scores @ v.transpose(2, 3)).transpose(2, 3)  # (B, nc, C, H, V)


def _gla_intra_exact(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, A: torch.Tensor
) -> torch.Tensor:
    """In-chunk term with the exponent of differences, A_t − A_s ≤ 0 after masking: never
    overflows whatever the decay, at C× the memory of the factorised form."""
    C = q.shape[2]
    diff = A[:, :, :, None] - A[:, :, None, :]  # (B, nc, C_t, C_s, H, K)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = diff.masked_fill(~causal[:, :, None, None], -math.inf)
    scores = torch.einsum("bnthk,bnshk,bntshk->bntsh", q, k, diff.exp())  # (B, nc, C, C, H)
    return torch.einsum("bntsh,bnshv->bnthv", scores, v)  # (B, nc, C, H, V)


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_g: torch.Tensor,
    chunk_size: int = 16,
) -> torch.Tensor:
    """The chunked parallel form of `gla_reference` (same shapes; see module docstring)."""
    Bn, T, H, _ = q.shape
    C = chunk_size
    nc = -(-T // C)
    pad = nc * C - T
    qc = _chunk(_pad_time(q, pad, 0.0), nc, C)  # (B, nc, C, H, K)
    kc = _chunk(_pad_time(k, pad, 0.0), nc, C)  # (B, nc, C, H, K)
    vc = _chunk(_pad_time(v, pad, 0.0), nc, C)  # (B, nc, C, H, V)
    gc = _chunk(_pad_time(log_g, pad, 0.0), nc, C)  # (B, nc, C, H, K)
    A = gc.cumsum(dim=2)  # (B, nc, C, H, K) in-chunk cumulative log decay, ≤ 0
    if _factorisable(A):
        intra = _gla_intra_factorised(qc, kc, vc, A)
    else:
        intra = _gla_intra_exact(qc, kc, vc, A)
    if nc == 1:
        return intra.reshape(Bn, C, H, -1)[:, :T]

    # Chunk states: S_end[n] = e^{A_C} ⊙ S_end[n−1] + (K ⊙ e^{A_C − A})ᵀ V.
    A_last = A[:, :, -1]  # (B, nc, H, K)
    k_decayed = kc * (A_last[:, :, None] - A).exp()  # (B, nc, C, H, K)
    updates = torch.einsum("bnchk,bnchv->bnhkv", k_decayed, vc)  # (B, nc, H, K, V)
    ends = linear_scan(A_last[:, :-1].exp().unsqueeze(-1), updates[:, :-1])  # (B, nc−1, H, K, V)

    # Inter-chunk: (Q ⊙ e^{A}) S_prev for chunks 1..nc−1 (chunk 0 enters with S = 0).
    inter = torch.einsum("bnchk,bnhkv->bnchv", qc[:, 1:] * A[:, 1:].exp(), ends)
    out = torch.cat([intra[:, :1], intra[:, 1:] + inter], dim=1)  # (B, nc, C, H, V)
    return out.reshape(Bn, nc * C, H, -1)[:, :T]


__all__ = [
    "auto_chunk_size",
    "gla_chunked",
    "gla_reference",
    "linear_scan",
    "linear_scan_reference",
    "log_linear_scan",
    "log_linear_scan_cumsum",
    "log_linear_scan_reference",
]
