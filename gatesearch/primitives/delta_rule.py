"""The delta rule (DeltaNet) and its gated forms, each as a step loop beside a chunked form.

Per head, with the state S_t ∈ R^{d_k×d_v} (a key row per key channel), β_t ∈ (0, 1), k_t
unit-norm and a decay D_t = Diag(α_t) applied before the write:

    S_t = (I − β_t k_t k_tᵀ) D_t S_{t−1} + β_t k_t v_tᵀ,    o_t = S_tᵀ q_t.

D_t = I is DeltaNet (Yang et al. 2024), D_t = α_t I with α_t a scalar per head is Gated DeltaNet
(Yang, Kautz, Hatamizadeh 2025), and α_t ∈ (0, 1)^{d_k} is the channel-wise decay of Kimi Delta
Attention. For a scalar decay the order of decay and erase does not matter; for a channel decay
the decay comes first, as in KDA. Written as a write of a corrected value,

    S'_t = D_t S_{t−1};   u_t = β_t (v_t − S'_tᵀ k_t);   S_t = S'_t + k_t u_tᵀ.

- `delta_rule_reference`: that loop over t.
- `delta_rule_chunked`: T cut into chunks of C steps. Inside a chunk (positions 1..C, state S_0
  entering it), with the in-chunk cumulative log decay A_t = Σ_{s≤t} log α_s (≤ 0; per head or
  per key channel), every state is the entering state decayed plus the writes so far:

      S_t = e^{A_t} ⊙ S_0 + Σ_{s≤t} (e^{A_t − A_s} ⊙ k_s) u_sᵀ.

  Putting it into u_t gives, for the chunk's C corrections at once (rows t),

      (I + Diag(β) M) U = Diag(β) (V − (K ⊙ e^{A}) S_0),   M_ts = Σ_c k_tc k_sc e^{A_tc − A_sc}, s < t,

  so U = U_v − W S_0 with U_v = T Diag(β) V, W = T Diag(β) (K ⊙ e^{A}) and T = (I + Diag(β) M)⁻¹,
  the "UT transform" of the WY representation: the product of the chunk's (I − β k kᵀ) is
  I − Σ_t w_t k_tᵀ. T is the inverse of a unit lower-triangular C×C matrix, computed by
  `unit_lower_inverse` with ⌈log₂ C⌉ pairs of matrix products; U_v and W, for every chunk at
  once, are two more. Then a loop over the chunks carries the state:

      U = U_v − W S_0;   O = (Q ⊙ e^{A}) S_0 + P U;   S_C = e^{A_C} ⊙ S_0 + (K ⊙ e^{A_C − A})ᵀ U,

  with P_ts = Σ_c q_tc k_sc e^{A_tc − A_sc} for s ≤ t. The loop is T/C steps of a few matrix
  products; the state recurrence is a full matrix map, not a diagonal one, so it is not a scan.

Decay factors: every exponent above is of a number ≤ 0 except inside M and P. For a scalar decay
they are taken as e^{A_t − A_s} masked to s ≤ t (never above 1). For a channel decay that would
cost C× the memory (one factor per key channel of every pair), so M and P are first computed
factorised, (K ⊙ e^{A})(K ⊙ e^{−A})ᵀ, whose e^{−A} overflows once a chunk's decay exceeds half the
dtype's exponent range (≈ 44 nats in float32); when any chunk's does, the exact form with the
exponent of differences is used instead, as `scan.gla_chunked` does (and, under torch.compile
and torch.export, both are traced and `torch.cond` picks one at run time).
"""

from __future__ import annotations

import math

import torch

from gatesearch.primitives.scan import decay_limit

# ------------------------------------------------------------------------------- reference


