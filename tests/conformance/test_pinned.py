"""Pinned cases from cases/pinned.yaml (parametrize-from-file): every check of each, against expectations."""

from pathlib import Path

import parametrize_from_file as pff
import pytest

from conformance.engine.core import parse_case
from conformance.engine.testing import applies, assert_check
from conformance.model.oracles import CHECKS

pytestmark = pytest.mark.conformance
PINNED = Path(__file__).resolve().parents[2] / "cases" / "pinned.yaml"


def _as_case(params: dict) -> dict:
    # A typo in the file fails collection with the entry's id and the problem, not a traceback wall.
    try:
        case = parse_case(params["case"])
    except Exception as exc:
        raise ValueError(f"{PINNED.name}: {exc}") from None
    return {"case": case, "why": params["why"]}


@pff.parametrize(PINNED, key="pinned", schema=_as_case)
@pytest.mark.parametrize("check", list(CHECKS))
def test_pinned(case, why, check):
    if not applies(case, check):
        pytest.skip(f"{check} does not apply to {case.cell_id}")
    assert_check(case, check)
