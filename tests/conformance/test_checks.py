"""The conformance gate as pytest: one test per check over every cell, canonical tiny configs.

Ids name the cell, e.g. test_merge_fidelity[peft-gemma4-tT-xF-lora_embed_head-merge]. Known
divergences xfail with their expectation id; CONFORMANCE_FAMILIES narrows the families. The tests are
made from the check registry: a new check gets its test without an edit here.
"""

import pytest

from conformance.engine.testing import assert_check, cells
from conformance.model.oracles import CHECKS

pytestmark = pytest.mark.conformance


def _test(check: str):
    @pytest.mark.parametrize("case", cells(check))
    def test(case):
        assert_check(case, check)

    test.__name__ = test.__qualname__ = f"test_{check.replace('-', '_')}"
    return test


for _check in CHECKS:
    globals()[f"test_{_check.replace('-', '_')}"] = _test(_check)
