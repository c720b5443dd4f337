"""Small graphs and a task built to overfit, shared by the proxy tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gatesearch.registry import InputKind
from gatesearch.tasks.base import Batch, Split, Task, masked_accuracy, masked_cross_entropy_sum


class NoisyLookup(Task):
    """Tokens x_t; the target at every position is perm(x_t) with probability 1 − noise, else a
    uniform token. The training split is `n_train` fixed sequences (cycled), so a model with a
    mixer can memorise their noise; validation is fresh sequences of the same law."""

    name = "noisy_lookup"
    causal = True
    input_kind = InputKind.TOKENS
    metric_name = "accuracy"
    higher_is_better = True

    def __init__(
        self, vocab: int = 16, length: int = 16, n_train: int = 16, noise: float = 0.4
    ) -> None:
        self.vocab, self.length, self.n_train, self.noise = vocab, length, n_train, noise
        self.n_in = self.n_out = vocab
        self.seq_len = length
        gen = torch.Generator().manual_seed(1234)
        self._perm = torch.randperm(vocab, generator=gen)
        self._train = self._draw(gen, n_train)
        self._valid = self._draw(gen, 512)

    def _draw(self, gen: torch.Generator, n: int) -> Batch:
        x = torch.randint(0, self.vocab, (n, self.length), generator=gen)
        y = self._perm[x]
        flip = torch.rand(n, self.length, generator=gen) < self.noise
        y = torch.where(flip, torch.randint(0, self.vocab, (n, self.length), generator=gen), y)
        return Batch(x, y, torch.ones(n, self.length, dtype=torch.bool))

    def batches(self, split: Split, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        if split is Split.TRAIN:
            gen = torch.Generator().manual_seed(0 if seed is None else seed)

            def stream() -> Iterator[Batch]:
                while True:
                    idx = torch.randint(0, self.n_train, (batch_size,), generator=gen)
                    t = self._train
                    yield Batch(t.inputs[idx], t.targets[idx], t.mask[idx])

            return stream()
        full = self._valid
        order = (
            torch.arange(full.size)
            if seed is None
            else torch.randperm(full.size, generator=torch.Generator().manual_seed(seed))
        )
        return iter(
            Batch(full.inputs[i], full.targets[i], full.mask[i]) for i in order.split(batch_size)
        )

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        total, n = masked_cross_entropy_sum(outputs, batch)
        return total / max(n, 1)

    def metric(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        return masked_accuracy(outputs, batch)
