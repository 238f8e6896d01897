"""Generated configs are valid for their architecture, and ids round-trip."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.base import precision
from conformance.base.flags import TieFlags, combinations
from conformance.model import cases, effective, families, generators

# Families transformers alone builds here (remote code of 4.x needs a converting loader under 5.x).
RUNNABLE = [f for f in families.all_families() if f.unavailable() is None and f.legacy_unavailable() is None]


@pytest.mark.parametrize("family", RUNNABLE, ids=lambda f: f.name)
@settings(max_examples=8)
@given(data=st.data())
def test_generated_config_builds_and_runs(family, data):
    knobs = data.draw(generators.knobs_for(family), label="config")
    flags = data.draw(st.sampled_from(family.flag_combinations()), label="flags")
    model = family.build(knobs, flags, seed=0, dtype=torch.float32)
    text = model.config.get_text_config()
    if hasattr(text, "num_key_value_heads"):  # encoder–decoders have plain multi-head attention
        assert text.num_attention_heads % text.num_key_value_heads == 0
    if family.name.startswith("gemma4"):
        assert text.layer_types[-1] == "full_attention", "Gemma4 needs its last layer on full attention"
        if "num_experts" in knobs:
            assert 1 <= text.top_k_experts <= text.num_experts
    ids = torch.randint(0, text.vocab_size, (1, 6))
    with torch.no_grad():
        out = effective.forward(model, ids).logits
    assert out.shape == (1, 6, text.vocab_size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", RUNNABLE, ids=lambda f: f.name)
def test_built_model_is_tied_exactly_when_the_hf_rule_says(family):
    for flags in family.flag_combinations():
        model = family.build(family.canonical, flags, seed=0, dtype=torch.float32)
        tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
        assert tied == family.expected_tied(flags), f"{family.name} {flags.id}: built tied={tied}"


def test_nested_rule_follows_the_installed_transformers():
    gemma4 = families.get("gemma4")
    mixed = TieFlags(top=False, text=True)
    assert gemma4.expected_tied(mixed, {"transformers": "5.23.0"}) is False  # 5.x: top-level flag rules
    assert gemma4.expected_tied(mixed, {"transformers": "4.57.1"}) is True  # 4.49-4.57: text config rules


def test_family_missing_from_an_old_transformers_says_why():
    reason = families.get("gemma4").unavailable({"transformers": "4.57.1"})
    assert reason is not None and "transformers>=5.5" in reason and "4.57.1" in reason


@pytest.mark.parametrize("family", families.all_families(), ids=lambda f: f.name)
@given(data=st.data())
def test_config_token_round_trips(family, data):
    knobs = data.draw(generators.knobs_for(family), label="config")
    assert family.parse_config_id(family.config_id(knobs)) == knobs


@given(
    family=st.sampled_from(families.all_families()),
    recipe=st.sampled_from(["lora_attn", "tokens_embed_head_diff_ewt", "mts_embed_head"]),
    workflow=st.sampled_from(tuple(cases.WORKFLOWS)),
    seed=generators.seeds(),
    chosen=st.sampled_from([p for d in precision.DTYPES for p in precision.variants(d, autocast_axis=True)]),
    data=st.data(),
)
def test_case_id_round_trips(family, recipe, workflow, seed, chosen, data):
    flags = data.draw(st.sampled_from(family.flag_combinations()))
    knobs = data.draw(generators.knobs_for(family))
    case = cases.make("peft", family, flags, recipe, workflow, knobs, seed, chosen)
    parsed = cases.parse(
        case.case_id, ["peft"], ["lora_attn", "tokens_embed_head_diff_ewt", "mts_embed_head"]
    )
    assert parsed == case


def test_flag_ids():
    assert [f.id for f in combinations(nested=True)] == ["tT-xT", "tT-xF", "tF-xT", "tF-xF"]
    assert [f.id for f in combinations(nested=False)] == ["tT", "tF"]
    assert TieFlags.parse("tF-xT") == TieFlags(False, True)


def test_canonical_config_comes_first_and_seeded_draws_repeat():
    family = families.get("llama")
    assert generators.draw_configs(family, "ci", run_seed=3) == [(family.canonical, 3)]
    first = generators.draw_configs(family, "nightly", run_seed=3)
    assert first == generators.draw_configs(family, "nightly", run_seed=3)
    assert first[0] == (family.canonical, 3)
    assert len(first) == 1 + generators.CONFIGS_PER_FAMILY["nightly"]
    assert first != generators.draw_configs(family, "nightly", run_seed=4)


def test_tie_states_add_the_storage_the_flags_do_not_rule():
    gemma4 = families.get("gemma4")
    ids = [f.id for f in gemma4.tie_states()]
    # transformers 5 ties Gemma4ForConditionalGeneration by its top-level flag alone.
    assert ids[4:] == ["tT-xT-apart", "tT-xF-apart", "tF-xT-alias", "tF-xF-alias"]
    for flags in gemma4.tie_states():
        assert TieFlags.parse(flags.id) == flags == TieFlags.from_record(flags.as_record())
        assert gemma4.tied_storage(flags) == (gemma4.expected_tied(flags) != bool(flags.storage))
    assert TieFlags.from_record({"top": True, "text": None}) == TieFlags(True)  # records before the axis
    assert TieFlags.parse("tT-apart").built == TieFlags(True) and TieFlags.parse("tT-apart").config_id == "tT"


@pytest.mark.parametrize(
    ("family", "version", "tied"),
    [
        # (top, text) -> tied, for TT, TF, FT, FF: the rule table measured per release
        ("qwen2-vl", "4.57.6", [True, False, True, False]),  # 4.x: the text flag
        ("qwen2-vl", "5.15.1", [True, True, False, False]),  # the top-level flag alone (#45857)
        ("qwen2-vl", "5.16.0", [True, True, True, False]),  # either flag
        ("llava", "5.5.0", [True, True, True, False]),
        ("gemma3", "5.24.0", [True, True, False, False]),
        ("qwen2-audio", "5.24.0", [False, False, False, False]),  # no _tied_weights_keys in 5.x
    ],
)
def test_multimodal_tie_rules_per_release(family, version, tied):
    found = families.get(family)
    flags = [TieFlags(True, True), TieFlags(True, False), TieFlags(False, True), TieFlags(False, False)]
    assert [found.expected_tied(f, {"transformers": version}) for f in flags] == tied


@pytest.mark.parametrize(
    ("family", "version", "tied"),
    [
        ("t5", "4.57.6", [True, False]),  # 4.x: the flag ties the head
        ("t5", "5.5.4", [True, True]),  # 5.x: T5Config forces the flag True (#42815)
        ("mt5", "5.24.0", [True, True]),
        ("bart", "5.24.0", [True, False]),
    ],
)
def test_encoder_decoder_tie_rules_per_release(family, version, tied):
    found = families.get(family)
    assert [found.expected_tied(TieFlags(f), {"transformers": version}) for f in (True, False)] == tied
