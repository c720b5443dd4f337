"""The proxy trainer: a budgeted training run whose hyperparameters tune themselves.

One trial = build the graph's model for the task, train it within the budget, score it:

    warm-up (progress < hyper_warmup): weight steps only, on ũ ~ N(u, softplus(s)²) per example
    then repeat: k weight steps (regularisers on at ũ, ũ detached; Adam on the model's weights)
                 1 hyper step (regularisers off, validation batch, loss = L_val − τ·H(s);
                               Adam on (u, s) only)

The weights' learning rate follows multiplicative hypergradient descent (Baydin et al. 2018):
α ← α·(1 + β·cos(g_t, −Δθ_{t−1})) — it grows while successive steps agree and shrinks when
they oscillate, so no trial needs a learning-rate grid. The fixed-hyperparameter baseline
(`self_tuning=False`) trains the same model for the same budget with the hyperparameters'
defaults, a constant learning rate and no STN layers.

Budgets count weight steps, training tokens (the real positions fed to weight steps, padding
not counted: `Batch.tokens`) or wall-clock seconds of the training loop; scoring after the loop
is not charged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from itertools import count
from pathlib import Path
from typing import Any, Protocol, cast

import networkx as nx
import torch
from torch import nn

from gatesearch.arch.build import (
    aux_losses,
    build_model,
)
from gatesearch.arch.graph import INPUT_OP, arch_hash
from gatesearch.budget import Budget, BudgetClock, parse_budget
from gatesearch.proxy.config import LRSchedule, ProxyConfig
from gatesearch.proxy.hyper import HyperSet, default_hypers
from gatesearch.proxy.lr import Cooldown, HypergradientLR, lr_factor
from gatesearch.proxy.scoring import (
    BestPoint,
    ProxyResult,
    TrialDiverged,
    better_point,
    score_model,
)
from gatesearch.proxy.stint import (
    Stint,
    StintStateError,
    load_optimizer,
    load_state,
    optimizer_state,
    save_state,
)
from gatesearch.proxy.stn import (
    HyperContext,
    HyperState,
    Regularisers,
    STNLinear,
    attach_stn,
    dropout_roles_of,
    fold_stn,
    plain_decay_params,
)
from gatesearch.registry import Context, InputKind
from gatesearch.tasks import (
    Batch,
    Split,
    Task,
    TaskSpec,
    make_task,
    model_inputs,
    run_model,
    split_scores,
)


def _plain(value: Any) -> Any:
    """A config value as JSON reads it back (Enums as their values, mappings as dicts)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _as_task(task: Task | TaskSpec | str) -> Task:
    return task if isinstance(task, Task) else make_task(task)


def _as_budget(budget: Budget | str) -> Budget:
    return budget if isinstance(budget, Budget) else parse_budget(budget)


def _response_input(u: torch.Tensor, state: HyperState, config: ProxyConfig) -> torch.Tensor | None:
    """What the STN layers' V sees for draws u (R, n): ũ itself, or ũ − stopgrad(u) when
    centred (Delta-STN) — zero-mean, so V learns only how the weights respond to a change of
    the hyperparameters, not the mean training direction, and the model at the current u is
    the elementary weights."""
    if not config.self_tuning:
        return None
    return u - state.u.detach() if config.centred else u


def task_context(graph: nx.DiGraph, task: Task) -> Context:
    """The build context of `graph` for `task`: the graph's width, the task's ends."""
    (source,) = (n for n, a in graph.nodes(data=True) if a.get("op") == INPUT_OP)
    params = graph.nodes[source]["params"]
    causal = bool(params.get("causal", task.causal))
    if task.causal and not causal:
        raise ValueError(
            f"task {task.name} is causal but the architecture may look ahead (causal = false)"
        )
    return task.context(int(params["d_model"]), causal=causal)


class _Annealed(Protocol):
    def set_progress(self, frac: float) -> None: ...


def _progress_modules(model: nn.Module) -> list[_Annealed]:
    """Modules that anneal with training progress (dense-to-sparse MoE routers)."""
    return [
        cast(_Annealed, m) for m in model.modules() if callable(getattr(m, "set_progress", None))
    ]


