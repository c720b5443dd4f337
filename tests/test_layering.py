"""Rules of the package's layering, checked on its source: a module uses another's public names
only (ruff's PLC2701 does not look inside one package), and the run config is read through
its typed fields, not by string key."""

from __future__ import annotations

import ast
from pathlib import Path

import gatesearch

PACKAGE = Path(gatesearch.__file__).parent


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_no_module_imports_another_modules_private_names():
    found = []
    for where, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gatesearch"):
                found += [
                    f"{where}:{node.lineno}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_run_config_is_read_by_field_not_by_key():
    """`store.config["budget"]` and `config.get("budget")` on a campaign's config: the typed
    RunConfig has no such access, so these would fail at run time; the check finds them first
    (`fidelity`'s own config is still a document and is not named `store.config`)."""
    found = []
    for where, tree in _modules():
        for node in ast.walk(tree):
            target = None
            if isinstance(node, ast.Subscript):
                target = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "get":
                    target = node.func.value
            if isinstance(target, ast.Attribute) and target.attr == "config":
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "string-key reads of a run config:\n" + "\n".join(found)


def test_only_the_dispatcher_waits_on_ray():
    """Campaign, retrain and fidelity go through `runs.dispatch`: one place owns timeouts,
    retries, failure reasons and cancellation."""
    found = [
        f"{where}:{node.lineno}"
        for where, tree in _modules()
        if where != "gatesearch/runs/dispatch.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("wait", "cancel")
        and isinstance(node.value, ast.Name)
        and node.value.id == "ray"
    ]
    assert not found, "ray.wait/ray.cancel outside the dispatcher:\n" + "\n".join(found)
