"""Whole-grammar checks: shapes chain, every rule is reachable and terminates, recursion is
bounded, and something buildable exists for every task kind the space admits."""

from __future__ import annotations

import itertools

import networkx as nx

from gatesearch.grammar.errors import GrammarError, Loc
from gatesearch.grammar.model import (
    Alternative,
    Grammar,
    Identity,
    Item,
    PrimCall,
    Repeat,
    RuleRef,
    Slot,
    Wrap,
)
from gatesearch.registry import REGISTRY, Role, TensorKind

Sig = tuple[TensorKind, TensorKind]
HIDDEN: Sig = (TensorKind.HIDDEN, TensorKind.HIDDEN)
MODEL: Sig = (TensorKind.INPUT, TensorKind.OUTPUT)


def _refs(item: Item) -> list[RuleRef]:
    if isinstance(item, RuleRef):
        return [item]
    if isinstance(item, Wrap):
        return [r for i in item.body for r in _refs(i)]
    if isinstance(item, Repeat):
        return _refs(item.item)
    if isinstance(item, PrimCall):
        return [r for _, e in item.params if isinstance(e, Slot) for r in _refs(e.item)]
    return []


def _rule_graph(g: Grammar) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(g.rules)
    for rule in g.rules.values():
        for alt in rule.alts:
            for item in alt.items:
                for ref in _refs(item):
                    graph.add_edge(rule.name, ref.rule)
    return graph


def check_grammar(g: Grammar) -> None:
    graph = _rule_graph(g)
    _check_reachable(g, graph)
    _check_recursion(g, graph)
    _check_terminates(g)
    sigs = _check_shapes(g)
    if sigs[g.start] != MODEL:
        raise GrammarError(
            g.rules[g.start].loc,
            f"the first rule, {g.start!r}, must turn the task input into the task output",
            expected="a stem first and a head last, e.g. `model := embed body head`",
        )
    _check_slots(g)
    _check_feasible(g)


def _check_reachable(g: Grammar, graph: nx.DiGraph) -> None:
    reachable = nx.descendants(graph, g.start) | {g.start}
    unused = [(name, rule) for name, rule in g.rules.items() if name not in reachable]
    if unused:
        # All of them in one line: narrowing a space (one mixer instead of four) typically
        # orphans several rules at once, and one error per run would take as many runs.
        (name, rule), rest = unused[0], unused[1:]
        others = ", ".join(f"{n!r} (line {r.loc.line})" for n, r in rest)
        also = f"; so are {others}" if rest else ""
        raise GrammarError(
            rule.loc,
            f"rule {name!r} is unreachable from {g.start!r}{also}: delete what nothing uses",
        )


def _check_recursion(g: Grammar, graph: nx.DiGraph) -> None:
    def where(n: str) -> tuple[int, int, str]:
        return (g.rules[n].loc.line, g.rules[n].loc.col, n)

    unbounded = graph.subgraph(n for n in graph if g.rules[n].max_depth is None)
    # Rules on a cycle: in a strongly connected component of two or more, or calling themselves.
    cyclic = [
        n
        for comp in nx.strongly_connected_components(unbounded)
        for n in comp
        if len(comp) > 1 or unbounded.has_edge(n, n)
    ]
    if not cyclic:
        return
    # The message must not depend on set or hash order: the first such rule in the file, and
    # the shortest cycle through it, ties broken by file position.
    name = min(cyclic, key=where)
    came_from: dict[str, str] = {}
    frontier = [name]
    while name not in came_from:
        nxt = []
        for node in frontier:
            for succ in sorted(unbounded.successors(node), key=where):
                if succ not in came_from:
                    came_from[succ] = node
                    nxt.append(succ)
        frontier = nxt
    cycle = [name]
    while (prev := came_from[cycle[-1]]) != name:
        cycle.append(prev)
    cycle = [name, *reversed(cycle[1:])]
    raise GrammarError(
        g.rules[name].loc,
        f"rule {name!r} is recursive ({' -> '.join([*cycle, name])}) without a depth bound",
        expected=f"`{name}[max_depth=8] := ...`",
    )


def _productive(g: Grammar, without: str | None = None) -> set[str]:
    """Rules with a finite derivation (optionally never entering rule `without`)."""
    done: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, rule in g.rules.items():
            if name in done or name == without:
                continue
            if any(all(_item_ok(i, done, without) for i in a.items) for a in rule.alts):
                done.add(name)
                changed = True
    return done


def _item_ok(item: Item, done: set[str], without: str | None) -> bool:
    return all(r.rule in done and r.rule != without for r in _refs(item))


def _check_terminates(g: Grammar) -> None:
    productive = _productive(g)
    stuck = [n for n in g.rules if n not in productive]
    if stuck:
        # Report the root cause: a rule whose endless recursion does not come from another rule.
        graph = _rule_graph(g).subgraph(stuck)
        cond = nx.condensation(graph)
        sink = next(c for c in nx.topological_sort(cond) if cond.out_degree(c) == 0)
        members = cond.nodes[sink]["members"]
        name = min(members, key=lambda n: (g.rules[n].loc.line, g.rules[n].loc.col))
        raise GrammarError(
            g.rules[name].loc,
            f"rule {name!r} never terminates: every alternative leads back to it",
            expected="an alternative without the recursion",
        )
    for name, rule in g.rules.items():
        if rule.max_depth is not None:
            # At its depth bound the rule may not re-enter itself: one alternative must end it.
            if not any(
                all(_item_ok(i, _productive(g, without=name), name) for i in a.items)
                for a in rule.alts
            ):
                raise GrammarError(
                    rule.loc,
                    f"rule {name!r} has no alternative that ends its recursion",
                    expected="an alternative that does not lead back to it",
                )


