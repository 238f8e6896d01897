"""Gemma (v1): flat config, `GemmaForCausalLM`, tied by default, embedding scaled by sqrt(hidden)."""

from __future__ import annotations

from typing import Any

from conformance.families import TINY_ATTENTION, Family, Knobs
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
        canonical={**TINY_ATTENTION, "head_dim": 16},
        config_kwargs=_config,
    )
]
