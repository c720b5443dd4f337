"""The engine's own definitions, copied for an exported file.

The exported code of a primitive is the primitive: its class source, read from its module with
`inspect`, with the registry decorator, the `Prunable` base and the engine-only methods cut out
(pruning happens before export; reference loops and the decode-state counts stay in the
engine), plus the module-level
definitions it uses. Every module that defines something exportable declares those uses:

    EXPORT_DEPS = {"Attention": ("ROPE_BASE", "_rotate_half", ...), ...}  # name -> names it uses
    EXPORT_OMIT = {"Attention": ("_kept_gate_rows",)}                     # class -> methods cut

Nothing is guessed: a copied definition that uses a name it does not declare (directly, through
a declared name, or through a base class) is an ExportError saying where to declare it. Names a
module imports from torch or the standard library become the exported file's imports; the
engine functions that consult the registry are replaced by their stand-ins in `bridges`.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from gatesearch.export import bridges
from gatesearch.export.checks import ALLOWED_IMPORT_ROOTS, check_statement
from gatesearch.export.errors import ExportError

_BUILTINS = frozenset(dir(builtins))
# Engine-only parts cut from every copy: the registry decorator and the pruning interface.
_REGISTER = ("gatesearch.registry", "register")
_ENGINE_ONLY_BASES = {("gatesearch.primitives.base", "Prunable")}
# Methods cut from every class: what the search measures of a model (its decode state, for the
# `state` objective), which the exported model does not need to run.
_ENGINE_ONLY_METHODS = frozenset({"decode_state"})
# Class attributes cut likewise: what the engine's own ONNX export reads (why a module fixes
# the time axis), not part of the model.
_ENGINE_ONLY_ATTRIBUTES = frozenset({"fixed_time"})
_BRIDGES_MODULE = bridges.__name__


@dataclass(frozen=True, order=True)
class Ref:
    """A module-level definition: where it is defined and its name there."""

    module: str
    name: str


@dataclass(frozen=True)
class HeaderImport:
    """One name an exported file imports: `import math`, `import torch.nn.functional as F`,
    `from torch import nn`."""

    module: str
    name: str | None  # None for `import module [as alias]`
    alias: str

    def key(self) -> tuple[str, str]:
        return (self.module, self.name or "")


@dataclass
class _ModuleSource:
    name: str
    text: str
    lines: list[str]
    top: dict[str, ast.stmt]
    # local name -> (module, name there) for `from gatesearch... import name`
    engine_imports: dict[str, tuple[str, str]]
    # local name -> import for names bound by torch / standard library imports
    header_imports: dict[str, HeaderImport]
    deps: dict[str, tuple[str, ...]]
    omit: dict[str, tuple[str, ...]]
    rank: int = 0


@functools.cache
def _module_source(name: str) -> _ModuleSource:
    module = importlib.import_module(name)
    text = inspect.getsource(module)
    tree = ast.parse(text)
    top: dict[str, ast.stmt] = {}
    engine: dict[str, tuple[str, str]] = {}
    header: dict[str, HeaderImport] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            top[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            if isinstance(node.targets[0], ast.Name):
                top[node.targets[0].id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top[node.target.id] = node
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                local = alias.asname or alias.name
                if node.module.split(".")[0] == "gatesearch":
                    if local != alias.name:
                        raise ExportError(
                            f"{name} imports {alias.name} as {local}; the exporter needs "
                            "engine names imported under their own names"
                        )
                    engine[local] = (node.module, alias.name)
                else:
                    header[local] = HeaderImport(node.module, alias.name, local)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                header[local] = HeaderImport(alias.name, None, local)
    return _ModuleSource(
        name=name,
        text=text,
        lines=text.splitlines(),
        top=top,
        engine_imports=engine,
        header_imports=header,
        deps=dict(getattr(module, "EXPORT_DEPS", {})),
        omit=dict(getattr(module, "EXPORT_OMIT", {})),
    )


def resolve(module: str, name: str) -> Ref:
    """Where `name`, as seen from `module`'s namespace, is defined (following engine imports)."""
    src = _module_source(module)
    if name in src.top:
        return Ref(module, name)
    if name in src.engine_imports:
        return resolve(*src.engine_imports[name])
    raise ExportError(f"{module} has no module-level definition or engine import of {name!r}")


def _bridged(ref: Ref) -> Ref:
    return Ref(_BRIDGES_MODULE, ref.name) if (ref.module, ref.name) in bridges.BRIDGED else ref


