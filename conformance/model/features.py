"""Feature probes: what the installed libraries can do, asked of the libraries themselves.

A pull request's source build carries the version string of the release it follows (PEFT main said
0.18.2.dev0 while it already had 0.19's ensure_weight_tying for target_modules), so what runs is decided
by probes, never by version numbers: a keyword the config accepts, a class that imports, or one tiny
call on a tiny model (a 1-layer Llama with 64 tokens) that shows the wiring is there. A probe looks for
the feature's presence, not its correctness; correctness is what the checks judge, so a feature that
a change breaks still runs and fails there (and one whose wiring a change removes is lost coverage,
which the gate reports as a regression). Probes run once per process, quietly, with the global RNG,
warning filters, logging and torch's thread count restored afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from conformance.base import versions
from conformance.base.errors import UnknownName


@dataclass(frozen=True)
class Feature:
    name: str
    package: str  # the distribution the feature belongs to
    about: str
    probe: Callable[[], str | None]  # None where the feature is there, else why it is not


class Absent(Exception):
    """The feature's API is not there (a probe's early exit, with the reason)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import torch

    threads, disabled = torch.get_num_threads(), logging.root.manager.disable
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        logging.disable(logging.CRITICAL)
        # One thread: the probes' matmuls are tiny, and the run forks its workers after them, which is
        # only safe while no intra-op thread pool has been started.
        torch.set_num_threads(1)
        try:
            torch.manual_seed(0)
            yield
        finally:
            torch.set_num_threads(threads)
            logging.disable(disabled)


def imports(path: str) -> Callable[[], str | None]:
    """A probe that an object (module:attribute) imports: a source build says which classes it has."""

    def probe() -> str | None:
        import importlib

        module, _, attribute = path.partition(":")
        try:
            getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            return f"no {path} ({type(exc).__name__}: {exc})"
        return None

    return probe


# Every implementation declares its own features (conformance.implementations registers them as it loads).
FEATURES: dict[str, Feature] = {}


def register(feature: Feature) -> Feature:
    """Add an implementation's feature (probes of its API, the model classes it has)."""
    FEATURES.setdefault(feature.name, feature)
    return FEATURES[feature.name]


def declared() -> dict[str, Feature]:
    """Every feature, by name: the implementations' modules register theirs when they load."""
    import conformance.implementations  # noqa: F401  (a layer above: loaded late, on first use)

    return FEATURES


def get(name: str, where: str = "") -> Feature:
    try:
        return declared()[name]
    except KeyError:
        raise UnknownName("feature", name, list(FEATURES), where) from None


@functools.cache
def missing(name: str) -> str | None:
    """Why the installed libraries lack feature `name`, or None where they have it (probed once)."""
    feature = get(name)
    have = versions.installed().get(feature.package)
    if have is None:
        return f"{feature.package} is not installed"
    try:
        with _quiet():
            why = feature.probe()
    except Absent as exc:
        why = str(exc)
    except Exception as exc:  # the probe's call failed: the feature is not usable in this build
        first = (str(exc).splitlines() or [""])[0][:160]
        why = f"{type(exc).__name__}: {first}"
    return None if why is None else f"{why} ({feature.package} {have})"


def found() -> dict[str, list[str]]:
    """The features present, by package, for packages that are installed (probing each once)."""
    present: dict[str, list[str]] = {}
    for name, feature in declared().items():
        if feature.package in versions.installed():
            present.setdefault(feature.package, [])
            if missing(name) is None:
                present[feature.package].append(name)
    return present
