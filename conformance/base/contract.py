"""The pipeline's contract, declared once and importable without torch: artifacts, workflows, checks.

A workflow produces named artifacts; a check needs some of them. A check applies to a case exactly when
the case's workflow produces everything the check needs (then the check's own `not_applicable` may
still leave it out, e.g. a tie check on an untied model). The engine, the oracles and the tests all read
these tables; `tests/meta/test_contract.py` proves that every workflow produces what it declares and
every check needs only what some workflow produces, so a misspelt or forgotten artifact fails there,
not mid-run as `suite error: no artifact X`. The engine hands a check only what it declares here.

The shared pipeline is declared here. An implementation with workflows of its own declares them, their
new artifacts and the checks that read them in its own module (`declare`), so adding one edits no
shared table.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- Artifacts: what a step leaves for the checks (CaseRun.put refuses any other name).
BASE_CHECKPOINT = "base_checkpoint"  # folder of the base model as saved by HF (adapter workflows)
BASE_LOGITS = "base_logits"  # the base model, before any adapter
UNMERGED_LOGITS = "unmerged_logits"  # the model with its adapter live (PEFT's, NeMo's), before merging
REFERENCE_LOGITS = "reference_logits"  # an untied HF model holding the effective matrices
MERGED_LOGITS = "merged_logits"  # the merged model in memory
ADAPTER_LOGITS = "adapter_logits"  # the adapter saved, loaded again by PEFT onto a fresh base
RELOADED_LOGITS = "reloaded_logits"  # the merged checkpoint loaded by HF's from_pretrained
RELOADED_TIED = "reloaded_tied"
MISSING_KEYS = "missing_keys"  # from_pretrained's loading info
CHECKPOINT_KEYS = "checkpoint_keys"  # tensor names in the written safetensors files
SAVED_FLAGS = "saved_flags"  # tie flags of the written config.json
GAP_INIT = "gap_init"  # max |embed - head| over the vocabulary, at each stage of an adapter workflow
GAP_TRAINED = "gap_trained"
GAP_MERGED = "gap_merged"
GAP_FINAL = "gap_final"
# The case's noise floors: one model of the case (the reference, holding the effective matrices; HF's model
# in the native workflow) in the case's precision against the same weights in float64. Numeric checks scale
# their tolerance with one of them (conformance.model.oracles).
LOGITS_NOISE = "logits_noise"  # max |Δlogits| on the probe ids
PROBE_NOISE = "probe_noise"  # max |Δ| of the probed input and output matrices (effective.probe)
# The matrices a model really uses (effective.probe: embedding rows, the head on a basis), of the model
# as it was saved and as HF's from_pretrained gave it back: what the weights are, whatever the config says.
SAVED_MATRICES = "saved_matrices"
RELOADED_MATRICES = "reloaded_matrices"
OWN_RELOAD_MATRICES = "own_reload_matrices"  # native: the implementation's own load of its checkpoint
SAVED_LOGITS = "saved_logits"  # native: the model as the implementation saved it (its tie state applied)
# resize_token_embeddings: the probed matrices of the old rows before and after, and the tie before and after.
RESIZED = "resized"
# Stacked adapters (stack-merge-overlap): the trainable-token rows both adapters hold, per layer. PEFT
# documents two adapters' values on one row as undefined and refuses them (one merge call, both active).
CONFLICT_ROWS = "conflict_rows"
# The native workflow: the implementation's own classes next to HF's.
HF_TIED = "hf_tied"
HF_LOGITS = "hf_logits"
IMPL_TIED = "impl_tied"
IMPL_LOGITS = "impl_logits"
HF64_LOGITS = "hf64_logits"
IMPL64_LOGITS = "impl64_logits"
HF_RELOAD_TIED = "hf_reload_tied"  # the implementation's checkpoint loaded by HF
HF_RELOAD_LOGITS = "hf_reload_logits"
RELOAD_TIED = "reload_tied"  # ... and by the implementation itself
RELOAD_LOGITS = "reload_logits"
RETIE = "retie"  # (re-tied after a hand-broken tie, head follows the embedding); tied configs only
HF_CHECKPOINT_TIED = "hf_checkpoint_tied"  # an HF checkpoint loaded by the implementation
HF_CHECKPOINT_LOGITS = "hf_checkpoint_logits"

# Every constant above (adding an artifact is one line), and those implementations declare.
ARTIFACTS: set[str] = {v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)}

# What loading a merged checkpoint back gives, and what every adapter workflow starts with.
RELOAD = (
    SAVED_FLAGS,
    CHECKPOINT_KEYS,
    RELOADED_TIED,
    MISSING_KEYS,
    RELOADED_LOGITS,
    GAP_FINAL,
    RELOADED_MATRICES,
)
NOISE = (LOGITS_NOISE, PROBE_NOISE)
ADAPTER = (BASE_LOGITS, UNMERGED_LOGITS, GAP_INIT, GAP_TRAINED, REFERENCE_LOGITS, *NOISE)


@dataclass(frozen=True)
class Workflow:
    name: str
    about: str
    produces: frozenset[str]
    standalone: bool  # a standalone repro script can replay it with the libraries alone
    unties_base: bool = False  # the model under test is the base untied by hand (never tied)
    tie_states: bool = True  # it takes a base in every tie state (storage apart from what the flags rule)
    resizes: str = ""  # the base's vocabulary grows first, new rows by this init: "mean" or "normal"
    # A second adapter is added after the recipe's, trained and made the active one before merging: "same"
    # (the case's recipe again, with weights of its own) or a recipe's name. The first must leave no trace.
    second: str = ""
    # Both adapters merged in turn (merge_adapter, one call each), then unloaded: "apart" (the second's
    # trainable-token rows moved past the first's, so both compose) or "overlap" (partly the first's: token
    # recipes only, and PEFT must refuse). Never with modules_to_save: PEFT keeps one copy active at a time,
    # so copies do not compose (switch-merge checks that the active one wins).
    stack: str = ""

    def runs(self, token_rows: bool, copies: bool) -> bool:
        """Whether it runs a recipe with (or without) trainable-token rows, modules_to_save copies."""
        return not self.stack or (not copies and (token_rows or self.stack != "overlap"))


def workflow(
    name: str,
    about: str,
    *produces: str,
    standalone: bool = True,
    unties_base: bool = False,
    tie_states: bool = True,
    resizes: str = "",
    second: str = "",
    stack: str = "",
) -> Workflow:
    return Workflow(
        name, about, frozenset(produces), standalone, unties_base, tie_states, resizes, second, stack
    )


WORKFLOWS: dict[str, Workflow] = {
    w.name: w
    for w in (
        workflow(
            "merge",
            "adapter -> merge_and_unload -> save_pretrained -> from_pretrained",
            *ADAPTER,
            MERGED_LOGITS,
            GAP_MERGED,
            SAVED_MATRICES,
            *RELOAD,
        ),
        workflow(
            "resize-merge",
            "resize_token_embeddings (new rows: the mean init, HF's default) -> the merge workflow",
            *ADAPTER,
            RESIZED,
            MERGED_LOGITS,
            GAP_MERGED,
            SAVED_MATRICES,
            *RELOAD,
            standalone=False,
            resizes="mean",
        ),
        workflow(
            "merge-resize",
            "the merge workflow, then resize_token_embeddings on the reloaded model -> save -> reload",
            *ADAPTER,
            MERGED_LOGITS,
            GAP_MERGED,
            RESIZED,
            SAVED_MATRICES,
            SAVED_FLAGS,
            CHECKPOINT_KEYS,
            RELOADED_TIED,
            MISSING_KEYS,
            GAP_FINAL,
            RELOADED_MATRICES,
            standalone=False,
            resizes="mean",
        ),
        *(
            workflow(
                name,
                f"resize_token_embeddings (new rows: the {init} init) -> save_pretrained -> from_pretrained",
                *NOISE,
                RESIZED,
                SAVED_MATRICES,
                *RELOAD,
                standalone=False,
                resizes=init,
            )
            for name, init in (("resize", "mean"), ("resize-normal", "normal"))
        ),
        # Several adapters on one model (add_adapter, set_adapter): unloading must drop every inactive one
        # from the tied layers, whatever wrappers (modules_to_save, trainable tokens) it left there.
        *(
            workflow(
                name,
                f"{about}, made the active one -> merge_and_unload -> save_pretrained -> from_pretrained",
                *ADAPTER,
                MERGED_LOGITS,
                GAP_MERGED,
                SAVED_MATRICES,
                *RELOAD,
                standalone=False,
                second=second,
            )
            for name, about, second in (
                ("switch-merge", "the recipe's adapter, then a second adapter of the same recipe", "same"),
                ("beside-merge", "the recipe's adapter, then LoRA on attention (lora_attn)", "lora_attn"),
            )
        ),
        # Two adapters merged into one model in turn: LoRA deltas add up, the token rows of both are kept. A
        # row both hold has no defined value: PEFT refuses it when one call names both or both are active,
        # and one call each must be refused too.
        *(
            workflow(
                name,
                f"the recipe's adapter, then a second of the same recipe {about}; merge_adapter each in "
                "turn -> unload -> save_pretrained -> from_pretrained (no modules_to_save recipe)",
                *ADAPTER,
                *extra,
                MERGED_LOGITS,
                GAP_MERGED,
                SAVED_MATRICES,
                *RELOAD,
                standalone=False,
                second="same",
                stack=stack,
            )
            for name, about, stack, extra in (
                ("stack-merge", "on token rows of its own", "apart", ()),
                ("stack-merge-overlap", "on token rows the first holds too", "overlap", (CONFLICT_ROWS,)),
            )
        ),
        workflow(
            "adapter",
            "adapter -> save the adapter -> PeftModel.from_pretrained on a fresh base",
            *ADAPTER,
            BASE_CHECKPOINT,
            ADAPTER_LOGITS,
            GAP_FINAL,
        ),
        workflow(
            "untie-first",
            "the documented workaround: untie the base by hand, then the merge workflow",
            *ADAPTER,
            BASE_CHECKPOINT,
            MERGED_LOGITS,
            GAP_MERGED,
            SAVED_MATRICES,
            *RELOAD,
            unties_base=True,
        ),
        workflow(
            "native",
            "the implementation's own model classes against HF's: build, logits, save/load, re-tie",
            HF_TIED,
            HF_LOGITS,
            IMPL_TIED,
            IMPL_LOGITS,
            HF64_LOGITS,
            IMPL64_LOGITS,
            CHECKPOINT_KEYS,
            SAVED_FLAGS,
            HF_RELOAD_TIED,
            HF_RELOAD_LOGITS,
            RELOAD_TIED,
            RELOAD_LOGITS,
            RETIE,
            HF_CHECKPOINT_TIED,
            HF_CHECKPOINT_LOGITS,
            SAVED_LOGITS,
            SAVED_MATRICES,
            RELOADED_MATRICES,
            OWN_RELOAD_MATRICES,
            *NOISE,
        ),
    )
}

# ---- Checks: what each needs (the check itself, with its tolerance and wording, is in
# conformance.model.oracles).
CHECK_NEEDS: dict[str, frozenset[str]] = {
    name: frozenset(needs)
    for name, needs in {
        "adapter-effect": (BASE_LOGITS, UNMERGED_LOGITS),
        "reference": (UNMERGED_LOGITS, REFERENCE_LOGITS),
        "merge-fidelity": (UNMERGED_LOGITS, MERGED_LOGITS),
        "roundtrip-fidelity": (UNMERGED_LOGITS, RELOADED_LOGITS),
        "adapter-roundtrip": (UNMERGED_LOGITS, ADAPTER_LOGITS),
        "tie-consistency": (SAVED_FLAGS, CHECKPOINT_KEYS, RELOADED_TIED, MISSING_KEYS),
        "tie-preserved": (GAP_INIT, GAP_TRAINED, GAP_FINAL),
        "tie-status": (HF_TIED, IMPL_TIED),
        "logits-parity": (HF_LOGITS, IMPL_LOGITS),
        "logits-parity-fp64": (HF64_LOGITS, IMPL64_LOGITS),
        "retie": (RETIE,),
        "checkpoint-roundtrip": (
            SAVED_FLAGS,
            CHECKPOINT_KEYS,
            HF_RELOAD_TIED,
            HF_RELOAD_LOGITS,
            RELOAD_TIED,
            RELOAD_LOGITS,
            SAVED_LOGITS,
        ),
        "hf-checkpoint-load": (HF_CHECKPOINT_TIED, HF_CHECKPOINT_LOGITS, HF_LOGITS, HF_TIED),
        "weights-kept": (SAVED_MATRICES, RELOADED_MATRICES),
        "resize-keeps-weights": (RESIZED,),
        "conflict-refused": (CONFLICT_ROWS, MERGED_LOGITS),
    }.items()
}

# What a check reads where its case's workflow made it, and does without elsewhere.
CHECK_MAY_USE: dict[str, frozenset[str]] = {
    "tie-preserved": frozenset({GAP_MERGED}),  # only where the workflow holds a merged model in memory
    "weights-kept": frozenset({OWN_RELOAD_MATRICES}),  # native: the implementation's own load too
}


def declare(
    artifacts: tuple[str, ...] = (),
    workflows: tuple[Workflow, ...] = (),
    checks: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """An implementation's own artifacts, workflows and checks (by the artifacts each needs)."""
    ARTIFACTS.update(artifacts)
    for made in workflows:
        if WORKFLOWS.get(made.name, made) != made or not made.produces <= ARTIFACTS:
            raise ValueError(f"workflow {made.name}: declared twice, or produces undeclared artifacts")
        WORKFLOWS[made.name] = made
    for name, needs in (checks or {}).items():
        if CHECK_NEEDS.get(name, frozenset(needs)) != frozenset(needs) or not set(needs) <= ARTIFACTS:
            raise ValueError(f"check {name}: declared twice, or needs undeclared artifacts")
        CHECK_NEEDS[name] = frozenset(needs)


def check_applies(check: str, workflow: str) -> bool:
    return CHECK_NEEDS[check] <= WORKFLOWS[workflow].produces


def checks_of(workflow: str) -> tuple[str, ...]:
    """Every check the workflow's artifacts allow, in declaration order."""
    return tuple(name for name in CHECK_NEEDS if check_applies(name, workflow))


# Hypothesis settings profiles (registered in conformance.model.generators).
PROFILES = ("dev", "ci", "nightly")
