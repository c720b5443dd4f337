"""MAD's synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"), as gatesearch synthetic tasks.

Defaults are MAD's baseline settings; docs/tasks.md lists MAD's difficulty settings and every
way these tasks differ from MAD's generators. All recall tasks are MAD's multi-query form (the
one its benchmark configs use): every value whose key already appeared in the sequence is
scored. Token positions follow MAD's autoregressive shift, so the target at position t is the
token at t + 1 of the generated sequence.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from gatesearch.tasks.base import (
    Batch,
    Readout,
    TaskError,
    check_float,
    check_int,
)
from gatesearch.tasks.synthetic import SyntheticTask

MAD_TEST_EXAMPLES = 1280  # MAD's num_test_examples; also our validation set's size


def _python_rng(gen: torch.Generator) -> random.Random:
    """A Python generator seeded from `gen`: the fuzzy-recall sequences are built motif by
    motif, where a torch call per draw would cost more than the draw."""
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))


class InContextRecall(SyntheticTask):
    """MAD's in-context recall (multi-query).

    A sequence is `length` // 2 slots of two tokens. A slot is a key–value pair — key uniform
    from [0, K), its value from [K, 2K) by a map drawn afresh for each sequence (two keys may
    share a value), K = (vocab − noise_vocab) // 2 — or, with probability `frac_noise`, two
    noise tokens uniform from [vocab − noise_vocab, vocab). The last slot repeats a key shown
    earlier. The model reads the first length − 1 tokens; at each key that appeared before in
    a pair, the target is its value (the next token). Metric: accuracy at those keys.
    """

    name = "in_context_recall"
    description = "in-context recall (MAD): recall the value of each key seen before"

    def __init__(
        self,
        vocab: int = 16,
        length: int = 128,
        noise_vocab: int = 0,
        frac_noise: float = 0.0,
        data_seed: int = 0,
        n_valid: int = MAD_TEST_EXAMPLES,
        n_test: int = MAD_TEST_EXAMPLES,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 2)
        self.length = check_int(self.name, "length", length, 4)
        if self.length % 2:
            raise TaskError(f"task {self.name}: length must be even (key–value slots)")
        # At least one key and one value must remain after the noise tokens.
        self.noise_vocab = check_int(self.name, "noise_vocab", noise_vocab, 0, vocab - 2)
        self.frac_noise = check_float(self.name, "frac_noise", frac_noise, 0.0, 1.0)
        if self.frac_noise >= 1.0:
            raise TaskError(f"task {self.name}: param frac_noise must be below 1, got 1.0")
        if self.frac_noise > 0 and self.noise_vocab == 0:
            raise TaskError(f"task {self.name}: frac_noise > 0 needs noise_vocab >= 1")
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = self.vocab
        self.seq_len = self.length - 1

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        P = self.length // 2
        clean = self.vocab - self.noise_vocab
        K = clean // 2
        keys = torch.randint(0, K, (n, P), generator=gen)  # (n, P)
        kv_map = torch.randint(K, clean, (n, K), generator=gen)  # (n, K): value of each key
        noise = torch.rand(n, P, generator=gen) < self.frac_noise
        # One pair before the last slot is never noise, so the last slot has a key to repeat.
        noise[torch.arange(n), torch.randint(0, P - 1, (n,), generator=gen)] = False
        noise[:, -1] = False
        # Which slots repeat a key shown in an earlier pair; a loop over slots keeps memory
        # at (n, K) where a pairwise comparison would take (n, P, P).
        seen = torch.zeros(n, K, dtype=torch.bool)
        repeat = torch.zeros(n, P, dtype=torch.bool)
        for i in range(P - 1):
            k = keys[:, i : i + 1]  # (n, 1)
            was_seen = seen.gather(1, k)
            repeat[:, i : i + 1] = was_seen & ~noise[:, i : i + 1]
            seen.scatter_(1, k, was_seen | ~noise[:, i : i + 1])
        keys[:, -1] = torch.multinomial(seen.float(), 1, generator=gen)[:, 0]
        repeat[:, -1] = True
        pairs = torch.stack([keys, kv_map.gather(1, keys)], dim=2)  # (n, P, 2)
        if self.noise_vocab:
            noise_tokens = torch.randint(clean, self.vocab, (n, P, 2), generator=gen)
            pairs = torch.where(noise.unsqueeze(2), noise_tokens, pairs)
        seq = pairs.reshape(n, 2 * P)  # (n, T + 1)
        mask = torch.zeros(n, 2 * P - 1, dtype=torch.bool)
        mask[:, 0::2] = repeat  # the keys: their next token is the value
        return Batch(seq[:, :-1].contiguous(), seq[:, 1:].contiguous(), mask)


class NoisyRecall(InContextRecall):
    """MAD's noisy in-context recall: in-context recall with noise slots between the pairs
    (defaults: 16 noise tokens, a fifth of the slots)."""

    name = "noisy_recall"
    description = "noisy in-context recall (MAD): recall, with noise tokens between pairs"

    def __init__(
        self,
        vocab: int = 32,
        length: int = 128,
        noise_vocab: int = 16,
        frac_noise: float = 0.2,
        data_seed: int = 0,
        n_valid: int = MAD_TEST_EXAMPLES,
        n_test: int = MAD_TEST_EXAMPLES,
    ) -> None:
        super().__init__(vocab, length, noise_vocab, frac_noise, data_seed, n_valid, n_test)


class FuzzyRecall(SyntheticTask):
    """MAD's fuzzy in-context recall (multi-query): keys and values are several tokens.

    Token ids: keys from [0, K), values from [K, vocab − 1), K = (vocab − 1) // 2; vocab − 1
    pads. A key is 1 … `key_size` distinct key tokens, a value 1 … `value_size` distinct value
    tokens; a sequence's pairs map each key to one value. A probe pair is placed at a random
    point of the body and repeated at the end; the sequence is left-padded to length + 1 and
    the model reads the first `length` tokens. Every token of a value whose key appeared
    before is scored (the target at the token before it). Validation and test keys are all
    `key_size` tokens long (MAD prompts at the longest key), so a key's end is never ambiguous.
    """

    name = "fuzzy_recall"
    description = "fuzzy in-context recall (MAD): recall, keys and values several tokens long"

    def __init__(
        self,
        vocab: int = 16,
        length: int = 128,
        key_size: int = 3,
        value_size: int = 3,
        data_seed: int = 0,
        n_valid: int = MAD_TEST_EXAMPLES,
        n_test: int = MAD_TEST_EXAMPLES,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 3)
        tokens = self.vocab - 1
        self.key_size = check_int(self.name, "key_size", key_size, 1, tokens // 2)
        self.value_size = check_int(self.name, "value_size", value_size, 1, tokens - tokens // 2)
        # Room for the probe twice and a few pairs around it.
        self.length = check_int(self.name, "length", length, 4 * (key_size + value_size))
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = self.vocab
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        return self._draw(gen, n, tuple(range(1, self.key_size + 1)))

    def generate_fixed(self, gen: torch.Generator, n: int) -> Batch:
        return self._draw(gen, n, (self.key_size,))

    def _draw(self, gen: torch.Generator, n: int, key_sizes: tuple[int, ...]) -> Batch:
        rng = _python_rng(gen)
        rows = [self._sequence(rng, key_sizes) for _ in range(n)]
        seq = torch.tensor([r[0] for r in rows], dtype=torch.int64)  # (n, T+1)
        scored = torch.tensor([r[1] for r in rows], dtype=torch.bool)  # (n, T+1)
        return Batch(seq[:, :-1].contiguous(), seq[:, 1:].contiguous(), scored[:, 1:].contiguous())

    def _sequence(
        self, rng: random.Random, key_sizes: tuple[int, ...]
    ) -> tuple[list[int], list[bool]]:
        """One sequence of length + 1 tokens and which of them are scored."""
        K, top = (self.vocab - 1) // 2, self.vocab - 1
        key_tokens, value_tokens = range(K), range(K, top)

        def draw_value() -> tuple[int, ...]:
            return tuple(rng.sample(value_tokens, rng.randint(1, self.value_size)))

        probe_key = tuple(rng.sample(key_tokens, rng.choice(key_sizes)))
        values = {probe_key: draw_value()}
        probe_len = len(probe_key) + len(values[probe_key])
        most = self.key_size + self.value_size
        # The body stops where the longest pair and the final probe still fit.
        limit = self.length - probe_len - most
        place_probe_at = rng.randrange(limit)
        seq: list[int] = []
        scored: list[bool] = []
        shown: set[tuple[int, ...]] = set()
        while len(seq) < limit:
            # The probe goes in at its point, or now if the next pair could end the body.
            if probe_key not in shown and (len(seq) >= place_probe_at or len(seq) + most >= limit):
                key = probe_key
            else:
                key = tuple(rng.sample(key_tokens, rng.choice(key_sizes)))
            value = values.setdefault(key, draw_value())
            seq += key + value
            scored += [False] * len(key) + [key in shown] * len(value)
            shown.add(key)
        seq += probe_key + values[probe_key]
        scored += [False] * len(probe_key) + [True] * len(values[probe_key])
        pad = self.length + 1 - len(seq)
        return [top] * pad + seq, [False] * pad + scored


class Memorization(SyntheticTask):
    """MAD's memorization: a fixed key–value map, the same in every sequence, learned in the
    weights.

    Keys are [0, K), K = (vocab − 1) // 2; the map sends them to distinct values of
    [K, vocab − 1), drawn once from `data_seed`; vocab − 1 is the insert token. A sequence is
    `length` // 2 pairs `key insert`, keys uniform; at each insert the target is the key's
    value. Metric: accuracy at the inserts.
    """

    name = "memorization"
    description = "memorization (MAD): recall values of a fixed key-value map"

    def __init__(
        self,
        vocab: int = 256,
        length: int = 32,
        data_seed: int = 0,
        n_valid: int = MAD_TEST_EXAMPLES,
        n_test: int = MAD_TEST_EXAMPLES,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 3)
        self.length = check_int(self.name, "length", length, 2)
        if self.length % 2:
            raise TaskError(f"task {self.name}: length must be even (key–insert pairs)")
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.n_out = self.vocab
        self.seq_len = self.length

    @property
    def insert_token(self) -> int:
        return self.vocab - 1

    def kv_map(self) -> torch.Tensor:
        """(K,) int64: the value of each key, the same for every split and trial."""
        cached = self.__dict__.get("_cache_map")
        if cached is None:
            K, top = (self.vocab - 1) // 2, self.vocab - 1
            perm = torch.randperm(top - K, generator=self._generator("map"))
            cached = self.__dict__["_cache_map"] = perm[:K] + K
        return cached

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        P = self.length // 2
        K = (self.vocab - 1) // 2
        keys = torch.randint(0, K, (n, P), generator=gen)  # (n, P)
        inserts = torch.full((n, P), self.insert_token, dtype=torch.int64)
        inputs = torch.stack([keys, inserts], dim=2).reshape(n, 2 * P)  # (n, T)
        targets = torch.zeros(n, 2 * P, dtype=torch.int64)
        targets[:, 1::2] = self.kv_map()[keys]
        mask = torch.zeros(n, 2 * P, dtype=torch.bool)
        mask[:, 1::2] = True
        return Batch(inputs, targets, mask)


class Compression(SyntheticTask):
    """MAD's compression: squeeze a sequence into one position and reproduce it from there.

    A sequence is length − 1 tokens uniform from [0, vocab − 1), then the compression token
    vocab − 1. Only the model's output at the compression token (the last position) is read:
    its n_out = (length − 1)·vocab logits are length − 1 blocks of `vocab` class logits, block
    t predicting token t (`Readout.SEQUENCE_AT_LAST`). A causal model can reach every token
    from there, so everything it reproduces passed through that one position's state — MAD's
    bottleneck. The mask marks that one position, the only one read; the targets are the
    inputs, of which the first length − 1 are to be reproduced. Metric: accuracy over those
    tokens.
    """

    name = "compression"
    description = "compression (MAD): reproduce the whole sequence from its last position"
    readout = Readout.SEQUENCE_AT_LAST

    def __init__(
        self,
        vocab: int = 16,
        length: int = 32,
        data_seed: int = 0,
        n_valid: int = MAD_TEST_EXAMPLES,
        n_test: int = MAD_TEST_EXAMPLES,
    ) -> None:
        self.vocab = check_int(self.name, "vocab", vocab, 2)
        self.length = check_int(self.name, "length", length, 2)
        self._init_sets(data_seed, n_valid, n_test)
        self.n_in = self.vocab
        self.n_out = (self.length - 1) * self.vocab
        self.seq_len = self.length

    def generate(self, gen: torch.Generator, n: int) -> Batch:
        L = self.length - 1
        tokens = torch.randint(0, self.vocab - 1, (n, L), generator=gen)
        squeeze = torch.full((n, 1), self.vocab - 1, dtype=torch.int64)
        inputs = torch.cat([tokens, squeeze], dim=1)  # (n, T)
        mask = torch.zeros(n, self.length, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(inputs, inputs.clone(), mask)

    def decoded(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, T − 1, vocab) logits of each token, read from outputs (B, T, n_out)."""
        B = outputs.shape[0]
        return outputs[:, -1].reshape(B, self.length - 1, self.vocab)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits = self.decoded(outputs).flatten(0, 1)  # (B·(T − 1), vocab)
        return F.cross_entropy(logits.float(), batch.targets[:, :-1].flatten())

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        hit = self.decoded(outputs).argmax(-1) == batch.targets[:, :-1]  # (B, T − 1)
        return float(hit.sum()), float(hit.numel())


MAD_TASKS: dict[str, Any] = {
    t.name: t for t in (InContextRecall, NoisyRecall, FuzzyRecall, Memorization, Compression)
}
