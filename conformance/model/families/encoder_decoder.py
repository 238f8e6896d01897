"""Encoder–decoders, whose tie group carries several names: `shared`, the encoder's and the decoder's
`embed_tokens`, and `lm_head`. Run with the decoder fed the same ids as the encoder, so every name of the
group reaches the logits.

- T5 and mT5: transformers 4.x ties the embeddings by `tie_word_embeddings`. 5.x forces that flag to True
  in `T5Config` and keeps the user's False only as `scale_decoder_outputs` (T5 v1.1 and mT5 do not scale
  the decoder output by d_model**-0.5): every name is one tensor, unless a checkpoint holds distinct
  values for them. The forward reads the flag (the scaling), so the reference keeps the case's config.
- BART: one flag ties `lm_head` to `model.shared`; in 5.x an untied BART gives each of the four names a
  tensor of its own, so a checkpoint of 4.x holding only `model.shared` leaves the encoder's and decoder's
  embeddings to random init there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.base.flags import TieFlags
from conformance.model.families import ConfigSpec, Family, Knobs

SEQ2SEQ = "AutoModelForSeq2SeqLM"
# Knobs in the names every family shares (conformance.model.families.CODES).
_CANONICAL: Knobs = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
# From 5.0, T5Config sets tie_word_embeddings=True whatever it is given (see the module docstring).
_T5_RULE = (("<5.0", "top"), (">=5.0", "always"))


def _t5(config_class: str, feed_forward: str) -> Callable[[Knobs, TieFlags], ConfigSpec]:
    def spec(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
        kwargs = {
            "vocab_size": knobs["vocab_size"],
            "d_model": knobs["hidden_size"],
            "d_kv": knobs["hidden_size"] // knobs["num_attention_heads"],
            "d_ff": knobs["intermediate_size"],
            "num_layers": knobs["num_hidden_layers"],
            "num_heads": knobs["num_attention_heads"],
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 16,
            "feed_forward_proj": feed_forward,
            "decoder_start_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "tie_word_embeddings": flags.top,
        }
        return ConfigSpec(config_class, kwargs)

    return spec


def _bart(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    layers, heads, ffn = knobs["num_hidden_layers"], knobs["num_attention_heads"], knobs["intermediate_size"]
    kwargs = {
        "vocab_size": knobs["vocab_size"],
        "d_model": knobs["hidden_size"],
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": ffn,
        "max_position_embeddings": 64,
        "tie_word_embeddings": flags.top,
    }
    return ConfigSpec("BartConfig", kwargs)


# T5's attention projections are q, k, v, o: the recipes' q_proj/v_proj name those.
_T5_NAMES = {"q_proj": "q", "v_proj": "v"}


def _seq2seq(
    name: str, model_class: str, spec: Callable[[Knobs, TieFlags], ConfigSpec], **extra: Any
) -> Family:
    return Family(name, model_class, False, ">=4.55", dict(_CANONICAL), spec, auto_class=SEQ2SEQ, **extra)


_T5 = {"tie_flag_by_version": _T5_RULE, "module_names": _T5_NAMES, "forward_reads_tie_flag": True}
_T5["embedding_aliases"] = ("encoder.embed_tokens", "decoder.embed_tokens")
FAMILIES = [
    _seq2seq("t5", "T5ForConditionalGeneration", _t5("T5Config", "relu"), **_T5),
    _seq2seq("mt5", "MT5ForConditionalGeneration", _t5("MT5Config", "gated-gelu"), **_T5),
    _seq2seq(
        "bart",
        "BartForConditionalGeneration",
        _bart,
        embedding_aliases=("model.encoder.embed_tokens", "model.decoder.embed_tokens"),
    ),
]
