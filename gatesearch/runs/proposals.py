"""A slot's proposal: the strategy is asked, and asked again (with a fresh seed) when its
proposal is over `--max-params` (turned down, untrained) or repeats an architecture already
evaluated (set aside), so neither takes a trial of the `--trials` count. Both are counted;
an Optuna sampler's proposal is already a trial of its study, so that one is failed with the
reason, outside every slot and without its choices (nothing replays it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatesearch.arch.space import Architecture
from gatesearch.evaluate import Evaluator
from gatesearch.runs.inflight import Stats
from gatesearch.runs.outcomes import rejected_reason, repeated_reason
from gatesearch.runs.request import CampaignError, trial_seed
from gatesearch.runs.store import RunStore
from gatesearch.strategies import Observation, Proposal, Strategy

# A proposal over --max-params is turned down and the strategy is asked again, with a fresh
# seed, up to this many times in a row before the campaign gives up on the limit.
MAX_REJECTS = 2000
REJECTED_SLOT = -1
# A proposal of an architecture already evaluated is set aside and the strategy asked again,
# up to this many times for one slot; then the repeat is taken as a duplicate trial (a space,
# or a parameter limit, with few architectures left).
MAX_REPEATS = 20
REPEATED_SLOT = -2
_REJECT_STREAM = 1000  # seed stream of the re-asks (0: the proposal, 1: the training)


class Proposer:
    """Asks `strategy` for each slot's architecture for the campaign on `store`.
    `evaluated(hash)` says whether an architecture has a result or is in flight, and the
    number of the trial that has it (None while in flight); `next_seq()` numbers stored
    results."""

    def __init__(
        self,
        store: RunStore,
        strategy: Strategy,
        evaluator: Evaluator,
        stats: Stats,
        evaluated: Callable[[str], tuple[bool, int | None]],
        next_seq: Callable[[], int],
    ) -> None:
        self.store, self.strategy, self.evaluator = store, strategy, evaluator
        self.config = store.config
        self.max_params = store.config.max_params
        self.stats = stats  # its rejected and repeated counts go on from the stored ones
        self.evaluated, self.next_seq = evaluated, next_seq
        self.rejected_untracked = self.rejected_saved = store.rejected_untracked
        self.repeated_untracked = self.repeated_saved = store.repeated_untracked

    def propose(
        self, slot: int, fixed: dict[str, Any] | None
    ) -> tuple[Proposal, Architecture, int]:
        """The slot's proposal, its architecture and seed; `fixed` choices (a requeued or
        seeded trial) run as given. CampaignError when MAX_REJECTS proposals in a row are
        over the limit."""
        seed = trial_seed(self.config.seed, slot)
        study = self.store.study
        repeats = 0
        for attempt in range(MAX_REJECTS + 1):
            if fixed is not None:
                proposal = self.strategy.ask_fixed(slot, seed, study, fixed)
            else:
                proposal = self.strategy.ask(slot, seed, study)
            arch = Architecture.from_derivation(proposal.derivation)
            # Requeued and seeded trials run as given: the limit applies to proposals.
            over = None if fixed is not None else self._over_limit(arch)
            known, number = self.evaluated(arch.hash)
            if over is not None:
                self._reject(arch, proposal, seed, over)
            elif fixed is None and repeats < MAX_REPEATS and known:
                repeats += 1
                self._repeat(arch, proposal, seed, number)
            else:
                return proposal, arch, seed
            seed = trial_seed(self.config.seed, slot, _REJECT_STREAM + attempt)
        assert self.max_params is not None  # only the limit turns proposals down for good
        raise CampaignError(
            f"{MAX_REJECTS} proposals in a row are over --max-params {self.max_params:,}: "
            "raise the limit or narrow the space"
        )

    def _over_limit(self, arch: Architecture) -> int | None:
        """The model's parameter count when it exceeds --max-params, else None."""
        if self.max_params is None or self.evaluated(arch.hash)[0]:
            return None
        n = self.evaluator.count_params(arch.graph)
        return n if n > self.max_params else None

    def _reject(self, arch: Architecture, proposal: Proposal, seed: int, params: int) -> None:
        """Turn down a proposal over the limit: untrained, outside every slot; the strategy
        learns of it. A campaign may turn down several proposals per trial (tens of thousands
        in a long one), so it keeps only a count of them, not a trial each: every trial lives
        in the driver's memory (Optuna's study) and in the journal."""
        if proposal.trial is not None:
            trial_id, _ = self.store.start_trial(
                REJECTED_SLOT, seed, arch.hash, None, proposal.trial
            )
            assert self.max_params is not None  # only a limit turns a proposal down
            # Infeasible by how far it is over: TPE ranks such trials after every scored one
            # (a pruned trial without values could land among its "good" ones while few
            # trials are complete), the nearest-to-feasible first.
            proposal.trial.set_constraint("params_over_limit", float(params - self.max_params))
            reason = rejected_reason(params, self.max_params)
            self.store.reject_trial(trial_id, reason, self.next_seq())
        else:
            self.rejected_untracked += 1
        choices = dict(proposal.derivation.choices)
        self.strategy.tell(Observation(REJECTED_SLOT, choices, None, arch.derivation))
        self.stats.rejected += 1

    def _repeat(
        self, arch: Architecture, proposal: Proposal, seed: int, original: int | None
    ) -> None:
        """Set aside a proposal of an architecture already evaluated: counted, no trial."""
        if proposal.trial is not None:
            trial_id, _ = self.store.start_trial(
                REPEATED_SLOT, seed, arch.hash, None, proposal.trial
            )
            self.store.fail_trial(trial_id, repeated_reason(original), self.next_seq(), None)
        else:
            self.repeated_untracked += 1
        self.stats.repeated += 1

    def save_counts(self) -> None:
        """Store the counts of turned-down and repeated proposals, when they changed: once
        per trial launched, not once per proposal (a driver killed in a run of turn-downs
        loses that run's count, which is all it says)."""
        if self.rejected_untracked != self.rejected_saved:
            self.store.set_rejected_untracked(self.rejected_untracked)
            self.rejected_saved = self.rejected_untracked
        if self.repeated_untracked != self.repeated_saved:
            self.store.set_repeated_untracked(self.repeated_untracked)
            self.repeated_saved = self.repeated_untracked
