"""A non-editable install (a wheel) carries the default space, the strategy presets and the
report's page template, runs a campaign with them away from the repository, and draws its
report."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _isolation() -> list[str]:
    """Build with this environment's setuptools when it is new enough for pyproject.toml (no
    network needed); else let pip fetch one into an isolated build environment."""
    try:
        import setuptools
    except ImportError:
        return []
    return ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []


pytestmark = pytest.mark.slow  # builds a wheel and installs it into a fresh venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", *_isolation(),
         "--quiet", "-w", str(out)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (path,) = out.glob("gatesearch-*.whl")
    return path


def test_the_wheel_carries_spaces_strategies_and_suites(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("spaces", "strategies", "suites"):
        for source in (REPO / folder).rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                rel = source.relative_to(REPO).as_posix()
                assert f"gatesearch/_bundled/{rel}" in names, rel


def test_the_wheel_offers_the_analysis_extra(wheel: Path) -> None:
    """The README's pandas and DuckDB examples: `pip install "gatesearch[analysis]"`."""
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(meta).decode().splitlines()
    assert "Provides-Extra: analysis" in lines
    wanted = {line.split(":", 1)[1].split(">=")[0].strip() for line in lines
              if line.startswith("Requires-Dist:") and 'extra == "analysis"' in line}  # fmt: skip
    assert wanted == {"pandas", "duckdb"}


def test_the_wheel_carries_the_report_template(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = REPO / "gatesearch" / "report" / "templates"
    shipped = [p.relative_to(REPO).as_posix() for p in templates.iterdir() if p.is_file()]
    assert "gatesearch/report/templates/report.html.j2" in shipped
    assert set(shipped) <= names, set(shipped) - names


def test_an_installed_wheel_runs_a_campaign_with_its_own_copies(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", str(wheel), "--no-deps", "--quiet",
         "--target", str(target)],
        check=True, capture_output=True,
    )  # fmt: skip
    # The installed copy first on the path; the dependencies come from this environment.
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("RAY_ADDRESS", None)
    where = subprocess.run(
        [sys.executable, "-c",
         "import gatesearch, gatesearch.arch.space as s, gatesearch.strategies.presets as c; "
         "print(gatesearch.__file__); print(s.DEFAULT_SPACE); print(c.resolve_preset_path(None))"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env=env,
    ).stdout.split()  # fmt: skip
    bundled = target / "gatesearch" / "_bundled"
    assert Path(where[0]).is_relative_to(target)
    assert Path(where[1]) == bundled / "spaces" / "gated_lm.space"
    assert Path(where[2]) == bundled / "strategies" / "evolution.toml"
    assert filecmp.cmp(where[1], REPO / "spaces" / "gated_lm.space", shallow=False)
    run = subprocess.run(
        [sys.executable, "-c", "from gatesearch.cli.app import main; main()",
         "run", "--task", "null", "--trials", "3", "--workers", "1",
         "--runs-dir", str(tmp_path / "runs"), "--name", "w"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3 trials" in run.stdout
    assert (tmp_path / "runs" / "w" / "space.space").read_text() == Path(where[1]).read_text()
    # The page is drawn from the template inside the installed package.
    report = subprocess.run(
        [sys.executable, "-c", "from gatesearch.cli.app import main; main()",
         "report", str(tmp_path / "runs" / "w")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    page = (tmp_path / "runs" / "w" / "report" / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Best architecture</h2>" in page
