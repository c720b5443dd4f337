"""The one error of the exporter."""

from __future__ import annotations

from gatesearch.errors import GatesearchError


class ExportError(GatesearchError, ValueError):
    """An architecture cannot be exported: a value that is not safe or not known to the registry,
    a primitive whose export is not declared, or missing weights. The message says which."""
