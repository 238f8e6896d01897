"""Remote code as Hub checkpoints ship it: a Llama whose modeling file, written for transformers 4.x,
declares `_tied_weights_keys` as a list (as Nemotron-Flash does). Its checkpoints carry that file and load
with trust_remote_code. transformers 4.x ties it by its one flag; 5.x cannot build it at all, and NeMo
Automodel converts the list into its own re-tie (`_nemo_tied_weights_keys`, NeMo Automodel #2941)."""

from __future__ import annotations

from conformance.base.flags import TieFlags
from conformance.model.families import TINY_ATTENTION, ConfigSpec, Family, Knobs

MODULE = "conformance.model.families.remote.modeling_legacy_llama"


def _config(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
    kwargs = {"max_position_embeddings": 64, "tie_word_embeddings": flags.top, **knobs}
    return ConfigSpec("LegacyLlamaConfig", kwargs, MODULE)


FAMILIES = [
    Family(
        "llama-remote",
        "LegacyLlamaForCausalLM",
        False,
        ">=4.55",
        dict(TINY_ATTENTION),
        _config,
        load_kwargs={"trust_remote_code": True},
        module=MODULE,
        legacy_remote_code=True,
    )
]
