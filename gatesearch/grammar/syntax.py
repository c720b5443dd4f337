"""The grammar DSL's syntax: a Lark LALR parser that turns a space file into a small AST.

The language (see spaces/gated_lm.gs for a full example):

    # comment
    task causal                          # causal | noncausal | any (default any)
    let width = choice(64, 128)          # a value shared by the whole model; `width` is required
    let heads = choice(2, 4)
    model := embed stack rmsnorm head    # a rule: alternatives separated by `|`
    stack := repeat(block, 1..8)         # depth bound: 1 to 8 blocks
    deep[max_depth=6] := block | block deep   # recursion needs an explicit bound
    mixer := [3] attention(heads=$heads, gate=choice(none, g1))
           | [1] hgrn                    # optional weights in brackets; continuation lines start with |

Meaning is given in `analysis.py`; this module only knows shapes of text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from gatesearch.grammar.errors import GrammarError, Loc

_LARK = r"""
start: _NL? (_stmt (_NL _stmt)*)? _NL?
_stmt: task_decl | let_decl | rule
task_decl: "task" NAME
let_decl: "let" NAME "=" elem
rule: NAME bound? ":=" alt (_BAR alt)*
bound: "[" NAME "=" NUMBER "]"
alt: weight? elem+
weight: "[" NUMBER "]"
?elem: call
     | NAME -> name
     | NUMBER -> number
     | STRING -> string
     | "$" NAME -> shared
     | RANGE -> range
call: NAME "(" _NL? (arglist _NL?)? ")"
arglist: arg ("," _NL? arg)* ","?
arg: NAME "=" elem -> kwarg
   | elem+ -> posarg

