"""Mixture-of-experts routing (PRIMITIVES.md §4).

    y(x) = Σ_{e ∈ R(x)} G_e(x) · s_e · E_e(x)

over the experts R(x) that a router picks for token x; E_e are copies of any CHANNEL primitive
(the `expert` slot), s_e the expert's pruning-gate value (1 without gates). Routers:

- noisy_topk (Shazeer et al. 2017): H = xW_g + N(0,1)·softplus(xW_noise) (noise in training
  only), G = softmax(KeepTopK(H, k)); W_g, W_noise zero-initialised. Balance loss
  CV²(importance) + CV²(load), load through Φ((xW_g − kth_excluding(H))/noise_std).
- switch (Fedus et al. 2021): p = softmax(W_r x) in float32, top-1, y = p_e·E_e(x). An expert
  takes at most ⌈n/N·capacity_factor⌉ of the n tokens; overflow tokens get 0 from the MoE (the
  residual around it carries them). Balance N·Σ_i f_i P_i; z-loss mean(logsumexp(W_r x)²).
- expert_choice (Zhou et al. 2022): S = softmax(xW_g); each expert takes its top ⌈n·c/N⌉
  tokens by S and weights them by S. An expert's choice looks at every token of the batch,
  later positions included, so it is refused on causal tasks.
- softmax_d2s (Nie et al. 2021): G = softmax((xW_g + Gumbel)/τ) (noise in training only),
  weights below `threshold` dropped (not renormalised).
- activation_d2s (Nguyen et al. 2024): G = softmax(act(xW_g)/τ), weights below `threshold`
  dropped; the activation breaks the (β, τ) ~ (cβ, cτ) symmetry of the plain softmax gate.
  For both d2s routers τ = τ_start·(τ_end/τ_start)^frac, frac set by `set_progress(frac)`.

Tokens are routed time-major (all rows' position 0, then position 1, ...), so switch's
first-come capacity never lets a later position take an earlier one's slot: dropping stays causal.
Dispatch loops over the experts and gathers each one's tokens with index_select / index_add_,
so sparse routers never run an expert on tokens it was not given.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gatesearch.primitives.activations import make_activation
from gatesearch.primitives.base import AUX_MOE_BALANCE, AUX_MOE_Z, Primitive, Prunable
from gatesearch.primitives.pruning import make_gate, prune_param
from gatesearch.registry import (
    Categorical,
    Context,
    FloatRange,
    IntRange,
    ParamSpec,
    Role,
    build_module,
    nested_error,
    register,
)

# Floor on noisy_topk's noise scale: keeps the load estimate's Φ((clean − kth)/std) finite when
# softplus(xW_noise) underflows (the same role as Shazeer's noise epsilon).
NOISE_EPS = 1e-2
# Keeps the CV² of an all-zero importance or load vector finite.
CV_EPS = 1e-10
# Fedus et al.'s router init: truncated normal, std = sqrt(scale / fan_in), scale 0.1.
ROUTER_INIT_SCALE = 0.1


class Routing(NamedTuple):
    """A router's decision over the open experts E' for n tokens."""

    dispatch: torch.Tensor  # (n, E') bool: token i goes to open expert j
    weights: torch.Tensor  # (n, E') combine weights, 0 where not dispatched
    aux: dict[str, torch.Tensor]  # auxiliary losses (training only)


@dataclass(frozen=True)
class RouterConfig:
    """The router parameters of `moe`; each router reads the ones it uses."""

    k: int
    capacity_factor: float
    tau_start: float
    tau_end: float
    threshold: float
    router_act: str


def _cv_squared(v: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation var(v)/mean(v)² of a per-expert statistic."""
    return v.var(correction=0) / (v.mean().square() + CV_EPS)


