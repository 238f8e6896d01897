"""NeMo Automodel as an implementation: detection of an orphaned lm_head, declared support, LoRA export.

Needs nemo-automodel (`tox -e nemo` installs a release with its pinned transformers).
"""

import time

import pytest

pytest.importorskip("nemo_automodel", reason="nemo-automodel is not installed (tox -e nemo)")

from conformance.base.flags import TieFlags
from conformance.base.outcomes import PASS, REFUSED_BY_DESIGN, SUPPORTED
from conformance.base.outcomes import REFUSED as REFUSED_OUTCOME
from conformance.engine.testing import assert_timed_out, fresh_records, run_hanging
from conformance.implementations.nemo import classes as nemo
from conformance.model import families
from conformance.reading.expectations import EXPECTED, OK, UNEXPECTED

pytestmark = pytest.mark.nemo
MOE = families.get("gemma4-moe")


def _run(family: str, flags: TieFlags, recipe: str = "no_adapter", workflow: str = "native") -> dict:
    return fresh_records("nemo-automodel", family, flags, recipe, workflow)


def test_an_lm_head_left_on_the_orphaned_embedding_fails_tie_status(monkeypatch):
    # The pre-#2601 bug: NeMo swaps in its own language model after HF tied lm_head, and nothing
    # re-points lm_head to the new embedding. Simulate it by making the re-tie hook do nothing.
    control = _run("gemma4-moe", TieFlags(True, True))
    if control["tie-status"].verdict == EXPECTED:
        pytest.skip(f"this release has the bug itself ({control['tie-status'].expected})")
    assert control["tie-status"].outcome == PASS, control["tie-status"].detail
    cls = nemo.model_class("gemma4-moe")
    monkeypatch.setattr(cls, "tie_weights", lambda self, *args, **kwargs: None)
    broken = _run("gemma4-moe", TieFlags(True, True))
    assert broken["tie-status"].outcome != PASS
    assert broken["tie-status"].verdict == UNEXPECTED
    assert "untied" in broken["tie-status"].detail and "HF's is tied" in broken["tie-status"].detail
    assert broken["retie"].outcome != PASS, "tie_weights() no longer re-ties: retie must fail too"


def test_the_auto_class_builds_nemos_mistral3_class_for_ministral3_decoders_only():
    from conformance.implementations.nemo import auto

    for name, expected in (("ministral3", "Mistral3FP8VLMForConditionalGeneration"), ("mistral3", None)):
        family = families.get(name)
        built = auto._nemo_class(auto._configured(family, family.canonical, TieFlags(True, True)))
        assert (built and built.__name__) == expected, (name, built)


def test_a_wrapper_tied_by_the_wrong_flag_fails_tie_status(monkeypatch):
    # The class of transformers #45857 in NeMo's Mistral3 VLM class: 5.x ties Mistral3 by the top-level
    # flag; a tie_weights that read text_config's would tie a model whose top-level flag says untied.
    flags = TieFlags(False, True)
    control = _run("ministral3", flags)
    assert control["tie-status"].outcome == PASS, control["tie-status"].detail
    cls = nemo.model_class("ministral3")

    def tie_by_text_flag(self, *args, **kwargs):
        if self.config.get_text_config().tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight

    monkeypatch.setattr(cls, "tie_weights", tie_by_text_flag)
    broken = _run("ministral3", flags)
    assert broken["tie-status"].verdict == UNEXPECTED, broken["tie-status"].detail
    assert "HF's is untied" in broken["tie-status"].detail


def test_declared_support_decides_refusals():
    declared = getattr(nemo.model_class("gemma4-moe"), "tie_word_embeddings_support", None)
    untied = nemo.support(MOE, TieFlags(False, True))
    if declared is None:  # before 0.6 NeMo builds both
        assert untied == SUPPORTED
        return
    assert declared.name == "TIED_ONLY" and untied == REFUSED_BY_DESIGN
    assert nemo.support(MOE, TieFlags(True, False)) == SUPPORTED
    records = _run("gemma4-moe", TieFlags(False, True))
    assert records["tie-status"].outcome == REFUSED_OUTCOME
    assert records["tie-status"].support == REFUSED_BY_DESIGN and records["tie-status"].verdict == EXPECTED


