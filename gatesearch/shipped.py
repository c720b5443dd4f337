"""Where the `spaces/`, `strategies/` and `suites/` folders that ship with gatesearch are.

In a source checkout (and an editable install, what the README installs) they are the
repository's top-level folders, which users read and edit in place. A wheel installs packages
only, so setup.py copies these folders into the package, as `gatesearch/_bundled/`, when it
builds one; a non-editable `pip install .` finds them there.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The shipped folder `name` ("spaces", "strategies" or "suites"): the wheel's bundled
    copy when this is an installed wheel, else the repository's own folder."""
    bundled = _PACKAGE / "_bundled" / name
    return bundled if bundled.is_dir() else _PACKAGE.parent / name


__all__ = ["shipped_dir"]
