"""`gatesearch export`: a campaign's architecture as one standalone PyTorch file, or as ONNX
(what is chosen and how: gatesearch/export/from_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gatesearch.export.from_run import ExportFormat, ExportRequest, export_from_run

out = Console(highlight=False)


def export_command(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A campaign directory, e.g. runs/NAME.")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="The file to write: .py, or .onnx with --format onnx.",
        ),
    ],
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank",
            min=1,
            metavar="K",
            help="Export the K-th best (default 1): by retrained validation score once "
            "retrained, else the campaign's rank.",
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", metavar="HASH", help="Export the architecture with this hash (prefix)."
        ),
    ] = None,
    weights: Annotated[
        bool,
        typer.Option(
            "--weights",
            help="Also write the retrained weights (safetensors); with --format onnx, "
            "put them in the ONNX file (else it holds a fresh initialisation).",
        ),
    ] = False,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", metavar="py|onnx", help="py: readable PyTorch source; onnx: an ONNX graph."
        ),
    ] = ExportFormat.PY,
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            min=1,
            metavar="N",
            help="ONNX only: the sequence length it is checked at, and its fixed length when a "
            "primitive of the model cannot take any length (the export names it) [default: the "
            "task's].",
        ),
    ] = None,
    member: Annotated[
        str | None,
        typer.Option(
            "--member",
            metavar="NAME",
            help="A suite campaign's member whose task's embedding and head the model takes "
            "(a suite trial builds one model per member).",
        ),
    ] = None,
) -> None:
    """Write the architecture as one PyTorch file that imports only torch, or as ONNX."""
    req = ExportRequest(run_dir, output, rank, arch, weights, fmt, seq_len, member)
    for line in export_from_run(req):
        out.print(line)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
