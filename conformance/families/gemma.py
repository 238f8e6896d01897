"""Gemma (v1): flat config, `GemmaForCausalLM`, tied by default, embedding scaled by sqrt(hidden)."""

from __future__ import annotations

from typing import Any

from conformance.families import Family, Knobs
from conformance.flags import TieFlags


def _config(knobs: Knobs, flags: TieFlags) -> Any:
    from transformers import GemmaConfig

    return GemmaConfig(
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=flags.top,
        **knobs,
    )


FAMILIES = [
    Family(
        name="gemma",
        model_class="GemmaForCausalLM",
        nested=False,
        requires=">=4.55",
        knob_codes={
            "vocab_size": "v",
            "hidden_size": "h",
            "intermediate_size": "i",
            "num_hidden_layers": "L",
            "num_attention_heads": "H",
            "num_key_value_heads": "K",
            "head_dim": "d",
        },
        canonical={
            "vocab_size": 128,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
        },
        config_kwargs=_config,
    )
]
