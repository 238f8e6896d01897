"""Several adapters on one model (workflows switch-merge and beside-merge): the oracles see the active
adapter alone, and an inactive one that leaks into the merged model or the reference is caught.

The leaks are made with PEFT itself (merging every adapter instead of the active one; the reference read
from the inactive adapter's tensors), never by a stand-in for it.
"""

from __future__ import annotations

import pytest
from peft.tuners.tuners_utils import BaseTuner

from conformance.base import contract
from conformance.base.flags import TieFlags
from conformance.base.outcomes import PASS
from conformance.engine.testing import fresh_records
from conformance.model import effective

UNTIED = TieFlags(False)


def _failed(records: dict) -> dict[str, str]:
    return {check: r.detail for check, r in records.items() if r.outcome != PASS}


@pytest.mark.parametrize("workflow", ["switch-merge", "beside-merge"])
def test_a_second_active_adapter_merges_saves_and_reloads_alone(workflow):
    got = fresh_records("peft", "llama", UNTIED, "mts_embed_head", workflow)
    assert set(got) == set(contract.checks_of(workflow)) - {"tie-preserved"}, sorted(got)
    assert not _failed(got), _failed(got)


def test_the_workflows_declare_their_second_adapter():
    assert contract.WORKFLOWS["switch-merge"].second == "same"
    assert contract.WORKFLOWS["beside-merge"].second == "lora_attn"
    assert not contract.WORKFLOWS["merge"].second


def test_an_inactive_adapter_merged_too_is_caught(monkeypatch):
    # The bug class: unloading merges (or keeps) what an inactive adapter put on the model.
    merge = BaseTuner.merge_and_unload

    def merge_every_adapter(self, *args, **kwargs):
        kwargs["adapter_names"] = list(self.peft_config)
        return merge(self, *args, **kwargs)

    monkeypatch.setattr(BaseTuner, "merge_and_unload", merge_every_adapter)
    got = fresh_records("peft", "llama", UNTIED, "lora_embed_head", "beside-merge")
    assert got["reference"].outcome == PASS, "the unmerged model and the reference hold the active adapter"
    for check in ("merge-fidelity", "roundtrip-fidelity"):
        assert got[check].outcome != PASS, (check, got[check].detail)


def test_a_reference_read_from_the_inactive_adapter_is_caught(monkeypatch):
    collect = effective.collect
    monkeypatch.setattr(effective, "collect", lambda model, adapter="default": collect(model, "default"))
    got = fresh_records("peft", "llama", UNTIED, "lora_embed", "switch-merge")
    assert got["reference"].outcome != PASS, got["reference"].detail
    assert got["merge-fidelity"].outcome == PASS, got["merge-fidelity"].detail
