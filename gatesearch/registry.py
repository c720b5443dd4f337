"""The one registry of primitives.

Every gating primitive registers itself here with its module class, the domains of its
parameters and its shape rule. The grammar (to check names and parameters), the sampler (to
draw values and prune options that cannot fit the context), the builder (to construct modules)
and the exporter all read this registry; nothing else keeps a list of primitive names.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torch import nn

Value = int | float | str | bool


class Role(Enum):
    """What a primitive does, and so which tensor types it maps between."""

    STEM = "stem"  # task input -> hidden (B, T, d)
    HEAD = "head"  # hidden -> task output
    MIXER = "mixer"  # hidden -> hidden, mixes information across time
    CHANNEL = "channel"  # hidden -> hidden, position-wise
    NORM = "norm"  # hidden -> hidden, normalisation
    ACTIVATION = "activation"  # elementwise nonlinearity, named by `act=` parameters
    WRAPPER = "wrapper"  # wraps a body with the skip path (residual, highway)
    COMBINE = "combine"  # graph-internal: merges skip and body outputs (two inputs)
    PRUNING_GATE = "pruning_gate"  # trainable gates on units, named by `prune=` parameters


class TensorKind(Enum):
    """The tensor types that flow along graph edges; widths are always the model width."""

    INPUT = "input"  # what the task feeds: tokens (B, T) or features (B, T, n_in)
    HIDDEN = "hidden"  # (B, T, d_model)
    OUTPUT = "output"  # what the task's loss reads: (B, T, n_out)


_SIGNATURES: dict[Role, tuple[TensorKind, TensorKind]] = {
    Role.STEM: (TensorKind.INPUT, TensorKind.HIDDEN),
    Role.HEAD: (TensorKind.HIDDEN, TensorKind.OUTPUT),
    Role.MIXER: (TensorKind.HIDDEN, TensorKind.HIDDEN),
    Role.CHANNEL: (TensorKind.HIDDEN, TensorKind.HIDDEN),
    Role.NORM: (TensorKind.HIDDEN, TensorKind.HIDDEN),
    Role.WRAPPER: (TensorKind.HIDDEN, TensorKind.HIDDEN),
    Role.COMBINE: (TensorKind.HIDDEN, TensorKind.HIDDEN),
}


class InputKind(Enum):
    TOKENS = "tokens"  # integer ids (B, T) in [0, n_in)
    CONTINUOUS = "continuous"  # features (B, T, n_in)


@dataclass(frozen=True)
class Context:
    """What a primitive's validity and construction may depend on besides its own parameters.

    `d_model` and `causal` shape the search (sampling prunes by them); the input/output ends
    come from the task at build time and never enter an architecture's identity.
    """

    d_model: int
    causal: bool
    input_kind: InputKind = InputKind.TOKENS
    n_in: int = 256
    n_out: int = 256


# ----------------------------------------------------------------------------------- domains


class Domain(ABC):
    """A set of admissible values for one parameter."""

    @abstractmethod
    def contains(self, value: Any) -> bool: ...

    @abstractmethod
    def sample(self, rng: random.Random) -> Value: ...

    @abstractmethod
    def describe(self) -> str: ...

    def finite_values(self) -> tuple[Value, ...] | None:
        """All values when the domain is finite (categorical or a short integer range)."""
        return None

    def size(self) -> float:
        values = self.finite_values()
        return float(len(values)) if values is not None else math.inf


@dataclass(frozen=True)
class Categorical(Domain):
    values: tuple[Value, ...]

    def contains(self, value: Any) -> bool:
        # bool is an int in Python; keep True from matching 1.
        return any(type(value) is type(v) and value == v for v in self.values)

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def finite_values(self) -> tuple[Value, ...]:
        return self.values


@dataclass(frozen=True)
class IntRange(Domain):
    low: int
    high: int  # inclusive

    def contains(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]"

    def finite_values(self) -> tuple[Value, ...]:
        return tuple(range(self.low, self.high + 1))


@dataclass(frozen=True)
class FloatRange(Domain):
    low: float
    high: float
    log: bool = False

    def contains(self, value: Any) -> bool:
        return type(value) in (int, float) and self.low <= value <= self.high

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def describe(self) -> str:
        scale = "log-scale " if self.log else ""
        return f"a {scale}number in [{self.low}, {self.high}]"


def domain_within(inner: Domain, outer: Domain) -> bool:
    """True when every value of `inner` is admissible in `outer`."""
    values = inner.finite_values()
    if values is not None:
        return all(outer.contains(v) for v in values)
    if isinstance(inner, FloatRange):
        if isinstance(outer, FloatRange):
            return outer.low <= inner.low and inner.high <= outer.high
        return False
    return False


# --------------------------------------------------------------------------------- parameters

Check = Callable[[Any, dict[str, Any], Context], str | None]


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter of a primitive.

    `domain` is everything the module accepts; a grammar narrows it. `check` rejects values that
    do not fit the context or the parameters chosen before it (it returns why, or None); the
    sampler uses it to prune options, the grammar to refuse spaces where nothing fits.
    `ref` names a registry role when the value is itself a primitive: activations (`act=gelu`)
    or child slots (the experts of a mixture, `expert=...`).
    When `ref` is set and `domain` is None the domain is every registered name of that role
    (plus "none" when `optional`).
    `active` says, from the parameters chosen before it, whether this one matters at all (a
    gate's activation does not when there is no gate); an inactive parameter takes its default
    and is no choice point, so architectures that differ only there share one identity.
    `internal` parameters are never written in a grammar: the builder or `prune()` sets them
    (for instance the hidden width left after pruning).
    """

    name: str
    domain: Domain | None
    default: Any = None
    check: Check | None = None
    ref: Role | None = None
    slot: bool = False
    optional: bool = False
    active: Callable[[dict[str, Any]], bool] | None = None
    internal: bool = False
    doc: str = ""

    def admissible(self) -> Domain | None:
        """The full domain: `domain`, or the registry's names for `ref` parameters."""
        if self.domain is not None or self.ref is None or self.slot:
            return self.domain
        names: tuple[Value, ...] = tuple(REGISTRY.names(self.ref))
        return Categorical((*names, "none") if self.optional else names)