def delta_rule_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """o_t = S_tᵀ q_t with S_t = (I − β_t k_t k_tᵀ) D_t S_{t−1} + β_t k_t v_tᵀ, by a loop over t.

    q, k: (B, T, H, K); v: (B, T, H, V); beta: (B, T, H); log_alpha: None (D_t = I),
    (B, T, H) (a scalar decay e^{log α} per head) or (B, T, H, K) (per key channel).
    Returns (B, T, H, V). Normalising k and scaling q are the caller's.
    """
    Bn, T, H, K = q.shape
    S = q.new_zeros(Bn, H, K, v.shape[-1])  # (B, H, K, V)
    if log_alpha is None:
        decays: list[torch.Tensor | None] = [None] * T
    else:
        # (B, H) -> (B, H, 1, 1) for a scalar; (B, H, K) -> (B, H, K, 1) per key channel.
        shape = (Bn, H, 1, 1) if log_alpha.dim() == 3 else (Bn, H, K, 1)
        decays = [a.reshape(shape) for a in log_alpha.exp().unbind(1)]
    out = []
    # unbind, not q[:, t]: each indexing op's backward would zero-fill a full-size gradient.
    for q_t, k_t, v_t, b_t, d_t in zip(
        q.unbind(1), k.unbind(1), v.unbind(1), beta.unbind(1), decays
    ):
        if d_t is not None:
            S = d_t * S
        predicted = torch.einsum("bhk,bhkv->bhv", k_t, S)  # (B, H, V): what S recalls for k_t
        u_t = b_t[..., None] * (v_t - predicted)  # (B, H, V)
        S = S + k_t[..., None] * u_t[..., None, :]  # (B, H, K, V)
        out.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(out, dim=1)  # (B, T, H, V)


# ------------------------------------------------------------------------------- helpers


def unit_lower_inverse(n: torch.Tensor) -> torch.Tensor:
    """(I + n)⁻¹ for n strictly lower-triangular (..., C, C), by matrix products only.

    Blocks of the inverse are built by doubling their size: if X is the inverse of the
    block-diagonal part of I + n with blocks of width w, and E holds the entries of n that join
    pairs of those blocks into blocks of width 2w (row block odd, column block the one before),
    the inverse at width 2w is X − X E X, since (X E)² = 0. ⌈log₂ C⌉ steps, each the exact
    inverse of a coarser block-diagonal part, so no power of n is ever formed (no growth beyond
    the inverse's own entries). Used instead of `torch.linalg.solve_triangular`, which torch's
    ONNX exporter cannot lower.
    """
    C = n.shape[-1]
    index = torch.arange(C, device=n.device)
    inverse = torch.eye(C, dtype=n.dtype, device=n.device).expand(n.shape)
    width = 1
    while width < C:
        block = index // width
        joins = (block[:, None] == block[None, :] + 1) & (block[:, None] % 2 == 1)  # (C, C)
        link = n.masked_fill(~joins, 0.0)
        inverse = inverse - inverse @ link @ inverse
        width *= 2
    return inverse


def pad_steps_to(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros after the real steps up to `length` along dim 1: a padded step comes after every
    real one, so in a causal chunked form it cannot reach a real output (here it also writes
    nothing: k = 0 and β = 0). The mLSTM's chunkwise form pads the same way."""
    pad = length - x.shape[1]
    if pad == 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)


