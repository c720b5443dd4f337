"""One small model holding every kind of xLSTM mixer, for the export tests."""

from __future__ import annotations

from gatesearch.arch.space import SPACES_DIR, Architecture, load_known

_MLSTM = "model.stack.block[{}].residual.mixer.recurrence.mlstm."


def xlstm_arch(blocks: int = 3) -> Architecture:
    """The xLSTM LM at width 64: an mLSTM block (sigmoid forget gate, expand 2), the sLSTM
    block with an exponential forget gate, and (blocks=3) an mLSTM block with an exponential
    forget gate at expand 1."""
    third = {_MLSTM.format(2) + "forget": "exp", _MLSTM.format(2) + "expand": 1.0}
    return load_known(
        SPACES_DIR / "known" / "xlstm_lm.toml",
        {
            "$width": 64,
            "$heads": 2,
            "model.stack.block#count": blocks,
            "model.stack.block[1].residual[0].mixer.recurrence.slstm.forget": "exp",
            **(third if blocks > 2 else {}),
        },
    )
