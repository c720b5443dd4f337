"""One standalone PyTorch file for an architecture.

The file holds, in order: a docstring naming the campaign, the architecture and its metrics;
imports of torch and the standard library only; the engine's own definitions of every primitive
the architecture uses (see `sources`); a model class with one named sub-module per graph node,
built with literal arguments, and a straight-line `forward`, one line per node; and `load()`.

Nothing from an architecture reaches the code unchecked. Parameter names must be the op's
registry parameters; values are bools, ints, finite floats, None, strings that are one of the
registry domain's values or plain identifiers, and expert descriptions made of those; each is
written as a literal from a value of exactly that type (no subclass's __repr__ runs). Node paths become attribute names through a
sanitiser that keeps only identifier segments. Free text (campaign title, metrics) goes into the
docstring with non-printable characters replaced and quotes and backslashes escaped. The result
is then parsed and checked: its docstring reads back as written, it imports only torch and the
standard library, and the generated class contains nothing but the expected statements.
"""

from __future__ import annotations

import ast
import itertools
import keyword
import math
import re
import sys
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any

import networkx as nx
import torch
from torch import nn

from gatesearch.arch.build import GraphModel, build_model, unique_name
from gatesearch.arch.describe import describe
from gatesearch.arch.graph import INPUT_OP, OUTPUT_OP, GraphError, canonical_order, validate_graph
from gatesearch.arch.graph import arch_hash as compute_arch_hash
from gatesearch.export import bridges
from gatesearch.export.checks import check_source
from gatesearch.export.docinfo import About
from gatesearch.export.errors import ExportError
from gatesearch.export.sources import Collected, HeaderImport, collect
from gatesearch.registry import REGISTRY, Context, InputKind, PrimitiveSpec, TensorKind

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A derivation path segment, "block" or "block[2]"; anything else in a path is dropped.
_PATH_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]{1,6})\])?\Z")
_HEX = re.compile(r"[0-9a-f]{1,64}\Z")
MAX_ATTRIBUTE_CHARS = 60
MAX_TEXT_CHARS = 200
LINE_CHARS = 100
_STDLIB = frozenset(sys.stdlib_module_names)


# ------------------------------------------------------------------------------ checked values


def _identifier(value: Any, what: str) -> str:
    if type(value) is not str or not _IDENTIFIER.match(value) or keyword.iskeyword(value):
        raise ExportError(f"{what} {value!r} is not a plain identifier")
    return value


def _literal(value: Any, what: str, allowed: tuple[Any, ...] | None = None) -> str:
    """Python source for a checked parameter value.

    `allowed`: the registry domain's values when it is finite; a string must be one of them or
    a plain identifier.
    """
    kind = type(value)
    if value is None:
        return "None"
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if not math.isfinite(value):
            raise ExportError(f"{what} is {value!r}; only finite numbers can be exported")
        return float.__repr__(value)
    if kind is str:
        if allowed is not None and value in allowed:
            return _quoted(value)
        return _quoted(_identifier(value, what))
    raise ExportError(
        f"{what} is a {kind.__name__} ({value!r:.60}); parameters are bools, ints, finite "
        "floats, None or identifier strings"
    )


