"""Decoders untied by default besides Llama and Qwen2: Mistral (its own kv-head default) and Qwen3 (q/k
norms, a head_dim of its own). Flat configs; tied exactly when their one flag says so."""

from __future__ import annotations

from conformance.model.families import TINY_ATTENTION, flat

FAMILIES = [
    flat("mistral", "MistralForCausalLM", "MistralConfig", dict(TINY_ATTENTION)),
    flat("qwen3", "Qwen3ForCausalLM", "Qwen3Config", {**TINY_ATTENTION, "head_dim": 16}),
]
