"""Option declarations shared by the commands, so that `run`, `fidelity`, `retrain` and the
others spell (and explain) the same flag the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PROXY_OPTION_HELP = (
    "A setting of the proxy trainer as key=value (batch_size, lr, hyper_lr, "
    "train_per_hyper, centred, response, ...; see ProxyConfig); repeatable."
)

RunDirArg = Annotated[
    Path, typer.Argument(metavar="RUN_DIR", help="The run directory, e.g. runs/NAME.")
]
SpaceOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Search space file [default: spaces/gated_lm.space; for --task classify, "
        "spaces/gated_classify.space].",
    ),
]
TaskParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="KEY=VALUE",
        help="A task parameter as key=value (e.g. vocab=64, path=data.parquet); repeatable.",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ADDRESS", help="Ray cluster address (auto, ray://host:port); default: a local Ray."
    ),
]
RunsDirOpt = Annotated[Path, typer.Option(metavar="DIR", help="Where runs are written.")]
ProxyOptionOpt = Annotated[
    list[str] | None, typer.Option(metavar="KEY=VALUE", help=PROXY_OPTION_HELP)
]
WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Print tables whole: each architecture complete, on one line however long "
        "(else short, and cut to the terminal's width).",
    ),
]
