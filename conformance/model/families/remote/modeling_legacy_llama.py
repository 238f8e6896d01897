"""A remote-code Llama written against transformers 4.x, as Nemotron-Flash and many Hub checkpoints are.

Its one trait under test: `_tied_weights_keys` in the list form of 4.x ("these keys are tied to the input
embedding when the config says tied"). transformers 5 expects a dict and cannot build it; NeMo
Automodel's loader converts the list. This file is copied into every checkpoint it writes and loaded
back from there with trust_remote_code, so it imports nothing but transformers.
"""

from transformers import LlamaConfig, LlamaForCausalLM


class LegacyLlamaConfig(LlamaConfig):
    model_type = "legacy_llama"


class LegacyLlamaForCausalLM(LlamaForCausalLM):
    config_class = LegacyLlamaConfig
    _tied_weights_keys = ["lm_head.weight"]  # noqa: RUF012  (the 4.x list form is what is under test)
