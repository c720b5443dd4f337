"""Shipped spaces: every sample builds and trains a step; known architectures build exactly the
structure and parameter count their papers describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from classifydata import write_classify_npz

from gatesearch.arch.build import aux_losses, build_model, count_params
from gatesearch.arch.describe import describe, tree_lines
from gatesearch.arch.space import (
    DEFAULT_SPACE,
    SPACES_DIR,
    default_space,
    graph_context,
    load_known,
    load_space,
    sample_architectures,
)
from gatesearch.grammar import Causality, DerivationError, Grammar
from gatesearch.grammar.checks import primitive_calls
from gatesearch.grammar.model import Choose, Fixed, RuleRef, Slot
from gatesearch.primitives.attention import GATE_POSITIONS
from gatesearch.primitives.deltanet import DELTA_RULES
from gatesearch.primitives.recurrent import LINEAR_RECURRENCES
from gatesearch.primitives.structure import POOLS
from gatesearch.primitives.xlstm import XLSTM_MIXERS
from gatesearch.tasks import Split, make_task, model_inputs
from gatesearch.tasks.registry import builtin_tasks

VOCAB = 256  # graph_context's default token vocabulary and output width


def _forward_backward(arch, seq: int = 16) -> None:
    ctx = graph_context(arch.graph)
    model = build_model(arch.graph, ctx)
    y = model(torch.randint(0, VOCAB, (2, seq)))
    assert y.shape == (2, seq, VOCAB)
    loss = y.float().square().mean() + sum(aux_losses(model).values(), torch.zeros(()))
    assert torch.isfinite(loss), describe(arch.graph)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(5), ids=lambda c: f"samples{c * 100}-{c * 100 + 99}")
def test_500_default_samples_build_and_run_forward_backward(chunk: int) -> None:
    grammar = load_space(DEFAULT_SPACE)
    archs = sample_architectures(grammar, 500, seed=2026)[chunk * 100 : (chunk + 1) * 100]
    torch.manual_seed(chunk)
    for arch in archs:
        _forward_backward(arch)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_narrow_space_samples_build(causal: bool) -> None:
    grammar = load_space(SPACES_DIR / "recurrent_cells.space")
    for arch in sample_architectures(grammar, 40, seed=1, causal=causal):
        _forward_backward(arch)


NEW_MIXERS = {*DELTA_RULES, "mamba2", *XLSTM_MIXERS}  # the mixers of 2024–2025
SEED_NEW = 4  # its 40 samples hold every setting of the new mixers the assertions name


def test_the_default_space_samples_the_new_mixers_in_every_setting() -> None:
    """The default space holds the delta-rule mixers, Mamba-2 and the xLSTM mixers: its samples
    hold each delta rule and xLSTM mixer in each setting the space offers, and Mamba-2, and
    every sample builds and runs forward and backward."""
    archs = sample_architectures(load_space(DEFAULT_SPACE), 40, seed=SEED_NEW)
    nodes = [attrs for arch in archs for _, attrs in arch.graph.nodes(data=True)]
    seen = {
        (n["op"], n["params"].get("decay"), n["params"].get("output_gate"))
        for n in nodes
        if n["op"] in {*DELTA_RULES, "mamba2"}
    }
    assert seen == {
        ("deltanet", None, False),
        ("deltanet", None, True),
        *(("gated_deltanet", d, g) for d in ("scalar", "channel") for g in (True, False)),
        ("mamba2", None, None),
    }
    xlstm = {
        (n["op"], n["params"]["forget"], n["params"].get("expand"))
        for n in nodes
        if n["op"] in XLSTM_MIXERS
    }
    assert xlstm == {
        *(("mlstm", forget, expand) for forget in ("sigmoid", "exp") for expand in (1.0, 2.0)),
        ("slstm", "sigmoid", None),
        ("slstm", "exp", None),
    }
    torch.manual_seed(SEED_NEW)
    for arch in archs:
        _forward_backward(arch)


CLASSIFY_SPACE = SPACES_DIR / "gated_classify.space"


def _values(grammar: Grammar, op: str, param: str) -> set:
    """Every value the space may give `param` of `op`, wherever `op` is called."""
    found: set = set()
    for rule in grammar.rules.values():
        for alt in rule.alts:
            for call in primitive_calls(alt.items):
                for name, expr in call.params:
                    if call.op != op or name != param:
                        continue
                    if isinstance(expr, Fixed):
                        found.add(expr.value)
                    elif isinstance(expr, Choose):
                        found.update(expr.domain.finite_values() or ())
    return found


def _slot_ops(grammar: Grammar, op: str, param: str) -> set[str]:
    """The primitives a slot `param` of `op` may derive (through one rule)."""
    found: set[str] = set()
    for rule in grammar.rules.values():
        for alt in rule.alts:
            for call in primitive_calls(alt.items):
                for name, expr in call.params:
                    if call.op == op and name == param and isinstance(expr, Slot):
                        assert isinstance(expr.item, RuleRef)
                        for inner in grammar.rules[expr.item.rule].alts:
                            found.update(c.op for c in primitive_calls(inner.items))
    return found


def test_the_classify_space_offers_what_a_noncausal_task_allows() -> None:
    """Non-causal; bidirectional copies of every recurrence; attention with every gate
    position; every pooling head beside the plain head."""
    grammar = load_space(CLASSIFY_SPACE)
    assert grammar.causality is Causality.NONCAUSAL
    recurrences = {"lstm", "gru", "mgu", "indrnn", "lem", *LINEAR_RECURRENCES}
    assert _slot_ops(grammar, "bidirectional", "cell") == recurrences
    assert _values(grammar, "bidirectional", "merge") == {"add", "concat", "gate"}
    assert _values(grammar, "attention", "gate") == set(GATE_POSITIONS)
    assert _values(grammar, "pool_head", "pool") == set(POOLS)
    assert "head" in {c.op for a in grammar.rules["readout"].alts for c in primitive_calls(a.items)}


def test_classify_space_samples_build_and_train_a_step_on_a_classify_batch(
    tmp_path: Path,
) -> None:
    """Every sample builds for a real `classify` task (multichannel frames, padded batches)
    and gives finite class logits, loss and gradients."""
    task = make_task("classify", path=str(write_classify_npz(tmp_path / "cls.npz")))
    batch = next(task.batches(Split.TRAIN, 4, seed=0))
    assert not batch.mask.all()  # lengths differ: the batch is padded
    archs = sample_architectures(load_space(CLASSIFY_SPACE), 40, seed=7, causal=False)
    ops = {op for a in archs for _, op in a.graph.nodes(data="op")}
    assert {"bidirectional", "pool_head", "head", "attention"} <= ops
    torch.manual_seed(0)
    for arch in archs:
        ctx = task.context(graph_context(arch.graph).d_model)
        assert not ctx.causal
        model = build_model(arch.graph, ctx)
        out = model(model_inputs(batch, next(model.parameters())))
        assert out.shape == (batch.size, batch.inputs.shape[1], task.n_out)
        loss = task.loss(out, batch) + sum(aux_losses(model).values(), torch.zeros(()))
        assert torch.isfinite(loss), describe(arch.graph)
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_classify_is_the_one_task_with_its_own_default_space() -> None:
    assert default_space("classify") == CLASSIFY_SPACE
    others = [name for name in builtin_tasks() if name != "classify"]
    assert others and all(default_space(name) == DEFAULT_SPACE for name in others)
    assert default_space("my_package.tasks:make_task") == DEFAULT_SPACE
    # The causal default suits them: every other built-in task is causal.
    assert all(builtin_tasks()[name].causal for name in others)


def test_every_shipped_space_validates() -> None:
    spaces = sorted(SPACES_DIR.glob("*.space"))
    assert len(spaces) >= 2
    for path in spaces:
        load_space(path)


# ---------------------------------------------------------------------- known architectures
# Hand counts, written from the papers' block equations (no biases unless stated), for a token
# model with vocabulary 256: embedding V·d, head d·V, final RMSNorm d.


def _ends(d: int) -> int:
    return VOCAB * d + d * VOCAB + d


def _swiglu(d: int, expand: float) -> int:
    return 3 * d * round(expand * d)


def _rglru(d: int, w: int, k: int = 4) -> int:
    # W_x, W_y with biases; depthwise conv with bias; r and i gates (one block) with biases;
    # Λ; W_out with bias.
    return (d * 2 * w + 2 * w) + (w * k + w) + (2 * w * w + 2 * w) + w + (w * d + d)


def _gla(d: int) -> int:
    dk = d // 2
    return d * (2 * dk + 2 * d) + d * 16 + (16 * dk + dk) + d // 4 + d * d  # heads=4 norm: d/4


def _deltanet(d: int, heads: int = 4, gated: bool = False) -> int:
    # One projection d -> q, k, v (d each), β (one per head) and, gated, the output gate (d)
    # and the decay (one per head); depthwise conv (kernel 4, no bias) on q, k, v; A_log and
    # dt_bias per head (gated); RMSNorm weight d/heads shared by the heads; W_o d·d.
    projection = d * (3 * d + heads + (d + heads if gated else 0))
    return projection + 3 * d * 4 + (2 * heads if gated else 0) + d // heads + d * d


def _mamba2(d: int, heads: int = 4, d_state: int = 64, expand: int = 2, k: int = 4) -> int:
    # One projection d -> z and x (E = expand·d each), B and C (d_state each, one group) and Δ
    # (one per head); depthwise conv with bias on x, B, C; A_log, dt_bias and D per head; the
    # gated RMSNorm's weight E; W_out E·d.
    E, conv = expand * d, expand * d + 2 * d_state
    return d * (2 * E + 2 * d_state + heads) + conv * (k + 1) + 3 * heads + E + E * d


def _qwen3_attention(d: int) -> int:
    # q, k, v, o, the elementwise G1 gate d·d, QK-norm weights per head (d/heads each).
    return 4 * d**2 + d**2 + 2 * d // 4


def _mlstm(d: int, heads: int = 4, expand: int = 2, block: int = 4, k: int = 4) -> int:
    # Up-projection d -> 2w; depthwise conv with bias; q, k, v block-diagonal (w·block each);
    # input and forget gates from [q; k; v] (3w -> heads each, with biases); per-head norm
    # weight and learnable skip (w each); down-projection w -> d.
    w = expand * d
    return d * 2 * w + (w * k + w) + 3 * w * block + 2 * (3 * w * heads + heads) + 2 * w + w * d


def _slstm(d: int, heads: int = 4, k: int = 4) -> int:
    # Depthwise conv with bias; per head input weights W (4 gates) and recurrent weights R,
    # d_h × 4 d_h each; the four gates' biases; per-head norm weight.
    dh = d // heads
    return (d * k + d) + 2 * heads * dh * 4 * dh + 4 * d + d


EXPECTED = {
    "llama": (4 * (2 * 128 + 4 * 128**2 + _swiglu(128, 2.667)) + _ends(128)),
    "qwen3_gated_attention": (
        4 * (2 * 128 + 4 * 128**2 + 128**2 + 2 * 32 + _swiglu(128, 2.667)) + _ends(128)
    ),
    # Gated DeltaNet, Gated DeltaNet, Gated DeltaNet, gated attention, twice; SwiGLU after each.
    "qwen3_next": (
        6 * (2 * 128 + _deltanet(128, gated=True) + _swiglu(128, 2.667))
        + 2 * (2 * 128 + _qwen3_attention(128) + _swiglu(128, 2.667))
        + _ends(128)
    ),
    "mamba2_lm": 8 * (128 + _mamba2(128)) + _ends(128),
    "hawk": 3 * (2 * 192 + _rglru(192, 256) + 9 * 192**2) + _ends(192),
    "griffin": (
        2 * (2 * 192 + _rglru(192, 256) + 9 * 192**2)
        + (2 * 192 + 4 * 192**2 + 9 * 192**2)
        + _ends(192)
    ),
    "gla_transformer": 4 * (2 * 128 + _gla(128) + _swiglu(128, 2.667)) + _ends(128),
    "deltanet_lm": 4 * (2 * 128 + _deltanet(128) + _swiglu(128, 2.667)) + _ends(128),
    "gated_deltanet_lm": (
        4 * (2 * 128 + _deltanet(128, gated=True) + _swiglu(128, 2.667)) + _ends(128)
    ),
    # LayerNorm has weight and bias. Seven mLSTM blocks alone, one sLSTM block with GeGLU.
    "xlstm_lm": (
        7 * (2 * 128 + _mlstm(128)) + (2 * 2 * 128 + _slstm(128) + 3 * 128 * 256) + _ends(128)
    ),
    # LayerNorm has weight and bias; 8 ReLU experts of width 4d; router 8·d without bias.
    "switch_transformer": (
        4 * (2 * 2 * 128 + 4 * 128**2 + 8 * 128 + 8 * (2 * 128 * 512)) + _ends(128)
    ),
    # GCNN block: conv d -> 2d, kernel 4, with bias; output projection d·d.
    "gcnn_lm": 6 * (2 * 128 + 2 * 4 * 128**2 + 2 * 128 + 128**2) + _ends(128),
}

STRUCTURE = {
    "llama": "embed > 4×[residual(rmsnorm attention) > residual(rmsnorm glu(expand=2.667))] > rmsnorm > head",
    "qwen3_gated_attention": "attention(qk_norm=True, gate=g1)",
    "qwen3_next": (
        "2×[residual(rmsnorm gated_deltanet) > residual(rmsnorm glu(expand=2.667)) > "
        "residual(rmsnorm gated_deltanet) > residual(rmsnorm glu(expand=2.667)) > "
        "residual(rmsnorm gated_deltanet) > residual(rmsnorm glu(expand=2.667)) > "
        "residual(rmsnorm attention(qk_norm=True, gate=g1)) > "
        "residual(rmsnorm glu(expand=2.667))]"
    ),
    "mamba2_lm": "embed > 8×residual(rmsnorm mamba2) > rmsnorm > head",
    "hawk": "3×[residual(rmsnorm rglru) > residual(rmsnorm glu(variant=geglu, expand=3))]",
    "griffin": "2×[residual(rmsnorm rglru) > residual(rmsnorm glu(variant=geglu, expand=3))] > residual(rmsnorm attention(window=32))",
    "gla_transformer": "4×[residual(rmsnorm gla) > residual(rmsnorm glu(expand=2.667))]",
    "deltanet_lm": "4×[residual(rmsnorm deltanet) > residual(rmsnorm glu(expand=2.667))]",
    "gated_deltanet_lm": (
        "4×[residual(rmsnorm gated_deltanet) > residual(rmsnorm glu(expand=2.667))]"
    ),
    "xlstm_lm": (
        "residual(layernorm mlstm) > residual(layernorm slstm) > "
        "residual(layernorm glu(variant=geglu, expand=2)) > 6×residual(layernorm mlstm)"
    ),
    "switch_transformer": "residual(layernorm moe(expert=mlp(expand=4, act=relu)))",
    "gcnn_lm": "6×residual(layernorm gcnn)",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_known_architecture_matches_hand_count(name: str) -> None:
    arch = load_known(SPACES_DIR / "known" / f"{name}.toml")
    model = build_model(arch.graph, graph_context(arch.graph))
    assert count_params(model) == EXPECTED[name]
    assert STRUCTURE[name] in describe(arch.graph)
    _forward_backward(arch)


def test_every_known_file_is_tested() -> None:
    shipped = {p.stem for p in (SPACES_DIR / "known").glob("*.toml")}
    assert shipped == set(EXPECTED)


def test_known_file_with_a_typo_is_refused(tmp_path: Path) -> None:
    text = (
        (SPACES_DIR / "known" / "llama.toml")
        .read_text()
        .replace('space = "../gated_lm.space"', f'space = "{DEFAULT_SPACE}"')
    )
    bad = tmp_path / "typo.toml"
    bad.write_text(
        text.replace("residual[1].channel.glu.variant", "residual[1].channel.glu.variantt")
    )
    with pytest.raises(DerivationError, match="variant"):
        load_known(bad)


def test_known_file_with_overrides_is_the_same_design_at_another_size() -> None:
    path = SPACES_DIR / "known" / "llama.toml"
    small = {"$width": 64, "$heads": 2, "model.stack.block#count": 2}
    arch = load_known(path, overrides=small)
    model = build_model(arch.graph, graph_context(arch.graph))
    # Per block: q, k, v, o (4·64²), SwiGLU with hidden round(2.667·64) = 171 (3·64·171), two
    # RMSNorm weights; then the model's ends at width 64.
    hidden = round(2.667 * 64)
    block = 4 * 64**2 + 3 * 64 * hidden + 2 * 64
    assert count_params(model) == 2 * block + _ends(64)
    assert (
        "2×[residual(rmsnorm attention(heads=2)) > residual(rmsnorm glu(expand=2.667))]"
        in describe(arch.graph)
    )
    with pytest.raises(DerivationError, match="never used"):
        load_known(path, overrides={"model.stack.blocks#count": 2})


def test_labels_name_every_value_and_never_show_a_bare_boolean() -> None:
    """The default space's booleans (qk_norm, ...) are read by name in every form: a short
    line, a complete line and the tree."""
    seen_bool = False
    for arch in sample_architectures(load_space(DEFAULT_SPACE), 40, 0, causal=True):
        lines = [describe(arch.graph), describe(arch.graph, complete=True)]
        for line in [*lines, *tree_lines(arch.graph)]:
            assert not re.search(r"[(,] ?(True|False)\b", line), line
        seen_bool |= "=True" in lines[1] or "=False" in lines[1]
        assert "…" not in lines[1]  # complete: nothing left out
        assert len(lines[0]) <= len(lines[1])
    assert seen_bool  # the check met a boolean parameter
