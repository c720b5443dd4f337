"""Export: the standalone file computes the engine's function with the engine's weights, loads
its safetensors by name, compiles and exports with torch, passes ruff, imports no gatesearch,
and refuses (or escapes) whatever a hostile grammar could put into an architecture."""

from __future__ import annotations

import ast
import copy
import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import networkx as nx
import pytest
import torch
from deltarules import delta_rules_arch
from stackgraph import stack_graph
from statespaces import mamba2_arch
from xlstms import xlstm_arch

from gatesearch.arch.build import GraphModel, build_model, prune_model
from gatesearch.arch.describe import describe
from gatesearch.arch.graph import INPUT_OP, arch_hash
from gatesearch.arch.space import (
    DEFAULT_SPACE,
    SPACES_DIR,
    Architecture,
    graph_context,
    load_known,
    load_space,
    sample_architectures,
)
from gatesearch.export import (
    About,
    ExportError,
    Scores,
    ScoreSource,
    codegen,
    export_source,
    export_state_dict,
    export_weights,
    sources,
    write_export,
)
from gatesearch.primitives import attention
from gatesearch.primitives.pruning import HardConcreteGate, PruningGate, TrainableGate
from gatesearch.registry import REGISTRY, Context, InputKind, Role
from gatesearch.tasks import Readout

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SEED = 2024
N_ARCHS = 200
BATCH, SEQ = 2, 16
# Same code on both sides in float32: differences are zero in practice; 1e-5 is the promise.
ATOL = 1e-5
# Random init leaves routers at zero (noisy top-k) and gates all open; a perturbation makes
# routing and gate values matter.
PERTURB = 0.05
# Archs for torch.compile / torch.export: the smallest sample holding each op. A mixture with
# unpruned expert gates cannot be torch.exported (see test_torch_export_known_limit).
COMPILE_OPS = ("attention", "glu", "moe", "minlstm", "rglru", "gla")
# Long enough for several scan chunks and three GLA chunks, the last one padded.
COMPILE_SEQ = 40
ALLOWED_IMPORTS = {"__future__", "abc", "dataclasses", "enum", "math", "typing", "torch"}
ALLOWED_IMPORTS |= {"safetensors"}  # inside load() only
IMPORT_CHECK_EVERY = 10


@pytest.fixture(scope="module")
def archs() -> list[Architecture]:
    return sample_architectures(load_space(DEFAULT_SPACE), N_ARCHS, seed=SAMPLE_SEED)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


def _engine(arch: Architecture, seed: int) -> GraphModel:
    torch.manual_seed(seed)
    model = build_model(arch.graph, graph_context(arch.graph))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * PERTURB)
    return model.eval()


def _tokens(seed: int, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, 256, (BATCH, seq), generator=torch.Generator().manual_seed(seed))


def _import(path: Path) -> ModuleType:
    """Import a file as a fresh module, registered in sys.modules as an import would be
    (dataclasses and torch.compile look modules up there)."""
    name = f"exported_{path.stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _exported_model(module: ModuleType, engine: GraphModel) -> torch.nn.Module:
    """The exported class holding the engine's weights: built without memory, then given the
    engine's tensors by name, so every tensor it uses must be in the state_dict."""
    with torch.device("meta"):
        model = module.Model()
    model.load_state_dict(export_state_dict(engine), strict=True, assign=True)
    return model.eval()


def _source_path(export_dir: Path, index: int) -> Path:
    return export_dir / f"arch{index:03d}.py"


def _export(arch: Architecture, model: GraphModel | None = None) -> str:
    return export_source(
        arch.graph,
        graph_context(arch.graph),
        title="test-campaign",
        arch_hash=arch.hash,
        metrics={"val_loss": 2.5, "params": 12345},
        model=model,
    )


