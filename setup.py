"""Build hook (everything else is in pyproject.toml): a wheel carries `spaces/`,
`strategies/` and `suites/` inside the package, as `gatesearch/_bundled/`, because a wheel
installs packages only and the default space, the strategy presets and the task suites must
be found after a non-editable `pip install .` (see gatesearch/shipped.py). Editable installs read the
repository's folders and get no copy."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("spaces", "strategies", "suites")


class BuildPyWithShippedFolders(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "gatesearch" / "_bundled" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(HERE / name, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithShippedFolders})
