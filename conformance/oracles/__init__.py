"""Checks: each compares pipeline artifacts with HF reference behaviour; one tolerance table for all."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from conformance import casefiles
from conformance.errors import CaseFileError, UnknownName
from conformance.oracles import adapter, native
from conformance.oracles.base import Check, CheckContext, Measurement

CHECKS: dict[str, Check] = {check.name: check for check in (*adapter.CHECKS, *native.CHECKS)}

__all__ = ["CHECKS", "Check", "CheckContext", "Measurement", "Tolerances", "get", "register", "tolerances"]


def register(*checks: Check) -> None:
    """Checks an implementation declares in its own module (their needs go to conformance.contract)."""
    for check in checks:
        if CHECKS.get(check.name, check) is not check:
            raise ValueError(f"check {check.name} is declared twice")
        if check.numeric and check.tolerance is None:
            raise ValueError(f"check {check.name}: numeric, declared outside the table: needs a tolerance")
        CHECKS[check.name] = check


def get(name: str, where: str = "") -> Check:
    try:
        return CHECKS[name]
    except KeyError:
        raise UnknownName("check", name, list(CHECKS), where) from None


@dataclass(frozen=True)
class Tolerances:
    dtypes: dict[str, str]
    checks: dict[str, dict[str, float]]

    def dtype(self, family: str, workflow: str = "") -> torch.dtype:
        """The workflow's precision if the table names it, else the family's, else the default."""
        name = self.dtypes.get(workflow) or self.dtypes.get(family) or self.dtypes["default"]
        return getattr(torch, name)

    def of(self, check: str, dtype: torch.dtype) -> float | None:
        table = self.checks.get(check) or CHECKS[check].tolerance
        return None if table is None else table[str(dtype).removeprefix("torch.")]

    def for_check(self, check: Check, family: str, workflow: str) -> tuple[torch.dtype, float | None]:
        """The precision a check runs in (its own, else the case's) and its tolerance there."""
        dtype = getattr(torch, check.dtype) if check.dtype else self.dtype(family, workflow)
        return dtype, self.of(check.name, dtype)


def tolerances() -> Tolerances:
    """The tolerance table of cases/tolerances.yaml, parsed once per file."""
    return _tolerances(casefiles.cases_dir() / "tolerances.yaml")


@functools.cache
def _tolerances(path: Path) -> Tolerances:
    top = casefiles.Fields(casefiles.load(path), str(path), {"dtype", "checks"})
    dtypes = top.get("dtype", dict)
    if "default" not in dtypes:
        raise CaseFileError(top.at("dtype.default"), "required field is missing")
    for key, name in dtypes.items():
        if name not in ("float32", "float64"):
            raise CaseFileError(f"{top.at('dtype')}.{key}", f"{name!r}: use float32 or float64")
    checks: dict[str, dict[str, float]] = {}
    for name, table in top.get("checks", dict).items():
        check = get(name, top.at("checks"))
        row = casefiles.Fields(table, f"{top.at('checks')}.{name}", {"float32", "float64"})
        # A check with its own precision needs that one; any other check runs in either.
        wanted = (check.dtype,) if check.dtype else ("float32", "float64")
        checks[name] = {dt: float(row.get(dt, (int, float))) for dt in wanted}
    for name, check in CHECKS.items():
        if check.numeric and name not in checks and check.tolerance is None:
            raise CaseFileError(top.at(f"checks.{name}"), "every numeric check needs a tolerance")
    return Tolerances(dtypes, checks)
