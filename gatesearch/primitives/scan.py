"""Scans for diagonal linear recurrences and gated linear attention, each beside its step loop.

Time is dimension 1 everywhere: a sequence tensor is (B, T, *trailing).

Diagonal linear recurrence  h_t = a_t ⊙ h_{t−1} + b_t,  h_{−1} = h0 (zero by default).

- `linear_scan_reference`: the obvious loop over t.
- `linear_scan`: two-level chunked scan. T is cut into nc chunks of C ≈ √T steps. (1) Inside
  every chunk at once, a C-step loop computes the chunk-local state (as if h entered the chunk
  at zero) and the running product of a; (2) an nc-step loop carries the state across chunks;
  (3) one broadcast adds carry ⊙ running product to every position. About 3√T vectorised steps
  instead of T, exact (no division, no exponent of differences), stable for any sign of b.
  It runs in place without autograd; its backward is written by hand as the reverse scan
  δ_t = g_t + a_{t+1} δ_{t+1} (∂b = δ, ∂a_t = δ_t h_{t−1}), so autograd records one node,
  not one per step (on CPU the bookkeeping of a per-step graph costs more than the arithmetic).
- `log_linear_scan`: the same two-level scheme in log space for b > 0 (minGRU, minLSTM), with
  log h_t = logaddexp(log a_t + log h_{t−1}, log b_t); its backward is the linear reverse scan
  with weights w_t = a_t h_{t−1} / h_t ∈ [0, 1].
- `linear_scan_parallel`, `log_linear_scan_parallel`: loop-free chunked forms for a traced graph
  (ONNX export with a dynamic time axis; `linear_scan` and `log_linear_scan` switch to them
  under `torch.compiler.is_exporting()`): a fixed chunk, in-chunk products as the masked matrix
  e^{segment sums of log a} (Mamba-2's SSD for a diagonal state), the chunks' end states carried
  by the same matrix over chunks. O(T·C) memory per channel; exact; no hand-written backward.
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
  along a chunk. All other exponents are of non-positive numbers. Under torch.compile and
  torch.export the guard is a `torch.cond` over both formulas, so the traced graph does not
  break at a data-dependent branch; eager code keeps the plain `if`, which runs one formula.
  The chunk-to-chunk state recurrence is itself diagonal (per key row), so `linear_scan` runs it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------------------------ helpers


def auto_chunk_size(length: int) -> int:
    """C ≈ √T balances the in-chunk loop (C steps) against the carry loop (T/C steps). A divisor
    of T within a factor 2 of √T is preferred: no padding copies."""
    root = max(1, math.isqrt(max(length, 1)))
    # A plain loop, not `min(divisors, key=...)`: once torch.compile treats T as dynamic it
    # cannot trace `min` with a key or over a generator (a graph break at every scan of a
    # compiled exported model).
    best, distance = root, None
    for c in range(max(2, root // 2), 2 * root + 1):
        if length % c == 0 and (distance is None or abs(c - root) < distance):
            best, distance = c, abs(c - root)
    return best


def _pad_time(x: torch.Tensor, pad: int, value: float, front: bool = False) -> torch.Tensor:
    """Add `pad` positions filled with `value` along dim 1, after the real steps (or before them
    with `front`); a scan never lets padding reach the real steps, which come first in its order."""
    if pad == 0:
        return x
    filler = x.new_full((x.shape[0], pad, *x.shape[2:]), value)
    return torch.cat([filler, x] if front else [x, filler], dim=1)


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
    # unbind, not a[:, t]: each indexing op's backward would zero-fill a full-size gradient.
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out, dim=1)


def _two_level_scan(a: torch.Tensor, b: torch.Tensor, chunk: int, reverse: bool) -> torch.Tensor:
    """h_t = a_t h_{t∓1} + b_t (− forward, + reverse) with h = 0 outside; no autograd.

    (1) chunk-local states, every chunk at once, C in-place steps; (2) running products of a
    inside chunks; (3) the state entering each chunk, nc steps; (4) h = local + prod ⊙ entering.
    """
    T = b.shape[1]
    nc = -(-T // chunk)
    pad = nc * chunk - T
    # Padding goes after the real steps in scan order: at the front for a reverse scan.
    ac = _chunk(_pad_time(a, pad, 1.0, front=reverse), nc, chunk)  # (B, nc, C, ...a)
    h = _chunk(_pad_time(b, pad, 0.0, front=reverse), nc, chunk).clone()  # (B, nc, C, ...b)
    steps = range(chunk - 2, -1, -1) if reverse else range(1, chunk)
    prev = 1 if reverse else -1  # offset of the neighbour each step reads
    for t in steps:
        h[:, :, t].addcmul_(ac[:, :, t], h[:, :, t + prev])
    if nc > 1:
        prod = ac.clone()  # (B, nc, C, ...a) product of a from the chunk's entry to t
        for t in steps:
            prod[:, :, t].mul_(prod[:, :, t + prev])
        edge = 0 if reverse else -1  # the position whose state leaves a chunk
        entering = torch.zeros_like(h[:, :, :1])  # (B, nc, 1, ...b)
        chunks = range(nc - 2, -1, -1) if reverse else range(1, nc)
        for n in chunks:
            # copy_ then addcmul_, not addcmul(out=view): torch.compile breaks its graph at
            # an `out=` that is not contiguous. Same kernel, same values, no allocation.
            entering[:, n, 0].copy_(h[:, n + prev, edge]).addcmul_(
                prod[:, n + prev, edge], entering[:, n + prev, 0]
            )
        h.addcmul_(prod, entering)
    out = h.reshape(b.shape[0], nc * chunk, *h.shape[3:])  # (B, T + pad, ...)
    return out[:, pad:] if reverse else out[:, :T]


class _LinearScan(torch.autograd.Function):
    """Two-level scan forward; backward is the reverse scan δ_t = g_t + a_{t+1} δ_{t+1}, with
    ∂b_t = δ_t, ∂a_t = δ_t h_{t−1}, ∂h0 = a_0 δ_0 (summed back over broadcast dimensions)."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunk: int
    ) -> torch.Tensor:
        if h0 is not None:
            b = b.clone()
            b[:, 0].addcmul_(a[:, 0], h0)
        h = _two_level_scan(a, b, chunk, reverse=False)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk = chunk
        ctx.b_shape = b.shape
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # a_{t+1}
        delta = _two_level_scan(a_next, grad.expand(ctx.b_shape), ctx.chunk, reverse=True)
        grad_a = torch.empty_like(delta)
        # In place into views rather than `out=` views, which break torch.compile's graph.
        grad_a[:, 1:].copy_(delta[:, 1:]).mul_(h[:, :-1])
        if h0 is None:
            grad_a[:, 0].zero_()
        else:
            grad_a[:, 0].copy_(delta[:, 0]).mul_(h0)
        grad_h0 = None if h0 is None else (a[:, 0] * delta[:, 0]).sum_to_size(h0.shape)
        return grad_a.sum_to_size(a.shape), delta, grad_h0, None


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t by the two-level chunked scan (see module docstring), with a
    hand-written backward (itself a reverse scan), so autograd records one node, not 2√T.

    a broadcasts against b (e.g. a per-row decay (B, T, H, K, 1) for a state (B, T, H, K, V)).
    Once differentiable.
    """
    _check_time(a, b)
    if torch.compiler.is_exporting():
        # A traced graph (ONNX) keeps T symbolic only without loops sized from T.
        return linear_scan_parallel(a, b, h0)
    a = a.expand(*a.shape[:2], *b.shape[2:]) if a.shape[2:] != b.shape[2:] else a
    return _LinearScan.apply(a, b, h0, chunk_size or auto_chunk_size(b.shape[1]))


# The loop-free forms' chunk: fixed, not sized from T, so that a traced graph (torch.export,
# ONNX) keeps T symbolic; their memory is O(T·C) per channel.
PARALLEL_CHUNK = 16
# Stands for log 0 where a logsumexp could see nothing else: e^{−1e30} is 0 in any float dtype,
# and adding the segment sums (tens of nats) cannot overflow it to −inf.
LOG_ZERO = -1e30


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """(..., L) → (..., L, L): out[..., t, s] = Σ_{r=s+1..t} x_r for s ≤ t, −inf above the
    diagonal. By a masked cumulative sum, not a difference of two prefix sums, so a long
    sum's rounding never cancels into a short one (Mamba-2's segsum)."""
    L = x.shape[-1]
    strict = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)
    # (..., L, L): x_t at [t, s], kept strictly below the diagonal.
    rep = x.unsqueeze(-1).expand(*x.shape, L).masked_fill(~strict, 0.0)
    sums = rep.cumsum(dim=-2)  # (..., L, L): Σ_{s < r ≤ t} x_r
    return sums.masked_fill(
        ~strict.logical_or(torch.eye(L, dtype=torch.bool, device=x.device)), -math.inf
    )


def _traced_chunks(x: torch.Tensor, chunk: int, value: float) -> torch.Tensor:
    """(B, T, *rest) → (B, nc, C, *rest), padded after the real steps with `value`, in a form
    a tracer keeps T symbolic through: padded even by nothing (a branch on whether T is a
    multiple of C would make a traced graph hold for one of the two cases only), and the
    padded length written as nc·C, which it can see equals T + pad."""
    T = x.shape[1]
    nc = (T + chunk - 1) // chunk
    pad = nc * chunk - T
    if torch.compiler.is_exporting() or pad:  # eager, no padding: a view, no copy
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad), value=value)
    return x.reshape(x.shape[0], nc, chunk, *x.shape[2:])  # (B, nc, C, *rest)


def first_steps(x: torch.Tensor, length: int) -> torch.Tensor:
    """x[:, :length]; traced, by index: its size is then `length` by construction, where a
    slice needs length ≤ x.shape[1] proved, which a tracer cannot for a symbolic T."""
    if torch.compiler.is_exporting():
        return x.index_select(1, torch.arange(length, device=x.device))
    return x[:, :length]  # a view


def _time_last_chunks(x: torch.Tensor, chunk: int, value: float) -> torch.Tensor:
    """(B, T, *rest) → (B, nc, *rest, C): `_traced_chunks` with time last."""
    return _traced_chunks(x, chunk, value).movedim(2, -1)  # (B, nc, *rest, C)


def _real_steps(h: torch.Tensor, length: int) -> torch.Tensor:
    """(B, nc, *rest, C) → (B, T, *rest): time back in place, the padding cut off."""
    return first_steps(h.movedim(-1, 2).flatten(1, 2), length)  # (B, T, *rest)


def linear_scan_parallel(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int = PARALLEL_CHUNK,
) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t for 0 ≤ a ≤ 1, with no loop and no T-dependent Python: the
    form a traced graph can keep T symbolic in (ONNX export). Mamba-2's chunked SSD for a
    diagonal state: inside each chunk h = L b with L[t, s] = Π_{s<r≤t} a_r (= e^{segment sums
    of log a}, exponents ≤ 0); the states leaving the chunks carried by the same matrix over
    chunks. a broadcasts against b, as for `linear_scan`."""
    _check_time(a, b)
    T = b.shape[1]
    la = _time_last_chunks(a.log(), chunk_size, 0.0)  # (B, nc, *ra, C); padding: a = 1
    bc = _time_last_chunks(b, chunk_size, 0.0)  # (B, nc, *rb, C)
    within = segment_sums(la).exp()  # (B, nc, *ra, C, C)
    local = (within * bc.unsqueeze(-2)).sum(-1)  # (B, nc, *rb, C): states entering at 0
    # Across chunks: the state entering chunk n, from h0 and the chunks' local end states.
    total = la.sum(-1).movedim(1, -1)  # (B, *ra, nc): log of each chunk's whole decay
    ends = local[..., -1].movedim(1, -1)  # (B, *rb, nc)
    start = torch.zeros_like(ends[..., :1]) if h0 is None else h0.unsqueeze(-1)  # (B, *rb, 1)
    states = torch.cat([start, ends[..., :-1]], dim=-1)  # (B, *rb, nc): s_0 = h0, s_i = e_{i−1}
    steps = torch.cat([torch.zeros_like(total[..., :1]), total[..., :-1]], dim=-1)  # (B, *ra, nc)
    across = segment_sums(steps).exp()  # (B, *ra, nc, nc)
    entering = (across * states.unsqueeze(-2)).sum(-1).movedim(-1, 1)  # (B, nc, *rb)
    h = local + la.cumsum(-1).exp() * entering.unsqueeze(-1)  # (B, nc, *rb, C)
    return _real_steps(h, T)  # (B, T, *rb)


