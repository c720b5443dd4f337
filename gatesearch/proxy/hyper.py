"""The proxy's tunable regularisation hyperparameters: ranges, mappings, discrete handling.

Each hyperparameter λ is stored unconstrained as u ∈ ℝ and mapped into its range:

    bounded [lo, hi]:              λ = lo + (hi − lo)·σ(u)                  (stretched sigmoid)
    bounded, log scale:            λ = exp(log lo + (log hi − log lo)·σ(u))
    half-bounded [lo, ∞):          λ = lo + softplus(u)
    integer in {lo, …, hi}:        λ = min(⌊lo + (hi + 1 − lo)·σ(u)⌋, hi)    (floored after mapping)

The hypernetwork sees u itself (well scaled, O(1)), never λ.

Which hyperparameters a trial tunes depends on the model: dropout rates for the node roles it
has, weight decay always, the input-token noise count for token tasks, and one weight per
auxiliary loss kind its forward pass produces (pruning-gate sparsity, MoE balance, MoE z-loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gatesearch.errors import GatesearchError
from gatesearch.primitives.base import AUX_MOE_BALANCE, AUX_MOE_Z, AUX_SPARSITY
from gatesearch.registry import Role

_EDGE = 1e-6  # how far inside its range a value given on a bound starts


class HyperError(GatesearchError, ValueError):
    """A hyperparameter definition or value that cannot be used."""


@dataclass(frozen=True)
class HyperSpec:
    """One tunable hyperparameter.

    high=None makes it half-bounded (softplus); `log` maps a bounded range on the log scale;
    `integer` floors the mapped value (the hypernetwork still sees the continuous u).
    `per_example`: perturbed independently for each example of a batch (dropout, decay, input
    noise); otherwise one draw per batch, for regularisers that act on the whole batch (an
    auxiliary loss weight), so its effect and its draw still co-vary across steps.
    """

    name: str
    low: float
    high: float | None
    default: float
    log: bool = False
    integer: bool = False
    per_example: bool = True
    doc: str = ""

    def __post_init__(self) -> None:
        if self.high is not None and not self.low < self.high:
            raise HyperError(
                f"hyperparameter {self.name}: low {self.low} must be < high {self.high}"
            )
        if self.log and (self.high is None or self.low <= 0):
            raise HyperError(f"hyperparameter {self.name}: a log scale needs 0 < low < high")
        if self.integer and (self.high is None or self.log):
            raise HyperError(
                f"hyperparameter {self.name}: an integer needs a linear, bounded range"
            )
        if not self._inside(self.default):
            raise HyperError(
                f"hyperparameter {self.name}: default {self.default} outside its range"
            )

    def _inside(self, value: float) -> bool:
        """Inside the closed range (a bound itself maps to a saturated u)."""
        return self.low <= value and (self.high is None or value <= self.high)

    # ------------------------------------------------------------------------------ mappings

    def _top(self) -> float:
        assert self.high is not None
        return self.high + 1.0 if self.integer else self.high

    def continuous(self, u: torch.Tensor) -> torch.Tensor:
        """The mapped value before flooring (differentiable in u)."""
        if self.high is None:
            return self.low + F.softplus(u)
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            # Clamped: exp(log hi) may round a hair above hi.
            return torch.exp(lo + (hi - lo) * torch.sigmoid(u)).clamp(self.low, self.high)
        return self.low + (self._top() - self.low) * torch.sigmoid(u)

    def value(self, u: torch.Tensor) -> torch.Tensor:
        """The value a regulariser applies: mapped, and floored for integers."""
        v = self.continuous(u)
        if self.integer:
            assert self.high is not None
            v = torch.floor(v).clamp(max=self.high)
        return v

    def to_unconstrained(self, value: float) -> float:
        """u with value(u) = `value` (for integers: the middle of value's interval); a value
        on a bound gets the u of a point just inside it."""
        if not self._inside(value):
            raise HyperError(f"hyperparameter {self.name}: {value} outside its range")
        if self.high is None:
            x = max(value - self.low, _EDGE)
            return x + math.log(-math.expm1(-x))  # softplus⁻¹, stable for large x
        if self.integer:
            frac = (math.floor(value) + 0.5 - self.low) / (self._top() - self.low)
        elif self.log:
            frac = (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        else:
            frac = (value - self.low) / (self.high - self.low)
        frac = min(max(frac, _EDGE), 1.0 - _EDGE)
        return math.log(frac) - math.log1p(-frac)

    def as_python(self, value: float) -> float | int:
        return int(value) if self.integer else float(value)


# Dropout after the output of every node of these roles: the bodies of residual branches.
DROPOUT_ROLES: tuple[Role, ...] = (Role.STEM, Role.MIXER, Role.CHANNEL)
DROPOUT_MAX = 0.9  # STN's upper bound: beyond it a unit carries almost no signal
DROPOUT_DEFAULT = 0.05
WEIGHT_DECAY = "weight_decay"
INPUT_NOISE = "input_noise_tokens"
MAX_NOISE_TOKENS = 8

# Auxiliary loss kind -> (hyperparameter name, low, high, default), log scale.
AUX_WEIGHTS: dict[str, tuple[str, float, float, float]] = {
    AUX_SPARSITY: ("sparsity_weight", 1e-3, 1.0, 0.05),
    AUX_MOE_BALANCE: ("moe_balance_weight", 1e-4, 1.0, 1e-2),
    AUX_MOE_Z: ("moe_z_weight", 1e-5, 1e-1, 1e-3),
}


DROPOUT_PREFIX = "dropout_"  # every dropout rate's name starts so


def dropout_name(role: Role) -> str:
    return f"{DROPOUT_PREFIX}{role.value}"


def default_hypers(
    roles: Iterable[Role], aux_keys: Iterable[str], token_inputs: bool
) -> tuple[HyperSpec, ...]:
    """The hyperparameters a model with nodes of `roles` whose training forward emits
    `aux_keys` tunes, in a fixed order (dropouts by role, decay, noise, aux weights)."""
    present = set(roles)
    specs = [
        HyperSpec(
            dropout_name(role),
            0.0,
            DROPOUT_MAX,
            DROPOUT_DEFAULT,
            doc=f"dropout on the output of every {role.value} node",
        )
        for role in DROPOUT_ROLES
        if role in present
    ]
    specs.append(
        HyperSpec(
            WEIGHT_DECAY,
            1e-6,
            1e-1,
            1e-4,
            log=True,
            doc="L2 penalty ½λ‖W‖² on every weight matrix (the STN layers' effective weights)",
        )
    )
    if token_inputs:
        specs.append(
            HyperSpec(
                INPUT_NOISE,
                0,
                MAX_NOISE_TOKENS,
                0,
                integer=True,
                doc="input positions per sequence replaced by uniformly random tokens",
            )
        )
    keys = set(aux_keys)
    for key, (name, low, high, default) in AUX_WEIGHTS.items():
        if key in keys:
            specs.append(
                HyperSpec(
                    name,
                    low,
                    high,
                    default,
                    log=True,
                    per_example=False,
                    doc=f"weight of the {key!r} auxiliary loss",
                )
            )
    return tuple(specs)


class HyperSet:
    """An ordered set of HyperSpecs; column j of a (B, n) hyper tensor is spec j."""

    def __init__(self, specs: Sequence[HyperSpec]) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise HyperError(f"hyperparameters named twice: {names}")
        self.specs = tuple(specs)
        self.index = {name: j for j, name in enumerate(names)}

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def unconstrained(self, start: Mapping[str, float] | None = None) -> torch.Tensor:
        """(n,) u at the values in `start` (e.g. a finished trial's tuned hyperparameters),
        the defaults for the others. Names this set does not have are an error; "lr" is
        not a hyperparameter here and is skipped."""
        given = {k: v for k, v in (start or {}).items() if k != "lr"}
        unknown = sorted(set(given) - set(self.index))
        if unknown:
            raise HyperError(
                f"unknown hyperparameter(s) {', '.join(unknown)}: this model tunes "
                f"{', '.join(self.names)}"
            )
        return torch.tensor(
            [s.to_unconstrained(float(given.get(s.name, s.default))) for s in self.specs]
        )

    def values(self, u: torch.Tensor) -> torch.Tensor:
        """(…, n) unconstrained -> (…, n) applied values (integers floored)."""
        if u.shape[-1] != len(self.specs):
            raise HyperError(f"expected {len(self.specs)} hyperparameters, got {u.shape[-1]}")
        return torch.stack([s.value(u[..., j]) for j, s in enumerate(self.specs)], dim=-1)

    def as_dict(self, u: torch.Tensor) -> dict[str, float | int]:
        """(n,) unconstrained -> {name: value} as plain Python numbers."""
        values = self.values(u.detach().double()).tolist()
        return {s.name: s.as_python(v) for s, v in zip(self.specs, values)}

    def per_example_mask(self) -> torch.Tensor:
        return torch.tensor([s.per_example for s in self.specs])
