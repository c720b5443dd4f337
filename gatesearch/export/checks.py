"""What no exported code may contain, checked on its syntax tree."""

from __future__ import annotations

import ast
import sys

from gatesearch.export.errors import ExportError

# Imports an exported file may carry: torch and the standard library.
ALLOWED_IMPORT_ROOTS = frozenset(sys.stdlib_module_names) | {"torch", "__future__"}
# Names no exported code may mention: ways to run code or reach the machine.
FORBIDDEN_NAMES = frozenset(
    {"__import__", "eval", "exec", "compile", "open", "breakpoint", "input", "globals", "locals"}
    | {"vars", "os", "sys", "subprocess", "importlib", "builtins", "__builtins__"}
)
# The one import outside torch and the standard library, allowed inside `load()` only.
LOAD_IMPORT = ("safetensors.torch", ("load_file",))


def check_statement(stmt: ast.stmt, where: str) -> None:
    """Refuse imports outside torch and the standard library (but `load()`'s), forbidden
    names, and dunder attributes other than __init__, anywhere inside `stmt`."""
    is_load = isinstance(stmt, ast.FunctionDef) and stmt.name == "load"
    for node in ast.walk(stmt):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if is_load and (node.module, tuple(a.name for a in node.names)) == LOAD_IMPORT:
                continue
            modules = [node.module or ""]
        else:
            modules = []
            if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
                raise ExportError(f"{where} mentions {node.id!r}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
                if node.attr != "__init__":
                    raise ExportError(f"{where} reaches attribute {node.attr!r}")
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORT_ROOTS:
                raise ExportError(f"{where} imports {module!r}")


def check_source(
    source: str, docstring: str, class_name: str, checked: frozenset[str] = frozenset()
) -> None:
    """Refuse generated source that does not look exactly as the exporter meant it to.

    It must parse; its docstring must read back as `docstring`; no statement may import
    anything but torch and the standard library (safetensors inside `load()`), mention a
    forbidden name or reach a dunder attribute; the model class must hold only the expected
    statements. Top-level definitions named in `checked` are engine copies that passed the
    same statement check when they were copied, and are not walked again.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ExportError(f"generated source does not parse: {exc}") from None
    if ast.get_docstring(tree, clean=False) != docstring:
        raise ExportError("the module docstring does not read back as written")
    for stmt in tree.body[1:]:
        if _defined_name(stmt) not in checked:
            check_statement(stmt, "generated source")
    model = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    _check_model_class(model)


def _defined_name(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.ClassDef | ast.FunctionDef):
        return stmt.name
    if isinstance(stmt, ast.AnnAssign | ast.Assign):
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0]
        return target.id if isinstance(target, ast.Name) else None
    return None


def _check_model_class(cls: ast.ClassDef) -> None:
    """__init__ only assigns `self.<name> = <Class>(<literals>)`; forward only assigns
    `<var> = self.<name>(<vars>)` and returns a variable."""
    literal_nodes = (
        ast.Constant,
        ast.Dict,
        ast.Name,
        ast.Attribute,
        ast.UnaryOp,
        ast.USub,
        ast.Load,
    )
    for member in cls.body[1:]:
        assert isinstance(member, ast.FunctionDef)
        for stmt in member.body[1:] if member.name == "__init__" else member.body:
            ok = False
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                if member.name == "__init__":
                    ok = isinstance(call.func, ast.Name) and not call.args
                    for kw in call.keywords:
                        for n in ast.walk(kw.value):
                            if isinstance(n, ast.Name) and not isinstance(kw.value, ast.Attribute):
                                ok = False
                            if not isinstance(n, literal_nodes):
                                ok = False
                else:
                    ok = isinstance(call.func, ast.Attribute) and all(
                        isinstance(a, ast.Name) for a in call.args
                    )
            elif isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Name):
                ok = member.name == "forward"
            if not ok:
                raise ExportError(
                    f"generated {cls.name}.{member.name} has an unexpected statement: "
                    f"{ast.unparse(stmt):.80}"
                )
