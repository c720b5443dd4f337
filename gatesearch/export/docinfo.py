"""What the exported file's docstring says of the model's scores and of its output, built
from numbers and enums only.

The docstring is code the exporter writes. Scores reach it as floats (type-checked, formatted
here by `gatesearch.formats`), the metric's name only when it is a plain word, and the
output's reading as an Enum member whose sentences are the exporter's own: no string read
from a run folder is pasted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from gatesearch.export.errors import ExportError
from gatesearch.formats import score
from gatesearch.tasks import Readout

# A metric's name as tasks spell it: `accuracy`, `nll`, `bits per char`.
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?: [A-Za-z0-9_]+){0,3}\Z")
MAX_NAME_CHARS = 40


class ScoreSource(Enum):
    """Which training the scores come from."""

    RETRAINED = "retrained"  # `gatesearch retrain`: the full budget, its best validation point
    PROXY = "proxy"  # the campaign's short proxy training; no test score is measured


_SOURCE_TEXT = {
    ScoreSource.RETRAINED: "retrained at the full budget, at its best validation point",
    ScoreSource.PROXY: "the campaign's short proxy training; not retrained",
}
# A suite campaign's architecture: its scores are the suite's, not the exported member's.
_SUITE_TEXT = {
    ScoreSource.RETRAINED: "the suite's score, the weighted mean of its members' scores on "
    "[0, 1]: retrained on every member, the mean over its seeds",
    ScoreSource.PROXY: "the suite's score, the weighted mean of its members' scores on [0, 1]: "
    "the campaign's one-seed trial; not retrained",
}


def plain_name(value: Any) -> bool:
    """True when `value` is a metric name fit to be written as it is."""
    return type(value) is str and len(value) <= MAX_NAME_CHARS and bool(_PLAIN_NAME.match(value))


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (an int or a float, not a bool), else
    None."""
    if type(value) not in (int, float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Scores:
    """A model's validation and test scores for the docstring: None where not measured."""

    metric_name: str
    source: ScoreSource
    valid: float | None = None
    valid_loss: float | None = None
    test: float | None = None
    test_loss: float | None = None
    suite: bool = False  # a suite campaign's scores (the architecture's on every member)

    def __post_init__(self) -> None:
        if not plain_name(self.metric_name):
            raise ExportError(f"metric name {self.metric_name!r:.60} is not a plain name")
        if not isinstance(self.source, ScoreSource):
            raise ExportError(f"score source {self.source!r:.60} is not a ScoreSource")
        for field in ("valid", "valid_loss", "test", "test_loss"):
            value = getattr(self, field)
            if value is not None and finite(value) is None:
                raise ExportError(f"{field} score {value!r:.60} is not a finite number")

    def lines(self) -> list[str]:
        """`Scores (...):` and one indented line per split."""
        out = [f"Scores ({(_SUITE_TEXT if self.suite else _SOURCE_TEXT)[self.source]}):"]
        for split, value, loss in (
            ("validation", self.valid, self.valid_loss),
            ("test", self.test, self.test_loss),
        ):
            if value is None:
                # Not "run `retrain`": it trains a campaign's top K, which the exported
                # architecture (chosen by hash, or pruned) need not be among.
                missing = (
                    "not measured (the proxy scores the validation split only)"
                    if self.source is ScoreSource.PROXY
                    else "not recorded"
                )
                out.append(f"    {split} {self.metric_name}: {missing}")
                continue
            text = f"    {split} {self.metric_name}: {score(value)}"
            if loss is not None and self.metric_name != "loss":
                text += f" (loss {score(loss)})"
            out.append(text)
        return out


def readout_lines(readout: Readout, n_out: int) -> list[str]:
    """Where the task reads the model's output y = model(x), of shape (B, T, n_out)."""
    if type(n_out) is not int:
        raise ExportError(f"n_out {n_out!r:.60} is not an int")
    if readout is Readout.LAST_POSITION:
        return [
            "Output: one label per sequence. The class logits are y[b, n_b - 1, :], the output",
            "at the last real position of sequence b (n_b: its length before padding; padding",
            f"goes at the end); their argmax over the {n_out} classes is the predicted label.",
        ]
    if readout is Readout.EVERY_POSITION:
        return [
            f"Output: class logits at every position, y[b, t, :] over {n_out} classes (for a",
            "language model, the next token's); the task scores the positions its mask counts.",
        ]
    if readout is Readout.NEXT_FRAME:
        return [
            f"Output: y[b, t, :] holds one Bernoulli logit for each of the {n_out} dimensions",
            "of the next frame: p(frame t + 1 has dimension d on) = sigmoid(y[b, t, d]).",
        ]
    if readout is Readout.SEQUENCE_AT_LAST:
        return [
            "Output: the whole input decoded from its last position. y[b, T - 1, :] holds",
            f"{n_out} logits, read as T - 1 blocks of n_out / (T - 1) class logits: the argmax",
            "of block t is the predicted token t; the other positions are not read.",
        ]
    raise ExportError(f"readout {readout!r:.60} is not a Readout")


@dataclass(frozen=True)
class About:
    """What the docstring says of the model besides its architecture: its scores and where
    its task reads the output (each left out when not known)."""

    scores: Scores | None = None
    readout: Readout | None = None

    def blocks(self, n_out: int) -> list[list[str]]:
        """The docstring's paragraphs, for a model of output width `n_out`."""
        out = []
        if self.scores is not None:
            out.append(self.scores.lines())
        if self.readout is not None:
            out.append(readout_lines(self.readout, n_out))
        return out