def test_a_refusal_that_is_not_declared_is_unexpected(monkeypatch):
    # Declared support and behaviour must agree: Llama declares BOTH; make it refuse untied configs
    # through NeMo's own rejection helper, as a tied-only class would.
    policy = pytest.importorskip("nemo_automodel.shared.tied_weights", reason="TieSupport arrived in 0.6")
    helpers = pytest.importorskip("nemo_automodel.components.models.common.tie_word_embeddings")
    tied_only = type("TiedOnly", (), {"tie_word_embeddings_support": policy.TieSupport.TIED_ONLY})
    cls = nemo.model_class("llama")
    original = cls.__init__

    def refuse_untied(self, config, *args, **kwargs):
        helpers.reject_unsupported_tie_word_embeddings(tied_only, config)
        original(self, config, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", refuse_untied)
    records = _run("llama", TieFlags(False))
    assert records["tie-status"].outcome == REFUSED_OUTCOME, records["tie-status"].detail
    assert records["tie-status"].support == SUPPORTED and records["tie-status"].verdict == UNEXPECTED


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_lora_on_projections_survives_export_merge_and_reload(family):
    records = _run(family, TieFlags(True), recipe="nemo_lora_proj", workflow="lora-merge")
    assert {r.check for r in records.values()} >= {"adapter-roundtrip", "merge-fidelity", "tie-consistency"}
    for record in records.values():
        assert record.outcome == PASS and record.verdict == OK, (record.check, record.detail)
    assert records["adapter-effect"].max_abs_diff > 1e-3


def test_a_hang_inside_nemo_is_stopped_at_the_case_time_limit(tmp_path, monkeypatch):
    # The engine's time limit covers NeMo's own workflow too: building the untied Llama never returns,
    # and the tied one, in the same run, still passes.
    cls = nemo.model_class("llama")
    original = cls.__init__

    def hang_untied(self, config, *args, **kwargs):
        if not config.tie_word_embeddings:
            time.sleep(600)
        original(self, config, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", hang_untied)
    selection = ["--impl", "nemo-automodel", "--family", "llama", "--workflow", "native", "--no-report"]
    records = run_hanging(selection, tmp_path)
    assert_timed_out([r for r in records if r["case_id"].startswith("nemo-automodel-llama-tF-")])
    tied = [r for r in records if r["case_id"].startswith("nemo-automodel-llama-tT-")]
    assert tied and all(r["outcome"] == PASS for r in tied), tied


def _auto(family: str, flags: TieFlags) -> dict:
    return fresh_records("nemo-auto", family, flags, "no_adapter", "native")


def test_nemo_init_that_reties_by_its_key_list_fails_on_untied_remote_code(monkeypatch):
    """The class of NeMo Automodel #2941: the model init re-ties by `_nemo_tied_weights_keys` alone."""
    from nemo_automodel._transformers import model_init

    untied = TieFlags(False)
    control = _auto("llama-remote", untied)
    if control["tie-status"].verdict == EXPECTED:
        pytest.skip(f"this release has the bug itself ({control['tie-status'].expected})")
    assert control["tie-status"].outcome == PASS and control["hf-checkpoint-load"].outcome == PASS

    def retie_by_keys(model):  # the pre-#2942 helper: whatever the config says
        for key, source in getattr(model, "_nemo_tied_weights_keys", {}).items():
            head, embedding = (model.get_submodule(k.rsplit(".", 1)[0]) for k in (key, source))
            head.weight = embedding.weight

    monkeypatch.setattr(model_init, "_tie_weights_nemo", retie_by_keys)
    broken = _auto("llama-remote", untied)
    assert broken["tie-status"].verdict == UNEXPECTED and "HF's is untied" in broken["tie-status"].detail
    assert broken["hf-checkpoint-load"].outcome != PASS, "the untied checkpoint's head must be lost on load"


def test_remote_code_of_transformers_4_runs_only_where_the_list_is_converted():
    family = families.get("llama-remote")
    reason = family.legacy_unavailable()
    import transformers

    if transformers.__version__.startswith("4."):
        assert reason is None
        return
    assert reason and "list-form _tied_weights_keys" in reason
    from conformance import implementations

    assert implementations.get("hf").builds_unavailable(family) == reason
    assert implementations.get("nemo-auto").builds_unavailable(family) is None


def test_a_dcp_resume_that_restores_nothing_fails_resume_fidelity(monkeypatch):
    # NeMo's DCP training checkpoint resumed into a fresh model: a resume that loads nothing leaves the
    # fresh model's own (differently seeded) weights, which the check must see.
    control = _run("llama", TieFlags(True), workflow="resume")
    assert control["resume-fidelity"].outcome == PASS, control["resume-fidelity"].detail
    assert control["weights-kept"].outcome == PASS, control["weights-kept"].detail
    from nemo_automodel.components.checkpoint.checkpointing import Checkpointer

    monkeypatch.setattr(Checkpointer, "load_model", lambda self, *args, **kwargs: None)
    broken = _run("llama", TieFlags(True), workflow="resume")
    assert broken["resume-fidelity"].outcome != PASS and broken["resume-fidelity"].verdict == UNEXPECTED
    assert "resumed vs saved" in broken["resume-fidelity"].detail


def test_a_head_apart_is_lost_on_resume_and_recorded():
    got = _run("llama", TieFlags(True, storage="apart"), workflow="resume")["resume-fidelity"]
    assert got.outcome != PASS and got.expected == "resume-reties-a-head-apart", got.detail
