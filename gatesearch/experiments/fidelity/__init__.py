"""Fidelity: how well cheap scores rank architectures the way full-budget training does.

N distinct architectures are sampled from a space. Each is trained

- (a) by the self-tuning proxy at the proxy budget (what a campaign scores it with),
- (b) at the same budget with fixed default hyperparameters (`fixed_evaluate`),
- and at the full budget (the reference; self-tuning by default, `full_trainer="fixed"` for
  fixed defaults),
- (a) and (b) with the request's proxy options (`--proxy-option`), the full runs with the
  full options only (`--full-option`; by default a cosine-decayed learning rate, as retrain
  trains), so a change to the proxy is measured against an unchanged reference,
- with `reference` (an earlier fidelity run on the same task, space, seed, architectures
  and full budget), its full-budget runs are reused instead of trained again — a proxy
  setting is compared in a tenth of the time,
- with `repeat_full`, at the full budget again with another seed: (d), how well the reference
  ranks itself — about the ceiling any proxy can reach, since seed noise reorders close
  architectures,

and (c) its parameter count is read off. Every score is turned into a goodness (the task's
metric where higher is better, its negative otherwise; parameters as they are: the naive
"bigger is better" guess) and ranked against the full-budget goodness with Kendall's τ-b and
Spearman's ρ. Correlations are also reported on the validation loss. All runs of one
architecture share a seed; all run as Ray tasks, the longest first, and the driver alone
writes the run directory:

```
runs/NAME/
  config.json        the request as resolved (space, task spec, budgets, seed)
  space.space        copy of the space
  graphs/<hash>.parquet
  fidelity.json      per architecture: every run's metrics (or failure) and CPU-seconds;
                     the correlations; CPU-seconds totals by kind
  fidelity.png       full-budget score against each proxy, one panel per proxy
```
"""

from gatesearch.experiments.fidelity.config import (
    FULL_TRAINERS,
    KIND,
    PLOT,
    PROXIES,
    PROXY_LABELS,
    PROXY_TITLES,
    REPEAT,
    RESULT,
    FidelityConfig,
    FidelityError,
    FidelityRequest,
)
from gatesearch.experiments.fidelity.driver import (
    fidelity_run,
    load_reference,
    prepare,
    run_fidelity,
    sample_distinct,
)
from gatesearch.experiments.fidelity.plot import plot
from gatesearch.experiments.fidelity.stats import (
    analyse,
    bootstrap_taus,
    rank_correlations,
    top_agreement,
)

__all__ = [
    "FULL_TRAINERS",
    "KIND",
    "PLOT",
    "PROXIES",
    "PROXY_LABELS",
    "PROXY_TITLES",
    "REPEAT",
    "RESULT",
    "FidelityConfig",
    "FidelityError",
    "FidelityRequest",
    "analyse",
    "bootstrap_taus",
    "fidelity_run",
    "load_reference",
    "plot",
    "prepare",
    "rank_correlations",
    "run_fidelity",
    "sample_distinct",
    "top_agreement",
]
