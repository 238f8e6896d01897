"""Several adapters on one model (workflows switch-merge and beside-merge): the oracles see the active
adapter alone, and an inactive one that leaks into the merged model or the reference is caught. Two merged
in turn (stack-merge-overlap): rows both adapters hold must be refused, and a merge that writes one over
the other is caught; rows apart (stack-merge) must compose, LoRA deltas added up.

The leaks are made with PEFT itself (merging every adapter instead of the active one; the reference read
from the inactive adapter's tensors), never by a stand-in for it.
"""

from __future__ import annotations

import pytest
import torch
from peft.tuners.tuners_utils import BaseTuner

from conformance.base import contract
from conformance.base.flags import TieFlags
from conformance.base.outcomes import PASS, REFUSED, SILENT
from conformance.engine.testing import fresh_records
from conformance.implementations import peft as peft_impl
from conformance.model import effective, recipes

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


def test_overlapping_token_rows_merged_in_turn_are_refused():
    got = fresh_records("peft", "llama", UNTIED, "tokens_embed", "stack-merge-overlap")
    assert set(got) == set(contract.checks_of("stack-merge-overlap")) - {"tie-preserved"}, sorted(got)
    assert {r.outcome for r in got.values()} == {REFUSED}, {c: r.outcome for c, r in got.items()}
    assert {r.step for r in got.values()} == {"merge-each"}
    assert "already defined" in got["conflict-refused"].detail


def test_a_merge_that_writes_over_another_adapters_rows_is_caught(monkeypatch):
    # PEFT before #3514: the check saw the names of one merge call only, never the adapters merged before.
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    check = TrainableTokensLayer._check_overlapping_tokens

    def one_call_only(self, adapter_names):
        if len(adapter_names) > 1:
            check(self, adapter_names)

    monkeypatch.setattr(TrainableTokensLayer, "_check_overlapping_tokens", one_call_only)
    got = fresh_records("peft", "llama", UNTIED, "tokens_embed", "stack-merge-overlap")
    conflict = got["conflict-refused"]
    assert conflict.outcome == SILENT, (conflict.outcome, conflict.detail)
    assert "embed_tokens rows 5, 7" in conflict.detail, conflict.detail
    # The rows merged last win, as PEFT's merge writes them: the logit checks agree, the conflict alone fails.
    for name in ("reference", "merge-fidelity", "roundtrip-fidelity", "weights-kept"):
        assert got[name].outcome == PASS, (name, got[name].detail)


def test_the_second_adapter_holds_all_but_the_first_of_the_first_adapters_rows():
    recipe = recipes.load().get("tokens_embed_head_diff")
    moved = recipe.rows_moved(peft_impl._OVERLAP)
    assert moved.token_indices() == {"embed_tokens": [5, 7, 9], "lm_head": [11, 13]}
    assert peft_impl._shared_rows(recipe, moved) == {"embed_tokens": [5, 7], "lm_head": [11]}
    assert recipes.load().get("lora_embed").rows_moved(2) == recipes.load().get("lora_embed")


@pytest.mark.parametrize(
    ("rows", "copies", "overlap", "apart"),
    [
        (True, False, True, True),
        (False, False, False, True),
        (True, True, False, False),
        (False, True, False, False),
    ],
)
def test_stacked_merges_run_no_copies_and_overlap_only_token_rows(rows, copies, overlap, apart):
    assert contract.WORKFLOWS["stack-merge-overlap"].runs(rows, copies) is overlap
    assert contract.WORKFLOWS["stack-merge"].runs(rows, copies) is apart
    assert contract.WORKFLOWS["merge"].runs(rows, copies)


@pytest.mark.parametrize("recipe", ["lora_embed_head", "tokens_embed_head_diff"])
def test_two_adapters_merged_in_turn_compose(recipe):
    got = fresh_records("peft", "llama", UNTIED, recipe, "stack-merge")
    assert set(got) == set(contract.checks_of("stack-merge")) - {"tie-preserved"}, sorted(got)
    assert not _failed(got), _failed(got)


def test_the_second_adapters_rows_lie_past_the_first_adapters():
    recipe = recipes.load().get("tokens_embed_head_diff")  # embed_tokens 3, 5, 7; lm_head 9, 11
    moved = recipe.rows_moved(peft_impl._row_offset(recipe, "apart"))
    assert moved.token_indices() == {"embed_tokens": [12, 14, 16], "lm_head": [18, 20]}
    assert not peft_impl._shared_rows(recipe, moved)


def test_a_second_merge_that_restores_the_first_adapters_rows_is_caught(monkeypatch):
    # A merge that starts from the layer's original rows again (a stale base) loses the adapter merged before.
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    merge = TrainableTokensLayer.merge

    def from_the_original(self, *args, **kwargs):
        for name in self.merged_adapters:
            rows = torch.tensor(self.token_indices[name])
            self.base_layer.weight.data.index_copy_(0, rows, self.trainable_tokens_original[name])
        return merge(self, *args, **kwargs)

    monkeypatch.setattr(TrainableTokensLayer, "merge", from_the_original)
    got = fresh_records("peft", "llama", UNTIED, "tokens_embed_head_diff", "stack-merge")
    assert got["reference"].outcome != PASS, got["reference"].detail


def test_two_lora_adapters_active_as_one_are_caught(monkeypatch):
    # set_adapter([a, b]) that keeps only the last one active: the unmerged model lacks the first's delta.
    from peft.tuners.lora import LoraModel

    set_adapter = LoraModel.set_adapter
    monkeypatch.setattr(
        LoraModel, "set_adapter", lambda self, names, **kw: set_adapter(self, names[-1:], **kw)
    )
    got = fresh_records("peft", "llama", UNTIED, "lora_embed_head", "stack-merge")
    for name in ("reference", "merge-fidelity"):
        assert got[name].outcome != PASS, (name, got[name].detail)