@dataclass
class Definition:
    """One definition as it will appear in the exported file."""

    ref: Ref
    text: str
    uses: set[Ref] = field(default_factory=set)  # declared names and bases: copied with it
    at_definition: set[str] = field(default_factory=set)  # names evaluated when it is defined
    header: set[HeaderImport] = field(default_factory=set)
    free: frozenset[str] = frozenset()  # names it uses that it does not define itself
    checked: bool = False  # passed checks.check_statement
    lineno: int = 0


# ------------------------------------------------------------------------------ source text


def _leading_comments(lines: list[str], first: int) -> int:
    """The 1-based line where the comment block directly above line `first` starts."""
    while first > 1 and lines[first - 2].lstrip().startswith("#"):
        first -= 1
    return first


def _start(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _decorator_ref(module: str, dec: ast.expr) -> Ref | None:
    target = dec.func if isinstance(dec, ast.Call) else dec
    if isinstance(target, ast.Name):
        try:
            return resolve(module, target.id)
        except ExportError:
            return None
    return None


def _copy_class(src: _ModuleSource, node: ast.ClassDef) -> tuple[str, list[ast.expr]]:
    """The class's source without the registry decorator, engine-only bases and omitted
    methods; and the bases it keeps."""
    lines = src.lines
    drop: set[int] = set()  # 1-based line numbers cut from the copy
    for dec in node.decorator_list:
        if _decorator_ref(src.name, dec) == Ref(*_REGISTER):
            drop.update(range(dec.lineno, dec.end_lineno + 1))  # type: ignore[operator]

    kept_bases = []
    for base in node.bases:
        ref = None
        if isinstance(base, ast.Name):
            try:
                ref = resolve(src.name, base.id)
            except ExportError:
                ref = None
        if ref is None or (ref.module, ref.name) not in _ENGINE_ONLY_BASES:
            kept_bases.append(base)
    if node.keywords:
        raise ExportError(f"{src.name}.{node.name}: class keywords are not exportable")
    header_end = node.body[0].lineno - 1
    header_line: str | None = None
    if len(kept_bases) != len(node.bases):
        if header_end < node.lineno:
            raise ExportError(f"{src.name}.{node.name}: header and body share a line")
        names = ", ".join(ast.get_source_segment(src.text, b) or "" for b in kept_bases)
        header_line = f"class {node.name}({names}):" if names else f"class {node.name}:"
        drop.update(range(node.lineno, header_end + 1))

    omit = set(src.omit.get(node.name, ()))
    omit |= _prunable_methods() | _ENGINE_ONLY_METHODS
    previous_end: int | None = None
    for stmt in node.body:
        if (isinstance(stmt, ast.FunctionDef) and stmt.name in omit) or _engine_attribute(stmt):
            # Cut from just after the previous member, so comments and blank lines that lead
            # into the method go with it.
            first = previous_end + 1 if previous_end is not None else _start(stmt)
            drop.update(range(first, stmt.end_lineno + 1))  # type: ignore[operator]
        else:
            previous_end = stmt.end_lineno
    engine_only = _prunable_methods() | _ENGINE_ONLY_METHODS
    unknown = omit - engine_only - {s.name for s in node.body if hasattr(s, "name")}
    if unknown:
        raise ExportError(f"{src.name}: EXPORT_OMIT[{node.name!r}] names no method {unknown}")

    first = _leading_comments(lines, _start(node))
    out = []
    for i in range(first, node.end_lineno + 1):  # type: ignore[operator]
        if i == node.lineno and header_line is not None:
            out.append(header_line)
        if i not in drop:
            out.append(lines[i - 1])
    return "\n".join(out).rstrip(), kept_bases


def _engine_attribute(stmt: ast.stmt) -> bool:
    """Whether `stmt` sets one of the engine-only class attributes."""
    targets: list[ast.expr]
    if isinstance(stmt, ast.AnnAssign):
        targets = [stmt.target]
    elif isinstance(stmt, ast.Assign):
        targets = stmt.targets
    else:
        return False
    return any(isinstance(t, ast.Name) and t.id in _ENGINE_ONLY_ATTRIBUTES for t in targets)


@functools.cache
def _prunable_methods() -> frozenset[str]:
    from gatesearch.primitives.base import Prunable

    return frozenset(Prunable.__abstractmethods__)


def _copy_plain(src: _ModuleSource, node: ast.stmt) -> str:
    if isinstance(node, ast.FunctionDef):
        for dec in node.decorator_list:
            if _decorator_ref(src.name, dec) == Ref(*_REGISTER):
                raise ExportError(f"{src.name}.{node.name}: a registered function")
    first = _leading_comments(src.lines, _start(node))
    return "\n".join(src.lines[first - 1 : node.end_lineno]).rstrip()


def _class_table(module: str, name: str) -> dict[str, type] | None:
    """The value of a module-level dict of classes (ROUTERS), else None."""
    value = getattr(importlib.import_module(module), name, None)
    if isinstance(value, dict) and value and all(isinstance(v, type) for v in value.values()):
        return value
    return None


# ------------------------------------------------------------------------------ name analysis


def _bound_names(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
    return bound


def _loaded_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _definition_time_names(node: ast.stmt) -> set[str]:
    """Names evaluated when the statement runs at import (annotations are not: the exported
    file has `from __future__ import annotations`)."""
    names: set[str] = set()

    def visit_def(d: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in [*d.decorator_list, *d.args.defaults, *d.args.kw_defaults]:
            if expr is not None:
                names.update(_loaded_names(expr))

    def visit(stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.ClassDef):
            # A class body runs at definition time: its statements, not its methods' bodies.
            for expr in [*stmt.decorator_list, *stmt.bases]:
                names.update(_loaded_names(expr))
            for inner in stmt.body:
                visit(inner)
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            visit_def(stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                names.update(_loaded_names(stmt.value))
        else:
            names.update(_loaded_names(stmt))

    visit(node)
    return names


# ------------------------------------------------------------------------------ collection


@dataclass
class Collected:
    """Everything an exported file copies, in an order that defines each name before use."""

    definitions: list[Definition]
    header: list[HeaderImport]


def collect(
    classes: Iterable[type],
    table_entries: dict[str, list[tuple[type, str]]],
    part_classes: set[type],
) -> Collected:
    """The definitions for `classes` (the engine classes a model instantiates) and everything
    they declare.

    `table_entries` gives, for each bridges table, its entries: (class, code of the entry); `part_classes` are
    the classes that primitives build as parts (a class table such as ROUTERS keeps only those).
    """
    todo: list[Ref] = []
    for cls in classes:
        todo.append(Ref(cls.__module__, cls.__name__))
    done: dict[Ref, Definition] = {}
    while todo:
        ref = _bridged(todo.pop())
        if ref in done:
            continue
        definition = _definition(ref, table_entries, part_classes)
        done[ref] = definition
        todo.extend(definition.uses)
    _check_names(done)
    order = _order(done)
    header = sorted({h for d in done.values() for h in d.header}, key=HeaderImport.key)
    return Collected([done[r] for r in order], header)


def _definition(
    ref: Ref, table_entries: dict[str, list[tuple[type, str]]], part_classes: set[type]
) -> Definition:
    src = _module_source(ref.module)
    node = src.top.get(ref.name)
    if node is None:
        raise ExportError(f"{ref.module} defines no {ref.name!r}")
    if ref.module == _BRIDGES_MODULE and ref.name in bridges.TABLES:
        rows = table_entries.get(ref.name, [])
        text = _table_text(src, node, [code for _, code in rows])
        return _analysed(ref, text, {Ref(c.__module__, c.__name__) for c, _ in rows})
    if (table := _class_table(ref.module, ref.name)) is not None:
        kept = {k: v for k, v in table.items() if v in part_classes}
        text = _table_text(src, node, [f'"{k}": {v.__name__}' for k, v in kept.items()])
        return _analysed(ref, text, {Ref(c.__module__, c.__name__) for c in kept.values()})
    return _copied(ref)


@functools.cache
def _copied(ref: Ref) -> Definition:
    """A class, function or constant as copied: the same for every export, so made once."""
    src = _module_source(ref.module)
    node = src.top[ref.name]
    uses = {_bridged(resolve(ref.module, dep)) for dep in src.deps.get(ref.name, ())}
    if isinstance(node, ast.ClassDef):
        text, bases = _copy_class(src, node)
        for base in bases:
            if isinstance(base, ast.Name) and (base.id in src.top or base.id in src.engine_imports):
                uses.add(_bridged(resolve(ref.module, base.id)))
    else:
        text = _copy_plain(src, node)
    return _analysed(ref, text, uses)


def _analysed(ref: Ref, text: str, uses: set[Ref]) -> Definition:
    """The definition with the names its text loads sorted out: imports for the header, the
    names evaluated at import, and the free names the export must define."""
    src = _module_source(ref.module)
    tree = ast.parse(text)
    loaded = _loaded_names(tree)
    header = set()
    for name in loaded:
        if name in src.header_imports and name not in src.top:
            imp = src.header_imports[name]
            if imp.module.split(".")[0] not in ALLOWED_IMPORT_ROOTS:
                raise ExportError(f"{ref.module}.{ref.name} uses {name!r} from {imp.module}")
            header.add(imp)
    aliases = {h.alias for h in header}
    for stmt in tree.body:
        check_statement(stmt, f"{ref.module}.{ref.name}")
    return Definition(
        ref=ref,
        text=text,
        uses=uses,
        at_definition=_definition_time_names(tree.body[-1]),
        header=header,
        free=frozenset(loaded - _bound_names(tree) - _BUILTINS - aliases),
        checked=True,
        lineno=src.top[ref.name].lineno,
    )


def _table_text(src: _ModuleSource, node: ast.stmt, entries: list[str]) -> str:
    """A dict assignment rewritten to list only `entries` (each `"name": Class`)."""
    comments, target, annotation = _table_parts(src.name, node)
    one_line = f"{target}: {annotation} = {{{', '.join(entries)}}}"
    if len(one_line) <= 100:
        body = [one_line]
    else:
        body = [f"{target}: {annotation} = {{", *(f"    {e}," for e in entries), "}"]
    return "\n".join([*comments, *body])


@functools.cache
def _table_parts(module: str, node: ast.stmt) -> tuple[list[str], str, str]:
    """(comment lines above, target, annotation) of a table's annotated assignment."""
    src = _module_source(module)
    if not isinstance(node, ast.AnnAssign) or node.value is None:
        raise ExportError(f"{module}: a table of classes must be an annotated assignment")
    target = ast.get_source_segment(src.text, node.target) or ""
    annotation = ast.get_source_segment(src.text, node.annotation) or ""
    first = _leading_comments(src.lines, node.lineno)
    return src.lines[first - 1 : node.lineno - 1], target, annotation


def _check_names(done: dict[Ref, Definition]) -> None:
    """Every name a copy uses is defined in the export: declared, or brought by a base."""
    by_name: dict[str, Ref] = {}
    for ref in done:
        other = by_name.setdefault(ref.name, ref)
        if other != ref:
            raise ExportError(f"{ref.module} and {other.module} both define {ref.name!r}")

    @functools.cache
    def reachable(ref: Ref) -> frozenset[str]:
        names = {ref.name}
        for dep in done[ref].uses:
            names |= reachable(dep)
        return frozenset(names)

    for ref, definition in done.items():
        missing = sorted(definition.free - reachable(ref))
        if missing:
            raise ExportError(
                f"{ref.module}.{ref.name} uses {', '.join(missing)} without declaring "
                f"{'it' if len(missing) == 1 else 'them'}: add to EXPORT_DEPS[{ref.name!r}] "
                f"in {ref.module}"
            )


def _order(done: dict[Ref, Definition]) -> list[Ref]:
    """Definitions before the statements that evaluate them at import; otherwise grouped by
    module (modules after those they import) and in source order."""
    modules = {ref.module for ref in done}
    imports = nx.DiGraph()
    imports.add_nodes_from(modules)
    for module in modules:
        for dep_module, _ in _module_source(module).engine_imports.values():
            if dep_module in modules:
                imports.add_edge(dep_module, module)
    ranked = list(
        nx.lexicographical_topological_sort(
            # The registry's types first, stand-ins last.
            imports,
            key=lambda m: (m == _BRIDGES_MODULE, m.startswith("gatesearch.primitives"), m),
        )
    )
    rank = {m: i for i, m in enumerate(ranked)}
    by_name = {ref.name: ref for ref in done}
    g = nx.DiGraph()
    g.add_nodes_from(done)
    for ref, definition in done.items():
        for name in definition.at_definition:
            if name in by_name and by_name[name] != ref:
                g.add_edge(by_name[name], ref)
    try:
        return list(
            nx.lexicographical_topological_sort(
                g, key=lambda r: (rank[r.module], done[r].lineno, r.name)
            )
        )
    except nx.NetworkXUnfeasible:
        raise ExportError("exported definitions refer to each other in a cycle") from None


def clear_caches() -> None:
    """Forget the parsed modules and copied definitions (after a module's source or its
    EXPORT_DEPS changed, as in tests)."""
    for cached in (_module_source, _copied, _table_parts, _prunable_methods):
        cached.cache_clear()