def _valid_batches(task: Task, batch_size: int, seed: int) -> Iterator[Batch]:
    """Validation batches for hyper steps, endlessly: a freshly shuffled pass per epoch."""
    for epoch in count():
        yield from task.batches(Split.VALID, batch_size, seed=seed + epoch)


@dataclass
class _Tally:
    """What the loop counts. The training-loss sums give the training-speed estimates (Ru et
    al. 2021, "TSE"): the mean training loss over all weight steps and over the second half
    of the budget — the area under the learning curve, which ranks by how fast a model
    learns, not where one noisy step ended. Stored for ranking studies; on MQAR and charlm it
    ranked no better than the validation loss."""

    steps: int = 0
    tokens: int = 0
    hyper_steps: int = 0
    last_loss: float | None = None  # none before the first step (JSON has no NaN)
    loss_sum: float = 0.0
    tail_sum: float = 0.0
    tail_steps: int = 0

    def weight_step(self, loss: float, progress: float, tokens: int) -> None:
        self.last_loss = loss
        self.loss_sum += loss
        if progress >= 0.5:
            self.tail_sum += loss
            self.tail_steps += 1
        self.steps += 1
        self.tokens += tokens

    def metrics(self, train_seconds: float) -> dict[str, float | None]:
        return {
            "train_seconds": train_seconds,
            "tokens": float(self.tokens),
            "steps": float(self.steps),
            "hyper_steps": float(self.hyper_steps),
            "train_loss_mean": self.loss_sum / max(1, self.steps),
            "train_loss_tail": (
                self.tail_sum / self.tail_steps if self.tail_steps else self.last_loss
            ),
        }


