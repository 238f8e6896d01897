"""Implementations under test behind one interface: what each supports, runs and is checked on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from conformance import pipeline, versions
from conformance.cases import WORKFLOWS, Case
from conformance.errors import UnknownName
from conformance.families import Family
from conformance.flags import TieFlags
from conformance.oracles import CHECKS
from conformance.recipes import Recipe

ENV_VAR = "CONFORMANCE_IMPL"


@dataclass(frozen=True)
class Implementation:
    name: str
    package: str  # distribution whose version identifies the implementation under test
    about: str
    workflows: tuple[str, ...]
    checks: tuple[str, ...]
    execute: Callable[[Case, Recipe, torch.dtype, pipeline.Workspace], pipeline.CaseRun]
    # Why a family/flag combination is out of scope ("refused by design" is an outcome, not a skip).
    unsupported: Callable[[Family, TieFlags], str | None] = lambda family, flags: None

    def unavailable(self) -> str | None:
        if self.package not in versions.installed():
            return f"{self.name}: package {self.package} is not installed"
        return None


REGISTRY: dict[str, Implementation] = {
    "peft": Implementation(
        name="peft",
        package="peft",
        about="PEFT adapters on HF transformers models: merge_and_unload, save_pretrained, from_pretrained",
        workflows=WORKFLOWS,
        checks=tuple(CHECKS),
        execute=pipeline.run_case,
    ),
}


def get(name: str, where: str = "") -> Implementation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownName("implementation", name, list(REGISTRY), where) from None


def selected(names: list[str] | None) -> list[Implementation]:
    """--impl names, else the CONFORMANCE_IMPL variable (comma-separated), else every implementation."""
    if not names:
        env = os.environ.get(ENV_VAR, "")
        names = [n.strip() for n in env.split(",") if n.strip()] or list(REGISTRY)
    return [get(n, f"--impl/{ENV_VAR}") for n in names]
