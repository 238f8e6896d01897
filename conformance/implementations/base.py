"""What an implementation under test declares: its package, workflows, families, support and where its
own code lives (so its deliberate refusals are told from crashes). One module per implementation in this
package declares one `IMPLEMENTATION`; conformance.implementations finds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.base import contract, versions
from conformance.base.outcomes import REFUSED_BY_DESIGN, SUPPORTED

if TYPE_CHECKING:
    import torch

    from conformance.base.flags import TieFlags
    from conformance.model.cases import Case
    from conformance.model.families import Family
    from conformance.model.pipeline import CaseRun, Workspace
    from conformance.model.recipes import Recipe

    Runner = Callable[[Case, Recipe, torch.dtype, Workspace], CaseRun]

__all__ = ["REFUSED_BY_DESIGN", "SUPPORTED", "Implementation", "Standalone"]


@dataclass(frozen=True)
class Standalone:
    """How its cases become standalone repro scripts (conformance.engine.standalone)."""

    template: str  # the script's template: one of conformance/engine/templates, or one in `folder`
    package: str  # what the script imports besides torch and transformers ("nothing else": HF alone)
    # The (module, name) imports and the template values one case's script needs beyond the common ones.
    pieces: Callable[[Case, Recipe], tuple[set[tuple[str, str]], dict[str, Any]]] = lambda case, recipe: (
        set(),
        {},
    )
    folder: Path | None = None  # where its own templates are (beside its module)


@dataclass(frozen=True)
class Implementation:
    name: str
    package: str  # distribution whose version identifies the implementation under test
    about: str
    # workflow (declared in conformance.base.contract) -> how to run one of its cases
    runners: dict[str, Runner]
    order: int = 50  # where its cases come in a run (hf, then peft, then the others)
    families: tuple[str, ...] | None = None  # None: every family
    # Whose recipes (cases/recipes.yaml `implementations:`) it runs besides those naming it.
    recipes_of: tuple[str, ...] = ()
    # Path fragments of its own code: a ValueError/NotImplementedError raised there is a refusal.
    code: tuple[str, ...] = ()
    # Why a family cannot run with the installed release (a reasoned skip), or None.
    family_unavailable: Callable[[Family], str | None] = lambda family: None
    # SUPPORTED, or REFUSED_BY_DESIGN when the implementation declares it does not build this combination.
    support: Callable[[Family, TieFlags], str] = lambda family, flags: SUPPORTED
    elsewhere: str = ""  # where its results are made when it is not installed in a run's environment
    # The pytest marker of its own tests (run in its environment), registered by tests/conftest.py.
    test_marker: str = ""
    # It wraps models with PEFT: its half-precision cases run with PEFT's autocast_adapter_dtype on (the
    # default: adapter tensors upcast to float32) and off (conformance.base.precision).
    autocast_axis: bool = False
    # Where it can run: a device missing here skips its cases with the reason (conformance.base.device).
    devices: tuple[str, ...] = ("cpu", "cuda")
    # Its loader converts the list-form `_tied_weights_keys` of remote code written for transformers 4.x,
    # so it builds such families where transformers 5 alone cannot (conformance.model.families.remote_code).
    converts_legacy_remote_code: bool = False
    # Its standalone repro scripts; None: its cases have none (`repro --standalone` says so).
    standalone: Standalone | None = None

    def __post_init__(self) -> None:
        unknown = [w for w in self.runners if w not in contract.WORKFLOWS]
        if unknown:
            raise ValueError(f"implementation {self.name}: workflows {unknown} are not in the contract")

    @property
    def workflows(self) -> tuple[str, ...]:
        return tuple(self.runners)

    @property
    def code_paths(self) -> tuple[str, ...]:
        return self.code or (f"/{self.package.replace('-', '_')}/",)

    def runs_recipe(self, recipe: Recipe, family: str) -> bool:
        return any(recipe.runs_on(name, family) for name in (self.name, *self.recipes_of))

    def unavailable(self) -> str | None:
        if self.package not in versions.installed():
            return f"{self.name}: package {self.package} is not installed"
        return None

    def device_unavailable(self, name: str) -> str | None:
        if name not in self.devices:
            return f"{self.name} runs on {', '.join(self.devices)} only ({self.elsewhere or 'not here'})"
        return None

    def builds_unavailable(self, family: Family) -> str | None:
        """Why it cannot build `family` with what is installed (a reasoned skip), or None."""
        legacy = None if self.converts_legacy_remote_code else family.legacy_unavailable()
        return legacy or self.family_unavailable(family)

    def covers(self, family: Family) -> bool:
        return self.families is None or family.name in self.families

    def execute(self, case: Case, recipe: Recipe, dtype: torch.dtype, workspace: Workspace) -> CaseRun:
        return self.runners[case.workflow](case, recipe, dtype, workspace)
