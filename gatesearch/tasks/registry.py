"""Finding a task by name: built-ins, `module:function`, or a `gatesearch.tasks` entry point.

A task name resolves to a factory — a Task subclass or a function returning a Task — which is
called with the spec's params as keyword arguments. Params a factory does not accept are
rejected with the key's name before anything is built.

A package adds tasks by declaring, in its pyproject.toml::

    [project.entry-points."gatesearch.tasks"]
    my_task = "my_package.tasks:make_my_task"
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from gatesearch.tasks.base import Task, TaskError, TaskSpec

ENTRY_POINT_GROUP = "gatesearch.tasks"

Factory = Callable[..., Task]


def builtin_tasks() -> dict[str, type[Task]]:
    """The tasks that ship with gatesearch, by name."""
    from gatesearch.tasks.files import FILE_TASKS
    from gatesearch.tasks.mad import MAD_TASKS
    from gatesearch.tasks.synthetic import SYNTHETIC
    from gatesearch.tasks.text import TEXT_TASKS

    return {**SYNTHETIC, **MAD_TASKS, **TEXT_TASKS, **FILE_TASKS}


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_tasks() -> dict[str, str]:
    """Every task name a spec may use without `module:function`, with a one-line description."""
    out = {name: cls.description for name, cls in builtin_tasks().items()}
    for name, ep in _entry_point_factories().items():
        out.setdefault(name, f"entry point {ep.value}")
    return dict(sorted(out.items()))


def resolve_factory(name: str) -> Factory:
    """The factory a task name stands for; TaskError naming the task when there is none."""
    builtin = builtin_tasks()
    if name in builtin:
        return builtin[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TaskError(f"task {name}: cannot import module {module_name}: {exc}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise TaskError(f"task {name}: module {module_name} has no callable {attr}")
        return factory
    eps = _entry_point_factories()
    if name in eps:
        try:
            factory = eps[name].load()
        except Exception as exc:  # a broken plugin is the user's to fix; say which
            raise TaskError(
                f"task {name}: entry point {eps[name].value} failed to load: {exc}"
            ) from None
        if not callable(factory):
            raise TaskError(f"task {name}: entry point {eps[name].value} is not callable")
        return factory
    known = ", ".join(available_tasks())
    raise TaskError(f"unknown task {name!r}: choose one of {known}, or give module:function")


def _check_params(name: str, factory: Factory, params: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(factory)  # a class's is its __init__'s, without `self`
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    accepted = [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TaskError(
            f"task {name}: unknown param {', '.join(unknown)}"
            f" (accepted: {', '.join(accepted) or 'none'})"
        )
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.name in accepted and p.default is p.empty and p.name not in params
    ]
    if missing:
        raise TaskError(f"task {name}: missing param {', '.join(missing)}")


def make_task(spec: TaskSpec | str, **params: Any) -> Task:
    """Build the task a spec (or a name plus params) describes.

    Raises TaskError with a one-line message for an unknown name, unknown or missing params,
    bad param values and bad data files.
    """
    if isinstance(spec, str):
        spec = TaskSpec(spec, params)
    elif params:
        spec = TaskSpec(spec.name, {**spec.params, **params})
    factory = resolve_factory(spec.name)
    _check_params(spec.name, factory, spec.params)
    try:
        task = factory(**spec.params)
    except TypeError as exc:
        # A factory taking **params passes them on unchecked; say which one was refused.
        if "keyword argument" not in str(exc):
            raise
        raise TaskError(f"task {spec.name}: {exc}") from None
    if not isinstance(task, Task):
        raise TaskError(f"task {spec.name}: the factory returned {type(task).__name__}, not a Task")
    if spec.name not in builtin_tasks():
        # A custom task's own name may differ from how it was found; keep the way back.
        task._spec = spec  # type: ignore[attr-defined]
    return task


def task_label(spec: TaskSpec) -> str:
    """The task as a user tells it apart in a list: its name and the params that differ from
    the task's own defaults. `--task mqar` shows as `mqar`; the default campaign's smaller MQAR
    as `mqar(vocab=64, length=32, ...)` — under one bare name the two were confused. A custom
    task's params are all shown (its defaults are not known without importing it). A suite
    shows as `suite NAME (N members: ...)`."""
    from gatesearch.tasks.suite import SUITE_TASK, suite_text  # suite.py builds on this module

    if spec.name == SUITE_TASK:
        return suite_text(spec)
    defaults: dict[str, Any] = {}
    factory = builtin_tasks().get(spec.name)
    if factory is not None:
        defaults = {
            p.name: p.default
            for p in inspect.signature(factory).parameters.values()
            if p.default is not p.empty
        }
    shown = [
        f"{k}={v}"
        for k, v in spec.params.items()
        if v is not None and (k not in defaults or defaults[k] != v)
    ]
    return f"{spec.name}({', '.join(shown)})" if shown else spec.name
