"""What `list` prints: the families, tie states, recipes, features, implementations and workflows known
here, each with a description or the reason it is unavailable."""

from __future__ import annotations

from conformance import implementations
from conformance.base.contract import WORKFLOWS
from conformance.model import families, features
from conformance.model import recipes as recipe_book


def lines() -> list[str]:
    out: list[str] = []
    book = recipe_book.load()
    out.append("families:")
    for family in families.all_families():
        reason = family.unavailable()
        out.append(f"  {family.name:<12} {'unavailable: ' + reason if reason else family.describe()}")
    out.append("tie states (--tie-states all adds the last two to every flag combination):")
    for word, about in (
        ("natural", "the storage the flags rule: one tensor where they tie, two where they do not"),
        ("apart", "a head with values of its own under a config that ties it (-apart)"),
        ("alias", "one tensor for embedding and head under a config that unties them (-alias)"),
    ):
        out.append(f"  {word:<12} {about}")
    out.append("recipes:")
    for recipe in book.recipes.values():
        reason = book.skip_reason(recipe)
        needs = f" [needs {', '.join(recipe.requires)}]" if recipe.requires else ""
        out.append(f"  {recipe.name:<28} {'skipped: ' + reason if reason else recipe.about + needs}")
    out.append("features (probed in the installed libraries):")
    for feature in features.declared().values():
        reason = features.missing(feature.name)
        out.append(f"  {feature.name:<30} {'not found: ' + reason if reason else 'found'}: {feature.about}")
    out.append("implementations:")
    for impl in implementations.REGISTRY.values():
        reason = impl.unavailable()
        out.append(f"  {impl.name:<16} {'unavailable: ' + reason if reason else impl.about}")
    out.append("workflows:")
    for name, workflow in WORKFLOWS.items():
        runs = ", ".join(i.name for i in implementations.REGISTRY.values() if name in i.workflows)
        out.append(f"  {name:<20} {workflow.about} [{runs}]")
    return out
