"""Llama: flat config, `LlamaForCausalLM`, untied by default; tied exactly when its one flag says so."""

from __future__ import annotations

from conformance.model.families import TINY_ATTENTION, flat

# num_key_value_heads may be drawn absent on purpose: the config default (= heads) gets exercised too.
FAMILIES = [flat("llama", "LlamaForCausalLM", "LlamaConfig", dict(TINY_ATTENTION))]