def _ruff() -> str | None:
    """The ruff beside this interpreter (or on PATH); None when it is not installed."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    return ruff if Path(ruff).exists() else None


def _assert_passes_ruff(path: Path) -> None:
    """`ruff check` and `ruff format --check` pass on a file or folder, under the project's
    settings (nothing to check when ruff is not installed)."""
    ruff = _ruff()
    if ruff is None:
        return
    config = ["--config", str(REPO / "pyproject.toml"), "--no-cache"]
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *command, *config, str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _ops(arch: Architecture) -> set[str]:
    return {op for _, op in arch.graph.nodes(data="op")}


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


# ------------------------------------------------------------------------ same function


@pytest.mark.slow
@pytest.mark.parametrize("index", range(N_ARCHS), ids=lambda i: f"arch{i:03d}")
def test_exported_model_matches_engine(
    archs: list[Architecture], export_dir: Path, index: int
) -> None:
    arch = archs[index]
    engine = _engine(arch, seed=index)
    source = _export(arch, engine)
    if index % IMPORT_CHECK_EVERY == 0:  # the exporter checks every file; a spot check here
        assert {m.split(".")[0] for m in _imports(source)} <= ALLOWED_IMPORTS
    path = _source_path(export_dir, index)
    path.write_text(source, encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    x = _tokens(index)
    with torch.no_grad():
        expected, got = engine(x), exported(x)
    assert got.shape == (BATCH, SEQ, 256)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0, msg=lambda m: f"{arch.hash}: {m}")


@pytest.mark.slow  # reads the files the 200 exports above wrote
def test_exported_files_pass_ruff(archs: list[Architecture], export_dir: Path) -> None:
    if _ruff() is None:
        pytest.skip("ruff is not installed")
    for index, arch in enumerate(archs):
        path = _source_path(export_dir, index)
        if not path.exists():  # when run alone
            path.write_text(_export(arch), encoding="utf-8")
    _assert_passes_ruff(export_dir)


# ------------------------------------------------------------------------ compile, export


def _smallest_with(archs: list[Architecture], op: str, exportable: bool) -> Architecture:
    def fits(a: Architecture) -> bool:
        if op not in _ops(a):
            return False
        if not exportable:
            return True
        gated_moe = any(
            attrs["op"] == "moe" and attrs["params"].get("prune", "none") != "none"
            for _, attrs in a.graph.nodes(data=True)
        )
        return not gated_moe

    return min((a for a in archs if fits(a)), key=lambda a: (len(a.graph), a.hash))


@pytest.mark.slow
@pytest.mark.parametrize("op", COMPILE_OPS)
def test_torch_compile_and_export(archs: list[Architecture], tmp_path: Path, op: str) -> None:
    arch = _smallest_with(archs, op, exportable=True)
    engine = _engine(arch, seed=1)
    path = tmp_path / "model.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    x = _tokens(1, COMPILE_SEQ)
    with torch.no_grad():
        expected = engine(x)
        compiled = torch.compile(exported, backend="eager")
        torch.testing.assert_close(compiled(x), expected, atol=ATOL, rtol=0)
        program = torch.export.export(exported, (x,))
        torch.testing.assert_close(program.module()(x), expected, atol=ATOL, rtol=0)
        other = _tokens(2, COMPILE_SEQ)  # the program is not specialised to the traced values
        torch.testing.assert_close(program.module()(other), engine(other), atol=ATOL, rtol=0)


def test_torch_export_known_limit(archs: list[Architecture], tmp_path: Path) -> None:
    """A mixture with unpruned expert gates loops over the experts whose gates are open, which
    is data: torch.export refuses it (prune first: write_export(prune=True)); eager and
    torch.compile run it."""
    arch = min(
        (
            a
            for a in archs
            if any(
                d["op"] == "moe" and d["params"].get("prune", "none") != "none"
                for _, d in a.graph.nodes(data=True)
            )
        ),
        key=lambda a: (len(a.graph), a.hash),
    )
    engine = _engine(arch, seed=1)
    path = tmp_path / "model.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    with torch.no_grad(), pytest.raises(Exception, match="data-dependent"):
        torch.export.export(exported, (_tokens(1),))


# Long enough that the chunk-to-chunk state scan itself runs in chunks (its carry loop), and
# not a multiple of the GLA chunk, so the last chunk is padded.
GRAPH_BREAK_SEQ = 200


# Compiling takes seconds; tests/primitives/test_scan.py compiles the same functions in the
# fast tier.
@pytest.mark.slow
def test_exported_gla_compiles_without_graph_breaks(tmp_path: Path) -> None:
    """The chunked GLA picks its in-chunk formula by the decays' size; a data-dependent Python
    branch there broke torch.compile's graph at every GLA layer (a `.item()`), as did `out=`
    views in the scans. An exported file carries the engine's scans: compiling it is what a
    user of the export does."""
    arch = load_known(
        SPACES_DIR / "known" / "gla_transformer.toml",
        {"$width": 64, "$heads": 2, "model.stack.block#count": 2},
    )
    engine = _engine(arch, seed=6)
    path = tmp_path / "model.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    x = _tokens(6, GRAPH_BREAK_SEQ)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(exported)(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    # fullgraph=True refuses any break; with gradients on, dynamo also traces the scans'
    # hand-written backward.
    compiled = torch.compile(exported, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), engine(x), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------ delta rules

DELTA_SEQ = 40  # two chunks of the delta rule's 32, the last one padded


def test_delta_rules_export_compute_the_engines_function(tmp_path: Path) -> None:
    """deltanet and gated_deltanet (scalar and channel decay) export: the engine's outputs
    from the chunked form, without the step loop, in a file that passes ruff."""
    arch = delta_rules_arch()
    assert {"deltanet", "gated_deltanet"} <= _ops(arch)
    engine = _engine(arch, seed=7)
    path = tmp_path / "delta.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    assert "def forward_reference" not in path.read_text(encoding="utf-8")  # the loop stays behind
    x = _tokens(7, DELTA_SEQ)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=ATOL, rtol=0)
    _assert_passes_ruff(path)


@pytest.mark.slow
def test_exported_delta_rules_compile_in_one_graph_and_torch_export(tmp_path: Path) -> None:
    """The channel decay picks its in-chunk formula by the decays' size (torch.cond when
    traced): the exported file compiles without a graph break and torch.exports."""
    arch = delta_rules_arch()
    engine = _engine(arch, seed=8)
    path = tmp_path / "delta.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    x = _tokens(8, DELTA_SEQ)
    torch._dynamo.reset()
    compiled = torch.compile(exported, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = engine(x)
        torch.testing.assert_close(compiled(x), expected, atol=ATOL, rtol=0)
        program = torch.export.export(exported, (x,))
        torch.testing.assert_close(program.module()(x), expected, atol=ATOL, rtol=0)
        other = _tokens(9, DELTA_SEQ)
        torch.testing.assert_close(program.module()(other), engine(other), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------ Mamba-2

MAMBA2_SEQ = 100  # two chunks of the SSD form's 64, the last one padded


def test_mamba2_export_computes_the_engines_function(tmp_path: Path) -> None:
    """mamba2 at its defaults and with every option the 2025 space offers moved exports: the
    engine's outputs from the chunked SSD form, without the step loop, in a file that passes
    ruff."""
    arch = mamba2_arch()
    engine = _engine(arch, seed=10)
    params = [
        attrs["params"] for _, attrs in arch.graph.nodes(data=True) if attrs["op"] == "mamba2"
    ]
    assert [p.get("expand", 2) for p in params] == [2, 1]
    path = tmp_path / "mamba2.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    assert "def forward_reference" not in path.read_text(encoding="utf-8")  # the loop stays behind
    x = _tokens(10, MAMBA2_SEQ)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=ATOL, rtol=0)
    _assert_passes_ruff(path)


# ------------------------------------------------------------------------ xLSTM

XLSTM_SEQ = 70  # two chunks of the mLSTM's 64, the last one padded


def test_xlstm_mixers_export_compute_the_engines_function(tmp_path: Path) -> None:
    """mlstm (either forget gate) and slstm export: the engine's outputs from the chunkwise
    mLSTM and the stabilised sLSTM loop, without the references, in a file that passes ruff."""
    arch = xlstm_arch()
    assert {"mlstm", "slstm"} <= _ops(arch)
    engine = _engine(arch, seed=10)
    path = tmp_path / "xlstm.py"
    path.write_text(_export(arch, engine), encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    source = path.read_text(encoding="utf-8")
    assert "def forward_reference" not in source and "def mlstm_reference" not in source
    x = _tokens(10, XLSTM_SEQ)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=ATOL, rtol=0)
    _assert_passes_ruff(path)


# ------------------------------------------------------------------------ every mixer at once


def test_one_model_holding_every_causal_mixer_exports(tmp_path: Path) -> None:
    """Each mixer's file copies its module's helpers into one namespace: two modules defining
    the same helper name (the scans' and the delta rule's padding once did) must not stop a
    model that holds both from exporting, nor change what it computes."""
    mixers = sorted(n for n in REGISTRY.names(Role.MIXER) if REGISTRY[n].causal_ok)
    graph = stack_graph(32, [(name, {}) for name in mixers])
    engine = build_model(graph, graph_context(graph))
    source = export_source(
        graph,
        graph_context(graph),
        title="every-mixer",
        arch_hash=arch_hash(graph),
        metrics={},
        model=engine,
    )
    path = tmp_path / "every.py"
    path.write_text(source, encoding="utf-8")
    exported = _exported_model(_import(path), engine.eval())
    x = _tokens(11, 20)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------ the classify space

CHANNELS, CLASSES = 4, 3  # multichannel frames in, class logits out


def _classify_ctx(arch: Architecture) -> Context:
    return graph_context(arch.graph, InputKind.CONTINUOUS, n_in=CHANNELS, n_out=CLASSES)


def _features(arch: Architecture) -> set[str]:
    """What a classify architecture exercises in the export: each merge of a bidirectional
    mixer, each cell op, each pooling head."""
    found = set()
    for _, attrs in arch.graph.nodes(data=True):
        params = attrs["params"]
        if attrs["op"] == "bidirectional":
            found |= {f"merge={params['merge']}", f"cell={params['cell']['op']}"}
        elif attrs["op"] == "pool_head":
            found.add(f"pool={params.get('pool', 'mean')}")
    return found


@pytest.fixture(scope="module")
def classify_archs() -> list[Architecture]:
    """Few samples of the classify space that together use every merge, every pool and as
    many cells as 120 samples hold (smallest first, each adding something new)."""
    space = load_space(SPACES_DIR / "gated_classify.space")
    pool = sorted(
        sample_architectures(space, 120, seed=SAMPLE_SEED, causal=False),
        key=lambda a: (len(a.graph), a.hash),
    )
    chosen, covered = [], set()
    for arch in pool:
        if _features(arch) - covered:
            chosen.append(arch)
            covered |= _features(arch)
    assert {f"merge={m}" for m in ("add", "concat", "gate")} <= covered
    assert {f"pool={p}" for p in ("mean", "max", "attention")} <= covered
    return chosen


def test_classify_space_exports_compute_the_engines_function(
    classify_archs: list[Architecture], tmp_path: Path
) -> None:
    """Bidirectional mixers (their cells through the exported lookup table) and pooling
    heads export: same outputs as the engine on padded multichannel frames, and the files
    pass ruff."""
    x = torch.randn(BATCH, 11, CHANNELS, generator=torch.Generator().manual_seed(8))
    x[0, 7:] = 0.0  # a shorter sequence, padded as classify pads
    for i, arch in enumerate(classify_archs):
        ctx = _classify_ctx(arch)
        torch.manual_seed(i)
        engine = build_model(arch.graph, ctx).eval()
        source = export_source(
            arch.graph, ctx, title="classify", arch_hash=arch.hash, metrics={}, model=engine
        )
        assert {m.split(".")[0] for m in _imports(source)} <= ALLOWED_IMPORTS
        path = tmp_path / f"classify{i:02d}.py"
        path.write_text(source, encoding="utf-8")
        exported = _exported_model(_import(path), engine)
        lengths = torch.tensor([7] + [11] * (BATCH - 1))
        with torch.no_grad():
            expected, got = engine(x), exported(x)
            masked, got_masked = engine(x, lengths=lengths), exported(x, lengths=lengths)
        assert got.shape == (BATCH, 11, CLASSES)
        torch.testing.assert_close(got_masked, masked, atol=ATOL, rtol=0)
        where = describe(arch.graph)
        torch.testing.assert_close(
            got, expected, atol=ATOL, rtol=0, msg=lambda m, where=where: f"{where}: {m}"
        )
    _assert_passes_ruff(tmp_path)


@pytest.mark.slow
def test_classify_space_exports_compile_and_torch_export(
    classify_archs: list[Architecture], tmp_path: Path
) -> None:
    x = torch.randn(BATCH, COMPILE_SEQ, CHANNELS)
    for i, arch in enumerate(classify_archs[:4]):
        ctx = _classify_ctx(arch)
        torch.manual_seed(i)
        engine = build_model(arch.graph, ctx).eval()
        path = tmp_path / f"classify{i:02d}.py"
        path.write_text(
            export_source(arch.graph, ctx, title="c", arch_hash=arch.hash, metrics={}),
            encoding="utf-8",
        )
        exported = _exported_model(_import(path), engine)
        with torch.no_grad():
            expected = engine(x)
            torch._dynamo.reset()
            compiled = torch.compile(exported, backend="eager", fullgraph=True)
            torch.testing.assert_close(compiled(x), expected, atol=ATOL, rtol=0)
            program = torch.export.export(exported, (x,))
            torch.testing.assert_close(program.module()(x), expected, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------ pruning, weights


def _close_half_of_the_gates(model: GraphModel) -> None:
    """Every other unit of every pruning gate closed, the rest at varied open values."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TrainableGate):
                module.w[::2] = -1.0
            elif isinstance(module, HardConcreteGate):
                module.log_alpha.uniform_(0.0, 3.0)
                module.log_alpha[::2] = -10.0