class Router(nn.Module, ABC):
    """Maps tokens (n, d) to a Routing over the open experts `rows` (E',) of n_experts.

    Every parameter of a router (its activation's included) is laid out expert-first, so
    pruning experts is keeping the same rows of every parameter.
    """

    causal: ClassVar[bool] = True  # False when a token's routing depends on later tokens

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_model))
        nn.init.trunc_normal_(self.w_gate, std=math.sqrt(ROUTER_INIT_SCALE / d_model))

    @staticmethod
    def project(tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(n, E) logits xWᵀ of all experts in at least float32, even under autocast: routing
        decisions are discrete, and low-precision logits flip them (Fedus et al.)."""
        dtype = torch.promote_types(tokens.dtype, torch.float32)
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return F.linear(tokens.to(dtype), weight.to(dtype))

    def logits(
        self, tokens: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """(n, E') logits of the open experts."""
        return self.project(tokens, weight)[:, rows]

    @abstractmethod
    def forward(self, tokens: torch.Tensor, rows: torch.Tensor) -> Routing: ...

    def set_progress(self, frac: float) -> None:
        """Training progress in [0, 1]; routers without a schedule ignore it."""

    @torch.no_grad()
    def keep_rows_(self, keep: torch.Tensor) -> None:
        """Keep only the experts `keep` (indices): the same rows of every parameter."""
        for module in self.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if param.shape[0] != self.n_experts:
                    raise AssertionError(f"router parameter {name} is not expert-first")
                setattr(module, name, nn.Parameter(param.index_select(0, keep).clone()))
        self.n_experts = int(keep.numel())


class NoisyTopKRouter(Router):
    """H = xW_g + N(0,1)·softplus(xW_noise); G = softmax(KeepTopK(H, k)) (Shazeer et al. 2017)."""

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__(d_model, n_experts, config)
        self.k = config.k
        # Zero init: routing starts uniform-in-expectation, driven by the noise alone.
        nn.init.zeros_(self.w_gate)
        self.w_noise = nn.Parameter(torch.zeros(n_experts, d_model))

    def forward(self, tokens: torch.Tensor, rows: torch.Tensor) -> Routing:
        clean = self.logits(tokens, self.w_gate, rows)  # (n, E')
        n_open = clean.shape[1]
        k = min(self.k, n_open)
        noise_std = None
        logits = clean
        if self.training:
            noise_std = F.softplus(self.logits(tokens, self.w_noise, rows)) + NOISE_EPS
            logits = clean + torch.randn_like(clean) * noise_std
        # One extra value when it exists: the load estimate needs the (k+1)-th largest.
        top_vals, top_idx = logits.topk(min(k + 1, n_open), dim=1)  # (n, k or k+1)
        gates = torch.softmax(top_vals[:, :k], dim=1)  # (n, k)
        weights = torch.zeros_like(logits).scatter(1, top_idx[:, :k], gates)  # (n, E')
        dispatch = torch.zeros_like(logits, dtype=torch.bool).scatter(1, top_idx[:, :k], True)
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            importance = weights.sum(0)  # (E',)
            balance = _cv_squared(importance)
            if k < n_open:  # with k = E' every expert gets every token: load is uniform
                assert noise_std is not None  # drawn above whenever training
                balance = balance + _cv_squared(self._load(clean, logits, noise_std, top_vals, k))
            aux[AUX_MOE_BALANCE] = balance
        return Routing(dispatch, weights, aux)

    @staticmethod
    def _load(
        clean: torch.Tensor,
        noisy: torch.Tensor,
        noise_std: torch.Tensor,
        top_vals: torch.Tensor,
        k: int,
    ) -> torch.Tensor:
        """(E',) Σ_x P(expert e in the top k of x, redrawing only e's noise), a smooth load."""
        # kth_excluding(H, k, e): the (k+1)-th largest of H when e is in the top k, else the k-th.
        threshold_if_in = top_vals[:, k : k + 1]  # (n, 1)
        threshold_if_out = top_vals[:, k - 1 : k]  # (n, 1)
        prob_if_in = torch.special.ndtr((clean - threshold_if_in) / noise_std)  # (n, E') Φ
        prob_if_out = torch.special.ndtr((clean - threshold_if_out) / noise_std)  # (n, E') Φ
        return torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out).sum(0)


class SwitchRouter(Router):
    """p = softmax(W_r x) in float32; top-1; y = p_e·E_e(x) within capacity (Fedus et al.)."""

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__(d_model, n_experts, config)
        self.capacity_factor = config.capacity_factor

    def forward(self, tokens: torch.Tensor, rows: torch.Tensor) -> Routing:
        logits = self.logits(tokens, self.w_gate, rows)  # (n, E')
        n, n_open = logits.shape
        probs = torch.softmax(logits, dim=1)  # (n, E')
        choice = probs.argmax(dim=1)  # (n,)
        assigned = F.one_hot(choice, n_open)  # (n, E') int
        capacity = math.ceil(n / n_open * self.capacity_factor)
        # 1-based arrival order of each token at its expert; tokens are time-major, so earlier
        # positions win the slots.
        slot = torch.cumsum(assigned, dim=0) * assigned  # (n, E')
        dispatch = (slot > 0) & (slot <= capacity)
        weights = torch.where(dispatch, probs, torch.zeros_like(probs))
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            fraction = assigned.to(probs.dtype).mean(0)  # f_i: share of tokens sent to i
            mean_prob = probs.mean(0)  # P_i: mean router probability of i
            aux[AUX_MOE_BALANCE] = n_open * (fraction * mean_prob).sum()
            aux[AUX_MOE_Z] = torch.logsumexp(logits, dim=1).square().mean()
        return Routing(dispatch, weights, aux)


class ExpertChoiceRouter(Router):
    """S = softmax(xW_g); each expert takes its top ⌈n·c/E⌉ tokens by S (Zhou et al. 2022)."""

    causal = False

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__(d_model, n_experts, config)
        self.capacity_factor = config.capacity_factor

    def forward(self, tokens: torch.Tensor, rows: torch.Tensor) -> Routing:
        scores = torch.softmax(self.logits(tokens, self.w_gate, rows), dim=1)  # (n, E')
        n, n_open = scores.shape
        k = min(n, max(1, math.ceil(n * self.capacity_factor / n_open)))
        top_vals, top_tok = scores.topk(k, dim=0)  # (k, E'): each expert's tokens
        dispatch = torch.zeros_like(scores, dtype=torch.bool).scatter(0, top_tok, True)
        weights = torch.zeros_like(scores).scatter(0, top_tok, top_vals)
        return Routing(dispatch, weights, {})


class _DenseToSparseRouter(Router):
    """G = softmax(f(xW_g)/τ), entries below `threshold` dropped; τ annealed by set_progress."""

    tau: torch.Tensor  # a buffer (registered in __init__)

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__(d_model, n_experts, config)
        if config.tau_start <= 0 or config.tau_end <= 0:
            raise ValueError("tau_start and tau_end must be positive")
        self.tau_start = config.tau_start
        self.tau_end = config.tau_end
        self.threshold = config.threshold
        # A buffer, so a checkpoint resumes at the temperature it reached.
        self.register_buffer("tau", torch.tensor(float(config.tau_start)))

    def set_progress(self, frac: float) -> None:
        frac = min(max(float(frac), 0.0), 1.0)
        self.tau.fill_(self.tau_start * (self.tau_end / self.tau_start) ** frac)

    @abstractmethod
    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(n, E') the logits f(xW_g) before the temperature."""

    def forward(self, tokens: torch.Tensor, rows: torch.Tensor) -> Routing:
        logits = self.scores(self.logits(tokens, self.w_gate, rows))  # (n, E')
        probs = torch.softmax(logits / self.tau.to(logits.dtype), dim=1)  # (n, E')
        dispatch = probs >= self.threshold
        weights = torch.where(dispatch, probs, torch.zeros_like(probs))
        return Routing(dispatch, weights, {})


class SoftmaxD2SRouter(_DenseToSparseRouter):
    """G = softmax((xW_g + Gumbel)/τ), Gumbel noise in training only (Nie et al. 2021)."""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return logits
        u = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
        return logits - torch.log(-torch.log(u))


class ActivationD2SRouter(_DenseToSparseRouter):
    """G = softmax(act(xW_g)/τ) (Nguyen et al. 2024)."""

    def __init__(self, d_model: int, n_experts: int, config: RouterConfig) -> None:
        super().__init__(d_model, n_experts, config)
        self.act = make_activation(config.router_act, n_experts)

    def logits(
        self, tokens: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        # The activation sees all experts' logits: its per-expert parameters (swish_beta's β)
        # line up with the columns only before the closed experts are dropped.
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return self.act(self.project(tokens, weight))[:, rows]

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


ROUTERS: dict[str, type[Router]] = {
    "noisy_topk": NoisyTopKRouter,
    "switch": SwitchRouter,
    "expert_choice": ExpertChoiceRouter,
    "softmax_d2s": SoftmaxD2SRouter,
    "activation_d2s": ActivationD2SRouter,
}


def _router_fits_context(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    router = ROUTERS.get(value)
    if router is not None and ctx.causal and not router.causal:
        return (
            f"router {value!r} lets each expert choose its tokens from the whole sequence, "
            "so an output would depend on future tokens; it cannot be used on a causal task"
        )
    return None


def _k_within_experts(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    experts = params.get("experts")
    if experts is not None and value > experts:
        return f"top-k of {value} exceeds the {experts} experts"
    return None


def _expert_is_channel(value: Any, params: dict[str, Any], ctx: Context) -> str | None:
    return nested_error(value, Role.CHANNEL, "expert")


def build_expert(expert: dict[str, Any], d_model: int, causal: bool) -> nn.Module:
    """One expert block from its description {"op": <channel primitive>, "params": {...}}.

    The one place a mixture looks its experts up in the registry: an exported file replaces
    it with a lookup among the classes it defines (gatesearch.export.bridges).
    """
    ctx = Context(d_model=d_model, causal=causal)
    why = _expert_is_channel(expert, {}, ctx)
    if why is not None:
        raise ValueError(why)
    return build_module(expert["op"], dict(expert.get("params", {})), ctx)


# Which router options matter for which router: an option a router ignores is no choice point
# (see ParamSpec.active), so two mixtures that differ only there are one architecture.
def _uses_k(params: dict[str, Any]) -> bool:
    return params.get("router") == "noisy_topk"


def _uses_capacity(params: dict[str, Any]) -> bool:
    return params.get("router") in ("switch", "expert_choice")


def _uses_tau(params: dict[str, Any]) -> bool:
    return params.get("router") in ("softmax_d2s", "activation_d2s")


def _uses_router_act(params: dict[str, Any]) -> bool:
    return params.get("router") == "activation_d2s"


@register(
    "moe",
    Role.CHANNEL,
    [
        ParamSpec(
            "router",
            Categorical(tuple(ROUTERS)),
            default="switch",
            check=_router_fits_context,
            doc="how tokens are assigned to experts",
        ),
        # 1 is admitted because pruning can leave one expert (a grammar may write it too).
        ParamSpec("experts", IntRange(1, 64), default=8, doc="number of experts N"),
        ParamSpec(
            "k",
            IntRange(1, 8),
            default=2,
            check=_k_within_experts,
            doc="experts per token (noisy_topk)",
            active=_uses_k,
        ),
        ParamSpec(
            "capacity_factor",
            FloatRange(0.5, 4.0),
            default=1.25,
            doc="tokens per expert = n/N × capacity_factor (switch, expert_choice)",
            active=_uses_capacity,
        ),
        ParamSpec(
            "tau_start",
            FloatRange(0.1, 10.0, log=True),
            default=2.0,
            doc="softmax temperature at the start of training (d2s routers)",
            active=_uses_tau,
        ),
        ParamSpec(
            "tau_end",
            FloatRange(0.01, 2.0, log=True),
            default=0.1,
            doc="softmax temperature at the end of training (d2s routers)",
            active=_uses_tau,
        ),
        ParamSpec(
            "threshold",
            FloatRange(0.0, 0.2),
            default=0.01,
            doc="routing weights below this are dropped (d2s routers)",
            active=_uses_tau,
        ),
        ParamSpec(
            "router_act",
            None,
            default="tanh",
            ref=Role.ACTIVATION,
            doc="activation on the router logits (activation_d2s)",
            active=_uses_router_act,
        ),
        ParamSpec(
            "expert",
            None,
            default=None,
            check=_expert_is_channel,
            ref=Role.CHANNEL,
            slot=True,
            doc="the expert block: {'op': <channel primitive>, 'params': {...}}",
        ),
        prune_param("trainable gates over experts; pruning removes experts"),
    ],
    context=("d_model", "causal"),
)
class MoE(Primitive, Prunable):
    """Mixture of experts: y(x) = Σ_{e ∈ R(x)} G_e(x)·s_e·E_e(x) (see the module docstring).

    With pruning gates z, s_e = z_e and experts with z_e = 0 are closed: the router does not
    see them at all (as if removed), so prune_() drops them, their router rows and their
    gates, folds z into the per-expert output scale s, and the eval function is unchanged.
    A closed trainable gate still gets the sparsity loss's gradient, not the task's.
    Parameters: the experts', plus N·d router weights (2·N·d for noisy_topk) and N gates.
    """

    out_scale: torch.Tensor  # a buffer (registered in __init__)

    def __init__(
        self,
        d_model: int,
        causal: bool,
        router: str = "switch",
        experts: int = 8,
        k: int = 2,
        capacity_factor: float = 1.25,
        tau_start: float = 2.0,
        tau_end: float = 0.1,
        threshold: float = 0.01,
        router_act: str = "tanh",
        expert: dict[str, Any] | None = None,
        prune: str = "none",
    ) -> None:
        super().__init__()
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {tuple(ROUTERS)}, got {router!r}")
        why = _router_fits_context(router, {}, Context(d_model=d_model, causal=causal))
        if why is not None:
            raise ValueError(why)
        if experts < 1:
            raise ValueError(f"experts must be at least 1, got {experts}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if expert is None:
            raise ValueError("moe needs an expert: {'op': <channel primitive>, 'params': {...}}")
        self.router_name = router
        self.n_experts = experts
        self.k = k
        self.prune = prune
        config = RouterConfig(k, capacity_factor, tau_start, tau_end, threshold, router_act)
        self.router = ROUTERS[router](d_model, experts, config)
        self.experts = nn.ModuleList(build_expert(expert, d_model, causal) for _ in range(experts))
        self.expert_gate = make_gate(prune, experts)
        # s_e: 1 until pruning folds the surviving gate values in.
        self.register_buffer("out_scale", torch.ones(experts))

    def set_progress(self, frac: float) -> None:
        """Training progress, 0 at the start and 1 at the end (anneals the d2s temperature)."""
        self.router.set_progress(frac)

    def _open_experts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E',) indices of the open experts and (E',) their output scales s_e·z_e."""
        if self.expert_gate is None:
            rows = torch.arange(self.n_experts, device=self.out_scale.device)
            return rows, self.out_scale
        z = self.expert_gate()  # (E,)
        rows = (z > 0).nonzero().squeeze(1)  # (E',)
        return rows, z.index_select(0, rows) * self.out_scale.index_select(0, rows)

    takes_lengths = True

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        B, T, d = x.shape
        # Time-major, so switch's first-come capacity favours earlier positions (causal).
        tokens = x.transpose(0, 1).reshape(T * B, d)  # (T·B, d)
        if lengths is None:
            return self._mix(tokens).reshape(T, B, d).transpose(0, 1)  # (B, T, d)
        # Only real tokens are routed: padding would otherwise count in the capacities
        # (switch, expert_choice) and compete for experts' slots. Padded positions get 0, which
        # the residual around the mixture carries as it does an overflow token.
        real = torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)[None, :]  # (T, B)
        idx = real.reshape(T * B).nonzero().squeeze(1)  # (n,) time-major, as `tokens`
        out = torch.zeros_like(tokens)  # (T·B, d)
        out.index_copy_(0, idx, self._mix(tokens.index_select(0, idx)))
        return out.reshape(T, B, d).transpose(0, 1)  # (B, T, d)

    def _mix(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, d): the mixture's output for time-major tokens routed together."""
        rows, scale = self._open_experts()
        out = torch.zeros_like(tokens)  # (n, d)
        if rows.numel() == 0:
            self._aux = {}
            return out
        routing = self.router(tokens, rows)
        # Without gates every expert is open and the loop is static, so torch.export can trace
        # it; with gates the open set is data. An expert given no tokens runs on an empty batch
        # (no data-dependent branch).
        open_experts = range(self.n_experts) if self.expert_gate is None else rows.tolist()
        for j, e in enumerate(open_experts):
            idx = routing.dispatch[:, j].nonzero().squeeze(1)  # (m,) tokens sent to expert e
            y = self.experts[e](tokens.index_select(0, idx).unsqueeze(0))  # (1, m, d)
            w = routing.weights.index_select(0, idx)[:, j] * scale[j]  # (m,)
            # Accumulate in the input's dtype: under autocast the experts' y is lower precision.
            out.index_add_(0, idx, (y.squeeze(0) * w.unsqueeze(1)).to(out.dtype))
        self._aux = routing.aux
        return out

    def open_units(self) -> int:
        if self.expert_gate is None:
            return self.n_experts
        return int(self.expert_gate.keep_mask().sum())

    @torch.no_grad()
    def prune_(self) -> dict[str, Any]:
        updates: dict[str, Any] = {"experts": self.n_experts, "prune": "none"}
        if self.expert_gate is None:
            return updates
        z = self.expert_gate.final_values()  # (E,)
        keep = self.expert_gate.keep_mask().nonzero().squeeze(1)  # (E',)
        if keep.numel() == 0:
            # Every gate closed: the layer adds zeros. Keep one expert at scale z = 0, which
            # still adds zeros, so the graph stays a buildable mixture (experts ≥ 1).
            keep = z.argmax().reshape(1)
        self.experts = nn.ModuleList(self.experts[i] for i in keep.tolist())
        self.out_scale = (self.out_scale * z.to(self.out_scale)).index_select(0, keep)
        self.router.keep_rows_(keep)
        self.expert_gate = None
        self.prune = "none"
        self.n_experts = int(keep.numel())
        updates["experts"] = self.n_experts
        if self.k > self.n_experts > 0:
            # Routing already used min(k, open experts); keep the graph's parameter in range.
            self.k = self.n_experts
            updates["k"] = self.n_experts
        return updates


# For the code exporter (gatesearch.export): the module-level names each definition here uses,
# copied with it, and the engine-only methods an exported copy leaves out (pruning is done
# before export; Prunable's own methods are always left out).
EXPORT_DEPS: dict[str, tuple[str, ...]] = {
    "_cv_squared": ("CV_EPS",),
    "Router": ("ROUTER_INIT_SCALE", "RouterConfig", "Routing"),
    "NoisyTopKRouter": ("AUX_MOE_BALANCE", "NOISE_EPS", "_cv_squared"),
    "SwitchRouter": ("AUX_MOE_BALANCE", "AUX_MOE_Z"),
    "ActivationD2SRouter": ("make_activation",),
    "_router_fits_context": ("Context", "ROUTERS"),
    "MoE": (
        "Context",
        "ROUTERS",
        "RouterConfig",
        "_router_fits_context",
        "build_expert",
        "make_gate",
    ),
}
EXPORT_OMIT: dict[str, tuple[str, ...]] = {"Router": ("keep_rows_",)}