class _ProxyRun:
    """One proxy trial in progress: the model with its STN layers and regularisers, the two
    optimisers, the hyperparameters' state and what the loop has counted and scored.
    `train_proxy` builds it, then calls `train` and `result`."""

    def __init__(
        self,
        graph: nx.DiGraph,
        task: Task,
        budget: Budget,
        seed: int,
        config: ProxyConfig,
        on_eval: Callable[[dict[str, Any]], None] | None,
        stint: Stint | None = None,
    ) -> None:
        self.task, self.config, self.on_eval = task, config, on_eval
        self.graph, self.seed, self.budget, self.stint = graph, seed, budget, stint
        self.device = torch.device(
            config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        torch.manual_seed(seed)
        self.ctx = task_context(graph, task)
        self.model = build_model(graph, self.ctx).to(self.device)
        self.train_stream = task.batches(Split.TRAIN, config.batch_size, seed=seed)
        self.first = next(self.train_stream).to(self.device)
        self.pending: Batch | None = self.first  # the batch the next weight step trains on
        self.param0 = next(self.model.parameters())
        self._attach_hypers(self.first)
        self.valid = _valid_batches(task, config.batch_size, seed)
        self.trajectory: list[dict[str, Any]] = []
        self.tally = _Tally()
        self.applied_lr = 0.0  # what the last weight step used: hd.lr × warm-up × schedule
        self.progress = 0.0  # of the budget, what the annealing modules were last set to
        self.curve: list[dict[str, Any]] = []
        self.best: BestPoint | None = None
        self.next_point = 1  # the next validation point, counted from 1 to config.eval_points
        self.stale = 0  # validation points since the best one
        self.stopped_early = False
        self.cooldown: Cooldown | None = None  # a plateau schedule's decay, once begun
        trained = 0.0
        if stint is not None and stint.resume is not None:
            trained = self._resume(stint.resume)
        # Started here: setting up is not charged.
        self.clock = BudgetClock(budget, stint.stop if stint else None, trained)

    def _attach_hypers(self, first: Batch) -> None:
        """The tuned hyperparameters, the STN layers and regularisers that apply them, and the
        optimisers of the weights and of the hyperparameters."""
        model, config = self.model, self.config
        # Which auxiliary losses the model emits decides which weights are tuned.
        model.train()
        with torch.no_grad():
            run_model(model, model_inputs(first, self.param0), first)
        aux_keys = set(aux_losses(model))
        token_inputs = InputKind(self.task.input_kind) is InputKind.TOKENS
        self.hypers = HyperSet(default_hypers(dropout_roles_of(model), aux_keys, token_inputs))
        self.state = HyperState(self.hypers, config.init_spread, config.start).to(self.device)
        self.hctx = HyperContext()
        stn_layers = (
            attach_stn(model, len(self.hypers), self.hctx, config.response)
            if config.self_tuning
            else []
        )
        self.regs = Regularisers(model, self.hypers, self.hctx, stn_layers)
        self.plain = plain_decay_params(model)
        self.weights = list(model.parameters())
        self.opt = torch.optim.Adam(self.weights, lr=config.lr)
        self.hd = HypergradientLR(self.weights, config)
        self.hyper_opt = torch.optim.Adam(self.state.parameters(), lr=config.hyper_lr)
        self.progress_modules = _progress_modules(model)

    def record(self) -> None:
        """Append the current hyperparameters and learning rate to the trajectory."""
        tally, state = self.tally, self.state
        self.trajectory.append(
            {
                "step": tally.steps,
                "tokens": tally.tokens,
                "seconds": round(self.clock.elapsed(), 4),
                "lr": self.hd.lr,
                "lr_applied": self.applied_lr,
                "train_loss": tally.last_loss,
                "hypers": state.current(),
                "spread": dict(zip(self.hypers.names, state.spread.detach().cpu().tolist())),
            }
        )

    def train(self) -> float:
        """Train within the budget, validating and recording as configured; the seconds of
        training (validation not charged). Raises TrialDiverged on a non-finite loss."""
        config, tally, clock = self.config, self.tally, self.clock
        batch = self.pending
        try:
            if not self.trajectory or self.trajectory[-1]["step"] != tally.steps:
                self.record()
            while not clock.done(tally.steps, tally.tokens):
                self.progress = progress = clock.progress(tally.steps, tally.tokens)
                if self._cooled(progress):
                    break  # (a stint continuing a run whose decay has ended trains no more)
                if (
                    config.lr_schedule is LRSchedule.PLATEAU
                    and self.cooldown is None
                    and progress >= 1.0 - config.cooldown
                ):
                    self._begin_cooldown(progress)  # the budget's end is near: decay anyway
                for m in self.progress_modules:
                    m.set_progress(progress)
                if batch is None:
                    batch = next(self.train_stream).to(self.device)
                self.weight_step(batch, progress)
                batch = None
                if self._hyper_step_due(progress):
                    self.hyper_step()
                if tally.steps % config.trajectory_every == 0:
                    self.record()
                if self._point_due() and self.validate():
                    break
                if self._cooled(clock.progress(tally.steps, tally.tokens)):
                    break
            self._close_stint()
            if self.stint is not None and self.stint.save is not None:
                save_state(self.stint.save, self.state_tensors(), self.state_meta())
            return self._restore_best()
        finally:
            self.regs.remove()
            self.hctx.hyper_input, self.hctx.values, self.hctx.regularise = None, None, False

    def weight_step(self, batch: Batch, progress: float) -> None:
        """Regularisers on at ũ (detached); the model's weights updated."""
        model, config, state, hctx = self.model, self.config, self.state, self.hctx
        tally = self.tally
        model.train()
        with torch.no_grad():
            if config.self_tuning:
                u_tilde = state.sample(batch.size)  # (B, n)
            else:
                u_tilde = state.u.unsqueeze(0)  # (1, n): the defaults for every example
            hctx.hyper_input = _response_input(u_tilde, state, config)
            hctx.values = self.hypers.values(u_tilde)
            hctx.regularise = True
        x = self.regs.noisy_inputs(model_inputs(batch, self.param0), self.task.n_in)
        loss = self.task.loss(run_model(model, x, batch), batch)
        if not torch.isfinite(loss):
            raise TrialDiverged(tally.steps, "the training loss", float(loss.detach()))
        total = loss
        aux = self.regs.aux_total(aux_losses(model))
        if aux is not None:
            total = total + aux
        decay = self.regs.penalty(self.plain)
        if decay is not None:
            total = total + decay
        if not torch.isfinite(total):
            raise TrialDiverged(tally.steps, "the regularised training loss", float(total.detach()))
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, config.grad_clip)
        self.hd.before_step()
        self.applied_lr = self.hd.lr * lr_factor(tally.steps, progress, config, self.cooldown)
        for group in self.opt.param_groups:
            group["lr"] = self.applied_lr
        self.opt.step()
        self.hd.after_step()
        tally.weight_step(float(loss.detach()), progress, batch.tokens)

    def _hyper_step_due(self, progress: float) -> bool:
        config, tally = self.config, self.tally
        return (
            config.self_tuning
            and progress >= config.hyper_warmup
            and tally.steps % config.train_per_hyper == 0
            and not self.clock.done(tally.steps, tally.tokens)
        )

    def hyper_step(self) -> None:
        """The validation loss through the STN layers; (u, s) updated, the weights not."""
        model, state, hctx = self.model, self.state, self.hctx
        vb = next(self.valid).to(self.device)
        model.eval()
        hctx.regularise = False
        hctx.values = None
        # Attached: gradients reach (u, s), through the scale factors only.
        hctx.hyper_input = _response_input(state.sample(vb.size), state, self.config)
        v_loss = self.task.loss(run_model(model, model_inputs(vb, self.param0), vb), vb)
        if not torch.isfinite(v_loss):
            raise TrialDiverged(self.tally.steps, "the validation loss", float(v_loss.detach()))
        objective = v_loss - self.config.entropy_weight * state.entropy()
        # Only (u, s) are differentiated; the model's gradients stay untouched.
        grads = torch.autograd.grad(objective, [state.u, state.s])
        self.hyper_opt.zero_grad(set_to_none=True)
        state.u.grad, state.s.grad = grads
        self.hyper_opt.step()
        self.tally.hyper_steps += 1

    def _point_due(self) -> bool:
        """Whether the budget has reached the next validation point (config.eval_points)."""
        if not self.config.eval_points:
            return False
        reached = self.clock.progress(self.tally.steps, self.tally.tokens) * self.config.eval_points
        if reached < self.next_point:
            return False
        self.next_point = math.floor(reached) + 1
        return True

    def validate(self) -> bool:
        """Score the validation split at the current hyperparameters; record the point, keep
        the best one's weights when asked; True when patience has run out."""
        config, tally, clock = self.config, self.tally, self.clock
        state, hctx = self.state, self.hctx
        seconds = round(clock.elapsed(), 4)  # before the scoring, which is not charged
        done = clock.progress(tally.steps, tally.tokens)
        with clock.paused():
            hctx.values, hctx.regularise = None, False
            hctx.hyper_input = _response_input(state.u.detach().unsqueeze(0), state, config)
            loss, metric = split_scores(self.model, self.task, Split.VALID, config.eval_batch_size)
            point: dict[str, Any] = {
                "step": tally.steps,
                "tokens": tally.tokens,
                "seconds": seconds,
                "valid_loss": loss,
                "valid_metric": metric,
            }
            if config.self_tuning:  # what the point's weights were trained at
                point["hypers"] = state.current()
            self.curve.append(point)
            best = self._keep_if_best(point)
        if self.on_eval is not None:
            self.on_eval({"point": point, "best": best.point, "progress": done})
        stalled = bool(config.patience) and self.stale >= config.patience
        if config.lr_schedule is LRSchedule.PLATEAU:
            # A stall starts the decay instead of ending the training; the decay runs to its
            # end (it is where the gains of a decay come, after the stall that started it).
            if stalled and self.cooldown is None:
                self._begin_cooldown(done)
            return False
        return stalled

    def _cooled(self, progress: float) -> bool:
        """Whether a plateau schedule's decay has begun and ended by `progress`."""
        return self.cooldown is not None and self.cooldown.over(progress)

    def _begin_cooldown(self, progress: float) -> None:
        """Start a plateau schedule's decay at `progress`, from the best point's weights
        (under keep_best): past a stall the newest weights are the more overfitted ones."""
        self.cooldown = Cooldown.begin(progress, self.config)
        best = self.best
        if self.config.keep_best and best is not None and best.weights is not None:
            with torch.no_grad():
                self.model.load_state_dict(best.weights)
                self.state.u.copy_(best.u)
                self.state.s.copy_(best.s)
        self.stale = 0

    def _keep_if_best(self, point: dict[str, Any]) -> BestPoint:
        """Make `point` the best one when it beats it (with the weights under keep_best);
        the best point after it."""
        if self.best is None or better_point(point, self.best.point, self.task.higher_is_better):
            snapshot = None
            if self.config.keep_best:
                snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = BestPoint(
                point,
                snapshot,
                self.state.u.detach().clone(),
                self.state.s.detach().clone(),
                self.hd.lr,
                self.progress,
            )
            self.stale = 0
        else:
            self.stale += 1
        return self.best

    def _close_stint(self) -> None:
        """After the loop: the last trajectory entry and validation point."""
        config, tally, clock = self.config, self.tally, self.clock
        if self.trajectory[-1]["step"] != tally.steps:
            self.record()
        self.stopped_early = not clock.done(tally.steps, tally.tokens)
        # A seconds budget can run out between the last point's check and the loop's: the
        # end of training is always a point, and so is the end of a plateau schedule's decay
        # (where its gains are).
        ended = not self.stopped_early or self._cooled(clock.progress(tally.steps, tally.tokens))
        if (
            config.eval_points
            and ended
            and (not self.curve or self.curve[-1]["step"] != tally.steps)
        ):
            self.validate()

    def _restore_best(self) -> float:
        """The best point's weights back under keep_best; the seconds of training."""
        config, clock = self.config, self.clock
        # The model is scored, retrained and exported at the end of its schedule (or of this
        # stint), or at the best point's place in it (a router's temperature anneals with
        # progress).
        end = 1.0 if self.stint is None else clock.progress(self.tally.steps, self.tally.tokens)
        best = self.best
        if config.keep_best and best is not None and best.weights is not None:
            with torch.no_grad():
                self.model.load_state_dict(best.weights)
                self.state.u.copy_(best.u)
                self.state.s.copy_(best.s)
            self.hd.lr = best.lr
            end = best.progress
        for m in self.progress_modules:
            m.set_progress(end)
        return clock.elapsed()

    def _identity(self) -> dict[str, Any]:
        """What a saved state must have been trained as to be continued by this run."""
        return {
            "arch_hash": arch_hash(self.graph),
            "seed": self.seed,
            "budget": str(self.budget),
            "task": self.task.spec.to_dict(),
            # All that shapes training; where it runs may change between stints.
            "config": {
                f.name: _plain(getattr(self.config, f.name))
                for f in fields(self.config)
                if f.name != "device"
            },
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the next stint needs (see proxy/stint.py)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"hyper.{k}": v for k, v in self.state.state_dict().items()}
        tensors |= optimizer_state(self.opt, "opt")[0]
        tensors |= optimizer_state(self.hyper_opt, "hyper_opt")[0]
        tensors |= self.hd.state_tensors()
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        best = self.best
        if best is not None:
            tensors |= {"best.u": best.u, "best.s": best.s}
            tensors |= {f"best.model.{k}": v for k, v in (best.weights or {}).items()}
        return tensors

    def state_meta(self) -> dict[str, Any]:
        """Everything else the next stint needs, as JSON."""
        best = self.best
        return {
            "identity": self._identity(),
            "tally": asdict(self.tally),
            "seconds": self.clock.elapsed(),
            "lr": self.hd.lr,
            "applied_lr": self.applied_lr,
            "progress": self.progress,
            "next_point": self.next_point,
            "stale": self.stale,
            "cooldown": None if self.cooldown is None else asdict(self.cooldown),
            "trajectory": self.trajectory,
            "curve": self.curve,
            "opt_groups": optimizer_state(self.opt, "opt")[1],
            "hyper_opt_groups": optimizer_state(self.hyper_opt, "hyper_opt")[1],
            "best": None
            if best is None
            else {
                "point": best.point,
                "lr": best.lr,
                "progress": best.progress,
                "weights": best.weights is not None,
            },
        }

    def _resume(self, folder: Path) -> float:
        """Continue from the state saved in `folder`: the model, optimisers, hyperparameters,
        counts and random generators as they were, the data streams at the batch they
        reached; the seconds trained so far. StintStateError when it is another run's."""
        tensors, meta = load_state(folder)
        if meta.get("identity") != self._identity():
            raise StintStateError(f"{folder}: saved by another trial or another setting")

        def part(prefix: str) -> dict[str, torch.Tensor]:
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            self.model.load_state_dict(part("model."))
            self.state.load_state_dict(part("hyper."))
        except RuntimeError as exc:  # missing, unexpected or misshapen tensors
            raise StintStateError(f"{folder}: {str(exc).splitlines()[0]}") from None
        load_optimizer(self.opt, "opt", tensors, meta["opt_groups"])
        load_optimizer(self.hyper_opt, "hyper_opt", tensors, meta["hyper_opt_groups"])
        self.hd.load_state(float(meta["lr"]), tensors)
        self.tally = _Tally(**meta["tally"])
        self.applied_lr, self.progress = float(meta["applied_lr"]), float(meta["progress"])
        self.next_point, self.stale = int(meta["next_point"]), int(meta["stale"])
        if meta.get("cooldown") is not None:
            self.cooldown = Cooldown(**meta["cooldown"])
        self.trajectory, self.curve = meta["trajectory"], meta["curve"]
        if meta["best"] is not None:
            b = meta["best"]
            weights = part("best.model.") if b["weights"] else None
            self.best = BestPoint(
                b["point"], weights, tensors["best.u"], tensors["best.s"], b["lr"], b["progress"]
            )
        # The streams are seeded: draw again what earlier stints used. One training batch
        # per weight step (the first was drawn above), one validation batch per hyper step.
        if self.tally.steps:
            self.pending = None
            for _ in range(self.tally.steps - 1):
                next(self.train_stream)
        for _ in range(self.tally.hyper_steps):
            next(self.valid)
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        return float(meta["seconds"])

    def result(self, train_seconds: float) -> ProxyResult:
        """Back to a plain model at the final hyperparameters, scored."""
        model, state = self.model, self.state
        with torch.no_grad():
            at_final = _response_input(state.u.detach().unsqueeze(0), state, self.config)  # (1, n)
            if at_final is not None:
                fold_stn(model, at_final[0])
        model.eval()
        assert not any(isinstance(m, STNLinear) for m in model.modules())
        final = {**state.current(), "lr": self.hd.lr}
        run = self.tally.metrics(train_seconds)
        if self.best is not None:
            run["best_step"] = float(self.best.point["step"])
            run["stopped_early"] = self.stopped_early
        if self.config.lr_schedule is LRSchedule.PLATEAU:  # where the decay began, of the budget
            run["cooldown_start"] = None if self.cooldown is None else self.cooldown.start
        result = score_model(model, self.task, self.ctx, self.config, run, final, self.trajectory)
        result.curve = self.curve
        return result


