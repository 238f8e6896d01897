"""Implementations under test behind one interface, found as modules of this package.

An implementation is one module here that declares `IMPLEMENTATION` (conformance.implementations.base),
or one package that declares `IMPLEMENTATIONS` (NeMo Automodel: its own classes and its auto class), plus
one expectations file per implementation, cases/expectations/<name>.yaml. Nothing else names it: the
packages every record carries (conformance.base.versions), the code whose errors count as refusals
(conformance.base.outcomes), its feature probes (conformance.model.features) and its standalone scripts
(conformance.engine.standalone) come from its declaration when this package loads.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from conformance.base import outcomes, versions
from conformance.base.errors import UnknownName
from conformance.implementations.base import REFUSED_BY_DESIGN, SUPPORTED, Implementation

ENV_VAR = "CONFORMANCE_IMPL"

__all__ = [
    "ENV_VAR",
    "REFUSED_BY_DESIGN",
    "REGISTRY",
    "SUPPORTED",
    "Implementation",
    "get",
    "not_planned",
    "selected",
]


def _discover() -> dict[str, Implementation]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        declared = getattr(loaded, "IMPLEMENTATIONS", (getattr(loaded, "IMPLEMENTATION", None),))
        found += [impl for impl in declared if isinstance(impl, Implementation)]
    found.sort(key=lambda impl: (impl.order, impl.name))
    for impl in found:
        versions.track(impl.package)
        outcomes.register_library(*impl.code_paths)
    return {impl.name: impl for impl in found}


REGISTRY: dict[str, Implementation] = _discover()


def get(name: str, where: str = "") -> Implementation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownName("implementation", name, list(REGISTRY), where) from None


def selected(names: list[str] | None) -> list[Implementation]:
    """--impl names, else the CONFORMANCE_IMPL variable (comma-separated), else every implementation that
    is installed here (one named explicitly but not installed is planned, and its cases say why they skip)."""
    if not names:
        env = os.environ.get(ENV_VAR, "")
        names = [n.strip() for n in env.split(",") if n.strip()]
    if not names:
        return [impl for impl in REGISTRY.values() if impl.unavailable() is None]
    return [get(n, f"--impl/{ENV_VAR}") for n in names]


def not_planned(names: list[str] | None) -> dict[str, str]:
    """Implementations a default selection leaves out (not installed here), and where they are run."""
    if names or os.environ.get(ENV_VAR, "").strip():
        return {}
    return {
        impl.name: f"{impl.unavailable()}{'; ' + impl.elsewhere if impl.elsewhere else ''}"
        for impl in REGISTRY.values()
        if impl.unavailable() is not None
    }
