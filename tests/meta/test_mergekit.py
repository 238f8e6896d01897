"""mergekit as an implementation: its merges pass where they are right, and a fault injected into the real
library (a dropped lm_head, a wrongly weighted sum) is caught. Needs mergekit (`tox -e mergekit`)."""

from __future__ import annotations

import pytest

pytest.importorskip("mergekit", reason="mergekit is not installed (tox -e mergekit)")

from conformance.base.flags import TieFlags
from conformance.base.outcomes import CRASHED, PASS
from conformance.engine.testing import assert_timed_out, fresh_records, run_hanging
from conformance.implementations import mergekit as mergekit_impl
from conformance.reading.expectations import EXPECTED, OK, UNEXPECTED

pytestmark = pytest.mark.mergekit
UNTIED, TIED = TieFlags(False), TieFlags(True)


def _run(family: str, flags: TieFlags, recipe: str, workflow: str) -> dict:
    return fresh_records("mergekit", family, flags, recipe, workflow)


def test_passthrough_of_an_untied_llama_keeps_its_trained_head():
    records = _run("llama", UNTIED, "lora_embed_head", "lora-passthrough")
    assert {"adapter-effect", "reference", "roundtrip-fidelity", "tie-consistency"} <= set(records)
    for check, record in records.items():
        assert record.outcome == PASS, f"{check}: {record.detail}"


def test_a_writer_that_drops_lm_head_is_caught(monkeypatch):
    from mergekit.io.tensor_writer import TensorWriter

    save = TensorWriter.save_tensor

    def dropping(self, name, tensor, clone=False):
        if not name.endswith("lm_head.weight"):
            save(self, name, tensor, clone)

    monkeypatch.setattr(TensorWriter, "save_tensor", dropping)
    records = _run("llama", UNTIED, "lora_embed_head", "lora-passthrough")
    assert records["roundtrip-fidelity"].outcome != PASS
    assert records["tie-consistency"].verdict == UNEXPECTED
    assert "missing keys on reload: lm_head.weight" in records["tie-consistency"].detail


def test_linear_merge_matches_the_weighted_sum_and_a_wrong_weight_is_caught(monkeypatch):
    good = _run("llama", UNTIED, "mts_head", "linear-merge")
    assert good["merge-arithmetic"].outcome == PASS, good["merge-arithmetic"].detail
    assert good["tie-consistency"].outcome == PASS, good["tie-consistency"].detail

    merge = mergekit_impl._merge

    def swapped(config, out, cache):
        for model in config["models"][1:]:
            model["parameters"]["weight"] = 0.5
        merge(config, out, cache)

    monkeypatch.setattr(mergekit_impl, "_merge", swapped)
    bad = _run("llama", UNTIED, "mts_head", "linear-merge")
    assert bad["merge-arithmetic"].outcome != PASS
    assert bad["merge-arithmetic"].max_abs_diff > 1e-3


def test_gemma4_is_a_recorded_crash_with_its_reason():
    records = _run("gemma4", TieFlags(True, True), "lora_attn", "lora-passthrough")
    crash = records["roundtrip-fidelity"]
    assert crash.outcome == CRASHED and "LoRA not merged" in crash.detail
    assert crash.verdict == EXPECTED and crash.expected == "gemma4-no-architecture-lora-not-merged"
    assert records["adapter-effect"].verdict == OK  # PEFT's part ran before mergekit's


def test_a_hang_inside_mergekit_is_stopped_at_the_case_time_limit(tmp_path, monkeypatch):
    # The time limit is the engine's, not PEFT's: a passthrough merge that never returns is stopped and
    # recorded, and the linear merges of the same run (same library, same workers) still pass.
    import time

    import mergekit.merge

    run_merge = mergekit.merge.run_merge

    def hanging(config, *args, **kwargs):
        if config.merge_method == "passthrough":
            time.sleep(600)
        return run_merge(config, *args, **kwargs)

    monkeypatch.setattr(mergekit.merge, "run_merge", hanging)
    selection = ["--impl", "mergekit", "--family", "llama", "--recipe", "mts_head"]
    selection += ["--workflow", "lora-passthrough", "--workflow", "linear-merge", "--no-report"]
    records = run_hanging(selection, tmp_path)
    assert_timed_out([r for r in records if r["workflow"] == "lora-passthrough"])
    merged = [r for r in records if r["workflow"] == "linear-merge" and r["check"] == "merge-arithmetic"]
    assert merged and all(r["outcome"] == PASS for r in merged), merged
