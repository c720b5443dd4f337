"""`gatesearch export` through the console script, on real campaigns."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from clitools import captured
from safetensors.torch import load_file

from gatesearch.arch.build import build_model
from gatesearch.arch.graph import read_graph
from gatesearch.arch.space import DEFAULT_SPACE
from gatesearch.export.onnx import fixed_time_reasons
from gatesearch.tasks import TaskSpec, make_task

EXE = shutil.which("gatesearch")


def gs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "gatesearch.cli.app", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the file look their module up here
    spec.loader.exec_module(module)
    return module


MQAR = ["--task", "mqar", "--task-param", "vocab=32", "--task-param", "length=16"]

# A campaign and a retrain on a local Ray, through the console script (a minute of set-up).
# ONNX's sequence length: not the task's (16), and short, since a model of loops over time
# traces step by step.
SEQ = 20
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def retrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    res = gs(
        "run", "--space", str(DEFAULT_SPACE), *MQAR, "--task-param", "pairs=2",
        "--trials", "2", "--workers", "2", "--budget", "4steps", "--max-params", "200000",
        "--runs-dir", "runs",
        "--name", "r", cwd=root,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = gs("retrain", "runs/r", "--top", "1", "--budget", "4steps", cwd=root)
    assert res.returncode == 0, res.stderr
    return root


def _retrained_engine(root: Path) -> tuple[Path, Any, torch.nn.Module]:
    """(the retrained folder, its task, the engine's model with the retrained weights)."""
    (folder,) = (root / "runs/r/retrained").iterdir()
    graph = read_graph(folder / "graph.parquet")
    task = make_task(TaskSpec("mqar", {"vocab": 32, "length": 16, "pairs": 2}))
    engine = build_model(graph, task.context(int(graph.nodes["input"]["params"]["d_model"])))
    engine.load_state_dict(load_file(str(folder / "weights.safetensors")))
    return folder, task, engine.eval()


def test_export_with_weights_reproduces_the_retrained_model(retrained_run: Path) -> None:
    res = gs("export", "runs/r", "--rank", "1", "-o", "best.py", "--weights", cwd=retrained_run)
    assert res.returncode == 0, res.stderr
    source = (retrained_run / "best.py").read_text()
    assert "gatesearch" not in [
        line.split()[1] for line in source.splitlines() if line.startswith("import ")
    ]
    exported = _import(retrained_run / "best.py").load(str(retrained_run / "best.safetensors"))
    folder, _, engine = _retrained_engine(retrained_run)
    x = torch.randint(0, 32, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), engine(x), atol=1e-5, rtol=1e-5)
    assert folder.name in source  # the architecture hash is named in the docstring
    # Everything written through temporary files is as readable as a plain open() would make
    # it (tempfile's are private), so a colleague can open the run and the exported model.
    umask = os.umask(0o022)
    os.umask(umask)  # read it: the subprocesses ran under it
    for path in ("best.py", "best.safetensors"):
        assert stat.S_IMODE((retrained_run / path).stat().st_mode) == 0o666 & ~umask, path
    for path in (retrained_run / "runs/r", folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path


def test_export_by_hash_prefix_without_weights(
    retrained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder,) = (retrained_run / "runs/r/retrained").iterdir()
    monkeypatch.chdir(retrained_run)
    res = captured("export", "runs/r", "--arch", folder.name[:6], "-o", "by_hash.py")
    assert res.returncode == 0, res.stderr
    model = _import(retrained_run / "by_hash.py").Model()
    assert model(torch.randint(0, 32, (1, 8))).shape == (1, 8, 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rank", "99", "-o", "m.py"), "ranked architectures"),
        (("--arch", "zzzz", "-o", "m.py"), "no architecture with a hash"),
        (("--rank", "1", "--arch", "ab", "-o", "m.py"), "not both"),
        (("-o", "m.txt"), "must end .py"),
        (("-o", "m.py", "--format", "onnx"), "must end .onnx"),
        (("-o", "m.py", "--seq-len", "8"), "--seq-len is for --format onnx"),
        (("-o", "missing/m.py"), "no such directory"),
        (("--rank", "2", "-o", "m.py", "--weights"), "gatesearch retrain"),
        (("-o", "m.py", "--member", "copy"), "--member is for a suite campaign"),
    ],
    ids=[
        "rank-too-large",
        "unknown-hash",
        "rank-and-arch",
        "not-python",
        "not-onnx",
        "seq-len-for-py",
        "no-dir",
        "no-weights",
        "member-without-suite",
    ],
)
def test_bad_export_requests_are_one_line(
    retrained_run: Path, args: tuple, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(retrained_run)
    res = captured("export", "runs/r", *args)  # in this process: ~2 s less a case
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert not (retrained_run / "m.py").exists()


def test_export_of_a_missing_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = captured("export", "runs/nope", "-o", "m.py")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ")


def test_onnx_export_with_weights_runs_the_retrained_function(retrained_run: Path) -> None:
    """--format onnx: the retrained model as an ONNX graph that ONNX Runtime runs at the chosen
    sequence length and any batch, computing what the engine computes. One export (each costs
    a process: torch.onnx's export leaves torch's tracing state changed, and later
    torch.compile calls in this process then broke graphs); the task's own length, the
    default, is the same code path with another number."""
    import onnxruntime

    res = gs("export", "runs/r", "-o", "best.onnx", "--format", "onnx", "--seq-len", str(SEQ),
             "--weights", cwd=retrained_run)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "checked with ONNX Runtime" in " ".join(res.stdout.split())
    _, task, engine = _retrained_engine(retrained_run)
    line = " ".join(res.stdout.split())
    session = onnxruntime.InferenceSession(str(retrained_run / "best.onnx"))
    fixed_by = fixed_time_reasons(engine)
    if fixed_by:  # the time axis fixed at --seq-len, and the line says which primitive and why
        assert task.seq_len != SEQ and f"input x (batch, {SEQ}) token ids" in line
        assert session.get_inputs()[0].shape[1] == SEQ
        assert f"time fixed at {SEQ} ({fixed_by[0][0]}: {fixed_by[0][1]}" in line
        runs = [(1, SEQ), (5, SEQ)]
    else:  # checked at --seq-len, and runs at any length
        assert "input x (batch, time) token ids" in line and "time fixed" not in line
        assert isinstance(session.get_inputs()[0].shape[1], str)  # a named, dynamic axis
        runs = [(1, SEQ), (5, 13)]
    for batch, length in runs:
        x = torch.randint(0, 32, (batch, length))
        (y,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), engine(x), atol=1e-4, rtol=0)
