"""The proxy's settings: `ProxyConfig`, identical for every architecture of a campaign, and
`proxy_config`, which reads a run's `proxy` table (`--proxy-option key=value`) into one,
refusing unknown keys, wrong types and out-of-range values by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, get_type_hints

from gatesearch.errors import GatesearchError
from gatesearch.proxy.stn import Response


class LRSchedule(StrEnum):
    """The learning rate's shape over the budget, on top of the linear warm-up."""

    CONSTANT = "constant"  # the proxy: hypergradient descent moves it, nothing else
    COSINE = "cosine"  # full-budget training (retrain): half a cosine down to lr_final·lr
    # Warm-up–stable–decay with the decay started by the validation curve: constant until
    # `patience` points pass without a better score (or until only `cooldown` of the budget is
    # left), then back to the best point's weights and a linear decay to lr_final·lr over
    # `cooldown`/(1 − `cooldown`) of the training done so far, then stop. A cosine decays at a
    # fixed place of the budget whether or not the model has stopped learning; this decays when
    # it has, so the budget is a maximum rather than a guess of the right length.
    PLATEAU = "plateau"


@dataclass(frozen=True)
class ProxyConfig:
    """How the proxy trains. Identical for every architecture of a campaign."""

    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 3e-3  # the initial learning rate; the baseline keeps it fixed
    lr_min: float = 1e-5
    lr_max: float = 3e-2
    hd_beta: float = 0.02  # multiplicative hypergradient step on the learning rate
    lr_warmup_steps: int = 20  # linear learning-rate warm-up, in weight steps
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    lr_final: float = 0.1  # a cosine or plateau schedule ends at this fraction of the rate
    # Under lr_schedule=plateau: the decay's share of the whole training (WSD's cool-down, 0.2
    # as in Hägele et al. 2024), and the budget's last share, where the decay begins at the
    # latest.
    cooldown: float = 0.2
    grad_clip: float = 1.0
    self_tuning: bool = True  # False: the fixed-hyperparameter baseline
    hyper_warmup: float = 0.1  # fraction of the budget with weight steps only
    train_per_hyper: int = 5  # k weight steps per hyper step (5:1 as in Delta-STN's code)
    # Higher than STN's 3e-3: a proxy has tens of hyper steps, not thousands.
    hyper_lr: float = 0.05
    entropy_weight: float = 1e-3
    init_spread: float = 0.5  # softplus(s) at the start, in unconstrained units
    # False: V sees ũ (STN, MacKay et al.). True: V sees ũ − stopgrad(u) (Delta-STN's centred
    # response). Measured (200-300 steps): on a tiny overfitting split only the uncentred form
    # raised dropout (both lowered the validation loss, via weight decay when centred); on
    # LLaMA/MQAR with fresh data the uncentred form raised dropout to 0.3 and lost to fixed.
    centred: bool = True
    # How STN layers respond to the hyperparameters: "full" (STN's W_e + diag(g) W_h, two
    # matmuls per layer) or "scale" (diag(1 + g) W_e, one). Measured (benchmarks/RESULTS.md):
    # scale costs ≈1.3× a fixed step against full's ≈1.8–2.0×, but over a 730-step charlm run its
    # weight decay climbed to 0.035 late in training and the validation loss ended at 2.14
    # where the full response kept decay near 0 and reached 1.69. Full is the default.
    response: Response = Response.FULL
    trajectory_every: int = 25  # record the hyperparameters every this many weight steps
    # Score the whole validation split at this many evenly spaced points of the budget (the
    # last at its end) and store the curve; 0: only the final score. Not charged to a seconds
    # budget, like the final scoring.
    eval_points: int = 0
    # Return the weights (and hyperparameters) of the best validation point instead of the
    # last: overfitting late in the budget cannot cost the score. Needs eval_points.
    keep_best: bool = False
    # Stop after this many validation points in a row without a better score; 0: never.
    # The budget is then a maximum. Needs eval_points.
    patience: int = 0
    latency_runs: int = 5
    device: str | None = None  # None: CUDA when available, else CPU
    # Where the hyperparameters (and, under "lr", the learning rate) start; the defaults for
    # those not named. With self_tuning=False they stay there: retraining a trial at its
    # tuned values is `ProxyConfig(self_tuning=False, start=metrics["hyperparameters"])`.
    start: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        # Accept the plain string from a TOML file or the CLI; unknown values fail here.
        object.__setattr__(self, "response", Response(self.response))
        object.__setattr__(self, "lr_schedule", LRSchedule(self.lr_schedule))
        for name, (lo, hi, lo_open) in _RANGES.items():
            value = getattr(self, name)
            if value < lo or (lo_open and value == lo) or (hi is not None and value > hi):
                bound = f"{'>' if lo_open else '≥'} {lo}" + (
                    f" and ≤ {hi}" if hi is not None else ""
                )
                raise ProxyOptionError(f"proxy option {name} must be {bound}, got {value}")
        for name in ("keep_best", "patience"):
            if getattr(self, name) and not self.eval_points:
                raise ProxyOptionError(
                    f"proxy option {name} needs validation points: set eval_points as well"
                )
        if self.lr_schedule is LRSchedule.PLATEAU and not (self.eval_points and self.patience):
            raise ProxyOptionError(
                "proxy option lr_schedule=plateau decays when validation stalls: set "
                "eval_points and patience as well"
            )
        if not self.lr_min <= self.lr <= self.lr_max:
            raise ProxyOptionError(
                f"proxy option lr must lie within lr_min..lr_max "
                f"({self.lr_min}..{self.lr_max}), got {self.lr}"
            )


