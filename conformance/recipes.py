"""Adapter recipes read from cases/recipes.yaml: PEFT config kwargs, feature gates and the tied-model spec."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import casefiles, versions
from conformance.errors import CaseFileError, UnknownName

EMBED, HEAD = "embed_tokens", "lm_head"
SEMANTICS = ("separate", "shared")


@dataclass(frozen=True)
class Feature:
    name: str
    package: str
    spec: str
    about: str

    def missing(self, installed: dict[str, str] | None = None) -> str | None:
        ok = versions.satisfies(
            self.package, versions.parse_spec(self.spec, f"feature {self.name}"), installed
        )
        if ok:
            return None
        have = (installed or versions.installed()).get(self.package, "absent")
        return f"needs {self.package}{self.spec} for {self.about}; installed {have}"


@dataclass(frozen=True)
class Recipe:
    name: str
    about: str
    lora: dict[str, Any] = field(hash=False)
    requires: tuple[str, ...]
    on_tied_model: str  # "separate" | "shared": the documented behaviour on a tied model
    ensure_weight_tying: bool

    @property
    def touches(self) -> frozenset[str]:
        """Which of the tied layers (embed_tokens, lm_head) the adapter wraps."""
        names = list(self.lora.get("target_modules") or []) + list(self.lora.get("modules_to_save") or [])
        tokens = self.lora.get("trainable_token_indices")
        if isinstance(tokens, list):
            names.append(EMBED)
        elif isinstance(tokens, dict):
            names.extend(tokens)
        return frozenset(n.split(".")[-1] for n in names) & {EMBED, HEAD}

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

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(**self.lora)


@dataclass(frozen=True)
class RecipeBook:
    recipes: dict[str, Recipe]
    features: dict[str, Feature]

    def get(self, name: str, where: str = "") -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            raise UnknownName("recipe", name, list(self.recipes), where) from None

    def skip_reason(self, recipe: Recipe, installed: dict[str, str] | None = None) -> str | None:
        for feature in recipe.requires:
            reason = self.features[feature].missing(installed)
            if reason:
                return f"recipe {recipe.name} {reason}"
        return None


def load(path: Path | None = None) -> RecipeBook:
    """The recipe book of cases/recipes.yaml (or `path`), parsed once per file."""
    return _load(path or casefiles.cases_dir() / "recipes.yaml")


@functools.cache
def _load(path: Path) -> RecipeBook:
    top = casefiles.Fields(casefiles.load(path), str(path), {"defaults", "features", "recipes"})
    defaults = casefiles.Fields(top.get("defaults", dict, {}), top.at("defaults"), {"lora"})
    base_lora = defaults.get("lora", dict, {})

    features = {}
    for name, body in top.get("features", dict, {}).items():
        spec = casefiles.Fields(body, f"{top.at('features')}.{name}", {"peft", "about"})
        features[name] = Feature(name, "peft", spec.get("peft", str), spec.get("about", str, name))
        versions.parse_spec(features[name].spec, spec.at("peft"))

    recipes: dict[str, Recipe] = {}
    for i, raw in enumerate(top.get("recipes", list)):
        for recipe in _parse(raw, f"{top.at('recipes')}[{i}]", base_lora, features):
            if recipe.name in recipes:
                raise CaseFileError(f"{top.at('recipes')}[{i}].name", f"duplicate recipe {recipe.name!r}")
            recipes[recipe.name] = recipe
    return RecipeBook(recipes, features)


def _parse(raw: Any, where: str, base_lora: dict, features: dict[str, Feature]) -> list[Recipe]:
    entry = casefiles.Fields(
        raw, where, {"name", "about", "lora", "requires", "on_tied_model", "ensure_weight_tying"}
    )
    name = entry.get("name", str)
    if not name.replace("_", "").isalnum() or not name.islower():
        raise CaseFileError(entry.at("name"), f"{name!r}: use lower-case letters, digits and '_'")
    where = f"{where}({name})"
    entry.where = where
    lora = {**base_lora, **entry.get("lora", dict)}
    if "ensure_weight_tying" in lora:
        raise CaseFileError(entry.at("lora"), "set ensure_weight_tying through the recipe's own field")
    requires = tuple(entry.names("requires", []))
    for feature in requires:
        if feature not in features:
            raise UnknownName("feature", feature, list(features), entry.at("requires"))
    semantics = _semantics(entry)
    plain = Recipe(name, entry.get("about", str, ""), lora, requires, semantics, False)

    twin_raw = entry.get("ensure_weight_tying", dict, None)
    if twin_raw is None:
        if plain.touches:
            raise CaseFileError(
                entry.at("ensure_weight_tying"),
                f"recipe touches {', '.join(sorted(plain.touches))}: declare its ensure_weight_tying twin",
            )
        return [plain]
    twin = casefiles.Fields(twin_raw, entry.at("ensure_weight_tying"), {"requires", "on_tied_model"})
    twin_requires = tuple(twin.names("requires", []))
    for feature in twin_requires:
        if feature not in features:
            raise UnknownName("feature", feature, list(features), twin.at("requires"))
    return [
        plain,
        Recipe(
            f"{name}_ewt",
            f"{plain.about} (ensure_weight_tying=True)".strip(),
            {**lora, "ensure_weight_tying": True},
            requires + twin_requires,
            _semantics(twin),
            True,
        ),
    ]


def _semantics(entry: casefiles.Fields) -> str:
    value = entry.get("on_tied_model", str)
    if value not in SEMANTICS:
        raise CaseFileError(entry.at("on_tied_model"), f"{value!r}: expected one of {', '.join(SEMANTICS)}")
    return value
