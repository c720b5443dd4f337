"""The proxy trainer: budgeted training with self-tuning hyperparameters (STN) and an online
learning rate; `proxy_evaluate(graph, task, budget, seed)` is what a campaign calls.

The fidelity measurement (proxy vs full-budget rankings) lives beside it and uses
`fixed_evaluate` as its fixed-hyperparameter baseline.
"""

from gatesearch.proxy.config import (
    PROXY_OPTIONS,
    LRSchedule,
    ProxyConfig,
    ProxyOptionError,
    proxy_config,
)
from gatesearch.proxy.hyper import HyperError, HyperSet, HyperSpec, default_hypers
from gatesearch.proxy.stn import (
    HyperContext,
    HyperState,
    Regularisers,
    Response,
    STNLinear,
    attach_stn,
    fold_stn,
)
from gatesearch.proxy.trainer import (
    ProxyResult,
    TrialDiverged,
    fixed_evaluate,
    proxy_evaluate,
    train_proxy,
)

__all__ = [
    "PROXY_OPTIONS",
    "HyperContext",
    "HyperError",
    "HyperSet",
    "HyperSpec",
    "HyperState",
    "LRSchedule",
    "ProxyConfig",
    "ProxyOptionError",
    "ProxyResult",
    "Regularisers",
    "Response",
    "STNLinear",
    "TrialDiverged",
    "attach_stn",
    "default_hypers",
    "fixed_evaluate",
    "fold_stn",
    "proxy_config",
    "proxy_evaluate",
    "train_proxy",
]
