"""The search-space grammar: parse, check, derive, mutate, cross over, turn into graphs."""

from gatesearch.grammar.analysis import grammar_from_text, load_grammar
from gatesearch.grammar.derive import (
    ChoiceKind,
    ChoicePoint,
    Chooser,
    Derivation,
    DerivationError,
    RandomChooser,
    ReplayChooser,
    expand,
    replay,
    sample,
)
from gatesearch.grammar.errors import GrammarError, Loc
from gatesearch.grammar.model import Causality, Grammar
from gatesearch.grammar.syntax import MAX_NESTING
from gatesearch.grammar.to_graph import derivation_to_graph

__all__ = [
    "MAX_NESTING",
    "Causality",
    "ChoiceKind",
    "ChoicePoint",
    "Chooser",
    "Derivation",
    "DerivationError",
    "Grammar",
    "GrammarError",
    "Loc",
    "RandomChooser",
    "ReplayChooser",
    "derivation_to_graph",
    "expand",
    "grammar_from_text",
    "load_grammar",
    "replay",
    "sample",
]