def _quoted(value: str) -> str:
    """A string literal, in double quotes as hand-written code has them (repr when the
    string holds a quote, a backslash or anything unprintable)."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return str.__repr__(value)


def _param_literals(spec: PrimitiveSpec, params: Any, where: str) -> list[tuple[str, str]]:
    """(name, source) for each parameter of a node, each checked against the registry."""
    if type(params) is not dict:
        raise ExportError(f"{where}: params must be a dict, not {type(params).__name__}")
    out = []
    for name, value in params.items():
        _identifier(name, f"{where}: parameter name")
        p = spec.param(name)
        if p is None:
            raise ExportError(f"{where}: {spec.name} has no parameter {name!r}")
        what = f"{where}: {spec.name}.{name}"
        if p.slot:
            out.append((name, _slot_literal(value, p.ref, what)))
            continue
        domain = p.admissible()
        if domain is not None and not domain.contains(value):
            raise ExportError(f"{what}={value!r:.60} is not {domain.describe()}")
        allowed = domain.finite_values() if domain is not None else None
        out.append((name, _literal(value, what, allowed)))
    return out


def _slot_literal(value: Any, role: Any, what: str) -> str:
    """A child primitive's description {"op": ..., "params": {...}}, checked like a node."""
    if type(value) is not dict or set(value) - {"op", "params"} or "op" not in value:
        raise ExportError(f"{what} must be {{'op': <name>, 'params': {{...}}}}")
    op = value["op"]
    spec = _spec(op, what)
    if spec.role is not role:
        raise ExportError(f"{what}: {op!r} is a {spec.role.value}, not a {role.value}")
    params = _param_literals(spec, value.get("params", {}), what)
    inner = ", ".join(f'"{k}": {v}' for k, v in params)
    return f'{{"op": {_literal(op, what)}, "params": {{{inner}}}}}'


def _spec(op: Any, where: str) -> PrimitiveSpec:
    if type(op) is not str or op not in REGISTRY:
        raise ExportError(f"{where}: unknown op {op!r:.60}")
    return REGISTRY[op]


def _context_literal(name: str, value: Any, exported: set[str]) -> str:
    if isinstance(value, Enum):
        cls = type(value).__name__
        if cls not in exported:
            raise ExportError(f"context {name} is a {cls}, which the export does not define")
        return f"{cls}.{_identifier(value.name, f'context {name}')}"
    return _literal(value, f"context {name}")


def _text(value: Any, what: str) -> str:
    """One line of free text for the docstring: printable, at most MAX_TEXT_CHARS."""
    if type(value) is not str:
        raise ExportError(f"{what} must be a str, not {type(value).__name__}")
    clean = "".join(c if c.isprintable() else " " for c in value).strip()
    if len(clean) > MAX_TEXT_CHARS:
        clean = clean[: MAX_TEXT_CHARS - 1] + "…"
    return clean


def _metric_value(value: Any, what: str) -> str:
    if value is None:
        return "n/a"
    if type(value) in (bool, int):
        return str(value)
    if type(value) is float:
        return float.__repr__(value)  # nan and inf are fine in text
    if type(value) is str:
        return _text(value, what)
    raise ExportError(f"{what} is a {type(value).__name__}; metrics are numbers or strings")


def _escape_docstring(text: str) -> str:
    """Source for the inside of a triple-quoted docstring that reads back as `text`."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


# ------------------------------------------------------------------------------ names


def attribute_names(graph: nx.DiGraph, nodes: list[str]) -> dict[str, str]:
    """A Python attribute name for each primitive node, from its derivation path.

    The indexed segments of the path (which copy of a repeated rule) and the op:
    "model.stack.block[2].residual[0].mixer.attention" -> "block2_residual0_attention",
    "model.rmsnorm" -> "rmsnorm". Only segments that are plain identifiers (with an optional
    [index]) count, so whatever else a path holds never reaches the code. Clashes get "_2",
    "_3", ... in `nodes` order.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for node in nodes:
        attrs = graph.nodes[node]
        op = _identifier(attrs["op"], f"node {node!r}: op")
        parts = []
        path = attrs.get("path")
        for segment in (path if type(path) is str else "").split("."):
            match = _PATH_SEGMENT.match(segment)
            if match and match.group(2) is not None:
                parts.append(f"{match.group(1)}{int(match.group(2))}")
        base = "_".join([*parts, op])
        if len(base) > MAX_ATTRIBUTE_CHARS:
            base = op
        if keyword.iskeyword(base) or hasattr(nn.Module, base):
            base += "_"
        names[node] = unique_name(base, taken)
    return names