def _gated_arch(archs: list[Architecture]) -> Architecture:
    """The smallest sample with gates on attention heads, hidden channels and experts."""

    def gated(a: Architecture, op: str) -> bool:
        return any(
            attrs["op"] == op and attrs["params"].get("prune", "none") != "none"
            for _, attrs in a.graph.nodes(data=True)
        )

    candidates = [
        a
        for a in archs
        if gated(a, "attention") and gated(a, "moe") and (gated(a, "glu") or gated(a, "mlp"))
    ]
    return min(candidates, key=lambda a: (len(a.graph), a.hash))


def test_pruned_export_has_no_gates_and_same_function(
    archs: list[Architecture], tmp_path: Path
) -> None:
    arch = _gated_arch(archs)
    engine = _engine(arch, seed=3)
    _close_half_of_the_gates(engine)
    x = _tokens(3)
    with torch.no_grad():
        before = engine(x)
    unpruned_params = sum(p.numel() for p in engine.parameters())
    pruned_graph = prune_model(engine)

    path = tmp_path / "pruned.py"
    source = export_source(
        pruned_graph,
        graph_context(pruned_graph),
        title="pruned",
        arch_hash=arch.hash,
        metrics={},
        model=engine,
    )
    path.write_text(source, encoding="utf-8")
    module = _import(path)
    exported = _exported_model(module, engine)
    assert not any(isinstance(m, PruningGate) for m in engine.modules())
    assert not any(isinstance(m, module.PruningGate) for m in exported.modules())
    assert sum(p.numel() for p in exported.parameters()) < unpruned_params
    for _, attrs in pruned_graph.nodes(data=True):
        assert attrs["params"].get("prune", "none") == "none"
    with torch.no_grad():
        torch.testing.assert_close(exported(x), before, atol=ATOL, rtol=0)
        # The pruned mixture's experts are fixed: it exports.
        program = torch.export.export(exported, (x,))
        torch.testing.assert_close(program.module()(x), before, atol=ATOL, rtol=0)