def train_proxy(
    graph: nx.DiGraph,
    task: Task | TaskSpec | str,
    budget: Budget | str,
    seed: int,
    config: ProxyConfig | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    stint: Stint | None = None,
) -> ProxyResult:
    """Train `graph` on `task` within `budget` and score it (see the module docstring).

    With `config.eval_points`, `on_eval` (if given) is called at each validation point with
    {"point", "best" (the best point so far), "progress" (of the budget, 0..1)}.
    Raises TrialDiverged on a non-finite loss.
    """
    config = config or ProxyConfig()
    run = _ProxyRun(graph, _as_task(task), _as_budget(budget), seed, config, on_eval, stint)
    return run.result(run.train())


def proxy_evaluate(
    graph: nx.DiGraph,
    task: Task | TaskSpec | str,
    budget: Budget | str,
    seed: int,
    config: ProxyConfig | None = None,
    stint: Stint | None = None,
) -> dict[str, Any]:
    """The campaign's evaluator: `train_proxy(...).to_dict()` — metrics (floats, plus
    `metric_name`, `higher_is_better`, `self_tuning` and, with pruning gates,
    `pruned_arch_hash`), `hyperparameters` and `trajectory`. JSON-able."""
    return train_proxy(graph, task, budget, seed, config, stint=stint).to_dict()


def fixed_evaluate(
    graph: nx.DiGraph,
    task: Task | TaskSpec | str,
    budget: Budget | str,
    seed: int,
    config: ProxyConfig | None = None,
    stint: Stint | None = None,
) -> dict[str, Any]:
    """The fixed-hyperparameter baseline: same budget, default hyperparameters, no STN."""
    fixed = replace(config or ProxyConfig(), self_tuning=False)
    return train_proxy(graph, task, budget, seed, fixed, stint=stint).to_dict()
