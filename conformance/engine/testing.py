"""The engine as pytest: cached case runs, parametrization over cells, and assertions with repro lines."""

from __future__ import annotations

import atexit
import functools
import json
import os
import time
import warnings
from pathlib import Path

import pytest

from conformance import implementations
from conformance.base import outcomes
from conformance.base.flags import TieFlags
from conformance.engine.core import Engine, Selection, applicable_checks, plan
from conformance.model import cases, families
from conformance.model.cases import Case
from conformance.reading.expectations import EXPECTED, OK, UNEXPECTED_PASS
from conformance.reading.results import Record

FAMILIES_VAR = "CONFORMANCE_FAMILIES"
DTYPE_VAR = "CONFORMANCE_DTYPE"
STATES_VAR = "CONFORMANCE_TIE_STATES"


@functools.cache
def engine() -> Engine:
    """One engine per test session: cases run once, whichever check asks first."""
    made = Engine(Selection())
    atexit.register(made.close)
    return made


_RECORDS: dict[str, list[Record]] = {}


def records(case: Case) -> list[Record]:
    if case.case_id not in _RECORDS:
        _RECORDS[case.case_id] = engine().records(case)
    return _RECORDS[case.case_id]


def fresh_records(
    implementation: str, family: str, flags: TieFlags, recipe: str, workflow: str
) -> dict[str, Record]:
    """One canonical case run by a new engine (no cache shared with other tests), records by check."""
    found = families.get(family)
    case = cases.make(implementation, found, flags, recipe, workflow, found.canonical, 0)
    made = Engine(Selection())
    try:
        return {r.check: r for r in made.records(case)}
    finally:
        made.close()


def selected_families() -> list[str]:
    """CONFORMANCE_FAMILIES (comma-separated) or every family."""
    names = [n.strip() for n in os.environ.get(FAMILIES_VAR, "").split(",") if n.strip()]
    return [families.get(n, FAMILIES_VAR).name for n in names] or [f.name for f in families.all_families()]


def selected_dtypes() -> list[str]:
    """CONFORMANCE_DTYPE (comma-separated) or float32: the precisions the pytest gate runs."""
    return [n.strip() for n in os.environ.get(DTYPE_VAR, "").split(",") if n.strip()]


@functools.cache
def _canonical_cases() -> tuple[Case, ...]:
    selection = Selection(
        implementations=[i.name for i in implementations.selected(None)],
        families=selected_families(),
        dtypes=selected_dtypes(),
        tie_states=os.environ.get(STATES_VAR) or "natural",
    )
    # Canonical configs only: the parametrized tests are the fixed gate; hypothesis tests explore.
    return tuple(
        case
        for case in plan(selection)
        if case.config
        == families.get(case.family).knobs_for(families.get(case.family).canonical, case.precision.half)
        and case.seed == 0
    )


def runnable(check: str) -> list[Case]:
    """The canonical cases `check` applies to that can run here (none that would be skipped)."""
    return [
        case for case in _canonical_cases() if applies(case, check) and engine().skip_reason(case) is None
    ]


def applies(case: Case, check: str) -> bool:
    """Whether `check` says anything about `case` (decided from names and flags, before running)."""
    return any(found.name == check for found in applicable_checks(case))


def cells(check: str) -> list:
    """pytest params (id = cell id) of every canonical case the check applies to."""
    return [pytest.param(case, id=case.cell_id) for case in _canonical_cases() if applies(case, check)]


def message(record: Record) -> str:
    diff = (
        ""
        if record.max_abs_diff is None
        else f" (max |Δ| {record.max_abs_diff:g}, tolerance {record.tolerance:g})"
    )
    lines = [f"{record.check} {record.outcome}{diff}: {record.detail}"]
    if record.expected:
        lines.append(f"expected {record.expected_outcome} by expectation {record.expected}")
    lines += [f"warning: {w}" for w in record.warnings]
    lines.append(f"repro: {record.repro}")
    return "\n  ".join(lines)


def verdict_problem(case: Case, check: str) -> str | None:
    """For property tests: a failure message when the outcome is neither ok nor expected, else None."""
    for record in records(case):
        if record.check == check and record.verdict not in (OK, EXPECTED, UNEXPECTED_PASS):
            return message(record)
    return None


def assert_check(case: Case, check: str) -> None:
    """Pass, skip (reasoned), xfail (known, with its expectation), or fail with the numbers and a repro."""
    found = [r for r in records(case) if r.check == check]
    if not found:
        # Worded per check and workflow (the test id names the cell), so the skip summary groups them.
        pytest.skip(f"{check} does not apply to this case ({case.implementation}, {case.workflow} workflow)")
    record = found[0]
    if record.outcome == outcomes.SKIPPED:
        pytest.skip(record.detail)
    if record.verdict == EXPECTED:
        pytest.xfail(f"{record.expected}: {record.outcome}")
    if record.verdict == UNEXPECTED_PASS:
        if os.environ.get("CONFORMANCE_STRICT"):
            pytest.fail("unexpectedly passing; narrow or remove the expectation\n  " + message(record))
        warnings.warn(
            f"{case.cell_id}: {check} passes but {record.expected} expects {record.expected_outcome}",
            stacklevel=2,
        )
        return
    if record.verdict != OK:
        pytest.fail(message(record), pytrace=False)


def run_hanging(args: list[str], folder: Path, limit: int = 4) -> list[dict]:
    """`run ARGS` where some cases hang (a fault patched into this process reaches its forked workers),
    under a case time limit of `limit` s: the run must end long before any hang would, and each hung
    case is recorded as timed out. Returns the records, as written."""
    from conformance.cli import main  # the entry layer, only for the tests that drive the CLI

    started = time.monotonic()
    main(["run", *args, "--jobs", "2", "--case-timeout", str(limit), "--out", str(folder)])
    took = time.monotonic() - started
    assert took < 120, f"a {limit} s case limit, yet the run took {took:.0f} s: a hang was not stopped"
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def assert_timed_out(records: list[dict], limit: int = 4) -> None:
    """Each record (of the cases made to hang) is a crash that says it hit the case time limit."""
    assert records, "no record of the cases made to hang"
    for record in records:
        assert record["outcome"] == outcomes.CRASHED, record
        assert f"timed out after {limit} s" in record["detail"], record
