"""Every user-facing error derives from GatesearchError, so the CLI prints it as one line; a
new exception class must be one or be named here as internal (a bug or a trial's outcome)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gatesearch
from gatesearch.errors import GatesearchError

# Raised inside a trial and stored as its failure reason, or a registry bug: never shown raw.
INTERNAL = {
    "gatesearch.evaluate.TrialFailure",
    # Only causal models are asked for their decode state: asking another is a bug.
    "gatesearch.primitives.base.NoDecodeState",
    "gatesearch.proxy.scoring.TrialDiverged",
    "gatesearch.registry.RegistryError",
}


def _exception_classes() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(gatesearch.__path__, "gatesearch."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_class_is_a_user_error_or_named_internal() -> None:
    classes = _exception_classes()
    assert len(classes) >= 15
    unclassified = sorted(
        name
        for name, cls in classes.items()
        if not issubclass(cls, GatesearchError) and name not in INTERNAL
    )
    assert not unclassified, (
        f"derive these from GatesearchError or name them internal: {unclassified}"
    )
    assert INTERNAL <= set(classes), "an internal class was renamed or removed"
