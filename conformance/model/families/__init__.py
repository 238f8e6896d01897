"""Model families: how to build a tiny config from drawn sizes, which tie flags exist, and the HF tie rule."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from conformance.base import device, versions
from conformance.base.errors import UnknownName
from conformance.base.flags import ALIAS, APART, TieFlags, combinations, states

Knobs = dict[str, int]
_TOKEN_PART = re.compile(r"([A-Za-z]+)(\d+)")
# The tiny attention stack every family starts from (REFERENCE: vocab 128, hidden 32, 2 layers).
TINY_ATTENTION: Knobs = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}
# One short code per knob, shared by every family so a code means the same thing in every case id;
# the seed's "s" is reserved by cases.py.
CODES = {
    "vocab_size": "v",
    "hidden_size": "h",
    "intermediate_size": "i",
    "num_hidden_layers": "L",
    "num_attention_heads": "H",
    "num_key_value_heads": "K",
    "head_dim": "d",
    "global_head_dim": "g",
    "sliding_window": "w",
    "full_every": "f",
    "num_experts": "E",
    "top_k_experts": "k",
    "moe_intermediate_size": "m",
}


@dataclass(frozen=True)
class ConfigSpec:
    """A config as one constructor call: a class of `module` and its keyword arguments (specs nest).

    Kept as data so the same call builds the config here and is written out as source in a standalone
    repro script, where it must give a model with the same weights.
    """

    cls: str
    kwargs: dict[str, Any]
    module: str = "transformers"

    def build(self) -> Any:
        import importlib

        made = {k: v.build() if isinstance(v, ConfigSpec) else v for k, v in self.kwargs.items()}
        return getattr(importlib.import_module(self.module), self.cls)(**made)

    def imports(self) -> set[tuple[str, str]]:
        """(module, class) of this spec and every nested one."""
        found = {(self.module, self.cls)}
        for value in self.kwargs.values():
            if isinstance(value, ConfigSpec):
                found |= value.imports()
        return found

    def source(self, indent: int = 0) -> str:
        """Python source of the constructor call (classes by bare name: see `imports`)."""
        pad = " " * (indent + 4)
        args = [
            f"{pad}{k}={v.source(indent + 4) if isinstance(v, ConfigSpec) else repr(v)},"
            for k, v in self.kwargs.items()
        ]
        return f"{self.cls}(\n" + "\n".join(args) + f"\n{' ' * indent})"


@dataclass(frozen=True)
class Family:
    """One architecture under test; `config_spec` turns knobs and flags into its config constructor call."""

    name: str
    model_class: str  # attribute of the `transformers` module
    nested: bool  # top-level config with a `text_config` carrying its own tie flag
    requires: str  # transformers versions the family exists in
    canonical: Knobs  # the known-good tiny config, always run first; its keys name every knob, in id order
    config_spec: Callable[[Knobs, TieFlags], ConfigSpec] = field(repr=False)
    # Which flag rules the tie for the installed transformers: list of (version range, rule), the rule one
    # of RULES: "top", "text", "either" (tied if either flag says so), "never" (no flag ties it),
    # "always" (tied whatever the flags say: T5's config of 5.x).
    tie_flag_by_version: tuple[tuple[str, str], ...] = ((">=0", "top"),)
    # Extra from_pretrained kwargs every load of this family needs (runtime choices config.json omits).
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    # The transformers Auto class that loads a checkpoint of this family (its save → load goes through it).
    auto_class: str = "AutoModelForCausalLM"
    # Half-precision cases' knobs, where the family's own would make logits discontinuous in the weights
    # (top-k routing: rounding noise flips experts, and no tolerance then tells a defect from noise).
    half_precision: Callable[[Knobs], Knobs] | None = field(default=None, repr=False)
    # Where model_class lives: transformers, or a remote-code module (conformance.model.families.remote) that
    # its checkpoints carry and that loads with trust_remote_code.
    module: str = "transformers"
    # Remote code written for transformers 4.x (list-form `_tied_weights_keys`): 5.x cannot build it, only
    # a loader that converts the list can (an implementation declaring `converts_legacy_remote_code`).
    legacy_remote_code: bool = False
    # (today's key prefix, the prefix checkpoints of transformers < 4.52 used): the `layout-legacy` renames.
    legacy_prefixes: tuple[tuple[str, str], ...] = ()
    # Modules that are the input embedding under another name (an encoder–decoder's per-stack
    # embed_tokens): checkpoints may hold the embedding only under these (layout-stack-names).
    embedding_aliases: tuple[str, ...] = ()
    # The recipes' module names (Llama's) as this family spells them, where it differs (T5: q_proj -> q).
    module_names: dict[str, str] = field(default_factory=dict)
    # The forward itself depends on the tie flag (T5 scales the decoder output only when tied), so the
    # reference keeps the case's config and unties the storage instead of building an untied config.
    forward_reads_tie_flag: bool = False
    # The text decoder's model_type where one wrapper runs over several (Mistral3: mistral, ministral3).
    decoder: str = ""

    @property
    def knob_codes(self) -> dict[str, str]:
        return {name: CODES[name] for name in self.canonical}

    def unavailable(self, installed: dict[str, str] | None = None) -> str | None:
        """Why this family cannot run here, or None."""
        spec = versions.parse_spec(self.requires, f"family {self.name}: requires")
        if not versions.satisfies("transformers", spec, installed):
            have = (installed or versions.installed()).get("transformers", "absent")
            return f"{self.name} needs transformers{self.requires}; installed {have}"
        import importlib

        if not hasattr(importlib.import_module(self.module), self.model_class):
            return f"transformers {have_version()} has no {self.model_class}"
        return None

    def legacy_unavailable(self) -> str | None:
        """Why transformers alone cannot build this family here (remote code of 4.x under 5.x), or None."""
        five = versions.parse_spec(">=5", "")
        if self.legacy_remote_code and versions.satisfies("transformers", five, None):
            return (
                f"{self.name} is remote code with list-form _tied_weights_keys (transformers 4.x); "
                f"transformers {have_version()} cannot build it, only a loader that converts the list "
                "(NeMo Automodel's)"
            )
        return None

    def describe(self) -> str:
        """One line for `list`: its class, its flags and which one ties it with the installed transformers."""
        if self.legacy_remote_code:
            return (
                f"{self.model_class}: remote code of transformers 4.x (list-form _tied_weights_keys), "
                "loaded with trust_remote_code; one flag ties it"
            )
        if not self.nested:
            if self.ruling_flag() == "always":
                return f"{self.model_class}: tied here whatever its flag says"
            return f"{self.model_class}: one flag ties it"
        rule = self.ruling_flag()
        words = {
            "top": "the top-level flag ties it",
            "text": "the text_config flag ties it",
            "either": "either flag ties it",
            "never": "no flag ties it",
            "always": "it is tied whatever its flags say",
        }
        on = f" on a {self.decoder} decoder" if self.decoder else ""
        return f"{self.model_class}{on}: top-level and text_config flags; {words[rule]} here"

    def knobs_for(self, knobs: Knobs, half: bool) -> Knobs:
        """The knobs a case of this precision builds with (see `half_precision`)."""
        return self.half_precision(dict(knobs)) if half and self.half_precision else dict(knobs)

    def flag_combinations(self) -> list[TieFlags]:
        return combinations(self.nested)

    def tie_states(self) -> list[TieFlags]:
        """Every flag combination, then each with the storage its flags do not rule (base.flags)."""
        return states(self.nested, self.expected_tied)

    def tied_storage(self, flags: TieFlags) -> bool:
        """Whether a model in this tie state shares one tensor between embedding and head."""
        return {APART: False, ALIAS: True}.get(flags.storage, self.expected_tied(flags))

    def model_cls(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), self.model_class)

    def config(self, knobs: Knobs, flags: TieFlags) -> Any:
        return self.config_spec(knobs, flags).build()

    def build(self, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype) -> torch.nn.Module:
        """A freshly initialised model on the run's device; the seed fixes every base weight.

        Built under `dtype` as the default, as from_pretrained(dtype=...) does, so buffers computed at
        init (rotary frequencies, embedding scales) match those of a reloaded model bit for bit. Drawn on
        the CPU and then moved, so every device tests the same weights.
        """
        torch.manual_seed(seed)
        config = self.config(knobs, flags)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = self.model_cls()(config)
        finally:
            torch.set_default_dtype(previous)
        return device.place(model.to(dtype).eval())

    def ruling_flag(self, installed: dict[str, str] | None = None) -> str:
        for spec, source in self.tie_flag_by_version:
            if versions.satisfies("transformers", versions.parse_spec(spec, self.name), installed):
                return source
        return "top"

    def expected_tied(self, flags: TieFlags, installed: dict[str, str] | None = None) -> bool:
        """The HF rule: is a model whose config carries `flags` tied under the installed transformers?"""
        return tied_by(self.ruling_flag(installed), flags.top, flags.text)

    def flags_of(self, config: Any) -> TieFlags:
        """The tie flags a config object carries (transformers 5.x reads a missing attribute as False)."""
        top = bool(getattr(config, "tie_word_embeddings", False))
        if not self.nested:
            return TieFlags(top)
        return TieFlags(
            top, bool(getattr(config.get_text_config(decoder=True), "tie_word_embeddings", False))
        )

    def config_id(self, knobs: Knobs) -> str:
        """Compact, parseable form of the knobs for case ids, e.g. 'v128.h32.L2'."""
        unknown = set(knobs) - set(self.knob_codes)
        if unknown:
            raise ValueError(f"{self.name}: unknown knobs {sorted(unknown)}")
        return ".".join(f"{code}{knobs[name]}" for name, code in self.knob_codes.items() if name in knobs)

    def parse_config_id(self, token: str) -> Knobs:
        by_code = {code: name for name, code in self.knob_codes.items()}
        knobs: Knobs = {}
        for part in token.split("."):
            match = _TOKEN_PART.fullmatch(part)
            if match is None or match.group(1) not in by_code:
                raise ValueError(f"{self.name}: bad config part {part!r} in {token!r}")
            knobs[by_code[match.group(1)]] = int(match.group(2))
        return knobs


RULES = ("top", "text", "either", "never", "always")


def tied_by(rule: str, top: bool, text: bool | None) -> bool:
    """A tie rule (RULES) applied to a config's two flags."""
    if rule == "text":
        return bool(text)
    if rule == "either":
        return bool(top or text)
    if rule == "always":
        return True
    return rule == "top" and bool(top)