def node_order(graph: nx.DiGraph) -> list[str]:
    """The engine's execution order (GraphModel's): canonical ranks break topological ties."""
    rank = {node: i for i, node in enumerate(canonical_order(graph))}
    return list(nx.lexicographical_topological_sort(graph, key=rank.__getitem__))


def primitive_nodes(graph: nx.DiGraph) -> list[str]:
    return [n for n in node_order(graph) if graph.nodes[n]["op"] not in (INPUT_OP, OUTPUT_OP)]


# ------------------------------------------------------------------------------ the model class


def _shape(kind: TensorKind, ctx: Context) -> str:
    if kind is TensorKind.INPUT:
        return "(B, T)" if InputKind(ctx.input_kind) is InputKind.TOKENS else f"(B, T, {ctx.n_in})"
    if kind is TensorKind.HIDDEN:
        return f"(B, T, {ctx.d_model})"
    return f"(B, T, {ctx.n_out})"


def _trunk(graph: nx.DiGraph) -> set[str]:
    """The chain of port-0 inputs back from the output: the value `x` carries."""
    sink = next(n for n, op in graph.nodes(data="op") if op == OUTPUT_OP)
    trunk = set()
    node = sink
    while graph.pred[node]:
        (node,) = [s for s, e in graph.pred[node].items() if e["port"] == 0]
        trunk.add(node)
    return trunk


def _forward_lines(graph: nx.DiGraph, ctx: Context, names: dict[str, str]) -> list[str]:
    """One line per node; values on the trunk live in `x`, branch values in `h`, `h2`, ...
    (a name is reused once its value has no reader left)."""
    order = node_order(graph)
    trunk = _trunk(graph)
    readers = {n: graph.out_degree(n) for n in order}
    holder: dict[str, str] = {}  # variable -> node whose value it holds
    var: dict[str, str] = {}
    source = next(n for n in order if graph.nodes[n]["op"] == INPUT_OP)
    var[source], holder["x"] = "x", source
    lines = []
    for node in order:
        op = graph.nodes[node]["op"]
        if node == source:
            continue
        inputs = [s for s, _ in sorted(graph.pred[node].items(), key=lambda kv: kv[1]["port"])]
        if op == OUTPUT_OP:
            lines.append(f"return {var[inputs[0]]}")
            break
        args = [var[s] for s in inputs]
        for s in inputs:
            readers[s] -= 1
            if readers[s] == 0:
                del holder[var[s]]
        if node in trunk and "x" not in holder:
            name = "x"
        elif inputs and var[inputs[0]] not in holder and var[inputs[0]] != "x":
            name = var[inputs[0]]
        else:
            name = next(v for v in _branch_names() if v not in holder)
        var[node], holder[name] = name, node
        kind = REGISTRY[op].signature[1]
        if getattr(REGISTRY[op].module, "takes_lengths", False):
            # As GraphModel does: the non-causal mixers keep padding away from real positions.
            args.append("lengths=lengths")
        lines.append(f"{name} = self.{names[node]}({', '.join(args)})  # {_shape(kind, ctx)}")
    return lines


def _branch_names() -> Iterator[str]:
    yield "h"
    yield from (f"h{i}" for i in itertools.count(2))


def _call(head: str, args: list[str], indent: str) -> list[str]:
    """`head(args)` on one line, or one argument per line when it would be too long (an
    argument still too long spread as `_spread` does), as `ruff format` writes calls."""
    one = f"{indent}{head}({', '.join(args)})"
    if len(one) <= LINE_CHARS:
        return [one]
    lines = [f"{indent}{head}("]
    for arg in args:
        name, _, value = arg.partition("=")
        lines += _spread(value, ast.parse(value, mode="eval").body, f"{indent}    ", f"{name}=")
    return [*lines, f"{indent})"]


