"""PEFT on HF models: adapter, training step, reference, then merge/save/reload, adapter I/O, untie-first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from conformance import contract, effective, families, pipeline
from conformance.cases import Case
from conformance.implementations.base import Implementation
from conformance.pipeline import CaseRun, Workspace, logits
from conformance.recipes import Recipe

WORKFLOWS = ("merge", "adapter", "untie-first", "resize-merge", "merge-resize")


@dataclass
class Adapted:
    """A PEFT model with trained, non-zero adapter weights, and what the later steps need of its base."""

    model: torch.nn.Module
    ids: torch.Tensor
    base_dir: Path | None  # the base as saved by HF, where the workflow produces base_checkpoint
    effective: dict[str, torch.Tensor]  # every weight of an untied model equivalent to `model`
    autocast: dict[str, bool]  # PEFT's autocast_adapter_dtype as the case sets it, for every PEFT load


def _base(family: families.Family, case: Case, dtype: torch.dtype) -> torch.nn.Module:
    return families.store(family.build(case.config, case.flags, case.seed, dtype), case.flags, case.seed)


def adapt(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace) -> Adapted:
    """build (→ untie for untie-first) → wrap → train → reference: every adapter workflow starts so,
    whichever implementation then merges or saves the adapter."""
    from peft import get_peft_model

    case, family = run.case, run.case.family_def()
    base_key = (case.family, case.knobs, case.flags, case.seed, str(dtype))
    # PEFT's autocast_adapter_dtype, where the case has that axis (half precision); else PEFT's default.
    autocast = {} if case.precision.autocast is None else {"autocast_adapter_dtype": case.precision.autocast}
    base_dir = None

    with run.step("build"):
        # In its tie state: the storage the flags rule, or a head apart / an alias (conformance.flags).
        base = workspace.model(base_key, lambda: _base(family, case, dtype))
        vocab = base.config.get_text_config().vocab_size
        ids = pipeline.inputs(vocab, case.seed)
        embed_path = effective.module_path(base, base.get_input_embeddings())
        head_path = effective.module_path(base, base.get_output_embeddings())
        if contract.BASE_CHECKPOINT in contract.WORKFLOWS[case.workflow].produces:
            base_dir = workspace.checkpoint(base_key, base)
            run.put(contract.BASE_CHECKPOINT, base_dir)
        run.put(contract.BASE_LOGITS, workspace.logits(base_key, base, ids))

    config = case.config  # the knobs of the model under test (its vocabulary grows with a resize)
    init = contract.WORKFLOWS[case.workflow].resizes
    if init and case.workflow != "merge-resize":  # that one resizes the merged model it reloads
        vocab = pipeline.resize(run, base, init)
        config = {**config, "vocab_size": vocab}
        if recipe.new_rows:  # trainable tokens on the rows the resize added: the probe ids read them too
            recipe = recipe.resolved(vocab)
            ids = pipeline.with_rows(ids, recipe)
        run.put(contract.BASE_LOGITS, logits(base, ids))
    recipe = recipe.resolved(vocab)

    if contract.WORKFLOWS[case.workflow].unties_base:
        with run.step("untie"):
            # The documented workaround: load untied, then give lm_head its own copy of the embedding.
            # What the untied config leaves out of the checkpoint (T5's stack embeddings) is drawn from
            # the global RNG: seeded, so the case does not depend on what ran before it in this process.
            torch.manual_seed(case.seed)
            base = pipeline.load_hf(base_dir, family, dtype, tie_word_embeddings=False)
            head = base.get_output_embeddings()
            head.weight = torch.nn.Parameter(base.get_input_embeddings().weight.detach().clone())
            base.eval()
            run.put(contract.BASE_LOGITS, logits(base, ids))

    tied = case.tied
    base_weights = {k: v.detach().clone() for k, v in base.state_dict().items()}

    with run.step("wrap"):
        # Adapter initialisation draws from the global RNG: seed it per case, so a case gives the same
        # result whatever ran before it in this process.
        torch.manual_seed(case.seed)
        model = get_peft_model(base, recipe.peft_config(family.module_names), **autocast)
        model.eval()

    with run.step("train"):
        effective.fill_adapter(model, case.seed)
        run.put(contract.GAP_INIT, effective.tie_gap(model, vocab))
        effective.train_step(model, ids)
        run.put(contract.GAP_TRAINED, effective.tie_gap(model, vocab))
        run.put(contract.UNMERGED_LOGITS, logits(model, ids))

    with run.step("reference"):
        found = effective.collect(model)
        weights = effective.effective_weights(found, base_weights, recipe, embed_path, head_path, tied)
        flags = case.flags.built if family.forward_reads_tie_flag else pipeline.untied_flags(family)
        reference_key = (case.family, tuple(config.items()), "reference", flags.id, case.seed, str(dtype))
        reference = workspace.shared(
            reference_key, lambda: pipeline.reference_model(family, config, flags, case.seed, dtype)
        )
        state = {**base_weights, **{k: v.to(dtype) for k, v in weights.items()}}
        reference.load_state_dict(state, strict=True)
        reference_logits = logits(reference, ids)
        run.put(contract.REFERENCE_LOGITS, reference_logits)
        pipeline.measure_noise(run, reference, ids, reference_logits)
    return Adapted(model, ids, base_dir, state, autocast)


def _steps(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    from peft import PeftModel

    adapted = adapt(run, recipe, dtype, workspace)
    model, ids, base_dir = adapted.model, adapted.ids, adapted.base_dir
    family = run.case.family_def()
    vocab = model.config.get_text_config().vocab_size

    if run.case.workflow == "adapter":
        with run.step("save-adapter"):
            model.save_pretrained(folder / "adapter")
        with run.step("load-adapter"):
            fresh = pipeline.load_hf(base_dir, family, dtype)
            loaded = PeftModel.from_pretrained(fresh, folder / "adapter", **adapted.autocast).eval()
            run.put(contract.ADAPTER_LOGITS, logits(loaded, ids))
            run.put(contract.GAP_FINAL, effective.tie_gap(loaded, vocab))
        return

    if run.case.workflow == "merge-resize":
        _merge_then_resize(run, model, family, folder, ids, dtype)
        return
    pipeline.merge_save_reload(run, model, family, folder, ids, dtype)


def _merge_then_resize(
    run: CaseRun, model: torch.nn.Module, family: families.Family, folder: Path, ids: torch.Tensor,
    dtype: torch.dtype,
) -> None:  # fmt: skip
    """merge -> save -> from_pretrained -> resize_token_embeddings -> save -> from_pretrained: new tokens
    added to a merged fine-tune, as one does before training it further."""
    vocab = model.config.get_text_config().vocab_size
    with run.step("merge"):
        merged = model.merge_and_unload()
        run.put(contract.MERGED_LOGITS, logits(merged, ids))
        run.put(contract.GAP_MERGED, effective.gap(effective.probe(merged, vocab)))
        merged.save_pretrained(folder / "merged")
    with run.step("reload-merged"):
        torch.manual_seed(run.case.seed)
        reloaded = pipeline.load_hf(folder / "merged", family, dtype).eval()
    grown = pipeline.resize(run, reloaded, contract.WORKFLOWS[run.case.workflow].resizes)
    with run.step("save"):
        run.put(contract.SAVED_MATRICES, effective.probe(reloaded, grown))
        reloaded.save_pretrained(folder / "resized")
        pipeline.read_checkpoint(run, folder / "resized", family)
    pipeline.reload(run, folder / "resized", family, ids, dtype)


IMPLEMENTATION = Implementation(
    name="peft",
    package="peft",
    about="PEFT adapters on HF models: merge_and_unload, save_pretrained, from_pretrained",
    runners=dict.fromkeys(WORKFLOWS, pipeline.runner(_steps)),
    order=1,
    autocast_axis=True,
)
