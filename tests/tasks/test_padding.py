"""Classify predictions do not depend on padding: the non-causal mixers of gated_classify
(attention, centred convolutions, bidirectional recurrences, expert-choice mixtures) given the
real lengths keep a batch's end padding away from real positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from classifydata import write_classify_npz

from gatesearch.arch.build import GraphModel, build_model
from gatesearch.arch.describe import describe
from gatesearch.arch.space import (
    SPACES_DIR,
    Architecture,
    graph_context,
    load_space,
    sample_architectures,
)
from gatesearch.registry import InputKind
from gatesearch.tasks import ClassifyTask, Split, run_model

N_ARCHS, SEED = 20, 3
SHORT, LONG, CHANNELS, CLASSES = 5, 13, 4, 3
# float64 throughout: the two batchings take different kernel paths, so float32 would differ
# by more than the padding-independence we test.
ATOL = 1e-5
# Routers whose capacity or choice looks at every token of the batch: another sequence's real
# tokens change them, which is batch dependence of the router, not padding (see moe.py).
BATCH_ROUTERS = {"switch", "expert_choice"}


@pytest.fixture(scope="module")
def archs() -> list[Architecture]:
    space = load_space(SPACES_DIR / "gated_classify.space")
    return sample_architectures(space, N_ARCHS, seed=SEED, causal=False)


def _model(arch: Architecture, seed: int) -> GraphModel:
    torch.manual_seed(seed)
    ctx = graph_context(arch.graph, InputKind.CONTINUOUS, n_in=CHANNELS, n_out=CLASSES)
    return build_model(arch.graph, ctx).double().eval()


def _batch_routed(arch: Architecture) -> bool:
    return any(
        attrs["op"] == "moe" and attrs["params"].get("router") in BATCH_ROUTERS
        for _, attrs in arch.graph.nodes(data=True)
    )


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    short = torch.randn(1, SHORT, CHANNELS, generator=gen, dtype=torch.float64)
    long = torch.randn(1, LONG, CHANNELS, generator=gen, dtype=torch.float64)
    return short, long


def test_sample_reaches_every_non_causal_mixer(archs: list[Architecture]) -> None:
    ops = {attrs["op"] for arch in archs for _, attrs in arch.graph.nodes(data=True)}
    assert {"attention", "gcnn", "bidirectional"} <= ops


def test_padding_alone_does_not_change_the_last_real_logits(archs: list[Architecture]) -> None:
    """One sequence, unpadded vs padded to LONG positions: every architecture of the sample."""
    short, _ = _inputs()
    padded = torch.cat([short, torch.zeros(1, LONG - SHORT, CHANNELS, dtype=short.dtype)], 1)
    for i, arch in enumerate(archs):
        model = _model(arch, i)
        with torch.no_grad():
            alone = model(short)[0, SHORT - 1]
            got = model(padded, lengths=torch.tensor([SHORT]))[0, SHORT - 1]
        where = describe(arch.graph)
        torch.testing.assert_close(
            got, alone, atol=ATOL, rtol=0, msg=lambda m, w=where: f"{w}: {m}"
        )


def test_batching_beside_a_longer_sequence(archs: list[Architecture]) -> None:
    """The short sequence batched alone vs beside a longer one (so padded), as classify
    batches: the logits at its last real position agree."""
    short, long = _inputs()
    padded = torch.cat([short, torch.zeros(1, LONG - SHORT, CHANNELS, dtype=short.dtype)], 1)
    batch = torch.cat([padded, long])  # (2, LONG, CHANNELS)
    lengths = torch.tensor([SHORT, LONG])
    tested = 0
    for i, arch in enumerate(archs):
        if _batch_routed(arch):
            continue
        model = _model(arch, i)
        with torch.no_grad():
            alone = model(short)[0, SHORT - 1]
            together = model(batch, lengths=lengths)
        where = describe(arch.graph)
        torch.testing.assert_close(
            together[0, SHORT - 1], alone, atol=ATOL, rtol=0, msg=lambda m, w=where: f"{w}: {m}"
        )
        torch.testing.assert_close(
            together[1, LONG - 1], model(long)[0, LONG - 1], atol=ATOL, rtol=0
        )
        tested += 1
    assert tested >= N_ARCHS // 2


def test_classify_batches_hand_the_model_their_lengths(
    archs: list[Architecture], tmp_path: Path
) -> None:
    """A classify batch carries its lengths, and `run_model` hands them to the model: each
    sequence's logits in one padded batch are its logits run alone."""
    task = ClassifyTask(str(write_classify_npz(tmp_path / "c.npz")))
    batch = next(task.batches(Split.VALID, 64))
    assert batch.lengths is not None
    assert torch.equal(batch.lengths, batch.mask.sum(dim=1))
    assert len(set(batch.lengths.tolist())) > 1  # padded
    arch = next(a for a in archs if not _batch_routed(a))
    model = _model(arch, 0)
    x = batch.inputs.double()
    with torch.no_grad():
        out = run_model(model, x, batch)  # (B, T, n_out)
        for b, n in enumerate(batch.lengths.tolist()):
            alone = model(x[b : b + 1, :n])[0, n - 1]
            torch.testing.assert_close(out[b, n - 1], alone, atol=ATOL, rtol=0)
