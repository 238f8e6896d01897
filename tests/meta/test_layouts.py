"""Checkpoint layouts (conformance.model.layouts): what real checkpoints hold, loaded by from_pretrained.

The layout-load check must pass on what transformers does today, and fail where a loader gives a module
another key's tensor, or leaves a key out silently.
"""

from __future__ import annotations

import torch
import transformers

from conformance.base.flags import TieFlags
from conformance.base.outcomes import PASS, SKIPPED
from conformance.engine.testing import fresh_records
from conformance.model import layouts
from conformance.model.oracles.base import CheckContext
from conformance.reading.expectations import UNEXPECTED


def _layout(family: str, flags: TieFlags, layout: str) -> dict:
    return fresh_records("hf", family, flags, "no_adapter", layout)


def test_every_layout_loads_each_module_from_its_key_on_a_flat_and_a_vl_family():
    for family, flags in (
        ("llama", TieFlags(True)),
        ("llama", TieFlags(False)),
        ("llava", TieFlags(True, False)),
    ):
        for layout in layouts.LAYOUTS:
            got = _layout(family, flags, layout)["layout-load"]
            assert got.outcome in (PASS, SKIPPED), (family, flags.id, layout, got.detail)


def test_the_legacy_layout_really_renames_and_still_loads(tmp_path):
    from conformance.model import families

    llava = families.get("llava")
    model = llava.build(llava.canonical, TieFlags(False, False), 0, torch.float32)
    keys = layouts.write(
        model, tmp_path / "n", tmp_path / "l", layouts.LAYOUTS["layout-legacy"], llava, 0
    ).keys
    today = layouts.write(
        model, tmp_path / "n2", tmp_path / "b", layouts.LAYOUTS["layout-both"], llava, 0
    ).keys
    assert keys["embedding"] != today["embedding"] and keys["head"] != today["head"]


def test_a_loader_that_ties_to_a_copy_fails_layout_embed(monkeypatch):
    # A tied checkpoint holds the embedding only; a loader whose tie hands the head other values is caught.
    original = transformers.PreTrainedModel.tie_weights

    def tie_to_a_copy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        head = self.get_output_embeddings()
        if head is not None and not head.weight.is_meta:
            head.weight = torch.nn.Parameter(head.weight.detach() + 1)

    monkeypatch.setattr(transformers.PreTrainedModel, "tie_weights", tie_to_a_copy)
    got = _layout("llama", TieFlags(True), "layout-embed")["layout-load"]
    assert got.outcome != PASS and got.verdict == UNEXPECTED
    assert "the head is not the checkpoint's model.embed_tokens.weight" in got.detail


def _loaded(present: dict, loaded: dict, rule_tied: bool, missing=()) -> layouts.LoadedLayout:
    written = {"embedding": torch.zeros(4, 2), "head": torch.ones(4, 2)}
    return layouts.LoadedLayout(
        keys={"embedding": "model.embed_tokens.weight", "head": "lm_head.weight"},
        params={"embedding": "model.embed_tokens.weight", "head": "lm_head.weight"},
        present=present,
        written={m: v for m, v in written.items() if present[m]},
        loaded={m: written[v] for m, v in loaded.items()},
        rule_tied=rule_tied,
        missing=tuple(missing),
    )


def _judge(got: layouts.LoadedLayout):
    from conformance.model import families, oracles

    ctx = CheckContext(families.get("llama"), "layout-both", False, False)
    return oracles.get("layout-load").evaluate({layouts.LAYOUT_LOAD: got}, None, ctx)


def test_the_check_wants_own_keys_then_the_rule_then_a_reported_gap():
    both = {"embedding": True, "head": True}
    embed_only = {"embedding": True, "head": False}
    assert _judge(_loaded(both, {"embedding": "embedding", "head": "head"}, True)).passed
    # Both keys, tied by the rule: a loader that ties anyway drops the head's own tensor.
    tied_anyway = _judge(_loaded(both, {"embedding": "embedding", "head": "embedding"}, True))
    assert not tied_anyway.passed and "the head is not the checkpoint's lm_head.weight" in tied_anyway.detail
    assert _judge(_loaded(embed_only, {"embedding": "embedding", "head": "embedding"}, True)).passed
    assert _judge(
        _loaded(embed_only, {"embedding": "embedding", "head": "head"}, False, ["lm_head.weight"])
    ).passed
    silent = _judge(_loaded(embed_only, {"embedding": "embedding", "head": "head"}, False))
    assert not silent.passed and "no missing key says so" in silent.detail


def test_the_stack_layouts_load_t5s_embedding_under_its_other_names_on_this_release():
    # T5's tie group has four names; a checkpoint may hold the embedding only as the stacks'
    # embed_tokens (google/madlad400). transformers 5.24 loads it (#48238); BART is recorded apart.
    for layout in ("layout-stack-names", "layout-decoder-name"):
        got = _layout("t5", TieFlags(True), layout)["layout-load"]
        assert got.outcome == PASS, (layout, got.detail)
    assert _layout("llama", TieFlags(True), "layout-stack-names")["layout-load"].outcome == SKIPPED


def _stack(alias_keys: tuple, aliases: dict, rule_tied: bool, missing=(), embedding="embedding"):
    written = {"embedding": torch.zeros(4, 2), "head": torch.ones(4, 2)}
    return layouts.LoadedLayout(
        keys={"embedding": ", ".join(alias_keys), "head": "lm_head.weight"},
        params={"embedding": "shared.weight", "head": "lm_head.weight"},
        present={"embedding": False, "head": True},
        written=written,
        loaded={"embedding": written[embedding], "head": written["head"]},
        rule_tied=rule_tied,
        missing=tuple(missing),
        aliases={name: written[source] for name, source in aliases.items()},
        alias_keys=alias_keys,
    )


def test_the_check_wants_every_name_of_the_embedding_to_load_it():
    enc, dec = "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"
    assert _judge(_stack((dec,), {enc: "embedding", dec: "embedding"}, True)).passed
    # The #48154 class: the encoder (and `shared`) loaded from lm_head.weight.
    wrong = _judge(_stack((dec,), {enc: "head", dec: "embedding"}, True, embedding="head"))
    assert not wrong.passed and f"{enc} is not the checkpoint's {dec}" in wrong.detail
    # Untied by the rule, a name the checkpoint lacks must be reported missing.
    quiet = _judge(_stack((dec,), {enc: "head", dec: "embedding"}, False, missing=["shared.weight"]))
    assert not quiet.passed and f"{enc} is not in the checkpoint" in quiet.detail
    told = _judge(_stack((dec,), {enc: "head", dec: "embedding"}, False, missing=["shared.weight", enc]))
    assert told.passed, told.detail
