"""Mamba-2's state-space duality (SSD) recurrence, as a step loop beside a chunked form.

Per head, with the state h_t ∈ R^{N×P} (N = d_state rows, P channels per head), a step
Δ_t > 0, a decay rate A < 0 (one scalar per head: the state matrix is A times the identity) and
B_t, C_t ∈ R^N shared by the heads of a group:

    h_t = e^{Δ_t A} h_{t−1} + Δ_t B_t x_tᵀ,    y_t = h_tᵀ C_t + D x_t.

- `ssd_reference`: that loop over t.
- `ssd_chunked`: T cut into chunks of Q steps. Inside a chunk (positions 1..Q, state h_0
  entering it), with the in-chunk cumulative log decay a_t = Σ_{s≤t} Δ_s A (≤ 0, per head),
  every state is the entering state decayed plus the writes so far,

      h_t = e^{a_t} h_0 + Σ_{s≤t} e^{a_t − a_s} B_s (Δ_s x_s)ᵀ,

  so the chunk's outputs are a masked linear attention (C as queries, B as keys, Δ ⊙ X as
  values) under the decay mask L_ts = e^{a_t − a_s} (s ≤ t; the paper's 1-semiseparable
  matrix), plus the entering state read out:

      Y = (L ⊙ C Bᵀ)(Δ ⊙ X) + e^{a} ⊙ (C h_0) + D X,

  and the chunk's own write, decayed to its end, is S = Bᵀ (e^{a_Q − a} ⊙ Δ ⊙ X). The states
  entering the chunks follow a recurrence with one scalar decay per chunk,
  h_0^{(n)} = e^{a_Q^{(n−1)}} h_0^{(n−1)} + S^{(n−1)}, whose solution is one more masked
  product, over chunks: h_0^{(n)} = Σ_{m<n} e^{Λ_{n−1} − Λ_m} S^{(m)} with Λ_n the cumulative
  decay up to the end of chunk n. Every step is a batched matrix product: no loop over time
  or over chunks (so an exported graph does not grow with T).

Decay factors: every exponent is a later cumulative decay minus an earlier one, masked to the
pairs where that is ≤ 0 before `exp`, so nothing overflows however strong the decay. The steps
padding the last chunk have Δ = 0 (no decay, no write) and come after every real step, so they
cannot reach a real output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gatesearch.primitives.scan import first_steps

# ------------------------------------------------------------------------------- reference


def _heads_per_group(x: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> int:
    H, G = x.shape[2], B.shape[2]
    if H % G or C.shape != B.shape:
        raise ValueError(
            f"B and C must have one shape (got {tuple(B.shape)} and {tuple(C.shape)}) with "
            f"a group count dividing the {H} heads"
        )
    return H // G


def ssd_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """y_t = h_tᵀ C_t + D x_t with h_t = e^{Δ_t A} h_{t−1} + Δ_t B_t x_tᵀ, by a loop over t.

    x: (B, T, H, P); dt: (B, T, H), the steps Δ > 0; A: (H,), < 0; B, C: (B, T, G, N) with G
    dividing H, head h reading group h // (H/G); D: (H,) or None (no skip).
    Returns (B, T, H, P).
    """
    Bn, _, H, P = x.shape
    R = _heads_per_group(x, B, C)
    # Each head reads its group's B and C: (B, T, G, N) -> (B, T, H, N).
    B_h, C_h = B.repeat_interleave(R, dim=2), C.repeat_interleave(R, dim=2)
    decay = (dt * A).exp()  # (B, T, H)
    written = x * dt[..., None]  # (B, T, H, P): Δ_t x_t
    h = x.new_zeros(Bn, H, B.shape[-1], P)  # (B, H, N, P)
    out = []
    # unbind, not x[:, t]: each indexing op's backward would zero-fill a full-size gradient.
    for x_t, a_t, b_t, c_t in zip(written.unbind(1), decay.unbind(1), B_h.unbind(1), C_h.unbind(1)):
        h = a_t[..., None, None] * h + b_t[..., :, None] * x_t[..., None, :]  # (B, H, N, P)
        out.append(torch.einsum("bhn,bhnp->bhp", c_t, h))
    y = torch.stack(out, dim=1)  # (B, T, H, P)
    return y if D is None else y + D[:, None] * x


# ------------------------------------------------------------------------------- chunked


def _to_chunks(x: torch.Tensor, chunk: int, groups: int) -> torch.Tensor:
    """(B, T, H, ...) -> (B, G, H/G, nc, Q, ...), T padded with zeros to nc·Q: heads (split
    by group) before time, so the in-chunk products and the product over chunks are batched
    matrix products, and a group's B and C (H/G = 1 for them) broadcast over its heads."""
    Bn, T, H = x.shape[:3]
    rest = x.shape[3:]
    # Not -(-T // chunk): exported, a floor division of a negative size becomes ONNX's Div,
    # which truncates toward zero (one chunk too few).
    nc = (T + chunk - 1) // chunk
    x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, nc * chunk - T))  # (B, nc·Q, H, ...)
    x = x.reshape(Bn, nc, chunk, groups, H // groups, *rest)  # (B, nc, Q, G, R, ...)
    # Contiguous once here, not copied again by every batched product that reads it.
    return x.permute(0, 3, 4, 1, 2, *range(5, x.dim())).contiguous()  # (B, G, R, nc, Q, ...)


def _decay_mask(rows: torch.Tensor, cols: torch.Tensor, strict: bool) -> torch.Tensor:
    """[e^{rows_t − cols_s}] for s ≤ t (or s < t when strict), 0 elsewhere, from cumulative
    log decays (..., L): (..., L, L). Masked before `exp`: every kept exponent is ≤ 0."""
    L = rows.shape[-1]
    keep = torch.ones(L, L, dtype=torch.bool, device=rows.device).tril(-1 if strict else 0)
    diff = rows[..., :, None] - cols[..., None, :]  # (..., L_t, L_s)
    return diff.masked_fill(~keep, -math.inf).exp()


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The chunked form of `ssd_reference` (same arguments and result; module docstring).
    Any T and any chunk size: the last chunk is padded."""
    Bn, T, H, P = x.shape
    G, Q = B.shape[2], chunk_size
    _heads_per_group(x, B, C)
    # In-chunk cumulative log decay, ≤ 0.
    a = _to_chunks(dt * A, Q, G).cumsum(dim=-1)  # (B, G, R, nc, Q)
    values = _to_chunks(x * dt[..., None], Q, G)  # (B, G, R, nc, Q, P): Δ ⊙ X
    B_c, C_c = _to_chunks(B, Q, G), _to_chunks(C, Q, G)  # (B, G, 1, nc, Q, N)

    # Within each chunk: masked linear attention under the decay mask. C Bᵀ is computed once
    # per group and broadcast over the group's heads.
    scores = C_c @ B_c.transpose(-1, -2)  # (B, G, 1, nc, Q, Q)
    y = (scores * _decay_mask(a, a, strict=False)) @ values  # (B, G, R, nc, Q, P)

    # Each chunk's own write, decayed to its end.
    a_last = a[..., -1]  # (B, G, R, nc): the whole chunk's decay
    to_end = (a_last[..., None] - a).exp()  # (B, G, R, nc, Q), ≤ 1
    writes = B_c.transpose(-1, -2) @ (values * to_end[..., None])  # (B, G, R, nc, N, P)

    # The states entering the chunks: h_0^{(n)} = Σ_{m<n} e^{Λ_{n−1} − Λ_m} S^{(m)}, a masked
    # product over chunks with Λ the cumulative decay to each chunk's end and Λ_{n−1} (0 for
    # the first chunk) the decay to chunk n's start.
    end = a_last.cumsum(dim=-1)  # (B, G, R, nc): Λ_n
    start = F.pad(end[..., :-1], (1, 0))  # (B, G, R, nc): Λ_{n−1}
    passing = _decay_mask(start, end, strict=True)  # (B, G, R, nc, nc)
    nc, N = a.shape[-2], B.shape[-1]
    flat = writes.reshape(*writes.shape[:3], nc, N * P)  # (B, G, R, nc, N·P)
    entering = (passing @ flat).reshape(writes.shape)  # (B, G, R, nc, N, P)
    y = y + (C_c @ entering) * a.exp()[..., None]  # (B, G, R, nc, Q, P)

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(Bn, nc * Q, H, P)  # (B, nc·Q, H, P)
    y = first_steps(y, T)  # (B, T, H, P): the padding cut in a form a tracer follows
    return y if D is None else y + D[:, None] * x


__all__ = ["ssd_chunked", "ssd_reference"]


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "ssd_chunked": ("_decay_mask", "_heads_per_group", "_to_chunks", "first_steps"),
}
