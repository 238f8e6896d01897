"""Llama: flat config, `LlamaForCausalLM`, untied by default; tied exactly when its one flag says so."""

from __future__ import annotations

from typing import Any

from conformance.families import TINY_ATTENTION, Family, Knobs
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
        canonical=dict(TINY_ATTENTION),
        config_kwargs=_config,
    )
]
