"""The build's one step beyond pyproject.toml: the top-level cases/ goes into the wheel as conformance/_cases.

cases/ stays at the repository's top level, where maintainers edit it; an installed wheel reads its copy
(conformance.casesdir). An editable install gets no copy: it reads the checkout's live cases/. An sdist
carries cases/ (MANIFEST.in), so a wheel built from it gets the copy too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CASES = Path(__file__).resolve().parent / "cases"


class BuildWithCases(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "conformance" / "_cases"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CASES, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))


setup(cmdclass={"build_py": BuildWithCases})
