"""Checks: each compares pipeline artifacts with HF reference behaviour and says which artifacts it needs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conformance import casefiles
from conformance.errors import CaseFileError, UnknownName


@dataclass(frozen=True)
class Measurement:
    passed: bool
    max_abs_diff: float | None
    detail: str


@dataclass(frozen=True)
class CheckContext:
    """What a check may know about its case besides artifacts."""

    family: Any  # conformance.families.Family
    workflow: str
    tied: bool  # the HF rule on the config of the model the adapter wraps
    ensure_weight_tying: bool


@dataclass(frozen=True)
class Check:
    name: str
    about: str
    workflows: tuple[str, ...]
    needs: Callable[[str], tuple[str, ...]]  # artifact names, by workflow
    evaluate: Callable[[dict[str, Any], float | None, CheckContext], Measurement]
    # Why the check says nothing about a case (then no record is written), or None.
    not_applicable: Callable[[CheckContext], str | None] = lambda ctx: None
    lower_bound: bool = False  # tolerance is a minimum (adapter-effect)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def _logits_check(left: str, right: str, what: str) -> Callable[..., Measurement]:
    def evaluate(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
        diff = _diff(art[left], art[right])
        return Measurement(diff <= tol, diff, f"max |Δlogits| {what} = {diff:.3g} (tolerance {tol:g})")

    return evaluate


def _adapter_effect(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    diff = _diff(art["base_logits"], art["peft_logits"])
    return Measurement(diff >= tol, diff, f"max |Δlogits| adapter vs base = {diff:.3g} (must be ≥ {tol:g})")


def _tie_consistency(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    expected = ctx.family.expected_tied(art["saved_flags"])
    has_head = any(key.endswith("lm_head.weight") for key in art["checkpoint_keys"])
    problems = []
    if art["reloaded_tied"] != expected:
        state = "tied" if art["reloaded_tied"] else "untied"
        problems.append(
            f"reloaded model is {state} but the HF rule on the saved config says "
            f"{'tied' if expected else 'untied'}"
        )
    if has_head == expected:
        problems.append(
            f"lm_head.weight {'is' if has_head else 'is not'} in the checkpoint of a "
            f"{'tied' if expected else 'untied'} model"
        )
    if art["missing_keys"]:
        problems.append(f"missing keys on reload: {', '.join(art['missing_keys'])}")
    return Measurement(
        not problems, None, "; ".join(problems) or "tie status, checkpoint keys and load agree"
    )


_GAPS = {
    "merge": ("gap_init", "gap_trained", "gap_merged", "gap_final"),
    "adapter": ("gap_init", "gap_trained", "gap_final"),
}
_GAP_WORDS = {
    "gap_init": "after adapter init",
    "gap_trained": "after a training step",
    "gap_merged": "after merge",
    "gap_final": "after reload",
}


def _tie_preserved(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    gaps = {name: art[name] for name in _GAPS[ctx.workflow]}
    worst = max(gaps.values())
    broken = [f"{_GAP_WORDS[name]} {gap:.3g}" for name, gap in gaps.items() if gap > tol]
    detail = (
        ("input and output matrices differ: " + ", ".join(broken))
        if broken
        else (f"input and output matrices identical at every stage (max gap {worst:.3g})")
    )
    return Measurement(not broken, worst, detail)


def _only_ewt_on_tied(ctx: CheckContext) -> str | None:
    if not ctx.ensure_weight_tying:
        return "applies only where ensure_weight_tying was asked for"
    if not ctx.tied:
        return "applies only to models tied under the HF rule"
    return None


def _fixed(*names: str) -> Callable[[str], tuple[str, ...]]:
    return lambda workflow: names


CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Check(
            "adapter-effect",
            "the adapter really changes the logits",
            ("merge", "adapter", "untie-first"),
            _fixed("base_logits", "peft_logits"),
            _adapter_effect,
            lower_bound=True,
        ),
        Check(
            "reference",
            "unmerged PEFT logits == an untied model holding the effective matrices",
            ("merge", "adapter", "untie-first"),
            _fixed("peft_logits", "reference_logits"),
            _logits_check("peft_logits", "reference_logits", "PEFT vs reference"),
        ),
        Check(
            "merge-fidelity",
            "merged-model logits == unmerged PEFT logits",
            ("merge", "untie-first"),
            _fixed("peft_logits", "merged_logits"),
            _logits_check("peft_logits", "merged_logits", "merged vs unmerged"),
        ),
        Check(
            "roundtrip-fidelity",
            "reloaded merged-model logits == unmerged PEFT logits",
            ("merge", "untie-first"),
            _fixed("peft_logits", "reloaded_logits"),
            _logits_check("peft_logits", "reloaded_logits", "reloaded vs unmerged"),
        ),
        Check(
            "adapter-roundtrip",
            "re-loaded adapter logits == unmerged PEFT logits",
            ("adapter",),
            _fixed("peft_logits", "adapter_logits"),
            _logits_check("peft_logits", "adapter_logits", "re-loaded adapter vs unmerged"),
        ),
        Check(
            "tie-consistency",
            "after reload, tie status and checkpoint keys follow the HF rule on the saved config",
            ("merge", "untie-first"),
            _fixed("saved_flags", "checkpoint_keys", "reloaded_tied", "missing_keys"),
            _tie_consistency,
        ),
        Check(
            "tie-preserved",
            "with ensure_weight_tying on a tied model, input and output matrices stay identical",
            ("merge", "adapter"),
            lambda workflow: _GAPS[workflow],
            _tie_preserved,
            not_applicable=_only_ewt_on_tied,
        ),
    )
}


def get(name: str, where: str = "") -> Check:
    try:
        return CHECKS[name]
    except KeyError:
        raise UnknownName("check", name, list(CHECKS), where) from None


@dataclass(frozen=True)
class Tolerances:
    dtypes: dict[str, str]
    checks: dict[str, dict[str, float]]

    def dtype(self, family: str) -> torch.dtype:
        return getattr(torch, self.dtypes.get(family, self.dtypes["default"]))

    def of(self, check: str, dtype: torch.dtype) -> float | None:
        table = self.checks.get(check)
        return None if table is None else table[str(dtype).removeprefix("torch.")]


def tolerances() -> Tolerances:
    """The tolerance table of cases/tolerances.yaml, parsed once per file."""
    return _tolerances(casefiles.cases_dir() / "tolerances.yaml")


@functools.cache
def _tolerances(path: Path) -> Tolerances:
    top = casefiles.Fields(casefiles.load(path), str(path), {"dtype", "checks"})
    dtypes = top.get("dtype", dict)
    if "default" not in dtypes:
        raise CaseFileError(top.at("dtype.default"), "required field is missing")
    for family, name in dtypes.items():
        if name not in ("float32", "float64"):
            raise CaseFileError(f"{top.at('dtype')}.{family}", f"{name!r}: use float32 or float64")
    checks: dict[str, dict[str, float]] = {}
    for name, table in top.get("checks", dict).items():
        get(name, top.at("checks"))
        row = casefiles.Fields(table, f"{top.at('checks')}.{name}", {"float32", "float64"})
        checks[name] = {dt: float(row.get(dt, (int, float))) for dt in ("float32", "float64")}
    for name in CHECKS:
        if name != "tie-consistency" and name not in checks:
            raise CaseFileError(top.at(f"checks.{name}"), "every numeric check needs a tolerance")
    return Tolerances(dtypes, checks)
