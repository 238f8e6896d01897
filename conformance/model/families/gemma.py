"""Gemma 1-3 text models: flat configs, tied by default, embeddings scaled by sqrt(hidden); Gemma2 and
Gemma3 add sliding-window layers (and Gemma3 q/k norms)."""

from __future__ import annotations

from conformance.model.families import TINY_ATTENTION, flat

_TOKENS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
_SLIDING = {**TINY_ATTENTION, "head_dim": 16, "sliding_window": 8}

FAMILIES = [
    flat("gemma", "GemmaForCausalLM", "GemmaConfig", {**TINY_ATTENTION, "head_dim": 16}, **_TOKENS),
    flat("gemma2", "Gemma2ForCausalLM", "Gemma2Config", dict(_SLIDING), **_TOKENS),
    flat("gemma3-text", "Gemma3ForCausalLM", "Gemma3TextConfig", dict(_SLIDING), **_TOKENS),
]
