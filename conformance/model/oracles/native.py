"""Checks of the `native` workflow: an implementation's own classes against the HF reference and rule."""

from __future__ import annotations

from typing import Any

from conformance.base import contract
from conformance.base.outcomes import REFUSED_BY_DESIGN
from conformance.model.oracles.base import (
    Check,
    CheckContext,
    Measurement,
    diff,
    head_key_problem,
    logits_check,
    tie_word,
)


def _tie_status(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    rule, hf, impl = ctx.rule, art[contract.HF_TIED], art[contract.IMPL_TIED]
    problems = []
    if ctx.support == REFUSED_BY_DESIGN:
        problems.append(f"declared refused-by-design, yet it built a model ({tie_word(impl)})")
    if hf != rule:
        problems.append(
            f"the HF model is {tie_word(hf)} but the HF rule for this config says {tie_word(rule)}"
        )
    if impl != hf:
        problems.append(
            f"the model is {tie_word(impl)} (lm_head vs the embedding its forward uses) "
            f"but HF's is {tie_word(hf)}"
        )
    return Measurement(not problems, None, "; ".join(problems) or f"{tie_word(impl)}, as HF and the rule")


def _retie(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    retied, follows = art[contract.RETIE]
    problems = []
    if not retied:
        problems.append(
            "after the tie was broken by hand, tie_weights() left lm_head apart from the active embedding"
        )
    if not follows:
        problems.append("an in-place update of the active embedding is not seen by lm_head")
    return Measurement(
        not problems, None, "; ".join(problems) or "tie_weights() re-ties; the head follows updates"
    )


def _checkpoint_roundtrip(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    expected = ctx.family.expected_tied(art[contract.SAVED_FLAGS])
    head = head_key_problem(art[contract.CHECKPOINT_KEYS], expected)
    problems = [head] if head else []
    worst = 0.0
    for who, tied_key, logits_key in (
        ("HF", contract.HF_RELOAD_TIED, contract.HF_RELOAD_LOGITS),
        ("own", contract.RELOAD_TIED, contract.RELOAD_LOGITS),
    ):
        if art[tied_key] != expected:
            problems.append(
                f"{who} reload is {tie_word(art[tied_key])}, "
                f"the rule on the saved config says {tie_word(expected)}"
            )
        gap = diff(art[logits_key], art[contract.SAVED_LOGITS])
        worst = max(worst, gap)
        if gap > tol:
            problems.append(f"{who} reload: max |Δlogits| {gap:.3g} (tolerance {tol:g})")
    return Measurement(
        not problems, worst, "; ".join(problems) or f"both reloads agree (max |Δlogits| {worst:.3g})"
    )


def _hf_checkpoint_load(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    gap = diff(art[contract.HF_CHECKPOINT_LOGITS], art[contract.HF_LOGITS])
    problems = [f"max |Δlogits| vs HF {gap:.3g} (tolerance {tol:g})"] if gap > tol else []
    if art[contract.HF_CHECKPOINT_TIED] != art[contract.HF_TIED]:
        problems.append(
            f"loaded {tie_word(art['hf_checkpoint_tied'])}, HF's model is {tie_word(art['hf_tied'])}"
        )
    return Measurement(
        not problems, gap, "; ".join(problems) or f"HF's logits (max |Δ| {gap:.3g}) and tie status"
    )


def _only_tied(ctx: CheckContext) -> str | None:
    return None if ctx.rule else "applies only to configs tied under the HF rule"


CHECKS: tuple[Check, ...] = (
    Check(
        "tie-status",
        "the model is tied exactly when HF's model with the same config is (and as the HF rule says)",
        _tie_status,
        numeric=False,
    ),
    Check(
        "logits-parity",
        "with identical weights, logits == HF's (in the case's precision)",
        logits_check(contract.HF_LOGITS, contract.IMPL_LOGITS, "vs HF"),
    ),
    Check(
        "logits-parity-fp64",
        "with identical weights, logits == HF's (float64)",
        logits_check(contract.HF64_LOGITS, contract.IMPL64_LOGITS, "vs HF"),
        dtype="float64",
    ),
    Check(
        "retie",
        "after a hand-broken tie, tie_weights() re-points lm_head to the active embedding and follows it",
        _retie,
        not_applicable=_only_tied,
        numeric=False,
    ),
    Check(
        "checkpoint-roundtrip",
        "own save, then HF load and own load: tie status and logits kept; lm_head.weight only when untied",
        _checkpoint_roundtrip,
    ),
    Check(
        "hf-checkpoint-load",
        "an HF checkpoint (tied: no lm_head.weight) loaded by the implementation gives HF's logits and tie",
        _hf_checkpoint_load,
    ),
)
