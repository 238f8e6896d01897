"""Multimodal wrappers around a text decoder: vision-language (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5,
LLaVA, Mistral3 on a Mistral or a Ministral 3 decoder, Gemma3) and audio (Qwen2-Audio), built from configs
with tiny vision or audio towers and run on text alone. Each config nests a `text_config` with a tie flag
of its own, so every family has the four flag combinations, and which flag rules changed between
transformers 4.x and 5.x, family by family (measured on 4.57.6, 5.15.1, 5.16.0 and 5.24.0):

- 4.x ties every one of them by the text flag (`get_text_config(decoder=True)`).
- 5.x ties by the top-level flag of the class that declares `_tied_weights_keys`; LLaVA, and Qwen2-VL and
  Qwen2.5-VL from 5.16 (transformers #45857), also when only the text flag says tied ("either").
- Qwen2-Audio declares no `_tied_weights_keys` in 5.x: no flag ties it ("never"), so a tied checkpoint
  of 4.x loads with a random head there (the cross-version pairs show it).
"""

from __future__ import annotations

from typing import Any

from conformance.base.flags import TieFlags
from conformance.model.families import TINY_ATTENTION, ConfigSpec, Family, Knobs

IMAGE_TEXT = "AutoModelForImageTextToText"
# Image, video and special tokens inside the tiny vocabulary; the text probes never use them.
_QWEN_TOKENS = {"image_token_id": 120, "video_token_id": 121, "vision_start_token_id": 122}
_QWEN_TOKENS["vision_end_token_id"] = 123
_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
_QWEN_TOWER = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32}
_QWEN_TOWER.update(patch_size=2, spatial_merge_size=1, temporal_patch_size=1)


def _mrope(head_dim: int) -> list[int]:
    """Multimodal rotary sections (temporal, height, width) filling half a head, as Qwen's VL models need."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def _text(knobs: Knobs, flags: TieFlags, **fixed: Any) -> dict[str, Any]:
    return {"max_position_embeddings": 64, "tie_word_embeddings": flags.text, **fixed, **knobs}


def _wrapper(config: str, text: dict[str, Any], flags: TieFlags, **rest: Any) -> ConfigSpec:
    return ConfigSpec(config, {"text_config": text, **rest, "tie_word_embeddings": flags.top})


def _head_dim(knobs: Knobs) -> int:
    return knobs["hidden_size"] // knobs["num_attention_heads"]


def _qwen2_vl(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    rope = {"type": "mrope", "mrope_section": _mrope(_head_dim(knobs))}
    tower = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2}
    tower.update(patch_size=2, spatial_merge_size=1, temporal_patch_size=1)
    text = _text(knobs, flags, rope_scaling=rope)
    return _wrapper("Qwen2VLConfig", text, flags, vision_config=tower, **_QWEN_TOKENS)


def _qwen2_5_vl(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    rope = {"type": "mrope", "mrope_section": _mrope(_head_dim(knobs))}
    tower = {**_QWEN_TOWER, "window_size": 4, "fullatt_block_indexes": [0]}
    text = _text(knobs, flags, rope_scaling=rope)
    return _wrapper("Qwen2_5_VLConfig", text, flags, vision_config=tower, **_QWEN_TOKENS)


def _qwen3_vl(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    head_dim = knobs.get("head_dim", 16)
    rope = {"rope_type": "default", "mrope_section": _mrope(head_dim), "mrope_interleaved": True}
    tower = {**_QWEN_TOWER, "num_position_embeddings": 16, "deepstack_visual_indexes": [0]}
    text = _text(knobs, flags, rope_scaling=rope)
    return _wrapper("Qwen3VLConfig", text, flags, vision_config=tower, **_QWEN_TOKENS)


def _qwen3_5(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    text = dict(knobs)
    layers, full_every = text["num_hidden_layers"], text.pop("full_every", 2)
    rotary = max(2, text["head_dim"] // 4)  # partial_rotary_factor 0.25 of the head
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    rope.update(mrope_section=_mrope(rotary), mrope_interleaved=True)
    linear = {"linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 8}
    linear.update(linear_value_head_dim=8, linear_conv_kernel_dim=2)
    kinds = [
        "full_attention" if (i + 1) % full_every == 0 or i == layers - 1 else "linear_attention"
        for i in range(layers)
    ]
    text_config = _text(text, flags, layer_types=kinds, rope_parameters=rope, **linear)
    tower = {**_QWEN_TOWER, "num_position_embeddings": 16}
    return _wrapper("Qwen3_5Config", text_config, flags, vision_config=tower, **_QWEN_TOKENS)


def _llava(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    tower = {"model_type": "clip_vision_model", **_TOWER, "image_size": 8, "patch_size": 4}
    tower["projection_dim"] = 32
    text = _text(knobs, flags, model_type="llama")
    return _wrapper(
        "LlavaConfig", text, flags, vision_config=tower, image_token_index=127, vision_feature_layer=-1
    )


def _mistral3(knobs: Knobs, flags: TieFlags, **text: Any) -> ConfigSpec:
    """Mistral3's wrapper, with a Pixtral tower, around a Mistral decoder or the one `text` names."""
    tower = {"model_type": "pixtral", **_TOWER, "image_size": 8, "patch_size": 4, "head_dim": 16}
    decoder = _text(knobs, flags, **{"model_type": "mistral", **text})
    return _wrapper(
        "Mistral3Config",
        decoder,
        flags,
        vision_config=tower,
        image_token_index=127,
        vision_feature_layer=-1,
        spatial_merge_size=1,
    )