def heads_first_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, T, H, ...) with T a multiple of `chunk` -> (B, nc, H, C, ...): heads before time, so
    the in-chunk products are batched matrix products."""
    Bn, T, H = x.shape[:3]
    x = x.reshape(Bn, T // chunk, chunk, H, *x.shape[3:])  # (B, nc, C, H, ...)
    # Contiguous once here, not copied again by every batched product that reads it.
    return x.transpose(2, 3).contiguous()  # (B, nc, H, C, ...)


def _causal(C: int, strict: bool, device: torch.device) -> torch.Tensor:
    """(C, C) True where column s may feed row t: s < t (strict) or s ≤ t."""
    return torch.ones(C, C, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def _scores_scalar_decay(
    a: torch.Tensor, b: torch.Tensor, A: torch.Tensor | None, strict: bool
) -> torch.Tensor:
    """[a_t · b_s e^{A_t − A_s}] masked to s < t (strict) or s ≤ t; A per head (or no decay).

    a, b: (B, nc, H, C, K); A: (B, nc, H, C) or None. Returns (B, nc, H, C, C)."""
    C = a.shape[-2]
    causal = _causal(C, strict, a.device)
    scores = a @ b.transpose(-1, -2)  # (B, nc, H, C_t, C_s)
    if A is None:
        return scores.masked_fill(~causal, 0.0)
    diff = A[..., :, None] - A[..., None, :]  # (B, nc, H, C_t, C_s), ≤ 0 where kept
    return scores * diff.masked_fill(~causal, -math.inf).exp()


def _scores_channel_factorised(
    a: torch.Tensor, b: torch.Tensor, A: torch.Tensor, strict: bool
) -> torch.Tensor:
    """[Σ_c a_tc b_sc e^{A_tc − A_sc}] masked, as (a ⊙ e^{A})(b ⊙ e^{−A})ᵀ: one matrix product.
    a, b, A: (B, nc, H, C, K). Finite while the chunk's decay span is below `decay_limit`."""
    causal = _causal(a.shape[-2], strict, a.device)
    scores = (a * A.exp()) @ (b * (-A).exp()).transpose(-1, -2)  # (B, nc, H, C_t, C_s)
    return scores.masked_fill(~causal, 0.0)


def _scores_channel_exact(
    a: torch.Tensor, b: torch.Tensor, A: torch.Tensor, strict: bool
) -> torch.Tensor:
    """The same with the exponent of each difference, ≤ 0 after masking: finite for any decay,
    at K× the memory of the scores."""
    causal = _causal(a.shape[-2], strict, a.device)
    diff = A[..., :, None, :] - A[..., None, :, :]  # (B, nc, H, C_t, C_s, K)
    diff = diff.masked_fill(~causal[..., None], -math.inf)
    return torch.einsum("bnhtk,bnhsk,bnhtsk->bnhts", a, b, diff.exp())  # (B, nc, H, C, C)


