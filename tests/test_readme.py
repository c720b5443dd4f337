"""Every `gatesearch` command the README shows names a command and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from gatesearch.cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"


def _spans(text: str) -> list[str]:
    """Inline code spans, a span wrapped over lines read as one line (as Markdown does)."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def _shown_commands() -> list[str]:
    """Command lines in fenced blocks (backslash continuations joined, comments and a `$ `
    prompt dropped) and inline code spans, wherever they start with `gatesearch `."""
    text = README.read_text(encoding="utf-8")
    found: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            found += [part.strip() for part in line.split("&&") if "gatesearch " in part]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [span for span in _spans(outside) if span.startswith("gatesearch ")]
    return [c[c.index("gatesearch ") :] for c in found]


def _command(words: list[str]) -> tuple[Any, list[str]]:
    """The command the words name (group by group) and the words left after it. Duck-typed:
    typer may build on its own copy of click."""
    cmd = typer.main.get_command(app)
    rest = words
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    return cmd, rest


COMMANDS = _shown_commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 15  # the scan itself works


@pytest.mark.parametrize("line", COMMANDS)
def test_each_shown_command_and_option_exists(line: str) -> None:
    words = [w.strip("[]") for w in shlex.split(line)[1:]]
    cmd, rest = _command(words)
    assert not hasattr(cmd, "commands"), f"{line}: names no command"
    options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and not word.lstrip("-").isdigit():
            assert word.split("=")[0] in options, f"{line}: {cmd.name} has no option {word}"


def test_each_option_the_prose_names_exists_somewhere() -> None:
    """Options named alone in the text (`--max-params N`) belong to some command."""
    outside = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    named = {span.split()[0].split("=")[0] for span in _spans(outside) if span.startswith("--")}
    known: set[str] = set()
    stack = [typer.main.get_command(app)]
    while stack:
        cmd = stack.pop()
        stack += list(getattr(cmd, "commands", {}).values())
        known |= {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    assert len(named) >= 10 and named <= known, sorted(named - known)