def _spread(source: str, node: ast.expr, indent: str, head: str) -> list[str]:
    """`head` + the expression `node` of `source` + ",": on one line when it fits, else a dict
    literal (a nested primitive's description, such as a bidirectional mixer's cell) opened
    one item per line, each item spread in turn."""
    text = ast.get_source_segment(source, node)
    one = f"{indent}{head}{text},"
    if len(one) <= LINE_CHARS or not isinstance(node, ast.Dict):
        return [one]
    lines = [f"{indent}{head}{{"]
    for key, value in zip(node.keys, node.values, strict=True):
        assert key is not None  # the exporter writes no `**` in its literals
        lines += _spread(source, value, f"{indent}    ", f"{ast.get_source_segment(source, key)}: ")
    return [*lines, f"{indent}}},"]


def _model_class(
    graph: nx.DiGraph, ctx: Context, class_name: str, exported: set[str]
) -> tuple[list[str], dict[str, str]]:
    nodes = primitive_nodes(graph)
    names = attribute_names(graph, nodes)
    tokens = InputKind(ctx.input_kind) is InputKind.TOKENS
    given = (
        f"token ids {_shape(TensorKind.INPUT, ctx)} in [0, {ctx.n_in})"
        if tokens
        else f"features {_shape(TensorKind.INPUT, ctx)}"
    )
    summary = [_escape_docstring(line) for line in _wrapped_summary(graph, " " * len('    """'))]
    lines = [
        f"class {class_name}(nn.Module):",
        f'    """{summary[0]}',
        *(f"    {line}" for line in summary[1:]),
        "",
        f"    forward(x, lengths=None): x is {given}; returns {_shape(TensorKind.OUTPUT, ctx)}.",
        "    lengths: (B,) the real length of each sequence of a batch padded at the end.",
        '    """',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
    ]
    for node in nodes:
        attrs = graph.nodes[node]
        spec = _spec(attrs["op"], f"node {node!r}")
        cls = spec.module.__name__
        if cls not in exported:
            raise ExportError(f"node {node!r}: class {cls} is not in the export")
        args = [f"{k}={_context_literal(k, getattr(ctx, k), exported)}" for k in spec.context]
        args += [f"{k}={v}" for k, v in _param_literals(spec, attrs["params"], f"node {node!r}")]
        lines += _call(f"self.{names[node]} = {cls}", args, " " * 8)
    lines += [
        "",
        "    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:",
        *("        " + line for line in _forward_lines(graph, ctx, names)),
    ]
    return lines, names


def _load_function(class_name: str) -> list[str]:
    return [
        f'def load(path: str, device: str = "cpu") -> {class_name}:',
        f'    """A {class_name} with the weights of the safetensors file `path`, in eval mode.',
        "",
        "    Needs the `safetensors` package, imported here only: the rest of this file uses",
        "    nothing but torch and the standard library. Weights load by name (strict).",
        '    """',
        "    from safetensors.torch import load_file",
        "",
        f"    model = {class_name}()",
        "    model.load_state_dict(load_file(path, device=device))",
        "    return model.eval()",
    ]


# ------------------------------------------------------------------------------ assembly


def _parts(model: GraphModel) -> tuple[set[type], set[type]]:
    """(engine classes the model instantiates, those built as parts of a primitive)."""
    classes: set[type] = set()
    parts: set[type] = set()
    for module in model.modules():
        if type(module).__module__.startswith("gatesearch.primitives"):
            classes.add(type(module))
    for node_module in model.nodes.values():
        for child in node_module.modules():
            if child is not node_module and type(child).__module__.startswith("gatesearch"):
                parts.add(type(child))
    return classes, parts


def _table_entries(parts: set[type]) -> dict[str, list[tuple[type, str]]]:
    """For each bridges table, (class, `"name": value` code) of the registered classes that
    primitives build as parts, of the table's role."""
    entries: dict[str, list[tuple[type, str]]] = {}
    specs = {spec.module: spec for spec in REGISTRY.specs()}
    for table, (role, with_context) in bridges.TABLES.items():
        rows = []
        for spec in sorted((specs[c] for c in parts if c in specs), key=lambda s: s.name):
            if spec.role is not role:
                continue
            cls = spec.module
            value = cls.__name__
            if with_context:
                context = ", ".join(f'"{c}"' for c in spec.context)
                value = f"({cls.__name__}, ({context},))"
            rows.append((cls, f'"{spec.name}": {value}'))
        entries[table] = rows
    return entries


