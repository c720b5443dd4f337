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
