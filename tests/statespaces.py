"""One small model holding the Mamba-2 mixer in the settings the 2025 space offers, for the
export tests."""

from __future__ import annotations

from gatesearch.arch.space import SPACES_DIR, Architecture, load_known

_MAMBA2 = "model.stack.block[{}].residual.mixer.recurrence.mamba2."


def mamba2_arch() -> Architecture:
    """The Mamba-2 LM at width 64 with 2 heads and 2 blocks: the first at the defaults
    (d_state 64, expand 2, conv kernel 4), the second with every option the space offers
    moved (d_state 16, expand 1, conv kernel 2)."""
    return load_known(
        SPACES_DIR / "known" / "mamba2_lm.toml",
        {
            "$width": 64,
            "$heads": 2,
            "model.stack.block#count": 2,
            _MAMBA2.format(1) + "d_state": 16,
            _MAMBA2.format(1) + "expand": 1,
            _MAMBA2.format(1) + "conv_kernel": 2,
        },
    )