def test_weights_round_trip_through_safetensors(archs: list[Architecture], tmp_path: Path) -> None:
    arch = _smallest_with(archs, "attention", exportable=True)
    engine = _engine(arch, seed=4)
    paths = write_export(
        arch.graph,
        graph_context(arch.graph),
        tmp_path / "model.py",
        model=engine,
        weights=True,
        title="round-trip",
        metrics={"val_loss": 1.0},
    )
    assert paths.weights == tmp_path / "model.safetensors"
    module = _import(paths.source)
    loaded = module.load(str(paths.weights))
    assert not loaded.training
    x = _tokens(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), engine(x), atol=ATOL, rtol=0)
    # Written from an exported model, the weights keep their names.
    again = export_weights(loaded, tmp_path / "again.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(module.load(str(again))(x), engine(x), atol=ATOL, rtol=0)


def test_write_export_prunes_a_copy(archs: list[Architecture], tmp_path: Path) -> None:
    arch = _gated_arch(archs)
    engine = _engine(arch, seed=5)
    _close_half_of_the_gates(engine)
    x = _tokens(5)
    with torch.no_grad():
        before = engine(x)
    paths = write_export(
        arch.graph,
        graph_context(arch.graph),
        tmp_path / "model.py",
        model=engine,
        weights=True,
        prune=True,
        title="pruned on write",
        arch_hash=arch.hash,
    )
    assert any(isinstance(m, PruningGate) for m in engine.modules()), "the caller's model"
    text = paths.source.read_text(encoding="utf-8")
    assert f"architecture {arch.hash}" in text and "pruned" in text
    module = _import(paths.source)
    loaded = module.load(str(paths.weights))
    assert not any(isinstance(m, module.PruningGate) for m in loaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), before, atol=ATOL, rtol=0)


