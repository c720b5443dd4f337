"""Synthetic tasks that separate architectures, generated from a seed (no files).

All are causal token tasks scored by accuracy at a few positions (the mask): the model reads
tokens (B, T) and emits logits (B, T, n_out) whose argmax at each scored position must equal
the target there. Validation and test sets are generated once from `data_seed` (and stay the
same for every trial); the training stream comes from a separate generator seeded by
(`data_seed`, the `batches` seed).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import torch

from gatesearch.registry import InputKind
from gatesearch.tasks.base import (
    Batch,
    Readout,
    Split,
    Task,
    TaskError,
    check_choice,
    check_float,
    check_int,
    masked_accuracy,
    masked_cross_entropy_sum,
    seed_for,
)


class SyntheticTask(Task):
    """A causal token task whose sequences come from `generate`. Metric: accuracy on the
    scored positions."""

    causal = True
    input_kind = InputKind.TOKENS
    metric_name = "accuracy"
    higher_is_better = True
    readout = Readout.EVERY_POSITION

    data_seed: int
    n_valid: int
    n_test: int

    def _init_sets(self, data_seed: int, n_valid: int, n_test: int) -> None:
        self.data_seed = check_int(self.name, "data_seed", data_seed, 0)
        self.n_valid = check_int(self.name, "n_valid", n_valid, 1)
        self.n_test = check_int(self.name, "n_test", n_test, 1)

    @abstractmethod
    def generate(self, gen: torch.Generator, n: int) -> Batch:
        """`n` fresh sequences drawn with `gen`."""

    def generate_fixed(self, gen: torch.Generator, n: int) -> Batch:
        """The validation and test sequences: by default drawn like the training ones; a task
        scored on a harder or cleaner form than it trains on (MAD's fuzzy recall) overrides."""
        return self.generate(gen, n)

    def _generator(self, *stream: int | str) -> torch.Generator:
        return torch.Generator().manual_seed(seed_for(self.name, self.data_seed, *stream))

    def fixed_set(self, split: Split) -> Batch:
        """The whole validation or test set, generated once per process."""
        cache: dict[Split, Batch] = self.__dict__.setdefault("_cache_sets", {})
        if split not in cache:
            n = self.n_valid if split is Split.VALID else self.n_test
            cache[split] = self.generate_fixed(self._generator(split.value), n)
        return cache[split]

    def batches(self, split: Split, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        if split is Split.TRAIN:
            return self._train_stream(batch_size, 0 if seed is None else seed)
        return self._eval_pass(self.fixed_set(split), batch_size, seed)

    def _train_stream(self, batch_size: int, seed: int) -> Iterator[Batch]:
        gen = self._generator("train", seed)
        while True:
            yield self.generate(gen, batch_size)

    @staticmethod
    def _eval_pass(full: Batch, batch_size: int, seed: int | None) -> Iterator[Batch]:
        n = full.size
        order = (
            torch.arange(n)
            if seed is None
            else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        )
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield Batch(full.inputs[idx], full.targets[idx], full.mask[idx])

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total, count = masked_cross_entropy_sum(outputs, batch)
        return total / max(count, 1)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        return masked_accuracy(outputs, batch)


class MQAR(SyntheticTask):
    """Multi-query associative recall (Arora et al. 2023, Zoology).

    A sequence of `length` tokens opens with `pairs` key–value pairs k₁ v₁ … k_P v_P — keys
    distinct from [1, vocab/2), values distinct from [vocab/2, vocab). Each key is then queried
    once, in random order, at even offsets after the pairs whose gaps follow a power law
    p(gap = j) ∝ j^(alpha − 1), j = 1 … (length − 2P)/2 (small alpha: most queries come soon).
    The target at a query's position is its paired value (the token a model must emit next);
    every other position is masked. The other positions hold uniform random tokens.
    Metric: query accuracy.
    """

    name = "mqar"
    description = "multi-query associative recall (Zoology): recall the value paired with a key"

    def __init__(
        self,
        vocab: int = 256,
        length: int = 64,
        pairs: int = 4,
        alpha: float = 0.1,  # Zoology's power-law exponent for query gaps
        data_seed: int = 0,
        n_valid: int = 1024,
        n_test: int = 1024,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 4)
        self.length = check_int(self.name, "length", length, 4)
        # Keys come from [1, vocab/2) and must be distinct, as must the values.
        self.pairs = check_int(self.name, "pairs", pairs, 1, vocab // 2 - 1)
        if 4 * self.pairs > self.length:
            raise TaskError(f"task {self.name}: length must be at least 4·pairs = {4 * pairs}")
        self.alpha = check_float(self.name, "alpha", alpha, 1e-6, 1.0)
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = self.vocab
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        V, T, P = self.vocab, self.length, self.pairs
        half = V // 2
        keys = torch.argsort(torch.rand(n, half - 1, generator=gen), dim=1)[:, :P] + 1  # (n, P)
        values = torch.argsort(torch.rand(n, V - half, generator=gen), dim=1)[:, :P] + half
        context = torch.stack([keys, values], dim=2).reshape(n, 2 * P)  # (n, 2P)
        slots = (T - 2 * P) // 2
        weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (self.alpha - 1.0)
        gaps = torch.multinomial(weights.expand(n, slots), P, replacement=False, generator=gen)
        query_pos = 2 * P + 2 * gaps  # (n, P)
        inputs = torch.randint(0, V, (n, T), generator=gen)
        inputs[:, : 2 * P] = context
        inputs.scatter_(1, query_pos, keys)
        targets = torch.zeros(n, T, dtype=torch.int64)
        targets.scatter_(1, query_pos, values)
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask.scatter_(1, query_pos, True)
        return Batch(inputs, targets, mask)


class SelectiveCopy(SyntheticTask):
    """Selective copying (Gu & Dao 2023, Mamba §3.1).

    `n_tokens` data tokens are scattered in order among blanks in the first length − n_tokens
    positions, followed by `n_tokens` markers; at the j-th marker the target is the j-th data
    token. Token ids: 0 blank, 1 marker, 2 … vocab+1 data. Metric: accuracy at the markers.
    """

    name = "selective_copy"
    description = "selective copying (Mamba): copy the scattered data tokens in order"

    BLANK, MARKER, FIRST_DATA = 0, 1, 2

    def __init__(
        self,
        vocab: int = 16,
        length: int = 64,
        n_tokens: int = 8,
        data_seed: int = 0,
        n_valid: int = 1024,
        n_test: int = 1024,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 2)
        self.length = check_int(self.name, "length", length, 2)
        self.n_tokens = check_int(self.name, "n_tokens", n_tokens, 1, length // 2)
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = self.vocab + self.FIRST_DATA
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        T, M = self.length, self.n_tokens
        region = T - M
        # M distinct positions of the region, kept in order so the copy order is left to right.
        pos = torch.argsort(torch.rand(n, region, generator=gen), dim=1)[:, :M]
        pos = pos.sort(dim=1).values  # (n, M)
        data = torch.randint(self.FIRST_DATA, self.n_in, (n, M), generator=gen)  # (n, M)
        inputs = torch.full((n, T), self.BLANK, dtype=torch.int64)
        inputs.scatter_(1, pos, data)
        inputs[:, region:] = self.MARKER
        targets = torch.zeros(n, T, dtype=torch.int64)
        targets[:, region:] = data
        mask = torch.zeros(n, T, dtype=torch.bool)
        mask[:, region:] = True
        return Batch(inputs, targets, mask)


class Parity(SyntheticTask):
    """Parity of a bit string: target_t = x₁ ⊕ … ⊕ x_t.

    score="all" scores every prefix (running parity); score="last" only the whole string.
    Metric: accuracy at scored positions.
    """

    name = "parity"
    description = "parity of a bit string (running parity, or the last position only)"

    def __init__(
        self,
        length: int = 32,
        score: str = "all",
        data_seed: int = 0,
        n_valid: int = 1024,
        n_test: int = 1024,
    ) -> None:
        self.length = check_int(self.name, "length", length, 1)
        self.score = check_choice(self.name, "score", score, ("all", "last"))
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = 2
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        bits = torch.randint(0, 2, (n, self.length), generator=gen)
        targets = bits.cumsum(dim=1) % 2
        mask = torch.zeros(n, self.length, dtype=torch.bool)
        if self.score == "all":
            mask[:] = True
        else:
            mask[:, -1] = True
        return Batch(bits, targets, mask)


class FlipFlop(SyntheticTask):
    """Flip-flop language (Liu et al. 2023, "Exposing Attention Glitches").

    Instruction–bit pairs: `w b` writes bit b, `i b` is ignored, `r b` reads — b must be the
    last written bit. The first instruction is a write; later ones are w / r / i with
    probabilities p_write, p_read, 1 − p_write − p_read. At each `r` the target is the bit that
    follows it. Token ids: 0, 1 bits; 2 w; 3 r; 4 i. Metric: accuracy at the reads.
    """

    name = "flip_flop"
    description = "flip-flop language: at each read, recall the last written bit"

    WRITE, READ, IGNORE = 2, 3, 4

    def __init__(
        self,
        length: int = 64,
        p_write: float = 0.1,
        p_read: float = 0.1,
        data_seed: int = 0,
        n_valid: int = 1024,
        n_test: int = 1024,
    ) -> None:
        self.length = check_int(self.name, "length", length, 4)
        if self.length % 2:
            raise TaskError(f"task {self.name}: length must be even (instruction–bit pairs)")
        self.p_write = check_float(self.name, "p_write", p_write, 0.0, 1.0)
        self.p_read = check_float(self.name, "p_read", p_read, 1e-6, 1.0)
        if self.p_write + self.p_read > 1.0:
            raise TaskError(f"task {self.name}: p_write + p_read must be at most 1")
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = 5
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        K = self.length // 2
        u = torch.rand(n, K, generator=gen)
        instr = torch.full((n, K), self.IGNORE, dtype=torch.int64)
        instr[u < self.p_write + self.p_read] = self.READ
        instr[u < self.p_write] = self.WRITE
        instr[:, 0] = self.WRITE
        bits = torch.randint(0, 2, (n, K), generator=gen)
        # Index of the last write at or before each instruction (instruction 0 is a write).
        is_write = instr == self.WRITE
        last = torch.where(is_write, torch.arange(K).expand(n, K), 0).cummax(dim=1).values
        is_read = instr == self.READ
        bits = torch.where(is_read, bits.gather(1, last), bits)
        inputs = torch.stack([instr, bits], dim=2).reshape(n, 2 * K)  # (n, T)
        targets = torch.zeros(n, 2 * K, dtype=torch.int64)
        targets[:, 0::2] = bits
        mask = torch.zeros(n, 2 * K, dtype=torch.bool)
        mask[:, 0::2] = is_read
        return Batch(inputs, targets, mask)


SYNTHETIC: dict[str, Any] = {t.name: t for t in (MQAR, SelectiveCopy, Parity, FlipFlop)}
