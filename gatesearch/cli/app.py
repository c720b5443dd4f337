"""The `gatesearch` command line.

Bad input (a broken space file, a missing path, a mistyped flag) ends in one line on stderr and
exit status 2; a traceback means a bug in gatesearch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gatesearch import __version__
from gatesearch.errors import GatesearchError
from gatesearch.grammar import Grammar

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP,
    help="Architecture search over gated neural networks.",
)
space_app = typer.Typer(
    no_args_is_help=True,
    context_settings=HELP,
    help="Inspect, validate and sample search spaces.",
)
app.add_typer(space_app, name="space")

out = Console(highlight=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"gatesearch {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Architecture search over gated neural networks."""


class UsageFailure(GatesearchError):
    """A user error the CLI itself detects (bad option value, missing file)."""


SpaceArg = Annotated[
    Path, typer.Argument(metavar="SPACE_FILE", help="A space file, e.g. spaces/gated_lm.space.")
]


def _space(path: Path) -> Grammar:
    from gatesearch.arch.space import load_space

    return load_space(path)


@space_app.command("validate")
def space_validate(path: SpaceArg) -> None:
    """Check a space file; print `ok` or the first problem as file:line:col."""
    grammar = _space(path)
    n_rules = len(grammar.rules)
    out.print(f"ok: {path} ({n_rules} rules, {len(grammar.shared)} shared values)")


@space_app.command("show")
def space_show(path: SpaceArg) -> None:
    """List the space's rules, the primitives it uses with their parameters, and its size."""
    from gatesearch.arch.space import space_size_log10
    from gatesearch.grammar.checks import primitive_calls
    from gatesearch.grammar.model import Fixed
    from gatesearch.registry import REGISTRY

    g = _space(path)
    out.print(f"[bold]{path}[/bold]  task: {g.causality.value}  start: {g.start}")
    shared = Table("shared value", "domain", box=None, pad_edge=False)
    for decl in g.shared.values():
        expr = decl.expr
        shared.add_row(f"${decl.name}", _expr_text(expr))
    out.print(shared)
    rules = Table("rule", "alternatives", box=None, pad_edge=False)
    for rule in g.rules.values():
        bound = f"[max_depth={rule.max_depth}]" if rule.max_depth else ""
        weighted = len(rule.alts) > 1
        alts = " | ".join(
            (f"[{a.weight:g}] " if weighted else "") + " ".join(_item_text(i) for i in a.items)
            for a in rule.alts
        )
        rules.add_row(rule.name + bound, alts)
    out.print(rules)
    prims = Table(
        "primitive", "role", "used in", "parameters chosen there", box=None, pad_edge=False
    )
    for rule in g.rules.values():
        for alt in rule.alts:
            for call in primitive_calls(alt.items):
                chosen = [
                    f"{name}={_expr_text(e)}" for name, e in call.params if not isinstance(e, Fixed)
                ]
                prims.add_row(call.op, REGISTRY[call.op].role.value, rule.name, ", ".join(chosen))
    out.print(prims)
    out.print(f"size: about 10^{space_size_log10(g):.1f} discrete architectures (upper bound)")


def _item_text(item: object) -> str:
    from gatesearch.grammar.model import PrimCall, Repeat, Wrap

    if isinstance(item, Repeat):
        return f"repeat({_item_text(item.item)}, {item.low}..{item.high})"
    if isinstance(item, Wrap):
        return f"{item.op}({' '.join(_item_text(i) for i in item.body)})"
    if isinstance(item, PrimCall):
        return item.op
    return item.segment  # type: ignore[attr-defined]


def _expr_text(expr: object) -> str:
    from gatesearch.grammar.model import Choose, Fixed, SharedRef, Slot

    if isinstance(expr, Fixed):
        return repr(expr.value) if isinstance(expr.value, str) else str(expr.value)
    if isinstance(expr, Choose):
        return expr.domain.describe()
    if isinstance(expr, SharedRef):
        return f"${expr.name}"
    if isinstance(expr, Slot):
        return f"<{expr.item.segment}>"
    return str(expr)


