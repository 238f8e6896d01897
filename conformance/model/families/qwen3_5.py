"""Qwen3.5 text (`Qwen3_5ForCausalLM`): gated linear-attention layers with full-attention ones between
them, a flat config, untied by default. Absent from transformers releases before it (skipped there)."""

from __future__ import annotations

from conformance.base.flags import TieFlags
from conformance.model.families import TINY_ATTENTION, ConfigSpec, Family, Knobs


def _config(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    text = dict(knobs)
    full_every = text.pop("full_every", 2)
    layers = text["num_hidden_layers"]
    return ConfigSpec(
        "Qwen3_5TextConfig",
        {
            # Every full_every-th layer, and the last, full attention; the rest gated linear attention.
            "layer_types": [
                "full_attention" if (i + 1) % full_every == 0 or i == layers - 1 else "linear_attention"
                for i in range(layers)
            ],
            "max_position_embeddings": 64,
            # Left at their defaults (16 heads of 128) these dwarf a tiny model.
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 2,
            "linear_key_head_dim": 8,
            "linear_value_head_dim": 8,
            "linear_conv_kernel_dim": 2,
            "tie_word_embeddings": flags.top,
            **text,
        },
    )


FAMILIES = [
    Family(
        name="qwen3.5",
        model_class="Qwen3_5ForCausalLM",
        nested=False,
        requires=">=5.0",
        canonical={**TINY_ATTENTION, "head_dim": 16, "full_every": 2},
        config_spec=_config,
    )
]
