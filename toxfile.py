"""tox plugin of this project: one tox environment per row and per cross-version pair of cases/matrix.toml.

`tox -e <row>` runs one row of the nightly matrix, `tox -m nightly` every row and pair. A row's
environment holds its transformers, PEFT and NeMo Automodel specs (TORCH_SPEC as for every environment);
everything it does not set comes from [testenv] in tox.ini. A pair `xver-<save>-to-<load>` is built like
its `load` row and imports what the `save` row exported, so it depends on that row.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from tox.config.loader.memory import MemoryLoader
from tox.config.sets import ConfigSet
from tox.config.types import Command
from tox.plugin import impl
from tox.session.state import State

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conformance.reading import matrix

ROOT = Path(__file__).resolve().parent
# This checkout's matrix, whatever CONFORMANCE_CASES says: it names the environments of this tox.ini.
MATRIX = matrix.load(ROOT / "cases" / "matrix.toml")
OUT = "reports/matrix"


def _deps(row: matrix.Row) -> str:
    torch = os.environ.get("TORCH_SPEC") or "torch"
    if row.nemo:
        # NeMo goes in by tools/install_nemo.py (no CUDA dependencies, then the transformers it pins).
        return "\n".join([torch, row.peft or "peft", "uv"])
    return "\n".join([torch, row.transformers or "transformers", row.peft or "peft", *row.extra.split()])


def _install(row: matrix.Row) -> list[str]:
    return [f"python {ROOT / 'tools' / 'install_nemo.py'} {row.nemo}"] if row.nemo else []


def _families(pair: matrix.Pair) -> str:
    return "".join(f" --family {family}" for family in pair.families)


def _loader(name: str, probe: bool) -> MemoryLoader | None:
    """The environment of a row or pair; `probe`: check that its hosts answer (only when it may run)."""
    row, pair = MATRIX.rows.get(name), MATRIX.pairs.get(name)
    if row is None and pair is None:
        return None
    entry = row or pair
    built_like = row or MATRIX.rows[pair.load]
    rows = [built_like] + ([MATRIX.rows[pair.save]] if pair else [])
    reason = next((r.unreachable() for r in rows if probe and r.unreachable()), None)
    common = {"labels": ["nightly"], "description": f"nightly: {entry.why}"}
    if reason:
        say = Command(["python", "-c", f"print({reason!r})"])
        return MemoryLoader(**common, skip_install=True, deps="", commands=[say])
    deps, install = _deps(built_like), _install(built_like)
    if row is not None:
        impls = "".join(f" --impl {impl}" for impl in row.implementations)
        commands = [f"python -m conformance run{impls}{row.run_options()} --out {OUT}/{name}"]
        for saving in (p for p in MATRIX.pairs.values() if p.save == name):
            folder = f"{OUT}/{name}/export-{saving.load}"
            commands.append(
                f"python -m conformance export --out {folder}{_families(saving)}{row.cover_option()}"
            )
        return MemoryLoader(**common, deps=deps, commands_pre=install, commands=commands)
    folder = f"{OUT}/{pair.save}/export-{pair.load}"
    return MemoryLoader(
        **common,
        deps=deps,
        commands_pre=install,
        depends=pair.save,
        commands=[f"python -m conformance import {folder} --out {OUT}/{name}"],
    )


def _may_run(state: State, name: str) -> bool:
    """Whether this invocation may run `name` (named with -e, or a label selects it)."""
    options = state.conf.options
    named = getattr(options, "env", None)
    return name in (str(named) if named is not None else "") or "nightly" in (
        getattr(options, "labels", None) or []
    )


@impl
def tox_extend_envs() -> Iterable[str]:
    return [*MATRIX.rows, *MATRIX.pairs]


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    for name in (*MATRIX.rows, *MATRIX.pairs):
        loader = _loader(name, probe=_may_run(state, name))
        if loader is not None:
            state.conf.memory_seed_loaders[name].append(loader)
