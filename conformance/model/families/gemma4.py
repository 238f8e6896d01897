"""Gemma4, text-only `Gemma4ForConditionalGeneration` (nested config), dense and with the MoE block on."""

from __future__ import annotations

import functools

from conformance.base.flags import TieFlags
from conformance.model.families import TINY_ATTENTION, ConfigSpec, Family, Knobs

_MOE_KNOBS = ("num_experts", "top_k_experts", "moe_intermediate_size")


def _layer_types(layers: int, full_every: int) -> list[str]:
    # Gemma4 requires the last layer to use full attention.
    return [
        "full_attention" if (i + 1) % full_every == 0 or i == layers - 1 else "sliding_attention"
        for i in range(layers)
    ]


def _config(knobs: Knobs, flags: TieFlags, **runtime: str) -> ConfigSpec:
    text = dict(knobs)
    full_every = text.pop("full_every", 2)
    moe = {name: text.pop(name) for name in _MOE_KNOBS if name in text}
    if moe:
        text.update(enable_moe_block=True, **moe)
    text_config = ConfigSpec(
        "Gemma4TextConfig",
        {
            "layer_types": _layer_types(text["num_hidden_layers"], full_every),
            "max_position_embeddings": 64,
            # Left at their defaults these make a "tiny" model enormous (262144-row per-layer embeddings,
            # 512-wide global heads), so they are always set.
            "hidden_size_per_layer_input": 0,
            "vocab_size_per_layer_input": text["vocab_size"],
            "global_head_dim": text.pop("global_head_dim", text["head_dim"]),
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
            "tie_word_embeddings": flags.text,
            **text,
        },
        module="transformers.models.gemma4.configuration_gemma4",
    )
    return ConfigSpec(
        "Gemma4Config",
        {
            "text_config": text_config,
            "vision_config": None,
            "audio_config": None,
            "tie_word_embeddings": flags.top,
            **runtime,
        },
    )


def _every_expert(knobs: Knobs) -> Knobs:
    # Every token to every expert: router, experts and their weighting still run, and the output is
    # continuous in the weights, so half-precision rounding cannot flip an expert.
    return {**knobs, "top_k_experts": knobs["num_experts"]}


_DENSE = {**TINY_ATTENTION, "head_dim": 16, "global_head_dim": 16, "sliding_window": 8, "full_every": 2}
# transformers 5.x ties Gemma4ForConditionalGeneration on the top-level flag only (the text flag is
# ignored); the family does not exist before 5.5, so no older rule applies.
_RULE = ((">=5.0", "top"), ("<5.0", "text"))
# The grouped_mm experts kernel has no float64 CPU path; the eager loop is the reference anyway.
# It is a runtime choice, not saved in config.json, so every load passes it again.
_EAGER_EXPERTS = {"experts_implementation": "eager"}

FAMILIES = [
    Family(
        name="gemma4",
        model_class="Gemma4ForConditionalGeneration",
        nested=True,
        requires=">=5.5",
        canonical=_DENSE,
        config_spec=_config,
        tie_flag_by_version=_RULE,
    ),
    Family(
        name="gemma4-moe",
        model_class="Gemma4ForConditionalGeneration",
        nested=True,
        requires=">=5.5",
        canonical={**_DENSE, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32},
        config_spec=functools.partial(_config, **_EAGER_EXPERTS),
        load_kwargs=_EAGER_EXPERTS,
        tie_flag_by_version=_RULE,
        half_precision=_every_expert,
    ),
]
