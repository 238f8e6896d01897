"""Hypothesis property tests: every check holds (or fails only as expected) on generated tiny configs,
in every precision (float32, and bfloat16/float16 with PEFT's autocast on and off where it applies).

The `ci` profile is derandomized (the same examples everywhere); `nightly` explores with a database.
A failure prints the case id; `python -m conformance repro CASE_ID` reruns it alone.
"""

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from conformance import implementations
from conformance.base import contract, precision
from conformance.engine.testing import runnable, verdict_problem
from conformance.model import cases, generators, oracles

pytestmark = pytest.mark.conformance


def _cells(check: str) -> list[tuple]:
    """(implementation, family, flags, recipe, workflow) combinations the check applies to and can run."""
    return [
        (case.implementation, case.family_def(), case.flags, case.recipe, case.workflow)
        for case in runnable(check)
    ]


@st.composite
def case_for(draw: st.DrawFn, cells: list[tuple]) -> cases.Case:
    impl, family, flags, recipe, workflow = draw(st.sampled_from(cells), label="cell")
    # Every tie state of the drawn flags (their storage, or the other one) where the workflow takes it.
    if contract.WORKFLOWS[workflow].tie_states:
        flags = draw(st.sampled_from([s for s in family.tie_states() if s.built == flags]), label="tie state")
    axis = implementations.get(impl).autocast_axis
    chosen = draw(
        st.sampled_from([p for dtype in precision.DTYPES for p in precision.variants(dtype, axis)]),
        label="precision",
    )
    knobs = family.knobs_for(draw(generators.knobs_for(family), label="config"), chosen.half)
    seed = draw(generators.seeds(), label="seed")
    case = cases.make(impl, family, flags, recipe, workflow, knobs, seed, chosen)
    note(f"case: {case.case_id}")
    return case


def _property(check: str):
    """One hypothesis test for `check`; skipped with the reason when nothing it covers can run here."""
    cells = _cells(check)
    if not cells:

        def test() -> None:
            pytest.skip(f"no runnable cell for {check} with the installed versions")

        test.__name__ = test.__qualname__ = f"test_{check.replace('-', '_')}_holds"
        return test

    @given(case=case_for(cells))
    def test(case: cases.Case) -> None:
        problem = verdict_problem(case, check)
        assert problem is None, problem

    test.__name__ = test.__qualname__ = f"test_{check.replace('-', '_')}_holds"
    return test


# One property per registered check: a new check gets its test without an edit here.
for _check in oracles.CHECKS:
    globals()[f"test_{_check.replace('-', '_')}_holds"] = _property(_check)
