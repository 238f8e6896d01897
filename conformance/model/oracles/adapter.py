"""Checks of the adapter pipelines (PEFT, and NeMo LoRA exported to PEFT): logits, ties, checkpoints."""

from __future__ import annotations

from typing import Any

from conformance.base import contract
from conformance.model.oracles.base import (
    Check,
    CheckContext,
    Measurement,
    diff,
    has_head,
    head_key_problem,
    logits_check,
    tie_word,
)


def _adapter_effect(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    gap = diff(art[contract.BASE_LOGITS], art[contract.UNMERGED_LOGITS])
    return Measurement(gap >= tol, gap, f"max |Δlogits| adapter vs base = {gap:.3g} (must be ≥ {tol:g})")


def _tie_consistency(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    keys = art[contract.CHECKPOINT_KEYS]
    problems = []
    if ctx.family.ruling_flag() == "always":
        # A config that cannot say untied (T5's of 5.x): the checkpoint decides. A distinct lm_head.weight
        # is kept apart on load (as flan-t5's is), an equal one is tied, none means the head is the
        # embedding: only a head apart without a key of its own breaks that.
        expected = art[contract.RELOADED_TIED] or not has_head(keys)
        rule = "the checkpoint (the config always says tied)"
    else:
        expected = ctx.family.expected_tied(art[contract.SAVED_FLAGS])
        rule = "the HF rule on the saved config"
        head = head_key_problem(keys, expected)
        if head:
            problems.append(head)
    if art[contract.RELOADED_TIED] != expected:
        problems.insert(
            0, f"reloaded model is {tie_word(art['reloaded_tied'])} but {rule} says {tie_word(expected)}"
        )
    if art[contract.MISSING_KEYS]:
        problems.append(f"missing keys on reload: {', '.join(art['missing_keys'])}")
    return Measurement(
        not problems, None, "; ".join(problems) or "tie status, checkpoint keys and load agree"
    )


# In pipeline order; gap_merged exists only where the workflow holds a merged model in memory.
_GAP_WORDS = {
    contract.GAP_INIT: "after adapter init",
    contract.GAP_TRAINED: "after a training step",
    contract.GAP_MERGED: "after merge",
    contract.GAP_FINAL: "after reload",
}


def _tie_preserved(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    gaps = {name: art[name] for name in _GAP_WORDS if name in art}
    worst = max(gaps.values())
    broken = [f"{_GAP_WORDS[name]} {gap:.3g}" for name, gap in gaps.items() if gap > tol]
    detail = (
        ("input and output matrices differ: " + ", ".join(broken))
        if broken
        else (f"input and output matrices identical at every stage (max gap {worst:.3g})")
    )
    return Measurement(not broken, worst, detail)


_MATRIX_WORDS = ("embedding", "head")


def _weights_kept(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    saved = art[contract.SAVED_MATRICES]
    loads = {"reload": art[contract.RELOADED_MATRICES]}
    if contract.OWN_RELOAD_MATRICES in art:
        loads = {"HF reload": loads["reload"], "own reload": art[contract.OWN_RELOAD_MATRICES]}
    worst, problems = 0.0, []
    for who, matrices in loads.items():
        for word, before, after in zip(_MATRIX_WORDS, saved, matrices, strict=True):
            gap = diff(before, after)
            worst = max(worst, gap)
            if gap > tol:
                problems.append(f"{who}: {word} max |Δ| {gap:.3g}")
    detail = (
        "; ".join(problems) + f" (tolerance {tol:g})"
        if problems
        else (f"embedding and head as saved (max |Δ| {worst:.3g})")
    )
    return Measurement(not problems, worst, detail)


def _resize_keeps_weights(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    resized = art[contract.RESIZED]
    worst, problems = 0.0, []
    for word, before, after in zip(_MATRIX_WORDS, resized.before, resized.after, strict=True):
        gap = diff(before, after)
        worst = max(worst, gap)
        if gap > tol:
            problems.append(f"the {word}'s old rows changed (max |Δ| {gap:.3g})")
    if resized.tied_before != resized.tied_after:
        was, now = (tie_word(t) for t in (resized.tied_before, resized.tied_after))
        problems.append(f"the head was {was} before the resize and is {now} after")
    detail = "; ".join(problems) or f"old rows and tie kept (max |Δ| {worst:.3g})"
    return Measurement(not problems, worst, detail + (f" (tolerance {tol:g})" if problems else ""))


def _conflict_refused(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    # Reached only where the merges went through: a refusal stops the case before the merged model exists.
    shared = art[contract.CONFLICT_ROWS]
    rows = "; ".join(f"{layer} rows {', '.join(map(str, held))}" for layer, held in shared.items())
    detail = (
        f"merged two adapters that both hold trainable-token values for {rows} without refusing: the "
        "later merge wrote over the earlier one's rows, a result PEFT documents as undefined"
        if shared
        else "the adapters hold no token row in common"
    )
    return Measurement(not shared, None, detail)


def _only_ewt_on_tied(ctx: CheckContext) -> str | None:
    if not ctx.ensure_weight_tying:
        return "applies only where ensure_weight_tying was asked for"
    if not ctx.tied:
        return "applies only to models tied under the HF rule"
    return None


CHECKS: tuple[Check, ...] = (
    Check(
        "adapter-effect",
        "the adapter really changes the logits",
        _adapter_effect,
        lower_bound=True,
    ),
    Check(
        "reference",
        "unmerged PEFT logits == an untied model holding the effective matrices",
        logits_check(contract.UNMERGED_LOGITS, contract.REFERENCE_LOGITS, "PEFT vs reference"),
    ),
    Check(
        "merge-fidelity",
        "merged-model logits == unmerged adapter logits",
        logits_check(contract.UNMERGED_LOGITS, contract.MERGED_LOGITS, "merged vs unmerged"),
    ),
    Check(
        "roundtrip-fidelity",
        "reloaded merged-model logits == unmerged adapter logits",
        logits_check(contract.UNMERGED_LOGITS, contract.RELOADED_LOGITS, "reloaded vs unmerged"),
    ),
    Check(
        "adapter-roundtrip",
        "re-loaded (or exported) adapter logits == unmerged adapter logits",
        logits_check(contract.UNMERGED_LOGITS, contract.ADAPTER_LOGITS, "re-loaded adapter vs unmerged"),
    ),
    Check(
        "tie-consistency",
        "after reload, tie status and checkpoint keys follow the HF rule on the saved config",
        _tie_consistency,
        numeric=False,
    ),
    Check(
        "tie-preserved",
        "with ensure_weight_tying on a tied model, input and output matrices stay identical",
        _tie_preserved,
        not_applicable=_only_ewt_on_tied,
        # Gaps are matrix entries: in half precision a correct tie shows the rounding of the embedding
        # scale (Gemma), which the probed matrices' own noise measures.
        floor=contract.PROBE_NOISE,
    ),
    Check(
        "resize-keeps-weights",
        "resize_token_embeddings keeps every old row of embedding and head, and their tie as it was",
        _resize_keeps_weights,
        floor=contract.PROBE_NOISE,
    ),
    Check(
        "conflict-refused",
        "merging a second adapter whose trainable-token rows another merged adapter holds is refused",
        _conflict_refused,
        numeric=False,
    ),
    Check(
        "weights-kept",
        "save -> load gives every module the matrix it was saved with (whatever the config says)",
        _weights_kept,
        floor=contract.PROBE_NOISE,
    ),
)