def _header_lines(header: list[HeaderImport]) -> list[str]:
    """Imports grouped and sorted as isort (ruff's I rules) wants them."""

    def kind(name: str) -> int:  # isort's order-by-type: CONSTANTS, Classes, functions
        return 0 if name.isupper() and len(name) > 1 else 1 if name[0].isupper() else 2

    groups: dict[bool, tuple[list[str], dict[str, list[str]]]] = {
        stdlib: ([], {}) for stdlib in (True, False)
    }
    for h in header:
        plain, froms = groups[h.module.split(".")[0] in _STDLIB]
        if h.name is None:
            alias = "" if h.alias == h.module.split(".")[0] else f" as {h.alias}"
            plain.append(f"import {h.module}{alias}")
        else:
            alias = "" if h.alias == h.name else f" as {h.alias}"
            froms.setdefault(h.module, []).append(f"{h.name}{alias}")
    lines = ["from __future__ import annotations", ""]
    for stdlib in (True, False):
        plain, froms = groups[stdlib]
        block = sorted(set(plain), key=lambda s: s.split()[1])
        for module in sorted(froms):
            names = sorted(set(froms[module]), key=lambda n: (kind(n), n))
            block.append(f"from {module} import {', '.join(names)}")
        if block:
            lines += [*block, ""]
    return lines


def _section(module: str) -> str:
    label = "lookups by name" if module == bridges.__name__ else module.rsplit(".", 1)[-1]
    return f"# {'-' * (LINE_CHARS - 4 - len(label))} {label}"


class _Doc:
    """A docstring built from trusted text (the exporter's own) and untrusted text (titles,
    metrics, summaries), which is escaped. `source` is what goes between the triple quotes,
    `value` what Python reads back."""

    def __init__(self) -> None:
        self.source: list[str] = []
        self.value: list[str] = []

    def add(self, text: str, trusted: bool = True) -> None:
        if trusted:
            assert '""' not in text and "\\" not in text, text
            self.source.append(text)
        else:
            self.source.append(_escape_docstring(text))
        self.value.append(text)

    def line(self, *parts: tuple[str, bool]) -> None:
        for text, trusted in parts:
            self.add(text, trusted)
        self.add("\n")


def _wrapped_summary(graph: nx.DiGraph, indent: str) -> list[str]:
    """The complete `describe(graph)` broken at " > " into lines of at most LINE_CHARS."""
    lines: list[str] = []
    current = ""
    for i, part in enumerate(describe(graph, complete=True).split(" > ")):
        piece = part if i == 0 else f" > {part}"
        if current and len(indent) + len(current) + len(piece) > LINE_CHARS:
            lines.append(current)
            current = part if i == 0 else f"> {part}"
        else:
            current += piece
    return [*lines, current]


