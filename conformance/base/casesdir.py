"""Where the cases/ folder is: CONFORMANCE_CASES, else a checkout's own, else the copy inside the package.

Standard library only: tox's plugin (toxfile.py) reads the nightly matrix through conformance.matrix in
tox's own interpreter. The current directory plays no part, so an installed suite runs from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from conformance.base.errors import ConformanceError

# The package's folder, however deep this module sits in it (it may move into a sub-package; the data
# stays at the top). Not conformance.__file__: under an editable install the package may be a namespace.
PACKAGE = Path(__file__).resolve().parents[__name__.count(".") - 1]
# setup.py copies the top-level cases/ here when it builds a wheel (not for an editable install).
PACKAGED = PACKAGE / "_cases"
MARKER = "recipes.yaml"  # what makes a folder a cases/ folder


class CasesNotFound(ConformanceError):
    """No cases/ folder: one line saying where it was looked for."""


def find() -> Path:
    return located()[0]


def located() -> tuple[Path, str]:
    """The folder and which of the three it is (the word a run's header and `list` print)."""
    override = os.environ.get("CONFORMANCE_CASES")
    if override:
        folder = Path(override).expanduser().resolve()
        if not (folder / MARKER).is_file():
            raise CasesNotFound(f"CONFORMANCE_CASES={override}: no {MARKER} there")
        return folder, "CONFORMANCE_CASES"
    for folder, kind in ((checkout(), "checkout"), (PACKAGED, "installed package")):
        if folder is not None and (folder / MARKER).is_file():
            return folder, kind
    raise CasesNotFound(
        f"no cases/ folder: neither a checkout's beside {PACKAGE} nor the installed copy {PACKAGED}; "
        "set CONFORMANCE_CASES"
    )


def checkout() -> Path | None:
    """cases/ of the source tree the package was imported from (an editable install or a plain checkout),
    so that edits to it take effect; None for an installed wheel, whose parent is site-packages."""
    root = PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "cases").is_dir():
        return root / "cases"
    return None
