"""Gemma (v1): flat config, `GemmaForCausalLM`, tied by default, embedding scaled by sqrt(hidden)."""

from __future__ import annotations

from conformance.families import TINY_ATTENTION, flat

FAMILIES = [
    flat(
        "gemma",
        "GemmaForCausalLM",
        "GemmaConfig",
        {**TINY_ATTENTION, "head_dim": 16},
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
]