def test_weights_need_a_model(archs: list[Architecture], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs the model"):
        write_export(
            archs[0].graph,
            graph_context(archs[0].graph),
            tmp_path / "m.py",
            weights=True,
            title="t",
        )


# ------------------------------------------------------------------------ every router


@pytest.mark.parametrize(
    "router", ["noisy_topk", "switch", "expert_choice", "softmax_d2s", "activation_d2s"]
)
def test_each_router_exports(archs: list[Architecture], tmp_path: Path, router: str) -> None:
    """Only the router in use is written (a table filtered to the classes the model builds)."""
    base = _smallest_with(archs, "moe", exportable=True)
    graph = copy.deepcopy(base.graph)
    if router == "expert_choice":  # looks at future tokens: non-causal tasks only
        graph.nodes[INPUT_OP]["params"]["causal"] = False
    for _, attrs in graph.nodes(data=True):
        if attrs["op"] == "moe":
            attrs["params"]["router"] = router
    arch = Architecture(base.derivation, graph, base.hash)
    engine = _engine(arch, seed=6)
    path = tmp_path / f"{router}.py"
    source = _export(arch, engine)
    path.write_text(source, encoding="utf-8")
    exported = _exported_model(_import(path), engine)
    routers = [
        n.name
        for n in ast.parse(source).body
        if isinstance(n, ast.ClassDef) and n.name.endswith("Router")
    ]
    assert len([r for r in routers if not r.startswith("_") and r != "Router"]) == 1, routers
    x = _tokens(6)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------ nothing guessed


def test_an_undeclared_dependency_is_named(
    archs: list[Architecture], monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = _smallest_with(archs, "attention", exportable=True)
    declared = attention.EXPORT_DEPS["Attention"]
    monkeypatch.setitem(
        attention.EXPORT_DEPS, "Attention", tuple(d for d in declared if d != "ROPE_BASE")
    )
    sources.clear_caches()
    try:
        with pytest.raises(ExportError, match=r"ROPE_BASE.*EXPORT_DEPS\['Attention'\]"):
            _export(arch)
    finally:
        monkeypatch.undo()
        sources.clear_caches()


# ------------------------------------------------------------------------ hostile input

MARKER = "gatesearch_export_pwned"
CODE = f"__import__('pathlib').Path('{MARKER}').touch()"


def _first(graph: nx.DiGraph, op: str) -> dict:
    return next(attrs for _, attrs in graph.nodes(data=True) if attrs["op"] == op)


def _hostile_cases() -> list:
    """(edit of a graph with an attention node and an mlp or glu node, expected outcome)."""

    def path(g: nx.DiGraph) -> None:
        _first(g, "attention")["path"] = f'x"); {CODE} #\n{CODE}\n"""'

    def param_value(g: nx.DiGraph) -> None:
        _first(g, "attention")["params"]["gate"] = f"g1'); {CODE} #"

    def param_name(g: nx.DiGraph) -> None:
        _first(g, "attention")["params"][f"heads=1, **{{}}); {CODE} #"] = 1

    def op_name(g: nx.DiGraph) -> None:
        _first(g, "attention")["op"] = CODE

    def nan_number(g: nx.DiGraph) -> None:
        _first(g, "attention")["params"]["window"] = float("nan")

    def inf_number(g: nx.DiGraph) -> None:
        _first(g, "rmsnorm")["params"]["eps"] = float("inf")

    def string_number(g: nx.DiGraph) -> None:
        _first(g, "attention")["params"]["heads"] = f"1); {CODE} #"

    def str_subclass(g: nx.DiGraph) -> None:
        class Sneaky(str):
            def __repr__(self) -> str:
                return CODE

        _first(g, "attention")["params"]["gate"] = Sneaky("g1")

    def newline_value(g: nx.DiGraph) -> None:
        _first(g, "attention")["params"]["gate_act"] = "sigmoid\n" + CODE

    return [
        pytest.param(path, "escaped", id="path-with-quotes-newlines-code"),
        pytest.param(param_value, "refused", id="string-param-with-code"),
        pytest.param(param_name, "refused", id="param-name-with-code"),
        pytest.param(op_name, "refused", id="op-with-code"),
        pytest.param(nan_number, "refused", id="nan-number"),
        pytest.param(inf_number, "refused", id="inf-number"),
        pytest.param(string_number, "refused", id="string-where-int"),
        pytest.param(str_subclass, "refused", id="str-subclass-with-repr"),
        pytest.param(newline_value, "refused", id="string-param-with-newline"),
    ]


@pytest.mark.parametrize(("edit", "outcome"), _hostile_cases())
def test_hostile_graph_is_refused_or_escaped(
    archs: list[Architecture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit, outcome
) -> None:
    monkeypatch.chdir(tmp_path)
    base = _smallest_with(archs, "attention", exportable=True)
    graph = copy.deepcopy(base.graph)
    edit(graph)
    ctx = graph_context(graph)
    if outcome == "refused":
        with pytest.raises(ExportError):
            export_source(graph, ctx, title="t", arch_hash=base.hash, metrics={})
        return
    source = export_source(graph, ctx, title="t", arch_hash=base.hash, metrics={})
    assert CODE not in source
    path = tmp_path / "model.py"
    path.write_text(source, encoding="utf-8")
    _import(path).Model()
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    "field",
    ["title", "metric-key", "metric-value"],
)
def test_hostile_text_is_escaped(
    archs: list[Architecture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    monkeypatch.chdir(tmp_path)
    arch = archs[0]
    evil = f'x"""\n{CODE}\n"""\\'
    title, metrics = "campaign", {"loss": 1.0}
    if field == "title":
        title = evil
    elif field == "metric-key":
        metrics = {evil: 1.0}
    else:
        metrics = {"note": evil}
    source = export_source(
        arch.graph, graph_context(arch.graph), title=title, arch_hash=arch.hash, metrics=metrics
    )
    doc = ast.get_docstring(ast.parse(source), clean=False)
    assert doc is not None and CODE in doc  # kept as text, on one line
    assert len(ast.parse(source).body) > 1 and isinstance(ast.parse(source).body[1], ast.ImportFrom)
    path = tmp_path / "model.py"
    path.write_text(source, encoding="utf-8")
    _import(path)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"class_name": "Model(nn.Module): pass\nimport os\nclass X"},
            "identifier",
            id="class-name",
        ),
        pytest.param({"arch_hash": "abc'\nimport os"}, "hexadecimal", id="arch-hash"),
        pytest.param({"metrics": {"loss": [1, 2]}}, "numbers or strings", id="metric-list"),
    ],
)
def test_bad_arguments_are_refused(archs: list[Architecture], kwargs: dict, message: str) -> None:
    arch = archs[0]
    args = {"title": "t", "arch_hash": arch.hash, "metrics": {}} | kwargs
    with pytest.raises(ExportError, match=message):
        export_source(arch.graph, graph_context(arch.graph), **args)


