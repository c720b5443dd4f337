"""Broken space files: each must raise one GrammarError at the right line:col, and the CLI must
print it as one line with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gatesearch.grammar import GrammarError, grammar_from_text

OK = """\
let width = choice(16, 32)
model := embed stack rmsnorm head
stack := repeat(block, 1..3)
block := residual(rmsnorm mlp(expand=choice(2, 4)))
"""

# (id, text, line, col, fragment of the message)
BROKEN = [
    ("syntax-missing-rhs", "let width = 16\nmodel :=\n", 2, 9, "unexpected"),
    ("syntax-bad-char", "let width = 16\nmodel := embed @ head\n", 2, 16, "unexpected character"),
    (
        "syntax-unclosed-call",
        "let width = 16\nmodel := embed mlp(expand=2 head\n",
        2,
        29,
        "unexpected",
    ),
    ("syntax-equals-not-define", "let width = 16\nmodel = embed head\n", 2, 7, "unexpected '='"),
    ("syntax-let-number", "let 3 = 4\n", 1, 5, "unexpected '3'"),
    (
        "syntax-empty-kwarg",
        "let width = 16\nmodel := embed mlp(expand=) head\n",
        2,
        27,
        "unexpected ')'",
    ),
    ("unknown-primitive", "let width = 16\nmodel := embed mlpp head\n", 2, 16, "neither a rule"),
    (
        "unknown-primitive-call",
        "let width = 16\nmodel := embed mlpx(expand=2) head\n",
        2,
        16,
        "unknown primitive",
    ),
    (
        "unknown-param",
        "let width = 16\nmodel := embed mlp(expnd=2) head\n",
        2,
        20,
        "no parameter 'expnd'",
    ),
    (
        "internal-param",
        "let width = 16\nmodel := embed mlp(hidden=8) head\n",
        2,
        20,
        "no parameter 'hidden'",
    ),
    (
        "out-of-domain-value",
        "let width = 16\nmodel := embed mlp(expand=100) head\n",
        2,
        27,
        "out of domain",
    ),
    (
        "out-of-domain-choice",
        "let width = 16\nmodel := embed mlp(act=choice(gelu, relux)) head\n",
        2,
        24,
        "relux",
    ),
    ("bad-type", "let width = 16\nmodel := embed mlp(expand=fast) head\n", 2, 27, "out of domain"),
    (
        "undefined-shared",
        "let width = 16\nmodel := embed attention(heads=$hedas) head\n",
        2,
        32,
        "undefined shared value $hedas",
    ),
    ("undefined-rule", "let width = 16\nmodel := embed body head\n", 2, 16, "neither a rule"),
    (
        "unreachable-rule",
        "let width = 16\nmodel := embed head\nspare := rmsnorm\n",
        3,
        1,
        "unreachable",
    ),
    (
        "unbounded-recursion",
        "let width = 16\nmodel := embed deep head\ndeep := rmsnorm | rmsnorm deep\n",
        3,
        1,
        "without a depth bound",
    ),
    (
        "no-termination",
        "let width = 16\nmodel := embed deep head\ndeep[max_depth=3] := rmsnorm deep\n",
        3,
        1,
        "never terminates",
    ),
    (
        "shape-head-first",
        "let width = 16\nmodel := head embed\n",
        2,
        15,
        "takes input tensors but receives output",
    ),
    (
        "shape-stem-in-body",
        "let width = 16\nmodel := embed body head\nbody := residual(embed)\n",
        3,
        9,
        "needs a body mapping hidden -> hidden",
    ),
    (
        "shape-alternatives-differ",
        "let width = 16\nmodel := embed body head\nbody := rmsnorm | rmsnorm head\n",
        3,
        19,
        "maps",
    ),
    (
        "shape-model-not-complete",
        "let width = 16\nmodel := embed rmsnorm\n",
        2,
        1,
        "must turn the task input into the task output",
    ),
    (
        "heads-never-divide",
        "let width = choice(16, 32)\nmodel := embed attention(heads=choice(3, 5)) head\n",
        2,
        16,
        "does not divide",
    ),
    (
        "expert-choice-causal",
        "task causal\nlet width = 16\nmodel := embed moe(router=expert_choice, expert=mlp) head\n",
        3,
        16,
        "causal",
    ),
    ("missing-width", "model := embed head\n", 1, 1, "width"),
    ("width-not-int", "let width = choice(16, big)\nmodel := embed head\n", 1, 13, "width"),
    (
        "duplicate-rule",
        "let width = 16\nmodel := embed head\nmodel := embed head\n",
        3,
        1,
        "defined twice",
    ),
    (
        "duplicate-param",
        "let width = 16\nmodel := embed mlp(expand=2, expand=4) head\n",
        2,
        30,
        "given twice",
    ),
    (
        "repeat-bad-range",
        "let width = 16\nmodel := embed repeat(rmsnorm, 3..1) head\n",
        2,
        32,
        "1 <= lo <= hi",
    ),
    (
        "repeat-zero",
        "let width = 16\nmodel := embed repeat(rmsnorm, 0..2) head\n",
        2,
        32,
        "repeat counts",
    ),
    ("activation-as-block", "let width = 16\nmodel := embed gelu head\n", 2, 16, "activation"),
    (
        "weight-zero",
        "let width = 16\nmodel := embed b head\nb := [0] rmsnorm | layernorm\n",
        3,
        7,
        "positive",
    ),
    (
        "weight-infinite",
        "let width = 16\nmodel := embed b head\nb := [1e400] rmsnorm | layernorm\n",
        3,
        7,
        "finite",
    ),
    (
        "weights-add-up-to-infinity",
        "let width = 16\nmodel := embed b head\nb := [1e308] rmsnorm | [1e308] layernorm\n",
        3,
        1,
        "add up to infinity",
    ),
    (
        # Hundreds of levels would exhaust Python's stack in the parser: refused first, at
        # the bracket that opens level 33 (comments and strings are not counted).
        "nested-too-deeply",
        "let width = 16\n# ((((\nmodel := embed "
        + "residual(" * 200
        + "rmsnorm"
        + ")" * 200
        + " head\n",
        3,
        16 + 9 * 32 + 8,
        "nested too deeply",
    ),
    (
        "width-too-large",
        "let width = choice(64, 100000)\nmodel := embed head\n",
        1,
        13,
        "whole numbers from 1 to 65536",
    ),
    (
        "empty-choice",
        "let width = 16\nmodel := embed mlp(expand=choice()) head\n",
        2,
        27,
        "at least one value",
    ),
    (
        "logfloat-nonpositive",
        "let width = 16\nmodel := embed moe(tau_start=logfloat(0, 1), expert=mlp) head\n",
        2,
        30,
        "positive lower bound",
    ),
    (
        "slot-not-channel",
        "let width = 16\nmodel := embed moe(expert=attention) head\n",
        2,
        27,
        "single channel primitive",
    ),
    (
        "unknown-task",
        "task sideways\nlet width = 16\nmodel := embed head\n",
        1,
        6,
        "unknown task kind",
    ),
    ("no-rules", "let width = 16\n", 1, 1, "no rule"),
    (
        "wrapper-without-body",
        "let width = 16\nmodel := embed residual head\n",
        2,
        16,
        "needs a body",
    ),
    (
        "bound-bad-option",
        "let width = 16\nmodel := embed d head\nd[depth=3] := rmsnorm\n",
        3,
        3,
        "unknown rule option",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_grammar_is_located(text: str, line: int, col: int, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        grammar_from_text(text, "broken.space")
    err = info.value
    assert (err.loc.line, err.loc.col) == (line, col), str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"broken.space:{line}:{col}: ")
    assert "\n" not in str(err)


def test_at_least_twenty_broken_cases() -> None:
    assert len(BROKEN) >= 20


def test_ok_grammar_parses() -> None:
    g = grammar_from_text(OK, "ok.space")
    assert g.start == "model"
    assert set(g.rules) == {"model", "stack", "block"}


def test_every_unreachable_rule_is_named_in_one_error():
    """Narrowing a space orphans several rules at once: one run names them all."""
    src = "let width = 16\nmodel := embed head\nspare := rmsnorm\nother := layernorm\n"
    with pytest.raises(GrammarError) as err:
        grammar_from_text(src, "narrowed.space")
    assert (err.value.loc.line, err.value.loc.col) == (3, 1)
    assert "rule 'spare' is unreachable from 'model'; so are 'other' (line 4)" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_nesting_at_the_limit_is_accepted_and_derives() -> None:
    from gatesearch.grammar import MAX_NESTING, derivation_to_graph, sample

    text = (
        "let width = 16\nmodel := embed "
        + "residual(" * MAX_NESTING
        + "rmsnorm"
        + ")" * MAX_NESTING
        + " head\n"
    )
    graph = derivation_to_graph(sample(grammar_from_text(text, "deep.space"), 0))
    (norm,) = (d["path"] for _, d in graph.nodes(data=True) if d["op"] == "rmsnorm")
    assert norm.count("residual") == MAX_NESTING


MUTUAL = """\
let width = 16
model := embed a head
a := rmsnorm | c b
b := rmsnorm | a | d
c := rmsnorm | mlp
d := rmsnorm | b c
"""


def test_a_recursion_message_is_the_same_under_every_hash_seed() -> None:
    """The first rule in the file on a cycle, and the shortest cycle through it."""
    with pytest.raises(GrammarError) as info:
        grammar_from_text(MUTUAL, "m.space")
    assert str(info.value).startswith("m.space:3:1: rule 'a' is recursive (a -> b -> a)")
    code = (
        "import sys\n"
        "from gatesearch.grammar import GrammarError, grammar_from_text\n"
        "try:\n"
        "    grammar_from_text(sys.stdin.read(), 'm.space')\n"
        "except GrammarError as exc:\n"
        "    print(exc)\n"
    )
    seen = set()
    for seed in ("0", "1", "random"):  # each a process: ~1.5 s
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code], input=MUTUAL, env=env, capture_output=True, text=True
        )
        seen.add(run.stdout.strip())
    assert seen == {str(info.value)}