def store(model: torch.nn.Module, flags: TieFlags, seed: int) -> torch.nn.Module:
    """Give a model built from `flags`'s config the storage the state names: APART, a head of its own
    that has moved away from the embedding (seeded, so every case and device gets the same values);
    ALIAS, the embedding's tensor as the head. NATURAL leaves it as built."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if flags.storage == APART:
        weight = embedding.weight.detach()
        moved = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed + 7919))
        head.weight = torch.nn.Parameter(weight.clone() + (0.05 * moved).to(weight.device, weight.dtype))
    elif flags.storage == ALIAS:
        head.weight = embedding.weight
    return model


def flat(name: str, model_class: str, config_class: str, canonical: Knobs, **fixed: int) -> Family:
    """A family with one flat config whose own `tie_word_embeddings` rules (Llama, Gemma, Qwen2...)."""

    def config(knobs: Knobs, flags: TieFlags) -> ConfigSpec:
        return ConfigSpec(
            config_class, {"max_position_embeddings": 64, "tie_word_embeddings": flags.top, **fixed, **knobs}
        )

    return Family(name, model_class, False, ">=4.55", canonical, config)


def have_version() -> str:
    return versions.installed().get("transformers", "absent")


def _registry() -> dict[str, Family]:
    from conformance.model.families import (
        decoders,
        encoder_decoder,
        gemma,
        gemma4,
        llama,
        multimodal,
        qwen2,
        qwen3_5,
        remote_code,
    )

    found = {}
    for module in (llama, gemma, gemma4, qwen2, decoders, qwen3_5, multimodal, remote_code, encoder_decoder):
        for family in module.FAMILIES:
            found[family.name] = family
    return found


FAMILIES: dict[str, Family] = {}


def get(name: str, where: str = "") -> Family:
    if not FAMILIES:
        FAMILIES.update(_registry())
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownName("family", name, list(FAMILIES), where) from None


def all_families() -> list[Family]:
    if not FAMILIES:
        FAMILIES.update(_registry())
    return list(FAMILIES.values())
