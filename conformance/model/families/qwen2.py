"""Qwen2: flat config, `Qwen2ForCausalLM` (biased q/k/v projections), untied by default."""

from __future__ import annotations

from conformance.model.families import TINY_ATTENTION, flat

FAMILIES = [flat("qwen2", "Qwen2ForCausalLM", "Qwen2Config", dict(TINY_ATTENTION))]
