"""The suite's own effective-weight arithmetic, against hand computation and against PEFT's merge
on untied models (where merging is uncontroversial)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conformance.base.flags import TieFlags
from conformance.model import effective, families
from conformance.model.effective import AdapterTensors
from conformance.model.recipes import Recipe


def _recipe(on_tied_model="separate", **lora):
    return Recipe("r", "", "lora", {"r": 2, "lora_alpha": 4, **lora}, (), on_tied_model, False)


def test_linear_lora_is_b_times_a_scaled():
    base = torch.zeros(3, 2, dtype=torch.float64)
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # (r=1, in=2)
    b = torch.tensor([[1.0], [0.0], [-1.0]], dtype=torch.float64)  # (out=3, r=1)
    got = effective.own_weight(base, AdapterTensors({"lora_A": a, "lora_B": b}), scaling=2.0, rows=None)
    assert torch.equal(got, torch.tensor([[2.0, 4.0], [0.0, 0.0], [-2.0, -4.0]], dtype=torch.float64))


def test_embedding_lora_is_transposed():
    base = torch.zeros(4, 2, dtype=torch.float64)  # (vocab, hidden)
    a = torch.tensor([[1.0, 0.0, 0.0, 3.0]], dtype=torch.float64)  # (r, vocab)
    b = torch.tensor([[1.0], [2.0]], dtype=torch.float64)  # (hidden, r)
    got = effective.own_weight(
        base, AdapterTensors({"lora_embedding_A": a, "lora_embedding_B": b}), 1.0, None
    )
    assert torch.equal(got[3], torch.tensor([3.0, 6.0], dtype=torch.float64))
    assert torch.equal(got[1], torch.zeros(2, dtype=torch.float64))


def test_trainable_tokens_replace_rows_and_copies_replace_all():
    base = torch.ones(5, 2, dtype=torch.float64)
    rows = torch.full((2, 2), 7.0, dtype=torch.float64)
    got = effective.own_weight(base, AdapterTensors({}, tokens=rows), 1.0, rows=[1, 3])
    assert got[:, 0].tolist() == [1.0, 7.0, 1.0, 7.0, 1.0]
    copy = torch.full((5, 2), 9.0, dtype=torch.float64)
    assert torch.equal(effective.own_weight(base, AdapterTensors({}, copy=copy), 1.0, None), copy)


def _copies(embed: float, head: float) -> dict:
    return {
        "model.embed_tokens": AdapterTensors({}, copy=torch.full((4, 2), embed, dtype=torch.float64)),
        "lm_head": AdapterTensors({}, copy=torch.full((4, 2), head, dtype=torch.float64)),
    }


def _weights(recipe: Recipe, found: dict, tied: bool) -> dict:
    base = {"model.embed_tokens.weight": torch.zeros(4, 2), "lm_head.weight": torch.zeros(4, 2)}
    out = effective.effective_weights(found, base, recipe, "model.embed_tokens", "lm_head", tied=tied)
    return {key: float(value[0, 0]) for key, value in out.items()}


def test_shared_semantics_gives_both_layers_the_embedding_matrix():
    both = {"modules_to_save": ["embed_tokens", "lm_head"]}
    shared = _weights(_recipe("shared", **both), _copies(1.0, 2.0), tied=True)
    assert shared == {"model.embed_tokens.weight": 1.0, "lm_head.weight": 1.0}
    separate = _weights(_recipe("separate", **both), _copies(1.0, 2.0), tied=True)
    assert separate["lm_head.weight"] == 2.0
    untied = _weights(_recipe("shared", **both), _copies(1.0, 2.0), tied=False)
    assert untied["lm_head.weight"] == 2.0, "an untied model never shares, whatever the recipe says"


def test_a_layer_the_recipe_does_not_touch_keeps_its_base_matrix():
    # PEFT 0.19.1 wrapped lm_head of an *untied* model when asked to tie embed_tokens: the spec says no.
    recipe = _recipe("shared", modules_to_save=["embed_tokens"])
    assert _weights(recipe, _copies(1.0, 1.0), tied=False) == {
        "model.embed_tokens.weight": 1.0,
        "lm_head.weight": 0.0,
    }
    assert _weights(recipe, _copies(1.0, 3.0), tied=True)["lm_head.weight"] == 1.0, "tied: the head follows"


@pytest.mark.parametrize(
    "targets", [["embed_tokens", "lm_head", "q_proj"], ["embed_tokens"], ["lm_head", "v_proj"]]
)
def test_effective_weights_equal_peft_merge_on_an_untied_model(targets):
    family = families.get("llama")
    base = family.build(family.canonical, TieFlags(False), seed=1, dtype=torch.float64)
    base_weights = {k: v.clone() for k, v in base.state_dict().items()}
    recipe = _recipe(target_modules=targets)
    model = get_peft_model(base, recipe.peft_config())
    effective.fill_adapter(model, seed=1)
    found = effective.collect(model)
    assert set(found) >= {p for p in ("model.embed_tokens", "lm_head") if p.split(".")[-1] in targets}
    ours = effective.effective_weights(
        found, base_weights, recipe, "model.embed_tokens", "lm_head", tied=False
    )
    merged = model.merge_and_unload().state_dict()
    for key, weight in ours.items():
        assert torch.allclose(weight, merged[key], atol=1e-12), key


def test_fill_adapter_is_deterministic_and_non_zero():
    family = families.get("llama")

    def filled():
        model = get_peft_model(
            family.build(family.canonical, TieFlags(False), 0, torch.float32),
            LoraConfig(target_modules=["q_proj"], r=2),
        )
        assert effective.fill_adapter(model, seed=5) == 2 * family.canonical["num_hidden_layers"]
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    first, second = filled(), filled()
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name])
        assert value.abs().sum() > 0, f"{name} stayed zero: checks would pass vacuously"


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_probe_sees_a_tie_and_its_absence(name):
    family = families.get(name)
    vocab = family.canonical["vocab_size"]
    tied = family.build(family.canonical, TieFlags(True), 0, torch.float32)
    assert effective.tie_gap(tied, vocab) < 1e-6  # Gemma scales rows by sqrt(hidden): divided back out
    untied = family.build(family.canonical, TieFlags(False), 0, torch.float32)
    assert effective.tie_gap(untied, vocab) > 1e-3


def test_token_rows_of_the_list_form_land_on_the_input_embedding_whatever_its_name():
    # T5's and BART's input embedding is `shared`: list-form rows belong to it, not to a module whose
    # last name happens to be embed_tokens.
    recipe = _recipe("shared", trainable_token_indices=[1, 3])
    rows = torch.full((2, 2), 7.0, dtype=torch.float64)
    found = {"shared": AdapterTensors({}, tokens=rows), "lm_head": AdapterTensors({}, tokens=rows)}
    base = {"shared.weight": torch.zeros(4, 2), "lm_head.weight": torch.zeros(4, 2)}
    out = effective.effective_weights(found, base, recipe, "shared", "lm_head", tied=True)
    assert out["shared.weight"][:, 0].tolist() == [0.0, 7.0, 0.0, 7.0]
    assert torch.equal(out["lm_head.weight"], out["shared.weight"])


def test_an_encoder_decoder_forward_feeds_the_decoder_and_its_reference_unties_every_name():
    from conformance.model import pipeline

    t5 = families.get("t5")
    model = t5.build(t5.canonical, TieFlags(True), 0, torch.float32)
    ids = pipeline.inputs(128, 0)
    assert effective.forward(model, ids).logits.shape == (*ids.shape, 128)
    ref = pipeline.reference_model(t5, t5.canonical, TieFlags(True), 0, torch.float32)
    names = ("shared", "encoder.embed_tokens", "decoder.embed_tokens", "lm_head")
    pointers = {ref.get_submodule(n).weight.data_ptr() for n in names}
    assert len(pointers) == 4, "every name of the tie group holds a tensor of its own"
    assert ref.config.scale_decoder_outputs == model.config.scale_decoder_outputs
    assert torch.equal(pipeline.logits(ref, ids), pipeline.logits(model, ids)), "same weights, same forward"


def test_rows_counted_from_the_end_are_the_rows_a_resize_added():
    from conformance.model import pipeline, recipes

    book = recipes.load()
    listed, both = book.get("tokens_new_rows"), book.get("tokens_new_rows_head")
    assert listed.new_rows and not book.get("tokens_embed").new_rows
    assert listed.resolved(136).token_indices() == {"embed_tokens": [128, 131, 134]}
    assert both.resolved(136).token_indices()["lm_head"] == [128, 131, 134]
    assert book.get("tokens_embed").resolved(136) is book.get("tokens_embed")
    assert all(r >= 0 for r in pipeline.recipe_rows()), "negative rows wait for their vocabulary"
    ids = pipeline.with_rows(pipeline.inputs(128, 0), listed.resolved(136))
    assert ids[1, :3].tolist() == [128, 131, 134] and torch.equal(ids[0], pipeline.inputs(128, 0)[0])


def test_new_token_rows_are_trained_merged_and_reloaded_on_a_resized_llama():
    from conformance.base.outcomes import PASS
    from conformance.engine.testing import fresh_records

    got = fresh_records("peft", "llama", TieFlags(False), "tokens_new_rows", "resize-merge")
    assert got["adapter-effect"].outcome == PASS, got["adapter-effect"].detail
    failed = {k: r.detail for k, r in got.items() if r.outcome != PASS}
    assert not failed, failed