RANGE.2: /[0-9]+\.\.[0-9]+/
NUMBER: /[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"([^"\\\n]|\\.)*"/
_BAR: /(\r?\n[\t ]*(#[^\n]*)?)*[\t ]*\|/
_NL: /(\r?\n[\t ]*(#[^\n]*)?)+/
%ignore /[\t ]+/
%ignore /#[^\n]*/
"""

_PARSER = Lark(_LARK, parser="lalr", propagate_positions=True, maybe_placeholders=False)

# What a user should read instead of Lark's terminal names.
_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a quoted string",
    "RANGE": "a range like 1..8",
    "INT": "an integer",
    "_NL": "end of line",
    "_BAR": "'|'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "EQUAL": "'='",
    "LSQB": "'['",
    "RSQB": "']'",
    "DOLLAR": "'$'",
    "$END": "end of file",
    "TASK": "'task'",
    "LET": "'let'",
}


# ----------------------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Node:
    loc: Loc


@dataclass(frozen=True)
class Name(Node):
    name: str


@dataclass(frozen=True)
class Num(Node):
    value: int | float
    text: str


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Shared(Node):
    name: str


@dataclass(frozen=True)
class Range(Node):
    low: int
    high: int


@dataclass(frozen=True)
class Arg(Node):
    key: str | None  # None for positional arguments
    value: tuple[Node, ...]  # positional arguments may be sequences: residual(norm mixer)


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True)
class Alt(Node):
    weight: Num | None
    elems: tuple[Node, ...]


@dataclass(frozen=True)
class RuleDecl(Node):
    name: str
    bound: tuple[str, Num, Loc] | None
    alts: tuple[Alt, ...]


@dataclass(frozen=True)
class LetDecl(Node):
    name: str
    value: Node


@dataclass(frozen=True)
class TaskDecl(Node):
    value: Name


@dataclass
class SpaceFile:
    path: str
    statements: list[Node] = field(default_factory=list)


def _loc(file: str, obj: Token | object) -> Loc:
    line = getattr(obj, "line", None)
    col = getattr(obj, "column", None)
    if line is None:
        meta = getattr(obj, "meta", None)
        line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
    return Loc(file, int(line or 1), int(col or 1))


class _ToAst(Transformer):
    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def _l(self, tok: Token) -> Loc:
        return _loc(self.file, tok)

    def start(self, items: list) -> list:
        return items

    def task_decl(self, items: list) -> TaskDecl:
        (tok,) = items
        return TaskDecl(self._l(tok), Name(self._l(tok), str(tok)))

    def let_decl(self, items: list) -> LetDecl:
        tok, value = items
        return LetDecl(self._l(tok), str(tok), value)

    def rule(self, items: list) -> RuleDecl:
        tok, *rest = items
        bound = None
        if rest and isinstance(rest[0], tuple):
            bound = rest.pop(0)
        return RuleDecl(self._l(tok), str(tok), bound, tuple(rest))

    def bound(self, items: list) -> tuple[str, Num, Loc]:
        key, value = items
        return (str(key), self.number([value]), self._l(key))

    def alt(self, items: list) -> Alt:
        weight = None
        if items and isinstance(items[0], tuple) and items[0][0] == "weight":
            weight = items.pop(0)[1]
        return Alt(items[0].loc, weight, tuple(items))

    def weight(self, items: list) -> tuple[str, Num]:
        return ("weight", self.number(items))

    def name(self, items: list) -> Name:
        (tok,) = items
        return Name(self._l(tok), str(tok))

    def number(self, items: list) -> Num:
        (tok,) = items
        text = str(tok)
        is_int = all(c.isdigit() or c in "+-" for c in text)
        return Num(self._l(tok), int(text) if is_int else float(text), text)

    def string(self, items: list) -> Str:
        (tok,) = items
        # Only \" and \\ escapes have meaning; anything else is kept literally.
        raw = str(tok)[1:-1]
        return Str(self._l(tok), raw.replace('\\"', '"').replace("\\\\", "\\"))

    def shared(self, items: list) -> Shared:
        (tok,) = items
        loc = self._l(tok)
        return Shared(Loc(loc.file, loc.line, max(1, loc.col - 1)), str(tok))

    def range(self, items: list) -> Range:
        (tok,) = items
        low, high = str(tok).split("..")
        return Range(self._l(tok), int(low), int(high))

    @v_args(meta=True)
    def call(self, meta: object, items: list) -> Call:
        tok, *rest = items
        args: tuple[Arg, ...] = rest[0] if rest else ()
        return Call(self._l(tok), str(tok), tuple(args))

    def arglist(self, items: list) -> tuple[Arg, ...]:
        return tuple(items)

    def kwarg(self, items: list) -> Arg:
        key, value = items
        return Arg(self._l(key), str(key), (value,))

    def posarg(self, items: list) -> Arg:
        return Arg(items[0].loc, None, tuple(items))


def _terminal_name(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    try:  # anonymous terminals such as ":=" are named by their text
        return repr(_PARSER.get_terminal(name).pattern.value)
    except KeyError:
        return name


def _expected(exc: UnexpectedInput) -> str:
    raw = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ()
    names = sorted({_terminal_name(t) for t in raw})
    return ", ".join(names[:8]) if names else "valid grammar text"


# Brackets nested deeper than this are refused before parsing: the parser, the analysis and
# derivation all recurse once per level, and a few hundred levels would exhaust Python's stack
# (a traceback). Real spaces nest a handful of levels.
MAX_NESTING = 32


def _check_nesting(text: str, file: str) -> None:
    """GrammarError at the first bracket that opens level MAX_NESTING + 1 (comments and
    quoted strings skipped, as the parser skips them)."""
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":  # a comment runs to the end of its line
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == '"':  # a string runs to its closing quote or the end of its line
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif c in "([":
            depth += 1
            if depth > MAX_NESTING:
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                raise GrammarError(
                    Loc(file, line, col),
                    f"nested too deeply: at most {MAX_NESTING} levels of brackets",
                    expected="a rule for the inner part",
                )
        elif c in ")]":
            depth = max(0, depth - 1)
        i += 1


def parse_text(text: str, file: str = "<string>") -> list[Node]:
    """Parse DSL text into AST statements; a syntax error raises GrammarError with line:col."""
    _check_nesting(text, file)
    try:
        tree = _PARSER.parse(text + "\n")
    except UnexpectedCharacters as exc:
        pos = exc.pos_in_stream
        char = text[pos] if pos is not None and pos < len(text) else "end of file"
        raise GrammarError(
            Loc(file, exc.line, exc.column),
            f"unexpected character {char!r}",
            expected=_expected(exc),
        ) from None
    except UnexpectedToken as exc:
        tok = exc.token
        shown = "end of file" if tok.type == "$END" else repr(str(tok).strip() or "end of line")
        line = tok.line if tok.line is not None else exc.line
        col = tok.column if tok.column is not None else exc.column
        if tok.type in ("_NL", "_BAR") and str(tok).startswith(("\n", "\r")):
            shown = "end of line"
        raise GrammarError(
            Loc(file, int(line), int(col)), f"unexpected {shown}", expected=_expected(exc)
        ) from None
    except UnexpectedEOF as exc:
        lines = text.splitlines() or [""]
        raise GrammarError(
            Loc(file, len(lines), len(lines[-1]) + 1),
            "unexpected end of file",
            expected=_expected(exc),
        ) from None
    return _ToAst(file).transform(tree)


def parse_file(path: str | Path) -> list[Node]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GrammarError(Loc(str(path), 0, 0), "no such space file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GrammarError(Loc(str(path), 0, 0), f"cannot read space file: {exc}") from None
    return parse_text(text, str(path))
