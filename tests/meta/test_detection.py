"""Detection: deliberately broken steps, patched into the real libraries, must be reported as failures.

Each test runs one real case twice: unpatched (the control: the checks pass) and with one step broken
the way a real bug would break it (the named checks must come out non-pass and unexpected).
"""

import torch
import transformers
from peft.tuners.lora import LoraModel

from conformance.base.flags import TieFlags
from conformance.base.outcomes import PASS
from conformance.engine.testing import fresh_records
from conformance.model import effective
from conformance.reading.expectations import UNEXPECTED


def _run(recipe: str, tied: bool, workflow: str = "merge") -> dict:
    return fresh_records("peft", "llama", TieFlags(tied), recipe, workflow)


def _assert_caught(broken: dict, control: dict, checks: list[str]) -> None:
    for check in checks:
        assert control[check].outcome == PASS, f"control {check}: {control[check].detail}"
        assert broken[check].outcome != PASS, f"{check} missed the broken step: {broken[check].detail}"
        assert broken[check].verdict == UNEXPECTED, f"{check} was excused by {broken[check].expected}"


def test_a_save_that_drops_lm_head_is_caught(monkeypatch):
    control = _run("lora_attn", tied=False)
    original = transformers.PreTrainedModel.save_pretrained

    def save_without_head(self, path, *args, **kwargs):
        state = {k: v for k, v in self.state_dict().items() if not k.endswith("lm_head.weight")}
        return original(self, path, *args, state_dict=state, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", save_without_head)
    broken = _run("lora_attn", tied=False)
    _assert_caught(broken, control, ["roundtrip-fidelity", "tie-consistency"])
    assert "missing keys on reload: lm_head.weight" in broken["tie-consistency"].detail


def test_a_merge_that_leaves_the_config_saying_tied_is_caught(monkeypatch):
    # PEFT before 0.19 did exactly this: the storage is untied by merging, the config still says tied.
    control = _run("mts_embed", tied=True)
    original = LoraModel.merge_and_unload

    def merge_keeping_flag(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        model.config.tie_word_embeddings = True
        return model

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge_keeping_flag)
    broken = _run("mts_embed", tied=True)
    _assert_caught(broken, control, ["tie-consistency"])


def test_a_load_that_reties_is_caught(monkeypatch):
    control = _run("mts_embed", tied=True)
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def load_and_retie(cls, *args, **kwargs):
        loaded = original(cls, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
        return loaded

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(load_and_retie))
    broken = _run("mts_embed", tied=True)
    _assert_caught(broken, control, ["roundtrip-fidelity", "tie-consistency"])


def test_a_wrapper_that_drops_the_tie_is_caught(monkeypatch):
    # ensure_weight_tying promises one shared trainable copy; give lm_head its own instead.
    import peft

    control = _run("mts_embed_ewt", tied=True)
    original = peft.get_peft_model

    def wrap_then_untie(model, config, *args, **kwargs):
        wrapped = original(model, config, *args, **kwargs)
        head = wrapped.get_output_embeddings()
        for module in head.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight = torch.nn.Parameter(module.weight.detach().clone())
        return wrapped

    monkeypatch.setattr(peft, "get_peft_model", wrap_then_untie)
    broken = _run("mts_embed_ewt", tied=True)
    _assert_caught(broken, control, ["tie-preserved", "reference"])


def test_an_adapter_that_changes_nothing_is_caught(monkeypatch):
    control = _run("lora_attn", tied=False)
    monkeypatch.setattr(effective, "fill_adapter", lambda model, seed: 0)
    monkeypatch.setattr(effective, "train_step", lambda model, ids, lr=0.0: 0.0)
    broken = _run("lora_attn", tied=False)
    _assert_caught(broken, control, ["adapter-effect"])


def test_the_reference_catches_a_forward_that_is_wrong_before_anything_is_saved(monkeypatch):
    # A LoRA layer computing with the wrong scaling is self-consistent through merge and reload;
    # only the independent reference sees it.
    import peft

    control = _run("lora_attn", tied=False)
    original = peft.get_peft_model

    def wrap_with_wrong_scaling(model, config, *args, **kwargs):
        wrapped = original(model, config, *args, **kwargs)
        for module in wrapped.modules():
            if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
                module.scaling["default"] *= 1.5
        return wrapped

    monkeypatch.setattr(peft, "get_peft_model", wrap_with_wrong_scaling)
    broken = _run("lora_attn", tied=False)
    _assert_caught(broken, control, ["reference"])
    assert broken["merge-fidelity"].outcome == PASS, "merge should agree with the (wrong) forward"


def test_an_adapter_save_that_loses_the_copy_is_caught(monkeypatch):
    import peft

    control = _run("mts_embed", tied=True, workflow="adapter")
    original = peft.PeftModel.save_pretrained

    def save_without_copies(self, path, *args, **kwargs):
        saved = original(self, path, *args, **kwargs)
        from safetensors.torch import load_file, save_file

        file = f"{path}/adapter_model.safetensors"
        # PEFT stores a modules_to_save copy under the wrapped module's own name (no lora_ infix).
        save_file({k: v for k, v in load_file(file).items() if "lora_" in k}, file)
        return saved

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", save_without_copies)
    broken = _run("mts_embed", tied=True, workflow="adapter")
    _assert_caught(broken, control, ["adapter-roundtrip"])


def _native(tied: bool) -> dict:
    return fresh_records("hf", "llama", TieFlags(tied), "no_adapter", "native")


def test_a_tie_weights_that_does_nothing_is_caught_by_retie(monkeypatch):
    control = _native(tied=True)
    monkeypatch.setattr(transformers.PreTrainedModel, "tie_weights", lambda self, *args, **kwargs: None)
    broken = _native(tied=True)
    _assert_caught(broken, control, ["retie"])


def test_a_checkpoint_without_the_untied_head_is_caught_by_the_native_roundtrip(monkeypatch):
    control = _native(tied=False)
    original = transformers.PreTrainedModel.save_pretrained

    def save_without_head(self, path, *args, **kwargs):
        state = {k: v for k, v in self.state_dict().items() if not k.endswith("lm_head.weight")}
        return original(self, path, *args, state_dict=state, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", save_without_head)
    broken = _native(tied=False)
    _assert_caught(broken, control, ["checkpoint-roundtrip", "hf-checkpoint-load"])
