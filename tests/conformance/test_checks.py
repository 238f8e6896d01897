"""The conformance gate as pytest: one test per check over every cell, canonical tiny configs.

Ids name the cell, e.g. test_merge_fidelity[peft-gemma4-tT-xF-lora_embed_head-merge]. Known
divergences xfail with their expectation id; CONFORMANCE_FAMILIES narrows the families.
"""

import pytest

from conformance.testing import assert_check, cells

pytestmark = pytest.mark.conformance


@pytest.mark.parametrize("case", cells("adapter-effect"))
def test_adapter_effect(case):
    assert_check(case, "adapter-effect")


@pytest.mark.parametrize("case", cells("reference"))
def test_reference(case):
    assert_check(case, "reference")


@pytest.mark.parametrize("case", cells("merge-fidelity"))
def test_merge_fidelity(case):
    assert_check(case, "merge-fidelity")


@pytest.mark.parametrize("case", cells("roundtrip-fidelity"))
def test_roundtrip_fidelity(case):
    assert_check(case, "roundtrip-fidelity")


@pytest.mark.parametrize("case", cells("adapter-roundtrip"))
def test_adapter_roundtrip(case):
    assert_check(case, "adapter-roundtrip")


@pytest.mark.parametrize("case", cells("tie-consistency"))
def test_tie_consistency(case):
    assert_check(case, "tie-consistency")


@pytest.mark.parametrize("case", cells("tie-preserved"))
def test_tie_preserved(case):
    assert_check(case, "tie-preserved")


@pytest.mark.parametrize("case", cells("tie-status"))
def test_tie_status(case):
    assert_check(case, "tie-status")


@pytest.mark.parametrize("case", cells("logits-parity"))
def test_logits_parity(case):
    assert_check(case, "logits-parity")


@pytest.mark.parametrize("case", cells("logits-parity-fp64"))
def test_logits_parity_fp64(case):
    assert_check(case, "logits-parity-fp64")


@pytest.mark.parametrize("case", cells("retie"))
def test_retie(case):
    assert_check(case, "retie")


@pytest.mark.parametrize("case", cells("checkpoint-roundtrip"))
def test_checkpoint_roundtrip(case):
    assert_check(case, "checkpoint-roundtrip")


@pytest.mark.parametrize("case", cells("hf-checkpoint-load"))
def test_hf_checkpoint_load(case):
    assert_check(case, "hf-checkpoint-load")