def _ministral3(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    """Mistral3 around a Ministral 3 decoder (Ministral-3 checkpoints, 5.0 on): YaRN rotary with Llama 4's
    attention scaling, the backbone NeMo's own Mistral3 VLM class claims."""
    rope = {"rope_type": "yarn", "rope_theta": 1.0e6, "factor": 4.0, "original_max_position_embeddings": 16}
    rope.update(llama_4_scaling_beta=0.1, beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)
    return _mistral3(knobs, flags, model_type="ministral3", rope_parameters=rope)


def _gemma3(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    tower = {**_TOWER, "image_size": 8, "patch_size": 4}
    text = _text(knobs, flags, query_pre_attn_scalar=16)
    return _wrapper(
        "Gemma3Config",
        text,
        flags,
        vision_config=tower,
        mm_tokens_per_image=4,
        boi_token_index=124,
        eoi_token_index=125,
        image_token_index=127,
    )


def _qwen2_audio(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    tower = {"model_type": "qwen2_audio_encoder", "d_model": 32, "encoder_layers": 1}
    tower.update(encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16)
    text = _text(knobs, flags, model_type="qwen2")
    return _wrapper("Qwen2AudioConfig", text, flags, audio_config=tower, audio_token_index=127)


_TEXT = dict(TINY_ATTENTION)
# Key prefixes of checkpoints written before transformers 4.52 moved the text model under `model.`; 5.x
# still loads them (its conversion mapping), which `layout-legacy` checks.
_LLAVA_KEYS = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
_QWEN_VL_KEYS = (("model.language_model.", "model."), ("model.visual.", "visual."))
_BY_TEXT_FLAG = ("<5.0", "text")


def _family(name: str, model_class: str, config: Any, canonical: Knobs, rule: tuple, **extra: Any) -> Family:
    return Family(
        name=name,
        model_class=model_class,
        nested=True,
        requires=extra.pop("requires", ">=4.55"),
        canonical=canonical,
        config_spec=config,
        tie_flag_by_version=rule,
        auto_class=extra.pop("auto_class", IMAGE_TEXT),
        **extra,
    )


FAMILIES = [
    # transformers #45857: 5.0-5.15 ignored the text flag, so a 4.x checkpoint tied by it loaded with a
    # random head; 5.16 ties when either flag says so.
    _family(
        "qwen2-vl",
        "Qwen2VLForConditionalGeneration",
        _qwen2_vl,
        _TEXT,
        (_BY_TEXT_FLAG, (">=5.0,<5.16", "top"), (">=5.16", "either")),
        legacy_prefixes=_QWEN_VL_KEYS,
    ),
    _family(
        "qwen2.5-vl",
        "Qwen2_5_VLForConditionalGeneration",
        _qwen2_5_vl,
        _TEXT,
        (_BY_TEXT_FLAG, (">=5.0,<5.16", "top"), (">=5.16", "either")),
        legacy_prefixes=_QWEN_VL_KEYS,
    ),
    _family(
        "qwen3-vl",
        "Qwen3VLForConditionalGeneration",
        _qwen3_vl,
        {**_TEXT, "head_dim": 16},
        (_BY_TEXT_FLAG, (">=5.0", "top")),
    ),
    _family(
        "qwen3.5-vl",
        "Qwen3_5ForConditionalGeneration",
        _qwen3_5,
        {**_TEXT, "head_dim": 16, "full_every": 2},
        ((">=5.0", "top"),),
        requires=">=5.0",
    ),
    _family(
        "llava",
        "LlavaForConditionalGeneration",
        _llava,
        _TEXT,
        (_BY_TEXT_FLAG, (">=5.0", "either")),
        legacy_prefixes=_LLAVA_KEYS,
    ),
    _family(
        "mistral3",
        "Mistral3ForConditionalGeneration",
        _mistral3,
        {**_TEXT, "head_dim": 16},
        (_BY_TEXT_FLAG, (">=5.0", "top")),
        legacy_prefixes=_LLAVA_KEYS,
        decoder="mistral",
    ),
    _family(
        "ministral3",
        "Mistral3ForConditionalGeneration",
        _ministral3,
        {**_TEXT, "head_dim": 16},
        ((">=5.0", "top"),),
        requires=">=5.0",
        decoder="ministral3",
    ),
    _family(
        "gemma3",
        "Gemma3ForConditionalGeneration",
        _gemma3,
        {**_TEXT, "head_dim": 16, "sliding_window": 8},
        (_BY_TEXT_FLAG, (">=5.0", "top")),
        legacy_prefixes=_LLAVA_KEYS,
    ),
    _family(
        "qwen2-audio",
        "Qwen2AudioForConditionalGeneration",
        _qwen2_audio,
        _TEXT,
        (_BY_TEXT_FLAG, (">=5.0", "never")),
        auto_class="AutoModelForSeq2SeqLM",
    ),
]