@dataclass(frozen=True)
class PrimitiveSpec:
    name: str
    role: Role
    module: type[nn.Module]
    params: tuple[ParamSpec, ...] = ()
    # Which Context fields the module's constructor takes as keyword arguments.
    context: tuple[str, ...] = ("d_model",)
    # False for primitives that look at future positions (expert-choice routing).
    causal_ok: bool = True
    # For wrappers: the COMBINE primitive that merges skip and body (residual -> add).
    combine: str | None = None
    doc: str = ""
    _by_name: dict[str, ParamSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({p.name: p for p in self.params})

    @property
    def signature(self) -> tuple[TensorKind, TensorKind]:
        return _SIGNATURES[self.role]

    def param(self, name: str) -> ParamSpec | None:
        return self._by_name.get(name)

    def grammar_params(self) -> Iterator[ParamSpec]:
        return (p for p in self.params if not p.internal)

    def allowed(self, ctx: Context) -> str | None:
        """Why this primitive cannot appear in `ctx`, or None when it can."""
        if ctx.causal and not self.causal_ok:
            return f"{self.name} looks at future positions and cannot be used on a causal task"
        return None

    def constructor_kwargs(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        kwargs = {name: getattr(ctx, name) for name in self.context}
        kwargs.update(params)
        return kwargs


class RegistryError(KeyError):
    pass


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, PrimitiveSpec] = {}

    def add(self, spec: PrimitiveSpec) -> PrimitiveSpec:
        if spec.name in self._specs:
            raise RegistryError(f"primitive {spec.name!r} registered twice")
        if not spec.name.isidentifier():
            raise RegistryError(f"primitive name {spec.name!r} is not an identifier")
        self._specs[spec.name] = spec
        return spec

    def __contains__(self, name: object) -> bool:
        _ensure_loaded()
        return name in self._specs

    def __getitem__(self, name: str) -> PrimitiveSpec:
        _ensure_loaded()
        try:
            return self._specs[name]
        except KeyError:
            raise RegistryError(f"unknown primitive {name!r}") from None

    def get(self, name: str) -> PrimitiveSpec | None:
        _ensure_loaded()
        return self._specs.get(name)

    def names(self, role: Role | None = None) -> list[str]:
        _ensure_loaded()
        return sorted(n for n, s in self._specs.items() if role is None or s.role is role)

    def specs(self) -> list[PrimitiveSpec]:
        _ensure_loaded()
        return [self._specs[n] for n in sorted(self._specs)]


REGISTRY = Registry()


def register(
    name: str,
    role: Role,
    params: Sequence[ParamSpec] = (),
    *,
    context: tuple[str, ...] = ("d_model",),
    causal_ok: bool = True,
    combine: str | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: `@register("glu", Role.CHANNEL, [ParamSpec(...)])`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        # Imported here: the primitive modules import this one, and base is loaded by the
        # time a class deriving from it is decorated.
        from gatesearch.primitives.base import Primitive

        if role is Role.MIXER and getattr(cls, "decode_state", None) in (
            None,
            Primitive.decode_state,
        ):
            # A mixer keeps something between positions; inheriting the default (what its
            # parts keep: nothing, for plain layers) would report it as stateless.
            raise TypeError(f"mixer {name!r} ({cls.__name__}) must define decode_state")
        doc = (cls.__doc__ or "").strip()
        REGISTRY.add(
            PrimitiveSpec(
                name=name,
                role=role,
                module=cls,
                params=tuple(params),
                context=context,
                causal_ok=causal_ok,
                combine=combine,
                doc=doc,
            )
        )
        return cls

    return wrap


_loaded = False


def _ensure_loaded() -> None:
    # Primitive modules register themselves on import; importing the package once fills the
    # registry. Done lazily so `registry` itself has no import cycle with the primitives.
    global _loaded
    if not _loaded:
        _loaded = True
        import gatesearch.primitives  # noqa: F401


# ------------------------------------------------------------------------------ common checks


def divides_width(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    if ctx.d_model % int(value):
        return f"{value} does not divide the model width {ctx.d_model}"
    return None


def nested_error(value: Any, role: Role, what: str) -> str | None:
    """Why `value` is not the description {"op": <a `role` primitive>, "params": {...}} of a
    primitive held inside another (a mixture's expert, a bidirectional mixer's cell); None
    when it is. `what` names the slot in the message."""
    if not isinstance(value, dict) or "op" not in value:
        return f"the {what} must be {{'op': <{role.value} primitive>, 'params': {{...}}}}"
    spec = REGISTRY.get(value["op"])
    if spec is None or spec.role is not role:
        return f"{what} {value['op']!r} is not a {role.value} primitive"
    return None


def build_module(op: str, params: dict[str, Any], ctx: Context) -> nn.Module:
    """Construct the module for one graph node: the registry's class with resolved params."""
    spec = REGISTRY[op]
    return spec.module(**spec.constructor_kwargs(params, ctx))


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it.
EXPORT_DEPS: dict[str, tuple[str, ...]] = {"Context": ("InputKind",)}
