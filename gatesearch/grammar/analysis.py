"""From AST to a checked Grammar: names, parameters, domains, shapes, reachability, recursion.

Every problem becomes one GrammarError at the line and column of the offending text.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from gatesearch.grammar import syntax as S
from gatesearch.grammar.errors import GrammarError, Loc
from gatesearch.grammar.model import (
    Alternative,
    Causality,
    Choose,
    Fixed,
    Grammar,
    Identity,
    Item,
    ParamExpr,
    PrimCall,
    Repeat,
    Rule,
    RuleRef,
    SharedDecl,
    SharedRef,
    Slot,
    Wrap,
)
from gatesearch.registry import (
    REGISTRY,
    Categorical,
    Domain,
    FloatRange,
    IntRange,
    ParamSpec,
    Role,
    TensorKind,
    Value,
    domain_within,
)

DOMAIN_FUNCS = ("choice", "int", "float", "logfloat")
RESERVED = {*DOMAIN_FUNCS, "repeat", "identity", "true", "false", "let", "task"}
MAX_REPEAT = 64
MAX_DEPTH = 64

HIDDEN = (TensorKind.HIDDEN, TensorKind.HIDDEN)


def load_grammar(path: str | Path) -> Grammar:
    """Parse and check a space file."""
    path = Path(path)
    statements = S.parse_file(path)
    return _Analyzer(str(path), path.read_text(encoding="utf-8")).run(statements)


def grammar_from_text(text: str, file: str = "<string>") -> Grammar:
    return _Analyzer(file, text).run(S.parse_text(text, file))


def _literal(node: S.Node) -> Value:
    """A plain value: a number, a string, a bare name (a categorical label) or true/false."""
    if isinstance(node, S.Num):
        return node.value
    if isinstance(node, S.Str):
        return node.value
    if isinstance(node, S.Name):
        if node.name == "true":
            return True
        if node.name == "false":
            return False
        return node.name
    raise GrammarError(node.loc, "expected a value", expected="a number, a name or a string")


class _Analyzer:
    def __init__(self, file: str, source: str) -> None:
        self.file = file
        self.source = source
        self.rule_decls: dict[str, S.RuleDecl] = {}
        self.shared: dict[str, SharedDecl] = {}
        self.causality = Causality.ANY

    # ------------------------------------------------------------------------------ driver

    def run(self, statements: list[S.Node]) -> Grammar:
        task_seen: S.TaskDecl | None = None
        for st in statements:
            if isinstance(st, S.TaskDecl):
                if task_seen is not None:
                    raise GrammarError(st.loc, "`task` is declared twice")
                task_seen = st
                try:
                    self.causality = Causality(st.value.name)
                except ValueError:
                    raise GrammarError(
                        st.value.loc,
                        f"unknown task kind {st.value.name!r}",
                        expected="causal, noncausal or any",
                    ) from None
            elif isinstance(st, S.LetDecl):
                if st.name in self.shared:
                    raise GrammarError(st.loc, f"shared value {st.name!r} is declared twice")
                self.shared[st.name] = SharedDecl(st.name, self._shared_expr(st), st.loc)
            elif isinstance(st, S.RuleDecl):
                if st.name in self.rule_decls:
                    first = self.rule_decls[st.name].loc
                    raise GrammarError(
                        st.loc, f"rule {st.name!r} is defined twice (first at line {first.line})"
                    )
                if st.name in RESERVED or st.name in REGISTRY:
                    raise GrammarError(
                        st.loc,
                        f"rule name {st.name!r} is taken by a built-in or a registered primitive",
                        expected="another name",
                    )
                self.rule_decls[st.name] = st
        if not self.rule_decls:
            raise GrammarError(
                Loc(self.file, 1, 1), "the space defines no rule", expected="NAME := ..."
            )
        if "width" not in self.shared:
            raise GrammarError(
                Loc(self.file, 1, 1),
                "the space does not declare the model width",
                expected="`let width = choice(...)`",
            )
        self._check_width()
        rules = {name: self._rule(decl) for name, decl in self.rule_decls.items()}
        start = next(iter(rules))
        grammar = Grammar(self.file, self.causality, self.shared, rules, start, self.source)
        from gatesearch.grammar import checks

        checks.check_grammar(grammar)
        return grammar

    def _check_width(self) -> None:
        decl = self.shared["width"]
        values = (
            (decl.expr.value,)
            if isinstance(decl.expr, Fixed)
            else decl.expr.domain.finite_values() or ()
        )
        if not values or not all(type(v) is int and 1 <= v <= 1 << 16 for v in values):
            raise GrammarError(
                decl.expr.loc,
                f"the model width must be whole numbers from 1 to {1 << 16}",
                expected="choice(64, 128)",
            )

    # ----------------------------------------------------------------------------- values

    def _shared_expr(self, st: S.LetDecl) -> Fixed | Choose:
        node = st.value
        if isinstance(node, S.Call) and node.name in DOMAIN_FUNCS:
            return Choose(self._domain(node), node.loc)
        if isinstance(node, S.Range):
            return Choose(self._range(node), node.loc)
        if isinstance(node, S.Shared | S.Call):
            raise GrammarError(
                node.loc, "a shared value must be a value or a domain", expected="choice(...)"
            )
        return Fixed(_literal(node), node.loc)

    def _range(self, node: S.Range) -> IntRange:
        if node.low > node.high:
            raise GrammarError(node.loc, f"empty range {node.low}..{node.high}")
        return IntRange(node.low, node.high)

    def _domain(self, call: S.Call) -> Domain:
        for arg in call.args:
            if arg.key is not None:
                raise GrammarError(arg.loc, f"{call.name}() takes no named arguments")
            if len(arg.value) != 1:
                raise GrammarError(arg.value[1].loc, "expected ',' between values")
        values = [a.value[0] for a in call.args]
        if call.name == "choice":
            if not values:
                raise GrammarError(call.loc, "choice() needs at least one value")
            lits = tuple(_literal(v) for v in values)
            if len(set(map(repr, lits))) != len(lits):
                raise GrammarError(call.loc, "choice() lists a value twice")
            return Categorical(lits)
        first, second = values if len(values) == 2 else (None, None)
        if not (isinstance(first, S.Num) and isinstance(second, S.Num)):
            raise GrammarError(call.loc, f"{call.name}() takes two numbers", expected="low, high")
        low, high = first.value, second.value
        if low > high:
            raise GrammarError(
                call.loc, f"{call.name}({low}, {high}) is empty", expected="low <= high"
            )
        if call.name == "int":
            if not (type(low) is int and type(high) is int):
                raise GrammarError(call.loc, "int() bounds must be integers")
            return IntRange(low, high)
        if call.name == "logfloat" and low <= 0:
            raise GrammarError(call.loc, "logfloat() needs a positive lower bound")
        return FloatRange(float(low), float(high), log=call.name == "logfloat")

    # ------------------------------------------------------------------------------ rules

    def _rule(self, decl: S.RuleDecl) -> Rule:
        max_depth = None
        if decl.bound is not None:
            key, num, loc = decl.bound
            if key != "max_depth":
                raise GrammarError(loc, f"unknown rule option {key!r}", expected="max_depth")
            if type(num.value) is not int or not 1 <= num.value <= MAX_DEPTH:
                raise GrammarError(num.loc, f"max_depth must be an integer in [1, {MAX_DEPTH}]")
            max_depth = num.value
        alts = tuple(self._alt(a) for a in decl.alts)
        if not math.isfinite(sum(a.weight for a in alts)):  # samplers draw by the total
            raise GrammarError(decl.loc, f"the weights of {decl.name} add up to infinity")
        return Rule(decl.name, alts, max_depth, decl.loc)

    def _alt(self, alt: S.Alt) -> Alternative:
        weight = 1.0
        if alt.weight is not None:
            weight = float(alt.weight.value)
            if not (weight > 0 and math.isfinite(weight)):
                raise GrammarError(alt.weight.loc, "a weight must be a positive, finite number")
        items = tuple(self._item(e) for e in alt.elems)
        return Alternative(weight, items, _segments(items, alt.loc), _label(items), alt.loc)

    def _item(self, node: S.Node) -> Item:
        if isinstance(node, S.Name):
            return self._name_item(node)
        if isinstance(node, S.Call):
            return self._call_item(node)
        raise GrammarError(
            node.loc,
            f"expected a rule or primitive here, found {_show(node)}",
            expected="a rule name or primitive(...)",
        )

    def _name_item(self, node: S.Name) -> Item:
        if node.name == "identity":
            return Identity(node.loc)
        if node.name in self.rule_decls:
            return RuleRef(node.name, node.loc)
        if node.name in REGISTRY:
            return self._primitive(node.name, (), node.loc)
        raise GrammarError(
            node.loc,
            f"{node.name!r} is neither a rule of this space nor a registered primitive",
            expected=_suggest(node.name, [*self.rule_decls, *REGISTRY.names()]),
        )

    def _call_item(self, call: S.Call) -> Item:
        if call.name == "repeat":
            return self._repeat(call)
        if call.name in DOMAIN_FUNCS:
            raise GrammarError(call.loc, f"{call.name}(...) is a domain, not a block")
        if call.name in self.rule_decls:
            raise GrammarError(call.loc, f"rule {call.name!r} takes no arguments")
        if call.name not in REGISTRY:
            raise GrammarError(
                call.loc,
                f"unknown primitive {call.name!r}",
                expected=_suggest(call.name, REGISTRY.names()),
            )
        spec = REGISTRY[call.name]
        if spec.role is Role.WRAPPER:
            if len(call.args) != 1 or call.args[0].key is not None:
                raise GrammarError(
                    call.loc,
                    f"{call.name}(...) takes one body",
                    expected=f"{call.name}(norm mixer)",
                )
            body = tuple(self._item(e) for e in call.args[0].value)
            return Wrap(call.name, body, call.loc, _segments(body, call.loc))
        return self._primitive(call.name, call.args, call.loc)

    def _repeat(self, call: S.Call) -> Repeat:
        args = call.args
        if len(args) != 2 or args[0].key is not None or args[1].key is not None:
            raise GrammarError(
                call.loc, "repeat takes a block and a range", expected="repeat(block, 1..8)"
            )
        if len(args[0].value) != 1:
            raise GrammarError(
                args[0].value[1].loc, "repeat takes one block; make a rule for a sequence"
            )
        if len(args[1].value) != 1 or not isinstance(args[1].value[0], S.Range | S.Num):
            raise GrammarError(args[1].loc, "expected a count range", expected="lo..hi")
        node = args[1].value[0]
        low, high = (node.low, node.high) if isinstance(node, S.Range) else (node.value, node.value)
        if type(low) is not int or type(high) is not int or not 1 <= low <= high <= MAX_REPEAT:
            raise GrammarError(
                node.loc, f"repeat counts must satisfy 1 <= lo <= hi <= {MAX_REPEAT}"
            )
        item = self._item(args[0].value[0])
        if isinstance(item, Repeat):
            raise GrammarError(item.loc, "repeat of a repeat: make a rule for the inner one")
        return Repeat(item, low, high, call.loc)

    def _primitive(self, op: str, args: tuple[S.Arg, ...], loc: Loc) -> PrimCall:
        spec = REGISTRY[op]
        if spec.role in (Role.ACTIVATION, Role.PRUNING_GATE, Role.COMBINE):
            raise GrammarError(
                loc,
                f"{op!r} is a {spec.role.value.replace('_', ' ')}, used as a parameter value, not a block",
                expected="e.g. mlp(act=" + op + ")" if spec.role is Role.ACTIVATION else None,
            )
        if spec.role is Role.WRAPPER:
            raise GrammarError(loc, f"{op} needs a body", expected=f"{op}(norm mixer)")
        given: dict[str, ParamExpr] = {}
        for arg in args:
            if arg.key is None:
                raise GrammarError(arg.loc, f"{op}() takes named parameters", expected="name=value")
            param = spec.param(arg.key)
            if param is None or param.internal:
                names = [p.name for p in spec.grammar_params()]
                raise GrammarError(
                    arg.loc,
                    f"{op} has no parameter {arg.key!r}",
                    expected=", ".join(names) if names else "no parameters",
                )
            if arg.key in given:
                raise GrammarError(arg.loc, f"parameter {arg.key!r} is given twice")
            given[arg.key] = self._param_expr(op, param, arg)
        params: list[tuple[str, ParamExpr]] = []
        for param in spec.grammar_params():
            if param.name in given:
                params.append((param.name, given[param.name]))
            elif param.slot:
                raise GrammarError(
                    loc, f"{op} needs its {param.name!r} block", expected=f"{param.name}=..."
                )
            else:
                params.append((param.name, Fixed(param.default, loc)))
        return PrimCall(op, tuple(params), loc)

    def _param_expr(self, op: str, param: ParamSpec, arg: S.Arg) -> ParamExpr:
        if len(arg.value) != 1:
            raise GrammarError(arg.value[1].loc, "expected one value", expected="',' or ')'")
        node = arg.value[0]
        if param.slot:
            item = self._item(node)
            if not isinstance(item, RuleRef | PrimCall):
                raise GrammarError(node.loc, f"{param.name} must be a rule or a primitive")
            return Slot(item, node.loc)
        admissible = param.admissible()
        if isinstance(node, S.Shared):
            if node.name not in self.shared:
                raise GrammarError(
                    node.loc,
                    f"undefined shared value ${node.name}",
                    expected=_suggest(node.name, list(self.shared)) or "a `let` declaration",
                )
            decl = self.shared[node.name]
            self._check_domain(op, param.name, admissible, decl.expr, node.loc)
            return SharedRef(node.name, node.loc)
        if isinstance(node, S.Call) and node.name in DOMAIN_FUNCS:
            expr: Fixed | Choose = Choose(self._domain(node), node.loc)
        elif isinstance(node, S.Range):
            expr = Choose(self._range(node), node.loc)
        elif isinstance(node, S.Call):
            raise GrammarError(
                node.loc, f"{node.name}(...) is not a value", expected="a value or choice(...)"
            )
        else:
            expr = Fixed(_literal(node), node.loc)
        self._check_domain(op, param.name, admissible, expr, node.loc)
        return expr

    def _check_domain(
        self, op: str, name: str, admissible: Domain | None, expr: Fixed | Choose, loc: Loc
    ) -> None:
        if admissible is None:
            return
        if isinstance(expr, Fixed):
            if not admissible.contains(expr.value):
                raise GrammarError(
                    loc,
                    f"{op}: {name}={expr.value!r} is out of domain",
                    expected=admissible.describe(),
                )
            return
        if not domain_within(expr.domain, admissible):
            bad = next(
                (v for v in expr.domain.finite_values() or () if not admissible.contains(v)), None
            )
            what = f"{name}={bad!r}" if bad is not None else f"{name} range"
            raise GrammarError(
                loc, f"{op}: {what} is out of domain", expected=admissible.describe()
            )


def _segments(items: tuple[Item, ...], loc: Loc) -> tuple[str, ...]:
    counts = Counter(item.segment for item in items)
    seen: Counter[str] = Counter()
    out = []
    for item in items:
        seg = item.segment
        if counts[seg] > 1:
            if isinstance(item, Repeat):
                raise GrammarError(
                    item.loc,
                    f"{seg!r} appears beside repeat({seg}, ...): name one of them by a rule",
                )
            out.append(f"{seg}[{seen[seg]}]")
            seen[seg] += 1
        else:
            out.append(seg)
    return tuple(out)


def _label(items: tuple[Item, ...]) -> str:
    return " ".join(item.segment for item in items)


def _show(node: S.Node) -> str:
    if isinstance(node, S.Num):
        return f"the number {node.text}"
    if isinstance(node, S.Str):
        return f"the string {node.value!r}"
    if isinstance(node, S.Shared):
        return f"${node.name}"
    if isinstance(node, S.Range):
        return f"the range {node.low}..{node.high}"
    return type(node).__name__.lower()


def _suggest(name: str, candidates: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=3)
    return " or ".join(close) if close else None


__all__ = ["HIDDEN", "grammar_from_text", "load_grammar"]
