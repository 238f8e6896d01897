"""Llama: flat config, `LlamaForCausalLM`, untied by default; tied exactly when its one flag says so."""

from __future__ import annotations

from typing import Any

from conformance.families import Family, Knobs
from conformance.flags import TieFlags


def _config(knobs: Knobs, flags: TieFlags) -> Any:
    from transformers import LlamaConfig

    # num_key_value_heads may be absent on purpose: the config default (= heads) gets exercised too.
    return LlamaConfig(max_position_embeddings=64, tie_word_embeddings=flags.top, **knobs)


FAMILIES = [
    Family(
        name="llama",
        model_class="LlamaForCausalLM",
        nested=False,
        requires=">=4.55",
        knob_codes={
            "vocab_size": "v",
            "hidden_size": "h",
            "intermediate_size": "i",
            "num_hidden_layers": "L",
            "num_attention_heads": "H",
            "num_key_value_heads": "K",
        },
        canonical={
            "vocab_size": 128,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        },
        config_kwargs=_config,
    )
]