def test_attribute_names_are_sanitised() -> None:
    g = nx.DiGraph()
    g.add_node("a", op="rmsnorm", params={}, path="model.stack.block[3].residual[1].norm.rmsnorm")
    g.add_node("b", op="rmsnorm", params={}, path="x'); import os; #.block[2]")
    g.add_node("c", op="rmsnorm", params={}, path="model.rmsnorm")
    g.add_node("d", op="rmsnorm", params={}, path=None)
    names = codegen.attribute_names(g, ["a", "b", "c", "d"])
    assert names == {
        "a": "block3_residual1_rmsnorm",
        "b": "block2_rmsnorm",
        "c": "rmsnorm",
        "d": "rmsnorm_2",
    }


# ------------------------------------------------------------------------ what it says


def _docstring(arch: Architecture, about: About | None) -> str:
    source = export_source(
        arch.graph,
        graph_context(arch.graph),
        title="t",
        arch_hash=arch.hash,
        metrics={"loss": 1.0},
        about=about,
    )
    doc = ast.get_docstring(ast.parse(source), clean=False)
    assert doc is not None
    return doc


def test_the_docstring_states_scores_and_where_the_class_logits_are(
    archs: list[Architecture],
) -> None:
    scores = Scores(
        "accuracy", ScoreSource.RETRAINED, valid=0.53125, valid_loss=1.2345, test=0.5, test_loss=2.0
    )
    doc = _docstring(archs[0], About(scores, Readout.LAST_POSITION))
    assert "Scores (retrained at the full budget, at its best validation point):" in doc
    assert "    validation accuracy: 0.5312 (loss 1.234)\n    test accuracy: 0.5 (loss 2)" in doc
    # graph_context's output is 256 wide: the classes are counted from the model's output.
    assert "The class logits are y[b, n_b - 1, :], the output\nat the last real position" in doc
    assert "argmax over the 256 classes" in doc
    proxy = Scores("nll", ScoreSource.PROXY, valid=4.25)
    doc = _docstring(archs[0], About(proxy, Readout.NEXT_FRAME))
    assert "    validation nll: 4.25\n    test nll: not measured (the proxy scores the" in doc
    assert "Bernoulli logit for each of the 256 dimensions" in doc
    assert "Scores" not in _docstring(archs[0], None)  # nothing claimed when nothing is known


@pytest.mark.parametrize("readout", list(Readout))
def test_each_readout_is_said_in_lines_that_fit(archs: list[Architecture], readout) -> None:
    doc = _docstring(archs[0], About(None, readout))
    assert "Output:" in doc and max(len(line) for line in doc.splitlines()) <= 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"metric_name": 'acc"""\nimport os'}, "plain name", id="metric-name"),
        pytest.param({"valid": math.nan}, "finite", id="nan-score"),
        pytest.param({"test": "0.5"}, "finite", id="string-score"),
        pytest.param({"source": "retrained"}, "ScoreSource", id="source-string"),
    ],
)
def test_scores_take_only_numbers_and_a_plain_name(kwargs: dict, message: str) -> None:
    args = {"metric_name": "accuracy", "source": ScoreSource.PROXY} | kwargs
    with pytest.raises(ExportError, match=message):
        Scores(**args)