def _module_doc(
    title: str,
    given_hash: str,
    graph: nx.DiGraph,
    metrics: Mapping[str, Any],
    class_name: str,
    weights_name: str,
    about: About,
    n_out: int,
) -> _Doc:
    doc = _Doc()
    doc.line(
        (_text(title, "title") or "gatesearch export", False),
        (f": architecture {given_hash}.", True),
    )
    own = compute_arch_hash(graph)
    if own != given_hash:
        doc.line((f"The exported graph (pruned) hashes to {own}.", True))
    # Scores and the output's reading come first: what a user of the file asks before all.
    # Both are the exporter's own text around numbers it formatted (docinfo).
    for block in about.blocks(n_out):
        doc.line()
        for line in block:
            doc.line((line, True))
    doc.line()
    doc.line(("Metrics:", True))
    if not metrics:
        doc.line(("    none recorded", True))
    for key, value in metrics.items():
        what = f"metric {key!r:.40}"
        doc.line(
            ("    ", True),
            (_text(key, what), False),
            (": ", True),
            (_metric_value(value, what), False),
        )
    doc.line()
    doc.line(("Architecture:", True))
    for line in _wrapped_summary(graph, "    "):
        doc.line(("    ", True), (line, False))
    doc.line()
    doc.line(("Usage:", True))
    doc.line(
        ('    model = load("', True),
        (_text(weights_name, "weights file name"), False),
        ('")', True),
    )
    doc.line(("    y = model(x)", True))
    doc.line()
    doc.line(
        (
            f"{class_name} is built from named sub-modules. Each primitive class below is gatesearch's",
            True,
        )
    )
    doc.line(
        (
            "own implementation, copied without its search-time parts. This file needs only torch",
            True,
        )
    )
    doc.line(("and the standard library (and the safetensors package inside `load`).", True))
    return doc


def export_source(
    graph: nx.DiGraph,
    ctx: Context,
    *,
    title: str,
    arch_hash: str,
    metrics: Mapping[str, Any],
    class_name: str = "Model",
    weights_name: str = "model.safetensors",
    model: GraphModel | None = None,
    about: About | None = None,
) -> str:
    """The standalone Python source of the model for `graph` in context `ctx`.

    `title` (the campaign), `arch_hash` and `metrics` are written into the module docstring,
    with a usage example that loads `weights_name`; `about`, the model's scores and where the
    task reads its output, first. `model`, the engine's model of `graph`
    when at hand, saves building one (on the meta device) to see which classes it uses.
    Raises ExportError when the graph is invalid, holds a value that cannot be written safely,
    or uses a primitive whose export is not declared.
    """
    class_name = _identifier(class_name, "class name")
    if type(arch_hash) is not str or not _HEX.match(arch_hash):
        raise ExportError(f"architecture hash {arch_hash!r:.60} is not a hexadecimal string")
    if not isinstance(metrics, Mapping):
        raise ExportError(f"metrics must be a mapping, not {type(metrics).__name__}")
    for node, attrs in graph.nodes(data=True):
        if attrs.get("op") not in (INPUT_OP, OUTPUT_OP):
            spec = _spec(attrs.get("op"), f"node {node!r:.60}")
            _param_literals(spec, attrs.get("params"), f"node {node!r:.60}")
    try:
        validate_graph(graph, ctx)
    except GraphError as exc:
        raise ExportError(f"invalid architecture: {exc}") from None

    if model is None:
        with torch.device("meta"):  # structure only: no memory, no random draws
            model = build_model(graph, ctx)
    elif compute_arch_hash(model.graph) != compute_arch_hash(graph):
        raise ExportError("the model was built from a different architecture than the graph")
    classes, parts = _parts(model)
    collected: Collected = collect(classes, _table_entries(parts), parts)
    exported = {d.ref.name for d in collected.definitions}
    if class_name in exported or class_name == "load":
        raise ExportError(f"class name {class_name!r} clashes with a definition in the export")
    model_lines, _ = _model_class(graph, ctx, class_name, exported)

    doc = _module_doc(
        title, arch_hash, graph, metrics, class_name, weights_name, about or About(), ctx.n_out
    )
    out = [f'"""{"".join(doc.source)}"""', "", *_header_lines(collected.header)]
    module = None
    for definition in collected.definitions:
        if definition.ref.module != module:
            module = definition.ref.module
            out += [_section(module), "", ""]
        out += [definition.text, "", ""]
    out += [_section("model"), "", "", *model_lines, "", "", *_load_function(class_name)]
    source = "\n".join(out) + "\n"
    copied = frozenset(d.ref.name for d in collected.definitions if d.checked)
    check_source(source, "".join(doc.value), class_name, copied)
    return source
