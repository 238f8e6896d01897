"""What every check is: a measurement over pipeline artifacts, the case facts it may use, its tolerance."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from conformance.base import contract
from conformance.base.outcomes import SUPPORTED


@dataclass(frozen=True)
class Measurement:
    passed: bool
    max_abs_diff: float | None
    detail: str


@dataclass(frozen=True)
class CheckContext:
    """What a check may know about its case besides artifacts."""

    family: Any  # conformance.model.families.Family
    workflow: str
    tied: bool  # the model under test shares one tensor (its tie state's storage; untie-first: never)
    ensure_weight_tying: bool
    support: str = SUPPORTED  # or REFUSED_BY_DESIGN: the implementation declares it will not build it
    config_tied: bool | None = None  # the HF rule on its config's flags (None: as `tied`)

    @property
    def rule(self) -> bool:
        """What a model built from the config is, by the HF rule (construction, tie_weights)."""
        return self.tied if self.config_tied is None else self.config_tied


@dataclass(frozen=True)
class Check:
    name: str  # its artifacts are declared in conformance.base.contract.CHECK_NEEDS
    about: str
    evaluate: Callable[[dict[str, Any], float | None, CheckContext], Measurement]
    # Why the check says nothing about a case (then no record is written), or None.
    not_applicable: Callable[[CheckContext], str | None] = lambda ctx: None
    lower_bound: bool = False  # tolerance is a minimum (adapter-effect)
    numeric: bool = True  # False: compares facts (tie status, keys), no tolerance
    dtype: str | None = None  # a fixed precision the check runs in (it does not scale); None: the case's
    # For a check an implementation declares in its own module: `factor` and a minimum per precision, as
    # in cases/tolerances.yaml (which wins).
    tolerance: dict[str, float] | None = None
    # The noise floor (an artifact of the case) its tolerance scales with: logits, or probed matrices.
    floor: str = contract.LOGITS_NOISE

    @property
    def needs(self) -> frozenset[str]:
        return contract.CHECK_NEEDS[self.name]

    @property
    def reads(self) -> frozenset[str]:
        """Everything it may read: its needs, and what it uses where the workflow made it."""
        return self.needs | contract.CHECK_MAY_USE.get(self.name, frozenset())

    def applies_to(self, workflow: str) -> bool:
        return contract.check_applies(self.name, workflow)


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def logits_check(left: str, right: str, what: str) -> Callable[..., Measurement]:
    def evaluate(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
        gap = diff(art[left], art[right])
        return Measurement(gap <= tol, gap, f"max |Δlogits| {what} = {gap:.3g} (tolerance {tol:g})")

    return evaluate


def tie_word(tied: bool) -> str:
    return "tied" if tied else "untied"


def has_head(checkpoint_keys: list[str]) -> bool:
    return any(key.endswith("lm_head.weight") for key in checkpoint_keys)


def head_key_problem(checkpoint_keys: list[str], tied: bool) -> str | None:
    """A tied model's checkpoint leaves lm_head.weight out (the loader re-ties); an untied one needs it."""
    held = has_head(checkpoint_keys)
    if held != tied:
        return None
    return f"lm_head.weight {'is' if held else 'is not'} in the checkpoint of a {tie_word(tied)} model"


def spacing(computed_in: str, values: list[Any]) -> float:
    """One unit in the last place of `computed_in` at the largest magnitude among `values` (tensors;
    others are ignored). Two results of that precision that differ by two of these are two roundings
    apart, whatever the noise floor says: a floor measured on a reference much smaller than the model
    under test (where a known bug makes them differ) can fall below one unit of the compared values."""
    tensors = [v for v in values if isinstance(v, torch.Tensor) and v.numel()]
    if not tensors:
        return 0.0
    largest = max(float(t.abs().max()) for t in tensors)
    if largest == 0 or not math.isfinite(largest):
        return 0.0
    return float(torch.finfo(getattr(torch, computed_in)).eps) * 2.0 ** math.floor(math.log2(largest))