def log_linear_scan_parallel(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    log_h0: torch.Tensor | None = None,
    chunk_size: int = PARALLEL_CHUNK,
) -> torch.Tensor:
    """log h for h_t = a_t h_{t−1} + b_t with b > 0, loop-free like `linear_scan_parallel`,
    in log space: the sums over s are logsumexp over log L[t, s] + log b_s."""
    _check_time(log_a, log_b)
    T = log_b.shape[1]
    la = _time_last_chunks(log_a, chunk_size, 0.0)  # (B, nc, *r, C)
    lb = _time_last_chunks(log_b, chunk_size, -math.inf)  # (B, nc, *r, C); padding: b = 0
    local = (segment_sums(la) + lb.unsqueeze(-2)).logsumexp(-1)  # (B, nc, *r, C)
    total = la.sum(-1).movedim(1, -1)  # (B, *r, nc)
    ends = local[..., -1].movedim(1, -1)  # (B, *r, nc)
    if log_h0 is None:
        # log 0, as a finite number: a logsumexp over nothing but −inf has a NaN gradient.
        start = torch.full_like(ends[..., :1], LOG_ZERO)
    else:
        start = log_h0.unsqueeze(-1)  # (B, *r, 1)
    states = torch.cat([start, ends[..., :-1]], dim=-1)  # (B, *r, nc)
    steps = torch.cat([torch.zeros_like(total[..., :1]), total[..., :-1]], dim=-1)
    entering = (segment_sums(steps) + states.unsqueeze(-2)).logsumexp(-1).movedim(-1, 1)
    lh = torch.logaddexp(local, la.cumsum(-1) + entering.unsqueeze(-1))  # (B, nc, *r, C)
    return _real_steps(lh, T)  # (B, T, *r)


