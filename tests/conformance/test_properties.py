"""Hypothesis property tests: every check holds (or fails only as expected) on generated tiny configs.

The `ci` profile is derandomized (the same examples everywhere); `nightly` explores with a database.
A failure prints the case id; `python -m conformance repro CASE_ID` reruns it alone.
"""

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from conformance import cases, families, generators, implementations, recipes
from conformance.testing import applies, selected_families, verdict_problem

pytestmark = pytest.mark.conformance


def _cells(check: str) -> list[tuple]:
    """(implementation, family, flags, recipe, workflow) combinations the check applies to and can run."""
    book = recipes.load()
    found = []
    for impl in implementations.selected(None):
        for family in (families.get(n) for n in selected_families()):
            if family.unavailable():
                continue
            for flags in family.flag_combinations():
                for recipe in book.recipes.values():
                    for workflow in impl.workflows:
                        probe = cases.make(
                            impl.name, family, flags, recipe.name, workflow, family.canonical, 0
                        )
                        runnable = book.skip_reason(recipe) is None and (
                            workflow != "untie-first" or family.expected_tied(flags)
                        )
                        if runnable and applies(probe, check):
                            found.append((impl.name, family, flags, recipe.name, workflow))
    return found


@st.composite
def case_for(draw: st.DrawFn, cells: list[tuple]) -> cases.Case:
    impl, family, flags, recipe, workflow = draw(st.sampled_from(cells), label="cell")
    knobs = draw(generators.knobs_for(family), label="config")
    seed = draw(generators.seeds(), label="seed")
    case = cases.make(impl, family, flags, recipe, workflow, knobs, seed)
    note(f"case: {case.case_id}")
    return case


def _property(check: str):
    """One hypothesis test for `check`; skipped with the reason when nothing it covers can run here."""
    cells = _cells(check)
    if not cells:
        return pytest.mark.skip(reason=f"no runnable cell for {check} with the installed versions")(
            lambda: None
        )

    @given(case=case_for(cells))
    def test(case: cases.Case) -> None:
        problem = verdict_problem(case, check)
        assert problem is None, problem

    test.__name__ = test.__qualname__ = f"test_{check.replace('-', '_')}_holds"
    return test


test_reference_holds = _property("reference")
test_adapter_effect_holds = _property("adapter-effect")
test_merge_fidelity_holds = _property("merge-fidelity")
test_roundtrip_fidelity_holds = _property("roundtrip-fidelity")
test_adapter_roundtrip_holds = _property("adapter-roundtrip")
test_tie_consistency_holds = _property("tie-consistency")
test_tie_preserved_holds = _property("tie-preserved")
test_tie_status_holds = _property("tie-status")
test_logits_parity_holds = _property("logits-parity")
test_logits_parity_fp64_holds = _property("logits-parity-fp64")
test_retie_holds = _property("retie")
test_checkpoint_roundtrip_holds = _property("checkpoint-roundtrip")
test_hf_checkpoint_load_holds = _property("hf-checkpoint-load")
