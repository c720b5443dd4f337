"""The `gatesearch space` commands: in this process through the console script's own `main`
(what a shell sees: exit status, stdout, stderr), and once as the installed script itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import captured

from gatesearch.arch.space import DEFAULT_SPACE, SPACES_DIR

EXE = shutil.which("gatesearch") or ""


def script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script in its own process."""
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gatesearch.cli.app", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


run = captured


def test_the_console_script_runs_and_fails_as_one_line() -> None:
    ok = script("space", "validate", str(DEFAULT_SPACE))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok.stderr
    bad = script("space", "validate", "no/such.space")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert bad.stderr.strip().count("\n") == 0, bad.stderr


def test_validate_ok() -> None:
    res = run("space", "validate", str(DEFAULT_SPACE))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: ")


def test_validate_broken_is_one_line_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.space"
    bad.write_text("let width = 16\nmodel := embed mlp(expand=100) head\n")
    res = run("space", "validate", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert f"{bad}:2:27: mlp: expand=100 is out of domain" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("space", "validate", "no/such.space"),
        ("space", "show", "."),
        ("space", "sample", "--bogus"),
        ("space", "sample", str(DEFAULT_SPACE), "-n", "0"),
        ("space", "sample", str(DEFAULT_SPACE), "--noncausal"),
        ("nonsense",),
    ],
    ids=[
        "missing-file",
        "directory",
        "unknown-flag",
        "bad-count",
        "noncausal-on-causal",
        "bad-command",
    ],
)
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...]) -> None:
    res = run(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ")
    assert res.stderr.strip().count("\n") == 0, res.stderr


def test_show_lists_rules_primitives_and_size() -> None:
    res = run("space", "show", str(DEFAULT_SPACE))
    assert res.returncode == 0, res.stderr
    for word in ("$width", "mixer", "attention", "hgrn", "moe", "size: about 10^"):
        assert word in res.stdout


def test_sample_tree_and_json_agree() -> None:
    text = run("space", "sample", str(DEFAULT_SPACE), "-n", "2", "--seed", "4")
    js = run("space", "sample", str(DEFAULT_SPACE), "-n", "2", "--seed", "4", "--json")
    assert text.returncode == 0 and js.returncode == 0, (text.stderr, js.stderr)
    records = [json.loads(line) for line in js.stdout.splitlines()]
    assert len(records) == 2
    for rec in records:
        assert rec["hash"] in text.stdout
        assert rec["params"] > 0 and rec["flops_per_token"] > 0
        assert rec["choices"]["$width"] in (64, 128, 192, 256)
        assert {n["op"] for n in rec["nodes"]} >= {"input", "embed", "head", "output"}


def test_noncausal_sampling_of_an_any_space() -> None:
    res = run(
        "space", "sample", str(SPACES_DIR / "recurrent_cells.space"), "-n", "1", "--noncausal"
    )
    assert res.returncode == 0, res.stderr


def test_version_and_short_help() -> None:
    from gatesearch import __version__

    # The console script itself: help names the program by the name it was started as.
    res = script("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"gatesearch {__version__}"
    res = script("run", "-h")
    assert res.returncode == 0 and res.stdout.startswith("Usage: gatesearch run"), res.stdout
    # The others in this process, where the program is named after pytest's argv[0].
    for args in (["-h"], ["space", "-h"], ["retrain", "-h"]):
        res = run(*args)
        assert res.returncode == 0 and res.stdout.startswith("Usage: "), args
        assert f"{' '.join(args[:-1])} [OPTIONS]" in res.stdout.splitlines()[0], args


def test_run_help_says_over_the_limit_is_turned_down() -> None:
    res = run("run", "--help")
    text = " ".join(res.stdout.split())
    assert "is turned down untrained and not counted" in text and "fails at once" not in text


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the app, as the words that name it."""
    import typer

    from gatesearch.cli.app import app

    found: list[tuple[str, ...]] = [()]
    todo: list[tuple[tuple[str, ...], object]] = [((), typer.main.get_command(app))]
    while todo:
        path, cmd = todo.pop()
        for name, sub in getattr(cmd, "commands", {}).items():
            found.append((*path, name))
            todo.append(((*path, name), sub))
    return sorted(found)


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "gatesearch")
def test_every_command_takes_h_and_its_metavars_say_what_to_type(path: tuple[str, ...]) -> None:
    res = run(*path, "-h")  # in this process the program's name is pytest's: not checked
    assert res.returncode == 0 and res.stdout.startswith("Usage: "), res.stderr
    assert res.stdout == run(*path, "--help").stdout
    options = res.stdout.split("Options:")[1]
    # `<int>`, `<list[str]>`, `<int range>`, `<path>` read as syntax to new users.
    assert "<" not in options and "list[" not in options, options
    usage = res.stdout.splitlines()[0]
    assert "run_dir" not in usage and "{path}" not in usage, usage


def test_metavars_name_what_an_option_takes() -> None:
    text = run("run", "-h").stdout
    for shown in ("--task-param KEY=VALUE", "--trials N", "--budget BUDGET", "--name NAME",
                  "--timeout SECONDS", "--proxy-option KEY=VALUE", "--space FILE"):  # fmt: skip
        assert shown in text, shown
    assert "{RUN_DIR}" in run("resume", "-h").stdout