def _two_level_log_scan(log_a: torch.Tensor, log_b: torch.Tensor, chunk: int) -> torch.Tensor:
    """log h for h_t = a_t h_{t−1} + b_t, h_{−1} = 0, b > 0; the two-level scheme in log space."""
    T = log_b.shape[1]
    nc = -(-T // chunk)
    pad = nc * chunk - T
    # Pad with finite values (a = b = 1); padded steps come after the real ones.
    la = _chunk(_pad_time(log_a, pad, 0.0), nc, chunk)  # (B, nc, C, ...)
    lh = _chunk(_pad_time(log_b, pad, 0.0), nc, chunk).clone()  # (B, nc, C, ...)
    # Assignments into views, not `out=` views: torch.compile breaks its graph at an `out=`
    # that is not contiguous. logaddexp has no in-place form, so each step writes a copy.
    for t in range(1, chunk):
        lh[:, :, t] = torch.logaddexp(la[:, :, t] + lh[:, :, t - 1], lh[:, :, t])
    if nc > 1:
        decay = la.cumsum(dim=2)  # (B, nc, C, ...) log of the running product
        # Chunk 0 enters with log 0 = −inf; logaddexp(x, −inf) = x.
        entering = torch.full_like(lh[:, :, :1], -math.inf)  # (B, nc, 1, ...)
        for n in range(1, nc):
            entering[:, n, 0] = torch.logaddexp(
                decay[:, n - 1, -1] + entering[:, n - 1, 0], lh[:, n - 1, -1]
            )
        lh = torch.logaddexp(lh, decay + entering)
    return lh.reshape(log_b.shape[0], nc * chunk, *lh.shape[3:])[:, :T]


class _LogLinearScan(torch.autograd.Function):
    """Log-space scan forward. With w_t = a_t h_{t−1} / h_t = e^{log a_t + log h_{t−1} − log h_t}
    ∈ [0, 1], the backward is the linear reverse scan δ_t = g_t + w_{t+1} δ_{t+1}, with
    ∂log a_t = δ_t w_t and ∂log b_t = δ_t e^{log b_t − log h_t}: only exponents of numbers ≤ 0."""

    @staticmethod
    def forward(ctx: Any, log_a: torch.Tensor, log_b: torch.Tensor, chunk: int) -> torch.Tensor:
        log_h = _two_level_log_scan(log_a, log_b, chunk)
        ctx.save_for_backward(log_a, log_b, log_h)
        ctx.chunk = chunk
        return log_h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        log_a, log_b, log_h = ctx.saved_tensors
        w = torch.zeros_like(log_h)
        w[:, 1:] = torch.exp(log_a[:, 1:] + log_h[:, :-1] - log_h[:, 1:])  # no `out=` view
        w_next = torch.cat([w[:, 1:], torch.zeros_like(w[:, :1])], dim=1)  # w_{t+1}
        delta = _two_level_scan(w_next, grad, ctx.chunk, reverse=True)
        return delta * w, delta * (log_b - log_h).exp(), None


def log_linear_scan(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    log_h0: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """log h for h_t = a_t h_{t−1} + b_t with b > 0, by the two-level scan in log space with a
    hand-written backward. Once differentiable."""
    _check_time(log_a, log_b)
    if log_a.shape != log_b.shape:
        raise ValueError(f"log a {tuple(log_a.shape)} and log b {tuple(log_b.shape)} differ")
    if torch.compiler.is_exporting():  # as in `linear_scan`
        return log_linear_scan_parallel(log_a, log_b, log_h0)
    if log_h0 is not None:
        first = torch.logaddexp(log_b[:, :1], log_a[:, :1] + log_h0.unsqueeze(1))
        log_b = torch.cat([first, log_b[:, 1:]], dim=1)
    return _LogLinearScan.apply(log_a, log_b, chunk_size or auto_chunk_size(log_b.shape[1]))


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
    Bn, _, H, K = q.shape
    S = q.new_zeros(Bn, H, K, v.shape[-1])  # (B, H, K, V)
    out = []
    steps = zip(q.unbind(1), k.unbind(1), v.unbind(1), log_g.exp().unbind(1))
    for q_t, k_t, v_t, alpha_t in steps:
        S = alpha_t[..., None] * S + k_t[..., None] * v_t[..., None, :]  # (B, H, K, V)
        out.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(out, dim=1)  # (B, T, H, V)


def decay_limit(dtype: torch.dtype) -> float:
    """Half the dtype's exponent range: ≈ 44 nats in float32, 354 in float64."""
    return 0.5 * math.log(torch.finfo(dtype).max)


def _factorisable(A: torch.Tensor) -> bool:
    """Whether e^{±A} stays finite and normal: every chunk's decay span is below half the
    dtype's exponent range, so the masked-out products e^{A_t − A_s}, s > t, cannot overflow
    either."""
    return bool(A.numel() == 0 or -A.min() < decay_limit(A.dtype))


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
    T = q.shape[1]
    C = chunk_size
    # Chunked so that a traced graph keeps T symbolic (ONNX with a dynamic time axis).
    qc = _traced_chunks(q, C, 0.0)  # (B, nc, C, H, K)
    kc = _traced_chunks(k, C, 0.0)  # (B, nc, C, H, K)
    vc = _traced_chunks(v, C, 0.0)  # (B, nc, C, H, V)
    gc = _traced_chunks(log_g, C, 0.0)  # (B, nc, C, H, K)
    A = gc.cumsum(dim=2)  # (B, nc, C, H, K) in-chunk cumulative log decay, ≤ 0
    if torch.compiler.is_compiling():
        # Neither torch.export nor torch.compile can branch on data without leaving the graph
        # (torch.compile would break it at the `.item()` of the guard, once per chunked call):
        # the traced program carries both formulas and picks one at run time, as eager does.
        # Each branch returns its result flat, since torch.cond compares the branches' strides
        # and symbolic shapes can make equal layouts look different.
        def factorised(*args: torch.Tensor) -> torch.Tensor:
            return _gla_intra_factorised(*args).reshape(-1)

        def exact(*args: torch.Tensor) -> torch.Tensor:
            return _gla_intra_exact(*args).reshape(-1)

        safe = -A.min() < decay_limit(A.dtype)
        # torch.cond refuses operands that share storage; without padding (T a multiple of
        # C) the chunks are views of one fused projection, so they go in as copies.
        operands = (qc.clone(), kc.clone(), vc.clone(), A)
        flat = torch.cond(safe, factorised, exact, operands)
        intra = flat.reshape(*qc.shape[:-1], vc.shape[-1])  # (B, nc, C, H, V)
    elif _factorisable(A):
        intra = _gla_intra_factorised(qc, kc, vc, A)
    else:
        intra = _gla_intra_exact(qc, kc, vc, A)
    # Traced, one chunk takes the general path (its carry is empty): a branch on the chunk
    # count would fix T's range to the traced one.
    if not torch.compiler.is_exporting() and qc.shape[1] == 1:
        return first_steps(intra.flatten(1, 2), T)

    # Chunk states: S_end[n] = e^{A_C} ⊙ S_end[n−1] + (K ⊙ e^{A_C − A})ᵀ V.
    A_last = A[:, :, -1]  # (B, nc, H, K)
    k_decayed = kc * (A_last[:, :, None] - A).exp()  # (B, nc, C, H, K)
    updates = torch.einsum("bnchk,bnchv->bnhkv", k_decayed, vc)  # (B, nc, H, K, V)
    ends = linear_scan(A_last[:, :-1].exp().unsqueeze(-1), updates[:, :-1])  # (B, nc−1, H, K, V)

    # Inter-chunk: (Q ⊙ e^{A}) S_prev for chunks 1..nc−1 (chunk 0 enters with S = 0).
    inter = torch.einsum("bnchk,bnhkv->bnchv", qc[:, 1:] * A[:, 1:].exp(), ends)
    out = torch.cat([intra[:, :1], intra[:, 1:] + inter], dim=1)  # (B, nc, C, H, V)
    return first_steps(out.flatten(1, 2), T)  # (B, T, H, V)


__all__ = [
    "auto_chunk_size",
    "decay_limit",
    "first_steps",
    "gla_chunked",
    "gla_reference",
    "linear_scan",
    "linear_scan_parallel",
    "linear_scan_reference",
    "log_linear_scan",
    "log_linear_scan_cumsum",
    "log_linear_scan_parallel",
    "log_linear_scan_reference",
    "segment_sums",
]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_two_level_scan": ("_chunk", "_pad_time"),
    "_LinearScan": ("_two_level_scan",),
    "segment_sums": (),
    "_traced_chunks": (),
    "first_steps": (),
    "_time_last_chunks": ("_traced_chunks",),
    "_real_steps": ("first_steps",),
    "linear_scan_parallel": (
        "_check_time",
        "_time_last_chunks",
        "_real_steps",
        "segment_sums",
        "PARALLEL_CHUNK",
    ),
    "log_linear_scan_parallel": (
        "_check_time",
        "_time_last_chunks",
        "_real_steps",
        "segment_sums",
        "PARALLEL_CHUNK",
        "LOG_ZERO",
    ),
    "linear_scan": ("_LinearScan", "_check_time", "auto_chunk_size", "linear_scan_parallel"),
    "_two_level_log_scan": ("_chunk", "_pad_time"),
    "_LogLinearScan": ("_two_level_log_scan", "_two_level_scan"),
    "log_linear_scan": (
        "_LogLinearScan",
        "_check_time",
        "auto_chunk_size",
        "log_linear_scan_parallel",
    ),
    "_factorisable": ("decay_limit",),
    "gla_chunked": (
        "decay_limit",
        "_factorisable",
        "_gla_intra_exact",
        "_gla_intra_factorised",
        "_traced_chunks",
        "first_steps",
        "linear_scan",
    ),
}