@space_app.command("sample")
def space_sample(
    path: SpaceArg,
    n: Annotated[
        int, typer.Option("-n", "--num", min=1, metavar="N", help="How many architectures.")
    ] = 3,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed.")] = 0,
    noncausal: Annotated[
        bool, typer.Option("--noncausal", help="Sample for a non-causal task.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    seq_len: Annotated[
        int,
        typer.Option(
            "--seq-len",
            min=1,
            metavar="N",
            help="Context length for FLOPs per token and the decode state.",
        ),
    ] = 128,
) -> None:
    """Draw architectures; print each as a tree with its parameters, FLOPs per token and (causal
    models) decode state in bytes."""
    from gatesearch.arch.build import (
        build_model,
        count_params,
        decode_state_bytes,
        flops_per_token,
    )
    from gatesearch.arch.describe import tree_lines
    from gatesearch.arch.graph import graph_to_table
    from gatesearch.arch.space import graph_context, sample_architectures
    from gatesearch.formats import count, metric

    g = _space(path)
    if noncausal and False not in g.causality.admits():
        raise UsageFailure(f"{path} declares `task causal`; --noncausal does not apply")
    if not noncausal and True not in g.causality.admits():
        raise UsageFailure(f"{path} declares `task noncausal`; add --noncausal")
    for i, arch in enumerate(sample_architectures(g, n, seed, causal=not noncausal)):
        ctx = graph_context(arch.graph)
        model = build_model(arch.graph, ctx)
        params = count_params(model)
        flops = flops_per_token(model, ctx, seq_len=seq_len)
        state = decode_state_bytes(model, ctx, seq_len)
        if as_json:
            record = {
                "index": i,
                "hash": arch.hash,
                "params": params,
                "flops_per_token": flops,
                "state_bytes": state,  # null: not causal
                "choices": arch.derivation.choices,
                "nodes": graph_to_table(arch.graph).to_pylist(),
            }
            sys.stdout.write(json.dumps(record) + "\n")
            continue
        out.print(
            f"[bold]#{i}[/bold] {arch.hash}  width {ctx.d_model}  "
            f"params {count(params)}  FLOPs/token {count(flops)}"
            + (f"  state {metric('state', state)}" if state is not None else "")
            + f" (T={seq_len})"
        )
        for line in tree_lines(arch.graph):
            out.print("  " + line, markup=False)


from gatesearch.cli.campaign import register as _register_campaign  # noqa: E402
from gatesearch.cli.export import register as _register_export  # noqa: E402
from gatesearch.cli.fidelity import register as _register_fidelity  # noqa: E402
from gatesearch.cli.retrain import register as _register_retrain  # noqa: E402
from gatesearch.report import register as _register_report  # noqa: E402

_register_campaign(app)
_register_retrain(app)
_register_fidelity(app)
_register_report(app)
_register_export(app)


def _cli_errors() -> tuple[type[Exception], ...]:
    """The argument-parsing exception bases: typer's own, and click's where typer uses click."""
    bases: list[type[Exception]] = [getattr(typer, "TyperException", Exception)]
    try:
        import click

        bases.append(click.ClickException)
    except ImportError:  # recent typer vendors click
        pass
    return tuple(b for b in bases if b is not Exception)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        # Outside standalone mode click hands a command's `typer.Exit(code)` back as the return
        # value instead of exiting: pass it on, or Ctrl-C (130) would end with status 0.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        sys.exit(0)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except GatesearchError as exc:  # the user's input, not a bug: one line
        err.print(f"error: {exc}", markup=False)
        if exc.exit_at_once:  # whatever had to be stored is closed by now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)
    except _cli_errors() as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            try:
                print(message)
            except BrokenPipeError:
                sys.stderr.close()
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(f"error: {message}{hint}", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
