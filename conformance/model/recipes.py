"""Adapter recipes read from cases/recipes.yaml: adapter kwargs, required features, the tied-model spec."""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.base import casefiles
from conformance.base.errors import CaseFileError, UnknownName
from conformance.model import features

EMBED, HEAD = "embed_tokens", "lm_head"
SEMANTICS = ("separate", "shared")


ADAPTER_KINDS = ("lora", "nemo_lora")  # PEFT LoraConfig kwargs; NeMo PeftConfig kwargs


@dataclass(frozen=True)
class Recipe:
    name: str
    about: str
    kind: str | None  # one of ADAPTER_KINDS, or None for no adapter
    adapter: dict[str, Any] = field(hash=False)  # keyword arguments of the adapter config
    requires: tuple[str, ...]  # feature names (conformance.model.features) the recipe needs
    on_tied_model: str | None  # "separate" | "shared": PEFT's documented behaviour on a tied model
    ensure_weight_tying: bool
    implementations: tuple[str, ...] = ("peft",)
    workflows: tuple[str, ...] | None = None  # None: every workflow of the implementation
    families: tuple[str, ...] | None = None  # None: every family

    @property
    def lora(self) -> dict[str, Any]:
        return self.adapter if self.kind == "lora" else {}

    @property
    def touches(self) -> frozenset[str]:
        """Which of the tied layers (embed_tokens, lm_head) the adapter wraps."""
        names = list(self.adapter.get("target_modules") or []) + list(
            self.adapter.get("modules_to_save") or []
        )
        tokens = self.adapter.get("trainable_token_indices")
        if isinstance(tokens, list):
            names.append(EMBED)
        elif isinstance(tokens, dict):
            names.extend(tokens)
        return frozenset(n.split(".")[-1] for n in names) & {EMBED, HEAD}

    @property
    def new_rows(self) -> bool:
        """Whether its token rows count from the end of the vocabulary (negative indices, as in Python):
        after a resize, the rows resize_token_embeddings added."""
        return any(r < 0 for rows in self.token_indices().values() for r in rows)

    def resolved(self, vocab_size: int) -> Recipe:
        """This recipe with rows counted from the end made absolute for a vocabulary of `vocab_size`."""
        if not self.new_rows:
            return self
        tokens = self.adapter["trainable_token_indices"]

        def absolute(rows: list[int]) -> list[int]:
            return [r + vocab_size if r < 0 else r for r in rows]

        if isinstance(tokens, list):
            tokens = absolute(tokens)
        else:
            tokens = {name: absolute(rows) for name, rows in tokens.items()}
        return dataclasses.replace(self, adapter={**self.adapter, "trainable_token_indices": tokens})

    def rows_moved(self, offset: int) -> Recipe:
        """This recipe with every trainable-token row `offset` further on (a second adapter's own rows)."""
        tokens = self.adapter.get("trainable_token_indices")
        if not tokens or not offset:
            return self
        if isinstance(tokens, list):
            tokens = [r + offset for r in tokens]
        else:
            tokens = {name: [r + offset for r in rows] for name, rows in tokens.items()}
        return dataclasses.replace(self, adapter={**self.adapter, "trainable_token_indices": tokens})

    def token_indices(self) -> dict[str, list[int]]:
        """Trainable token rows per layer, as the recipe states them (list form means the embedding)."""
        tokens = self.lora.get("trainable_token_indices")
        if tokens is None:
            return {}
        if isinstance(tokens, list):
            return {EMBED: list(tokens)}
        return {name.split(".")[-1]: list(rows) for name, rows in tokens.items()}

    @property
    def scaling(self) -> float:
        r = self.lora.get("r", 8)
        alpha = self.lora.get("lora_alpha", 8)
        return alpha / (r**0.5) if self.lora.get("use_rslora") else alpha / r

    def adapter_kwargs(self, names: dict[str, str] | None = None) -> dict[str, Any]:
        """A private deep copy of the adapter config kwargs, for one case, module names spelled as the
        family spells them (`names`: Family.module_names).

        Libraries edit the lists they are given: PEFT's ensure_weight_tying rewrites
        modules_to_save=["lm_head"] in place to the embedding's path. On the shared, cached recipe that
        edit would reach every later case in the process, so results would depend on case order.
        """
        kwargs = copy.deepcopy(self.adapter)
        if not names:
            return kwargs
        for key in ("target_modules", "modules_to_save"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = [names.get(name, name) for name in kwargs[key]]
        if isinstance(kwargs.get("trainable_token_indices"), dict):
            kwargs["trainable_token_indices"] = {
                names.get(k, k): v for k, v in kwargs["trainable_token_indices"].items()
            }
        return kwargs

    def peft_config(self, names: dict[str, str] | None = None) -> Any:
        from peft import LoraConfig

        return LoraConfig(**(self.adapter_kwargs(names) if self.kind == "lora" else {}))

    def runs_on(self, implementation: str, family: str) -> bool:
        return implementation in self.implementations and (self.families is None or family in self.families)


@dataclass(frozen=True)
class RecipeBook:
    recipes: dict[str, Recipe]

    def get(self, name: str, where: str = "") -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            raise UnknownName("recipe", name, list(self.recipes), where) from None

    def skip_reason(self, recipe: Recipe) -> str | None:
        """Why the installed libraries cannot run `recipe` (the first feature not found), or None."""
        for name in recipe.requires:
            reason = features.missing(name)
            if reason:
                return f"recipe {recipe.name} needs {features.get(name).about} ({name}): {reason}"
        return None


def load(path: Path | None = None) -> RecipeBook:
    """The recipe book of cases/recipes.yaml (or `path`), parsed once per file."""
    return _load(path or casefiles.cases_dir() / "recipes.yaml")


@functools.cache
def _load(path: Path) -> RecipeBook:
    top = casefiles.Fields(casefiles.load(path), str(path), {"defaults", "recipes"})
    defaults = casefiles.Fields(top.get("defaults", dict, {}), top.at("defaults"), set(ADAPTER_KINDS))
    base = {kind: defaults.get(kind, dict, {}) for kind in ADAPTER_KINDS}

    recipes: dict[str, Recipe] = {}
    for i, raw in enumerate(top.get("recipes", list)):
        for recipe in _parse(raw, f"{top.at('recipes')}[{i}]", base):
            if recipe.name in recipes:
                raise CaseFileError(f"{top.at('recipes')}[{i}].name", f"duplicate recipe {recipe.name!r}")
            recipes[recipe.name] = recipe
    return RecipeBook(recipes)


_FIELDS = {
    "name",
    "about",
    "requires",
    "on_tied_model",
    "ensure_weight_tying",
    "implementations",
    "workflows",
    "families",
    *ADAPTER_KINDS,
}


def _parse(raw: Any, where: str, base: dict[str, dict]) -> list[Recipe]:
    entry = casefiles.Fields(raw, where, _FIELDS)
    name = entry.get("name", str)
    if not name.replace("_", "").isalnum() or not name.islower():
        raise CaseFileError(entry.at("name"), f"{name!r}: use lower-case letters, digits and '_'")
    entry.where = f"{where}({name})"
    kinds = [kind for kind in ADAPTER_KINDS if kind in entry.data]
    if len(kinds) > 1:
        raise CaseFileError(entry.where, f"one adapter per recipe, got {' and '.join(kinds)}")
    kind = kinds[0] if kinds else None
    adapter = {**base[kind], **entry.get(kind, dict)} if kind else {}
    if "ensure_weight_tying" in adapter:
        raise CaseFileError(entry.at(kind), "set ensure_weight_tying through the recipe's own field")
    requires = _features(entry, "requires")
    scope = {
        "implementations": tuple(entry.names("implementations", ["peft"])),
        "workflows": _optional(entry, "workflows"),
        "families": _optional(entry, "families"),
    }
    peft_recipe = kind == "lora"
    semantics = _semantics(entry) if peft_recipe else None
    plain = Recipe(name, entry.get("about", str, ""), kind, adapter, requires, semantics, False, **scope)

    twin_raw = entry.get("ensure_weight_tying", dict, None)
    if twin_raw is None:
        if peft_recipe and plain.touches:
            raise CaseFileError(
                entry.at("ensure_weight_tying"),
                f"recipe touches {', '.join(sorted(plain.touches))}: declare its ensure_weight_tying twin",
            )
        return [plain]
    if not peft_recipe:
        raise CaseFileError(entry.at("ensure_weight_tying"), "only PEFT (lora) recipes have this twin")
    twin = casefiles.Fields(twin_raw, entry.at("ensure_weight_tying"), {"requires", "on_tied_model"})
    twin_recipe = Recipe(
        f"{name}_ewt",
        f"{plain.about} (ensure_weight_tying=True)".strip(),
        kind,
        {**adapter, "ensure_weight_tying": True},
        requires + _features(twin, "requires"),
        _semantics(twin),
        True,
        **scope,
    )
    return [plain, twin_recipe]


def _features(entry: casefiles.Fields, key: str) -> tuple[str, ...]:
    names = tuple(entry.names(key, []))
    for name in names:
        features.get(name, entry.at(key))
    return names


def _optional(entry: casefiles.Fields, key: str) -> tuple[str, ...] | None:
    names = entry.names(key, None)
    return None if names is None else tuple(names)


def _semantics(entry: casefiles.Fields) -> str:
    value = entry.get("on_tied_model", str)
    if value not in SEMANTICS:
        raise CaseFileError(entry.at("on_tied_model"), f"{value!r}: expected one of {', '.join(SEMANTICS)}")
    return value
