"""One small model holding every kind of delta-rule mixer, for the export tests."""

from __future__ import annotations

from gatesearch.arch.space import SPACES_DIR, Architecture, load_known

_RECURRENCE = "model.stack.block[{}].residual[0].mixer.recurrence"


def delta_rules_arch() -> Architecture:
    """The Gated DeltaNet LM at width 64, 3 blocks, with a DeltaNet block (output gate on)
    first and a channel-decay block last: deltanet, gated_deltanet with a scalar decay and
    with a channel decay."""
    return load_known(
        SPACES_DIR / "known" / "gated_deltanet_lm.toml",
        {
            "$width": 64,
            "$heads": 2,
            "model.stack.block#count": 3,
            _RECURRENCE.format(0): "deltanet",
            _RECURRENCE.format(0) + ".deltanet.output_gate": True,
            _RECURRENCE.format(2) + ".gated_deltanet.decay": "channel",
        },
    )
