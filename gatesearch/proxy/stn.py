"""Self-Tuning Networks (MacKay et al. 2019): a structured best-response approximation.

Every nn.Linear inside a built model is replaced, for the proxy only, by an STN layer

    y = (W_e x + b_e) + g_w(u) ⊙ (W_h x) + g_b(u) ⊙ b_h,      [g_w, g_b] = V u,  V = 0 at start

where u (B, n) are the per-example perturbed unconstrained hyperparameters ũ = u + softplus(s)·ε.
Weight steps train W_e, W_h, V (and every other model parameter) with the regularisers applied
at the values ũ maps to, with ũ detached: the training loss never reaches u. Hyper steps
evaluate the validation loss through the same layers with ũ attached and regularisers off, so
the gradient reaches (u, s) only through the scale factors g = V ũ. At the end each layer is
folded into a plain nn.Linear at the final u:

    W = W_e + diag(g_w(u)) W_h,     b = b_e + g_b(u) ⊙ b_h,

which equals the STN layer at u exactly, so the model handed on is the plain GraphModel.

That full response doubles every linear layer's matmuls (W_h x beside W_e x). The `scale`
response ties W_h to W_e — the hyperparameters rescale each output unit of the layer:

    y = (1 + g_w(u)) ⊙ (W_e x) + (1 + g_b(u)) ⊙ b_e,   folded: W = diag(1 + g_w) W_e

— the same row-wise structure with one matmul, so a weight step costs what a plain one does
plus elementwise work (≈1.3× a fixed step against ≈1.8–2.0×). It is not the default: in
longer runs it let weight decay climb late in training and the loss suffered (measured in
benchmarks/RESULTS.md; our guess is that a response able only to shrink outputs sees
decay's calibrating effect on the validation loss and not its cost to the features).

`Regularisers` applies what the hyperparameters control (dropout after every stem/mixer/channel
node via forward hooks, input-token noise, the L2 penalty, the auxiliary-loss weights) and is
shared by the fixed-hyperparameter baseline, which uses it without STN layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from gatesearch.arch.build import GraphModel
from gatesearch.proxy.hyper import (
    AUX_WEIGHTS,
    DROPOUT_ROLES,
    INPUT_NOISE,
    WEIGHT_DECAY,
    HyperSet,
    dropout_name,
)
from gatesearch.registry import REGISTRY, Role

_LOG_SQRT_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


@dataclass
class HyperContext:
    """What the STN layers and the regularisers read during one forward pass.

    hyper_input: (R, n) what V sees — R = batch size (per-example draws) or 1 (one value for
      every example, e.g. the final u). None: g = 0 (the elementary weights alone).
    values: (R, n) the hyperparameter values the regularisers apply, detached.
    regularise: False turns dropout and input noise off (hyper steps, evaluation).
    """

    hyper_input: torch.Tensor | None = None
    values: torch.Tensor | None = None
    regularise: bool = False


class HyperState(nn.Module):
    """The tuned hyperparameters u (n,) and their perturbation scales softplus(s) (n,)."""

    per_example: torch.Tensor  # a buffer (registered in __init__)

    def __init__(
        self, hypers: HyperSet, init_spread: float, start: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        self.hypers = hypers
        self.u = nn.Parameter(hypers.unconstrained(start).float())
        s0 = math.log(math.expm1(init_spread))  # softplus⁻¹
        self.s = nn.Parameter(torch.full((len(hypers),), s0))
        self.register_buffer("per_example", hypers.per_example_mask())

    @property
    def spread(self) -> torch.Tensor:
        return F.softplus(self.s)

    def sample(self, batch: int) -> torch.Tensor:
        """(batch, n) ũ = u + softplus(s)·ε; per-batch hyperparameters share one ε."""
        eps = torch.randn(batch, len(self.hypers), device=self.u.device)
        eps = torch.where(self.per_example, eps, eps[:1].expand_as(eps))
        return self.u + self.spread * eps

    def entropy(self) -> torch.Tensor:
        """Entropy of the perturbation N(u, diag softplus(s)²): Σ log(softplus(s)·√(2πe))."""
        return (torch.log(self.spread) + _LOG_SQRT_2PI_E).sum()

    def current(self) -> dict[str, float | int]:
        return self.hypers.as_dict(self.u)


class Response(StrEnum):
    """How an STN layer's weights respond to the hyperparameters (see the module doc)."""

    FULL = "full"  # W_e + diag(g_w) W_h: STN's structured response, two matmuls
    SCALE = "scale"  # diag(1 + g_w) W_e: W_h tied to W_e, one matmul


