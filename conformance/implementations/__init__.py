"""Implementations under test behind one interface: what each supports, runs, and is checked on.

- `hf`: transformers' own classes, the reference (its `native` run is the reference's self-check).
- `peft`: PEFT adapters on HF models.
- `nemo-automodel`: NVIDIA NeMo Automodel's own model classes, checkpointer and LoRA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from conformance import outcomes, versions
from conformance.cases import Case
from conformance.errors import UnknownName
from conformance.families import Family
from conformance.flags import TieFlags
from conformance.implementations import native, nemo, peft
from conformance.pipeline import CaseRun, Workspace
from conformance.recipes import Recipe

ENV_VAR = "CONFORMANCE_IMPL"
# support: may it build this family/flag combination?
SUPPORTED, REFUSED = outcomes.SUPPORTED, outcomes.REFUSED_BY_DESIGN
Runner = Callable[[Case, Recipe, torch.dtype, Workspace], CaseRun]
NATIVE_CHECKS = (
    "tie-status",
    "logits-parity",
    "logits-parity-fp64",
    "retie",
    "checkpoint-roundtrip",
    "hf-checkpoint-load",
)
ADAPTER_CHECKS = (
    "adapter-effect",
    "adapter-roundtrip",
    "merge-fidelity",
    "roundtrip-fidelity",
    "tie-consistency",
)


@dataclass(frozen=True)
class Implementation:
    name: str
    package: str  # distribution whose version identifies the implementation under test
    about: str
    runners: dict[str, Runner]  # workflow -> how to run one of its cases
    checks: tuple[str, ...]
    families: tuple[str, ...] | None = None  # None: every family
    # Why a family cannot run with the installed release (a reasoned skip), or None.
    family_unavailable: Callable[[Family], str | None] = lambda family: None
    # SUPPORTED, or REFUSED when the implementation declares it does not build this combination.
    support: Callable[[Family, TieFlags], str] = lambda family, flags: SUPPORTED
    elsewhere: str = ""  # where its results are made when it is not installed in a run's environment

    @property
    def workflows(self) -> tuple[str, ...]:
        return tuple(self.runners)

    def unavailable(self) -> str | None:
        if self.package not in versions.installed():
            return f"{self.name}: package {self.package} is not installed"
        return None

    def covers(self, family: Family) -> bool:
        return self.families is None or family.name in self.families

    def execute(self, case: Case, recipe: Recipe, dtype: torch.dtype, workspace: Workspace) -> CaseRun:
        return self.runners[case.workflow](case, recipe, dtype, workspace)


def _native(provider: native.Provider) -> Runner:
    return lambda case, recipe, dtype, workspace: native.run(case, provider, workspace)


REGISTRY: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        Implementation(
            name="hf",
            package="transformers",
            about="transformers' own classes: tie rule, save/load and re-tie, checked against the rule table",
            runners={"native": _native(native.HFProvider())},
            checks=NATIVE_CHECKS,
        ),
        Implementation(
            name="peft",
            package="peft",
            about="PEFT adapters on HF models: merge_and_unload, save_pretrained, from_pretrained",
            runners={workflow: peft.run for workflow in peft.WORKFLOWS},
            checks=(*ADAPTER_CHECKS, "reference", "tie-preserved"),
        ),
        Implementation(
            name="nemo-automodel",
            package=nemo.PACKAGE,
            about="NeMo Automodel's own Gemma4 MoE, Llama and Qwen2 classes, checkpointer and LoRA",
            runners={"native": _native(nemo.PROVIDER), "lora-merge": nemo.run_lora},
            checks=(*NATIVE_CHECKS, *ADAPTER_CHECKS),
            families=tuple(nemo.CLASSES),
            family_unavailable=nemo.unavailable,
            support=nemo.support,
            elsewhere="`tox -e nemo` runs it, with its pinned transformers, into reports/nemo/index.html",
        ),
    )
}


def get(name: str, where: str = "") -> Implementation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownName("implementation", name, list(REGISTRY), where) from None


def selected(names: list[str] | None) -> list[Implementation]:
    """--impl names, else the CONFORMANCE_IMPL variable (comma-separated), else every implementation that
    is installed here (one named explicitly but not installed is planned, and its cases say why they skip)."""
    if not names:
        env = os.environ.get(ENV_VAR, "")
        names = [n.strip() for n in env.split(",") if n.strip()]
    if not names:
        return [impl for impl in REGISTRY.values() if impl.unavailable() is None]
    return [get(n, f"--impl/{ENV_VAR}") for n in names]


def not_planned(names: list[str] | None) -> dict[str, str]:
    """Implementations a default selection leaves out (not installed here), and where they are run."""
    if names or os.environ.get(ENV_VAR, "").strip():
        return {}
    return {
        impl.name: f"{impl.unavailable()}{'; ' + impl.elsewhere if impl.elsewhere else ''}"
        for impl in REGISTRY.values()
        if impl.unavailable() is not None
    }