class ProxyOptionError(GatesearchError, ValueError):
    """A proxy setting that cannot be used (unknown, wrong type, out of range): one line."""


# Allowed values of ProxyConfig's numeric fields: (lowest, highest or None, lowest excluded).
_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "batch_size": (1, None, False),
    "eval_batch_size": (1, None, False),
    "lr": (0.0, None, True),
    "lr_min": (0.0, None, True),
    "lr_max": (0.0, None, True),
    "hd_beta": (0.0, 1.0, False),
    "lr_warmup_steps": (0, None, False),
    "lr_final": (0.0, 1.0, True),
    "cooldown": (0.0, 0.5, True),
    "grad_clip": (0.0, None, False),
    "hyper_warmup": (0.0, 1.0, False),
    "train_per_hyper": (1, None, False),
    "hyper_lr": (0.0, None, True),
    "entropy_weight": (0.0, None, False),
    "init_spread": (0.0, None, True),
    "trajectory_every": (1, None, False),
    "eval_points": (0, None, False),
    "patience": (0, None, False),
    "latency_runs": (1, None, False),
}

# What `--proxy-option key=value` may set: everything that shapes the proxy's training and
# scoring; not `device` (where a trial runs is the cluster's business) nor `start` (per trial).
PROXY_OPTIONS: tuple[str, ...] = tuple(
    f.name for f in fields(ProxyConfig) if f.name not in ("device", "start")
)


# Options that act only on the self-tuning proxy (its hyper steps, its STN layers, the
# learning rate's hypergradient): with self_tuning=false they would change nothing.
SELF_TUNING_OPTIONS: tuple[str, ...] = (
    "hd_beta",
    "hyper_warmup",
    "train_per_hyper",
    "hyper_lr",
    "entropy_weight",
    "init_spread",
    "centred",
    "response",
)


def proxy_config(options: Mapping[str, Any] | None = None) -> ProxyConfig:
    """The defaults with `options` (a run's `proxy` table) applied. ProxyOptionError, naming
    the key, for an unknown key, a value of the wrong type or one out of range."""
    options = dict(options or {})
    hints = get_type_hints(ProxyConfig)
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in PROXY_OPTIONS:
            raise ProxyOptionError(
                f"unknown proxy option {key!r}: choose from {', '.join(PROXY_OPTIONS)}"
            )
        kind = hints[key]
        if isinstance(kind, type) and issubclass(kind, StrEnum):
            allowed = [e.value for e in kind]
            if value not in allowed:
                raise ProxyOptionError(
                    f"proxy option {key}: choose from {', '.join(allowed)}, got {value!r}"
                )
        # bool is an int to Python; a number where a switch is meant (or back) is a mistake.
        elif not {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, int | float) and not isinstance(value, bool),
            bool: isinstance(value, bool),
        }[kind]:
            want = {int: "an integer", float: "a number", bool: "true or false"}[kind]
            raise ProxyOptionError(f"proxy option {key} takes {want}, got {value!r}")
        values[key] = float(value) if kind is float else value
    return ProxyConfig(**values)