def _check_shapes(g: Grammar) -> dict[str, Sig]:
    sigs: dict[str, Sig] = {}
    changed = True
    while changed:  # a rule's shape is known once one of its alternatives' is
        changed = False
        for name, rule in g.rules.items():
            if name in sigs:
                continue
            for alt in rule.alts:
                sig = _alt_sig(alt, sigs, strict=False)
                if sig is not None:
                    sigs[name] = sig
                    changed = True
                    break
    for name, rule in g.rules.items():
        for alt in rule.alts:
            sig = _alt_sig(alt, sigs, strict=True)
            if sig != sigs[name]:
                raise GrammarError(
                    alt.loc,
                    f"this alternative of {name!r} maps {_show(sig)}, another maps {_show(sigs[name])}",
                    expected="every alternative of a rule to map the same tensor kinds",
                )
    return sigs


def _show(sig: Sig | None) -> str:
    return "nothing" if sig is None else f"{sig[0].value} -> {sig[1].value}"


def _item_sig(item: Item, sigs: dict[str, Sig], strict: bool) -> Sig | None:
    if isinstance(item, RuleRef):
        return sigs.get(item.rule)
    if isinstance(item, PrimCall):
        return REGISTRY[item.op].signature
    if isinstance(item, Identity):
        return HIDDEN
    if isinstance(item, Repeat):
        sig = _item_sig(item.item, sigs, strict)
        if sig is not None and sig[0] != sig[1]:
            raise GrammarError(
                item.loc,
                f"repeat needs a block whose output can feed its input; {item.item.segment} maps {_show(sig)}",
            )
        return sig
    assert isinstance(item, Wrap)
    body = _seq_sig(item.body, sigs, strict)
    if body is None and not strict:
        return HIDDEN if all(_item_sig(i, sigs, False) for i in item.body) else None
    if body != HIDDEN:
        raise GrammarError(
            item.loc,
            f"{item.op} needs a body mapping hidden -> hidden, this one maps {_show(body)}",
        )
    return HIDDEN


def _alt_sig(alt: Alternative, sigs: dict[str, Sig], strict: bool) -> Sig | None:
    return _seq_sig(alt.items, sigs, strict)


def _seq_sig(items: tuple[Item, ...], sigs: dict[str, Sig], strict: bool) -> Sig | None:
    current: Sig | None = None
    for item in items:
        sig = _item_sig(item, sigs, strict)
        if sig is None:
            return None
        if current is not None and current[1] != sig[0]:
            raise GrammarError(
                item.loc,
                f"{item.segment} takes {sig[0].value} tensors but receives {current[1].value}",
                expected=f"a block taking {current[1].value}",
            )
        current = (sig[0], sig[1]) if current is None else (current[0], sig[1])
    return current


def _slot_roles(item: Item, g: Grammar, seen: set[str]) -> list[tuple[Role, Loc]]:
    if isinstance(item, PrimCall):
        return [(REGISTRY[item.op].role, item.loc)]
    if isinstance(item, RuleRef):
        if item.rule in seen:
            return []
        seen.add(item.rule)
        out = []
        for alt in g.rules[item.rule].alts:
            if len(alt.items) != 1:
                out.append((Role.WRAPPER, alt.loc))  # a sequence cannot fill a slot
            else:
                out.extend(_slot_roles(alt.items[0], g, seen))
        return out
    return [(Role.WRAPPER, item.loc)]


def _check_slots(g: Grammar) -> None:
    for rule in g.rules.values():
        for alt in rule.alts:
            for call in primitive_calls(alt.items):
                spec = REGISTRY[call.op]
                for name, expr in call.params:
                    if not isinstance(expr, Slot):
                        continue
                    want = spec.param(name).ref  # type: ignore[union-attr]
                    for role, loc in _slot_roles(expr.item, g, set()):
                        if role is not want:
                            raise GrammarError(
                                loc,
                                f"{call.op}.{name} must be a single {want.value} primitive",  # type: ignore[union-attr]
                                expected=", ".join(REGISTRY.names(want)),
                            )


def primitive_calls(items: tuple[Item, ...]) -> list[PrimCall]:
    out: list[PrimCall] = []
    for item in items:
        if isinstance(item, PrimCall):
            out.append(item)
            for _, e in item.params:
                if isinstance(e, Slot):
                    out.extend(primitive_calls((e.item,)))
        elif isinstance(item, Wrap):
            out.extend(primitive_calls(item.body))
        elif isinstance(item, Repeat):
            out.extend(primitive_calls((item.item,)))
    return out


def _check_feasible(g: Grammar) -> None:
    """Every primitive call must be buildable in some context the space admits, and the whole
    space for every task kind it admits."""
    from gatesearch.grammar.derive import Feasibility, make_env, shared_values

    feas = Feasibility(g)
    names = list(g.shared)
    combos = list(itertools.product(*(shared_values(g, n) for n in names)))[:4096]
    envs = [
        make_env(g, dict(zip(names, combo, strict=True)), causal)
        for causal in g.causality.admits()
        for combo in combos
    ]
    for rule in g.rules.values():
        for alt in rule.alts:
            for call in primitive_calls(alt.items):
                reasons = [feas.call_reason(call, env, ()) for env in envs]
                if all(r is not None for r in reasons):
                    raise GrammarError(call.loc, f"{call.op} can never be built: {reasons[0]}")
    for causal in g.causality.admits():
        if not any(feas.rule(g.start, env, ()) for env in envs if env.causal == causal):
            kind = "causal" if causal else "non-causal"
            raise GrammarError(
                g.rules[g.start].loc,
                f"no architecture of this space can be built for a {kind} task",
                expected=f"`task {'noncausal' if causal else 'causal'}` or other options",
            )