def _channel_scores(
    q: torch.Tensor, k: torch.Tensor, A: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, M) for a channel decay: query-key scores with the diagonal, key-key scores without,
    factorised when every chunk's decay span allows it, else exact (module docstring)."""
    if torch.compiler.is_compiling():
        # torch.export and torch.compile cannot branch on data inside the graph: both formulas
        # are traced and torch.cond picks one at run time, as eager does. Each branch returns
        # one flat tensor, since torch.cond compares the branches' strides and symbolic shapes
        # can make equal layouts look different.
        def factorised(q: torch.Tensor, k: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
            P = _scores_channel_factorised(q, k, A, strict=False)
            M = _scores_channel_factorised(k, k, A, strict=True)
            return torch.cat([P.reshape(-1), M.reshape(-1)])

        def exact(q: torch.Tensor, k: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
            P = _scores_channel_exact(q, k, A, strict=False)
            M = _scores_channel_exact(k, k, A, strict=True)
            return torch.cat([P.reshape(-1), M.reshape(-1)])

        safe = -A.min() < decay_limit(A.dtype)
        # torch.cond refuses operands that share storage (chunks can be views of one tensor).
        flat = torch.cond(safe, factorised, exact, (q.clone(), k.clone(), A.clone()))
        P, M = flat.reshape(2, *q.shape[:-1], q.shape[-2])  # (B, nc, H, C, C) each
        return P, M
    if A.numel() == 0 or -A.min() < decay_limit(A.dtype):
        scores = _scores_channel_factorised
    else:
        scores = _scores_channel_exact
    return scores(q, k, A, strict=False), scores(k, k, A, strict=True)


# ------------------------------------------------------------------------------- chunked


def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_alpha: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> torch.Tensor:
    """The chunked form of `delta_rule_reference` (same arguments and result; module
    docstring). Any T and any chunk size: the last chunk is padded."""
    Bn, T, H, K = q.shape
    C = chunk_size
    nc = -(-T // C)
    # (B, T, H, ·) -> (B, nc, H, C, ·) after padding T to nc·C.
    qc, kc, vc = (heads_first_chunks(pad_steps_to(x, nc * C), C) for x in (q, k, v))
    bc = heads_first_chunks(pad_steps_to(beta, nc * C), C)  # (B, nc, H, C)

    if log_alpha is None:
        A = None
        P = _scores_scalar_decay(qc, kc, None, strict=False)  # (B, nc, H, C, C)
        M = _scores_scalar_decay(kc, kc, None, strict=True)
        q_first, k_first, k_last = qc, kc, kc
        chunk_decay = None
    else:
        # In-chunk cumulative log decay, ≤ 0: (B, nc, H, C) per head, (B, nc, H, C, K) per channel.
        A = heads_first_chunks(pad_steps_to(log_alpha, nc * C), C).cumsum(dim=3)
        A_last = A[:, :, :, -1:]  # (B, nc, H, 1[, K]): the whole chunk's decay
        if log_alpha.dim() == 3:
            P = _scores_scalar_decay(qc, kc, A, strict=False)
            M = _scores_scalar_decay(kc, kc, A, strict=True)
            A, A_last = A[..., None], A_last[..., None]  # decay broadcasts over key channels
        else:
            P, M = _channel_scores(qc, kc, A)
        q_first, k_first = qc * A.exp(), kc * A.exp()  # decayed from the chunk's start to t
        k_last = kc * (A_last - A).exp()  # decayed from t to the chunk's end
        chunk_decay = A_last.transpose(-1, -2).exp()  # (B, nc, H, 1 or K, 1) on key rows of S

    # UT transform: T = (I + Diag(β) M)⁻¹; U_v = T Diag(β) V and W = T Diag(β) (K ⊙ e^{A}).
    inverse = unit_lower_inverse(bc[..., None] * M)  # (B, nc, H, C, C)
    rhs = bc[..., None] * torch.cat([vc, k_first], dim=-1)  # (B, nc, H, C, V + K)
    u_v, w = (inverse @ rhs).split([vc.shape[-1], K], dim=-1)  # (B, nc, H, C, V), (..., K)

    outs = []
    S: torch.Tensor | None = None  # (B, H, K, V), zero entering the first chunk
    decays = chunk_decay.unbind(1) if chunk_decay is not None else [None] * nc
    # unbind, not x[:, n]: each indexing op's backward would zero-fill a full-size gradient.
    chunks = zip(q_first.unbind(1), P.unbind(1), u_v.unbind(1), w.unbind(1), k_last.unbind(1))
    for n, ((q_n, p_n, u_v_n, w_n, k_n), d_n) in enumerate(zip(chunks, decays)):
        u = u_v_n if S is None else u_v_n - w_n @ S  # (B, H, C, V) corrections
        o = p_n @ u if S is None else q_n @ S + p_n @ u  # (B, H, C, V)
        outs.append(o)
        if n + 1 < nc:  # the state leaving the chunk
            write = k_n.transpose(-1, -2) @ u  # (B, H, K, V)
            S = write if S is None else (S if d_n is None else d_n * S) + write
    out = torch.stack(outs, dim=1)  # (B, nc, H, C, V)
    out = out.transpose(2, 3).reshape(Bn, nc * C, H, -1)  # (B, nc·C, H, V)
    return out[:, :T]


__all__ = [
    "delta_rule_chunked",
    "delta_rule_reference",
    "heads_first_chunks",
    "pad_steps_to",
    "unit_lower_inverse",
]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_scores_scalar_decay": ("_causal",),
    "_scores_channel_factorised": ("_causal",),
    "_scores_channel_exact": ("_causal",),
    "_channel_scores": (
        "decay_limit",
        "_scores_channel_exact",
        "_scores_channel_factorised",
    ),
    "delta_rule_chunked": (
        "_channel_scores",
        "heads_first_chunks",
        "pad_steps_to",
        "_scores_scalar_decay",
        "unit_lower_inverse",
    ),
}
