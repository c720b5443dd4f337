"""The proxy's learning rate: multiplicative hypergradient descent on it (Baydin et al. 2018)
times the linear warm-up and, for full-budget training, a cosine or a plateau-started decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gatesearch.proxy.config import LRSchedule, ProxyConfig


class HypergradientLR:
    """α ← clamp(α·(1 + β·cos(g_t, u_{t−1})), lo, hi), u_{t−1} = −Δθ_{t−1} the last update's
    direction (multiplicative hypergradient descent, Baydin et al. 2018, normalised form)."""

    def __init__(self, params: list[nn.Parameter], config: ProxyConfig) -> None:
        self.params = params
        self.lr = float((config.start or {}).get("lr", config.lr))
        self.beta = config.hd_beta if config.self_tuning else 0.0
        self.lo, self.hi = config.lr_min, config.lr_max
        self._before: list[torch.Tensor] | None = None
        self._delta: list[torch.Tensor] | None = None

    def before_step(self) -> None:
        if self.beta == 0.0:
            return
        if self._delta is not None:
            pairs = [
                (p.grad.detach().float(), d)
                for p, d in zip(self.params, self._delta)
                if p.grad is not None
            ]
            if pairs:
                # One device-to-host copy per step: (g·Δ, g·g, Δ·Δ) summed over tensors.
                sums = torch.stack(
                    [torch.stack([(g * d).sum(), (g * g).sum(), (d * d).sum()]) for g, d in pairs]
                ).sum(0)
                dot, gg, dd = sums.tolist()
                denom = (gg * dd) ** 0.5
                if denom > 0.0:
                    # Δθ = −α·u, so cos(g, u) = −cos(g, Δθ): a positive value means the new
                    # gradient still points where the last step went — the step was too short.
                    cos = -dot / denom
                    self.lr = min(self.hi, max(self.lo, self.lr * (1.0 + self.beta * cos)))
        self._before = [p.detach().float().clone() for p in self.params]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The last update's direction (what the next step's cosine needs), by index."""
        return {f"hd.delta.{i}": d for i, d in enumerate(self._delta or [])}

    def load_state(self, lr: float, tensors: dict[str, torch.Tensor]) -> None:
        self.lr = lr
        self._delta = None
        if "hd.delta.0" in tensors:  # none before the first step, or without hypergradients
            self._delta = [tensors[f"hd.delta.{i}"].to(p.device) for i, p in enumerate(self.params)]

    def after_step(self) -> None:
        if self._before is None:
            return
        self._delta = [p.detach().float() - b for p, b in zip(self.params, self._before)]
        self._before = None


def peak_lr(hypers: dict[str, Any], trajectory: Any) -> float | None:
    """The highest learning rate among a trial's final `lr` and its trajectory's records;
    None when neither holds a usable one (the trainer's default then applies)."""
    points = [hypers, *(trajectory if isinstance(trajectory, list) else [])]
    rates = [
        float(p["lr"])
        for p in points
        if isinstance(p, dict)
        and isinstance(p.get("lr"), int | float)
        and not isinstance(p.get("lr"), bool)
        and math.isfinite(p["lr"])
        and p["lr"] > 0
    ]
    return max(rates) if rates else None


def lr_factor(
    step: int, progress: float, config: ProxyConfig, cooldown: Cooldown | None = None
) -> float:
    """What multiplies the learning rate at weight step `step` (counted from 0), `progress`
    of the budget in: the linear warm-up and, under a cosine schedule, half a cosine from 1
    down to `config.lr_final`; under a plateau schedule, 1 until `cooldown` has begun, then a
    line down to `config.lr_final` at its end."""
    warm = min(1.0, (step + 1) / max(1, config.lr_warmup_steps))
    if config.lr_schedule is LRSchedule.COSINE:
        warm *= config.lr_final + (1.0 - config.lr_final) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )
    elif config.lr_schedule is LRSchedule.PLATEAU and cooldown is not None:
        warm *= 1.0 - (1.0 - config.lr_final) * cooldown.fraction_done(progress)
    return warm


@dataclass(frozen=True)
class Cooldown:
    """A plateau schedule's decay: from `start` to `end`, in fractions of the budget."""

    start: float
    end: float

    @classmethod
    def begin(cls, progress: float, config: ProxyConfig) -> Cooldown:
        """The decay that begins at `progress`: `cooldown`/(1 − `cooldown`) of the training
        done so far long — the decay's share of the whole — or the rest of the budget."""
        length = progress * config.cooldown / (1.0 - config.cooldown)
        return cls(progress, min(1.0, progress + length))

    def fraction_done(self, progress: float) -> float:
        if self.end <= self.start:
            return 1.0
        return min(1.0, max(0.0, (progress - self.start) / (self.end - self.start)))

    def over(self, progress: float) -> bool:
        return progress >= self.end
