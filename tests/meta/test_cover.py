"""The t-wise cover of a plan (conformance.engine.cover): every t-way combination, in fewer cases."""

from __future__ import annotations

import itertools

import pytest

from conformance.base.errors import ConformanceError
from conformance.engine import cover
from conformance.engine.core import Selection, covered, full_plan, plan, skip_reason


def combinations(cases, strength):
    return {
        (axes, tuple(cover.values(case)[a] for a in axes))
        for case in cases
        for axes in itertools.combinations(range(len(cover.AXES)), strength)
    }


@pytest.fixture(scope="module")
def whole():
    # Two families of different shapes (a nested config and a plain one), both implementations, two
    # precisions: every axis has several values.
    return full_plan(
        Selection(["hf", "peft"], ["llama", "qwen2-vl"], dtypes=["float32", "bfloat16"], tie_states="all")
    )


@pytest.mark.parametrize("strength", [1, 2, 3])
def test_a_cover_keeps_every_combination_of_its_strength_in_fewer_cases(whole, strength):
    chosen = cover.select(whole, strength)
    missing = combinations(whole, strength) - combinations(chosen, strength)
    assert not missing, f"{len(missing)} {strength}-way combinations lost, e.g. {sorted(missing)[:3]}"
    assert len(chosen) < len(whole), f"{len(chosen)} of {len(whole)}: the cover saved nothing"
    # In plan order, each case once: a covered run writes its results as the whole run would.
    positions = [whole.index(case) for case in chosen]
    assert positions == sorted(set(positions))


def test_a_cover_is_a_function_of_the_plan(whole):
    assert cover.select(whole, 3) == cover.select(list(whole), 3)
    selection = Selection(["peft"], ["llama"], ["lora_embed", "mts_head"], cover=2)
    assert plan(selection) == covered(selection, full_plan(selection)) != full_plan(selection)


def test_only_cases_that_run_cover_a_combination_and_skipped_ones_are_all_kept(whole):
    # Pretend every Qwen2-VL case is skipped here (an old transformers): Llama's cases must then hold
    # every combination on their own, as if Qwen2-VL had never been planned.
    runs = lambda case: case.family != "qwen2-vl"  # noqa: E731
    chosen = cover.select(whole, 3, runs=runs)
    llama = [case for case in whole if runs(case)]
    assert combinations(llama, 3) <= combinations([c for c in chosen if runs(c)], 3)
    assert [c for c in chosen if not runs(c)] == [c for c in whole if not runs(c)]
    # The engine's own rule: what skips here (a recipe whose PEFT feature is missing, say) is kept whole.
    selection = Selection(["peft"], ["llama"], cover=3)
    skipped = [c for c in full_plan(selection) if skip_reason(c, "cpu")]
    assert set(skipped) <= set(plan(selection))


def test_strength_zero_or_of_every_axis_is_the_whole_plan(whole):
    assert cover.select(whole, 0) == whole
    assert cover.select(whole, len(cover.AXES)) == whole


@pytest.mark.parametrize("strength", [-1, len(cover.AXES) + 1])
def test_what_is_not_a_strength_is_one_line(strength):
    with pytest.raises(ConformanceError, match=r"^--cover: .* is not a strength; 0 runs every case"):
        plan(Selection(["peft"], ["llama"], cover=strength))
