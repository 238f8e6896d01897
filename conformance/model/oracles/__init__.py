"""Checks: each compares pipeline artifacts with HF reference behaviour; one tolerance table for all."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from conformance.base import casefiles
from conformance.base.errors import CaseFileError, UnknownName
from conformance.base.precision import DTYPES, Precision
from conformance.model.oracles import adapter, native
from conformance.model.oracles.base import Check, CheckContext, Measurement

CHECKS: dict[str, Check] = {check.name: check for check in (*adapter.CHECKS, *native.CHECKS)}

__all__ = [
    "CHECKS",
    "Check",
    "CheckContext",
    "Measurement",
    "Tolerance",
    "Tolerances",
    "get",
    "register",
    "tolerances",
]


def register(*checks: Check) -> None:
    """Checks an implementation declares in its own module (their needs go to conformance.base.contract)."""
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


# The precisions a check may run in: a case's own (conformance.base.precision), or float64 where the tolerance
# table runs a family in float64 (its float32 runs) or the check fixes it.
_COMPUTED_IN = (*DTYPES, "float64")


@dataclass(frozen=True)
class Tolerance:
    """One check's tolerance: `factor` × the case's noise floor, never below the minimum for the precision
    the check runs in. The floor grows with the precision's rounding, so half-precision cases get a
    tolerance their own noise sets; in float32 and float64 the minimum (a fixed number) decides."""

    factor: float | None  # None: the check does not scale (it runs in a fixed precision)
    minimum: dict[str, float]

    def at(self, dtype: str, floor: float | None) -> float:
        least = self.minimum[dtype]
        if self.factor is None or floor is None:
            return least
        return max(least, self.factor * floor)


@dataclass(frozen=True)
class Tolerances:
    dtypes: dict[str, str]  # the precision of a float32 case, per family or workflow
    checks: dict[str, Tolerance]

    def reference_dtype(self, family: str, workflow: str = "") -> str:
        """The workflow's precision if the table names it, else the family's, else the default."""
        return self.dtypes.get(workflow) or self.dtypes.get(family) or self.dtypes["default"]

    def run_dtype(self, precision: Precision, family: str, workflow: str) -> torch.dtype:
        """What a case builds, merges, saves and reloads in: its own half precision, or for a float32
        case the table's precision for its family and workflow (float64 where float32 noise would decide)."""
        name = precision.dtype if precision.half else self.reference_dtype(family, workflow)
        return getattr(torch, name)

    def rule(self, check: str) -> Tolerance | None:
        return self.checks.get(check) or _declared(CHECKS[check])

    def computed_in(self, check: Check, run_dtype: torch.dtype) -> str:
        """The precision a check runs in: its own, else the case's."""
        return check.dtype or str(run_dtype).removeprefix("torch.")


def _declared(check: Check) -> Tolerance | None:
    """The tolerance an implementation declared beside its check (cases/tolerances.yaml wins)."""
    if check.tolerance is None:
        return None
    table = dict(check.tolerance)
    factor = table.pop("factor", None)
    return Tolerance(None if check.dtype else factor, table)


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
    checks: dict[str, Tolerance] = {}
    for name, table in top.get("checks", dict).items():
        check = get(name, top.at("checks"))
        where = f"{top.at('checks')}.{name}"
        row = casefiles.Fields(table, where, {"factor", *_COMPUTED_IN})
        # A check with its own precision needs that one and does not scale; any other runs in any.
        wanted = (check.dtype,) if check.dtype else _COMPUTED_IN
        factor = None if check.dtype else float(row.get("factor", (int, float)))
        if factor is not None and factor <= 0:
            raise CaseFileError(f"{where}.factor", f"{factor:g}: must be positive")
        checks[name] = Tolerance(factor, {dt: float(row.get(dt, (int, float))) for dt in wanted})
    for name, check in CHECKS.items():
        if check.numeric and name not in checks and check.tolerance is None:
            raise CaseFileError(top.at(f"checks.{name}"), "every numeric check needs a tolerance")
    return Tolerances(dtypes, checks)