class STNLinear(nn.Module):
    """y = (W_e x + b_e) + g_w ⊙ (W_h x) + g_b ⊙ b_h, [g_w, g_b] = V ũ (see the module doc);
    with `Response.SCALE`, W_h = W_e and b_h = b_e.

    `weight` and `bias` are the elementary weights under nn.Linear's names, so code that reads
    a layer's `.weight` (for its dtype or device) keeps working.
    """

    def __init__(
        self,
        linear: nn.Linear,
        n_hypers: int,
        ctx: HyperContext,
        response: Response = Response.FULL,
    ) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.ctx = ctx
        self.response = Response(response)
        self.weight = nn.Parameter(linear.weight.detach().clone())
        n_scales = self.out_features * (2 if linear.bias is not None else 1)
        # V: zero at the start, so the layer starts as the plain one.
        self.hyper_weight = nn.Parameter(
            torch.zeros(n_scales, n_hypers, device=linear.weight.device, dtype=linear.weight.dtype)
        )
        if self.response is Response.SCALE:
            self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
            return
        # The response weights start like a fresh layer: with V = 0 they contribute nothing,
        # and V's first gradients need W_h x ≠ 0.
        fresh = nn.Linear(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        self.weight_h = nn.Parameter(fresh.weight.detach().clone())
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone())
            self.bias_h = nn.Parameter(fresh.bias.detach().clone())
        else:
            self.register_parameter("bias", None)
            self.register_parameter("bias_h", None)

    @property
    def _weight_h(self) -> torch.Tensor:
        return self.weight if self.response is Response.SCALE else self.weight_h

    @property
    def _bias_h(self) -> torch.Tensor | None:
        return self.bias if self.response is Response.SCALE else self.bias_h

    def scales(self, hyper_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(R, n) -> g_w (R, out) and g_b (R, out) or None."""
        g = F.linear(hyper_input.to(self.weight.dtype), self.hyper_weight)  # (R, out or 2·out)
        if self.bias is None:
            return g, None
        g_w, g_b = g.chunk(2, dim=-1)
        return g_w, g_b

    @staticmethod
    def _per_position(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(R, out) scales aligned with x (R, …, in): per example when x's leading dim is the
        batch; one shared row when R = 1; the batch mean when x is laid out otherwise (e.g. a
        mixture's expert sees (1, m, d) tokens gathered from many examples)."""
        if g.shape[0] == 1:
            return g[0]
        if x.dim() >= 2 and x.shape[0] == g.shape[0]:
            return g.view(g.shape[0], *([1] * (x.dim() - 2)), g.shape[1])  # (R, 1…, out)
        return g.mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.ctx.hyper_input
        if u is None:
            return F.linear(x, self.weight, self.bias)
        g_w, g_b = self.scales(u)
        if self.response is Response.SCALE:
            y = F.linear(x, self.weight) * (1.0 + self._per_position(g_w, x))
            if self.bias is not None:
                assert g_b is not None
                y = y + self.bias * (1.0 + self._per_position(g_b, x))
            return y
        both = F.linear(x, torch.cat([self.weight, self.weight_h]))  # (…, 2·out)
        y_e, y_h = both.split(self.out_features, dim=-1)
        y = y_e + self._per_position(g_w, x) * y_h
        if self.bias is not None:
            assert g_b is not None and self.bias_h is not None
            y = y + self.bias + self._per_position(g_b, x) * self.bias_h
        return y

    @torch.no_grad()
    def fold(self, hyper_input: torch.Tensor) -> nn.Linear:
        """The plain nn.Linear equal to this layer at `hyper_input` (n,)."""
        g_w, g_b = self.scales(hyper_input.reshape(1, -1))
        out = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        out.weight.copy_(self.weight + g_w[0].unsqueeze(1) * self._weight_h)
        if self.bias is not None:
            bias_h = self._bias_h
            assert g_b is not None and bias_h is not None
            out.bias.copy_(self.bias + g_b[0] * bias_h)
        return out

    def effective_sq_norms(self, hyper_input: torch.Tensor) -> torch.Tensor:
        """(R,) ‖W_e + diag(g_w) W_h‖²_F for each row of `hyper_input` (R, n), without forming
        the R weight matrices: Σ_i ‖w_e,i‖² + 2 g_i⟨w_e,i, w_h,i⟩ + g_i²‖w_h,i‖²."""
        g_w, _ = self.scales(hyper_input)  # (R, out)
        w_h = self._weight_h
        ee = (self.weight * self.weight).sum(1)  # (out,)
        eh = ee if w_h is self.weight else (self.weight * w_h).sum(1)
        hh = ee if w_h is self.weight else (w_h * w_h).sum(1)
        return ee.sum() + (2.0 * g_w * eh + g_w * g_w * hh).sum(1)


def _replace_modules(root: nn.Module, swap: dict[int, nn.Module]) -> None:
    """Put swap[id(m)] wherever module m sits under `root` (a module shared by two parents is
    replaced in both)."""
    for parent in list(root.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in swap:
                setattr(parent, name, swap[id(child)])


def attach_stn(
    model: nn.Module, n_hypers: int, ctx: HyperContext, response: Response = Response.FULL
) -> list[STNLinear]:
    """Replace every nn.Linear in `model` by an STNLinear with the same elementary weights."""
    swap: dict[int, nn.Module] = {}
    for module in model.modules():
        if type(module) is nn.Linear and id(module) not in swap:
            swap[id(module)] = STNLinear(module, n_hypers, ctx, response)
    _replace_modules(model, swap)
    return [m for m in swap.values() if isinstance(m, STNLinear)]


def fold_stn(model: nn.Module, hyper_input: torch.Tensor) -> int:
    """Replace every STNLinear in `model` by its plain fold at `hyper_input` (n,); how many."""
    swap: dict[int, nn.Module] = {}
    for module in model.modules():
        if isinstance(module, STNLinear) and id(module) not in swap:
            swap[id(module)] = module.fold(hyper_input)
    _replace_modules(model, swap)
    return len(swap)


# ------------------------------------------------------------------------------ regularisers


def _dropout_per_example(out: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Inverted dropout with rate p (R,) per example (R = batch) or one rate (R = 1)."""
    if p.shape[0] == out.shape[0] and p.shape[0] > 1:
        p = p.view(-1, *([1] * (out.dim() - 1)))  # (B, 1…)
    else:
        p = p.mean()
    keep = (1.0 - p).to(out.dtype)
    mask = torch.bernoulli(keep.expand_as(out).contiguous())
    return out * mask / keep


@dataclass
class Regularisers:
    """The regularisers the hyperparameters control, applied to a GraphModel from outside.

    Dropout: a forward hook on every node whose role has a dropout rate. Input noise, the L2
    penalty and the auxiliary-loss weights are applied by the trainer through the methods here.
    """

    model: GraphModel
    hypers: HyperSet
    ctx: HyperContext
    stn_layers: list[STNLinear] = field(default_factory=list)
    _hooks: list[RemovableHandle] = field(default_factory=list)

    def __post_init__(self) -> None:
        for node, module in self.model.named_node_modules():
            spec = REGISTRY.get(self.model.graph.nodes[node]["op"])
            if spec is None or spec.role not in DROPOUT_ROLES:
                continue
            name = dropout_name(spec.role)
            if name in self.hypers:
                self._hooks.append(module.register_forward_hook(self._dropout_hook(name)))

    def _dropout_hook(
        self, name: str
    ) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor | None]:
        j = self.hypers.index[name]

        def hook(module: nn.Module, args: object, out: torch.Tensor) -> torch.Tensor | None:
            values = self.ctx.values
            if not (self.ctx.regularise and module.training) or values is None:
                return None
            return _dropout_per_example(out, values[:, j])

        return hook

    def remove(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def value(self, name: str) -> torch.Tensor | None:
        """(R,) the current values of hyperparameter `name`, or None if it is not tuned."""
        if name not in self.hypers or self.ctx.values is None:
            return None
        return self.ctx.values[:, self.hypers.index[name]]

    def noisy_inputs(self, inputs: torch.Tensor, vocab: int) -> torch.Tensor:
        """Token inputs (B, T) with k_b random positions of row b set to random tokens."""
        k = self.value(INPUT_NOISE)
        if k is None or not self.ctx.regularise or inputs.is_floating_point():
            return inputs
        B, T = inputs.shape
        counts = k.expand(B) if k.shape[0] == 1 else k  # (B,)
        if float(counts.max()) <= 0:
            return inputs
        # The k smallest of T uniform draws pick k distinct positions per row.
        ranks = torch.rand(B, T, device=inputs.device).argsort(1).argsort(1)  # (B, T)
        hit = ranks < counts.to(ranks.dtype).unsqueeze(1)
        noise = torch.randint_like(inputs, vocab)
        return torch.where(hit, noise, inputs)

    def penalty(self, plain: list[nn.Parameter]) -> torch.Tensor | None:
        """½·mean_b(λ_b·‖W(ũ_b)‖²) over the STN layers' effective weights plus
        ½·mean_b(λ_b)·‖W‖² over the `plain` weight matrices."""
        wd = self.value(WEIGHT_DECAY)
        if wd is None:
            return None
        total = torch.zeros((), device=wd.device)
        u = self.ctx.hyper_input
        for layer in self.stn_layers:
            if u is None:
                sq = (layer.weight * layer.weight).sum().reshape(1)
            else:
                sq = layer.effective_sq_norms(u)  # (R,)
            total = total + (wd.to(sq.dtype) * sq).mean()
        if plain:
            sq_plain = sum((p * p).sum() for p in plain)
            total = total + wd.mean() * sq_plain
        return 0.5 * total

    def aux_total(self, aux: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Σ_k weight_k·aux_k, each weight the batch's tuned value (one draw per batch); a
        kind with no hyperparameter (none known today) gets weight 1."""
        total = None
        for key, loss in aux.items():
            weight = self.value(AUX_WEIGHTS[key][0]) if key in AUX_WEIGHTS else None
            term = loss if weight is None else weight.mean().to(loss.dtype) * loss
            total = term if total is None else total + term
        return total


def plain_decay_params(model: nn.Module) -> list[nn.Parameter]:
    """Weight matrices (dim ≥ 2) outside the STN layers: embeddings, convolutions, ..."""
    inside = {id(p) for m in model.modules() if isinstance(m, STNLinear) for p in m.parameters()}
    return [p for p in model.parameters() if p.dim() >= 2 and id(p) not in inside]


def dropout_roles_of(model: GraphModel) -> set[Role]:
    roles = set()
    for node, _ in model.named_node_modules():
        spec = REGISTRY.get(model.graph.nodes[node]["op"])
        if spec is not None:
            roles.add(spec.role)
    return roles
