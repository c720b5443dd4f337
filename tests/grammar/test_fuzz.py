"""Hypothesis fuzz: mutated space files either load or raise GrammarError located inside the
file; nothing else escapes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatesearch.arch.space import DEFAULT_SPACE
from gatesearch.grammar import GrammarError, grammar_from_text

SOURCE = DEFAULT_SPACE.read_text(encoding="utf-8")
TOKENS = [
    "(",
    ")",
    ",",
    "|",
    ":=",
    "=",
    "$",
    "[",
    "]",
    "..",
    "#",
    "\n",
    " ",
    "1",
    "0",
    "-3",
    "1.5",
    "choice",
    "repeat",
    "residual",
    "mlp",
    "attention",
    "heads",
    "width",
    "let",
    "task",
    '"x"',
    "identity",
    "model",
    "block",
    "gelu",
    "expert_choice",
    "1..4",
    "max_depth",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = SOURCE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 12)) :]
        else:
            end = pos + draw(st.integers(1, 8))
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[end:]
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_grammars_fail_only_with_located_grammar_errors(text: str) -> None:
    try:
        grammar_from_text(text, "fuzz.space")
    except GrammarError as err:
        n_lines = text.count("\n") + 1
        assert 1 <= err.loc.line <= n_lines + 1, str(err)
        assert err.loc.col >= 1
        assert "\n" not in str(err)
