"""PEFT on HF models: adapter, training step, reference, then merge/save/reload, adapter I/O, untie-first,
a second adapter made active beside the first (switch-merge, beside-merge), and both merged in turn
(stack-merge, stack-merge-overlap)."""

from __future__ import annotations

import dataclasses
import pprint
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from conformance.base import contract
from conformance.implementations.base import Implementation, Standalone
from conformance.model import effective, families, features, pipeline, recipes
from conformance.model.cases import Case
from conformance.model.pipeline import CaseRun, Workspace, logits
from conformance.model.recipes import Recipe

WORKFLOWS = (
    "merge", "adapter", "untie-first", "resize-merge", "merge-resize", "switch-merge", "beside-merge",
    "stack-merge", "stack-merge-overlap",
)  # fmt: skip
FIRST, SECOND = "default", "second"  # the adapters' names: PEFT's default, and a workflow's second one
_OVERLAP = 2  # stack-merge-overlap: the second adapter's rows start 2 further on, sharing all but the first


def _row_offset(recipe: Recipe, stack: str) -> int:
    """How far the second adapter's token rows are moved: past every row of the first, or into them."""
    rows = [r for layer in recipe.token_indices().values() for r in layer]
    if not rows or not stack:
        return 0
    return _OVERLAP if stack == "overlap" else max(rows) - min(rows) + 1


def _in_place(recipe: Recipe) -> bool:
    """Whether a stack workflow merges before its reference: PEFT keeps one token adapter active at a
    time, so merged in place is its only live form of two (LoRA alone: both active, unmerged)."""
    return bool(recipe.token_indices())


def _shared_rows(first: Recipe, second: Recipe) -> dict[str, list[int]]:
    """The token rows each layer holds in both adapters."""
    mine = first.token_indices()
    return {
        layer: sorted(set(rows) & set(mine.get(layer, [])))
        for layer, rows in second.token_indices().items()
        if set(rows) & set(mine.get(layer, []))
    }


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
        # In its tie state: the storage the flags rule, or a head apart / an alias (conformance.base.flags).
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
        _train(run, model, ids, vocab)

    adapter, first = FIRST, recipe
    flow = contract.WORKFLOWS[case.workflow]
    if flow.second:
        adapter = SECOND
        with run.step("second-adapter"):
            recipe = recipe if flow.second == "same" else recipes.load().get(flow.second).resolved(vocab)
            recipe = recipe.rows_moved(_row_offset(recipe, flow.stack))
            torch.manual_seed(case.seed + 1)  # its LoRA init draws other values than the first adapter's
            model.add_adapter(adapter, recipe.peft_config(family.module_names))
            # set_adapter leaves only the active adapter trainable: the fill and the step reach it alone.
            model.set_adapter(adapter)
            model.eval()
            _train(run, model, ids, vocab)

    below: dict[str, torch.Tensor] = {}
    if flow.stack:
        run.put(contract.CONFLICT_ROWS, _shared_rows(first, recipe))
        if _in_place(recipe):
            with run.step("merge-each"):
                _merge_each(model)
                run.put(contract.UNMERGED_LOGITS, logits(model, ids))
        else:
            with run.step("both-active"):
                model.base_model.set_adapter([FIRST, SECOND])
                model.eval()
                run.put(contract.UNMERGED_LOGITS, logits(model, ids))
        # The second adapter applies over the first's effective weights: LoRA deltas add, token rows
        # are written over (only where they overlap, which must be refused).
        below = effective.effective_weights(
            effective.collect(model, FIRST), base_weights, first, embed_path, head_path, tied
        )

    with run.step("reference"):
        # The active adapter's tensors under its recipe: an inactive one must have no effect at all.
        found = effective.collect(model, adapter)
        weights = effective.effective_weights(
            found, {**base_weights, **below}, recipe, embed_path, head_path, tied
        )
        weights = {**below, **weights}
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


def _merge_each(model: torch.nn.Module) -> torch.nn.Module:
    for name in (FIRST, SECOND):
        model.merge_adapter(adapter_names=[name])  # one call each: a single call naming both sees both
    return model


def _unload(model: torch.nn.Module) -> torch.nn.Module:
    """A stack workflow's merge step where the adapters are merged in place already."""
    return model.unload()


def _merge_unload(model: torch.nn.Module) -> torch.nn.Module:
    """A stack workflow's merge step from both adapters active: merged in turn, then unloaded."""
    return _merge_each(model).unload()


def _train(run: CaseRun, model: torch.nn.Module, ids: torch.Tensor, vocab: int) -> None:
    """Non-zero weights for the active adapter, one training step, and the unmerged logits."""
    effective.fill_adapter(model, run.case.seed)
    run.put(contract.GAP_INIT, effective.tie_gap(model, vocab))
    effective.train_step(model, ids)
    run.put(contract.GAP_TRAINED, effective.tie_gap(model, vocab))
    run.put(contract.UNMERGED_LOGITS, logits(model, ids))


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
    merge = None  # merge_and_unload
    if contract.WORKFLOWS[run.case.workflow].stack:
        merge = _unload if _in_place(recipe) else _merge_unload
    pipeline.merge_save_reload(run, model, family, folder, ids, dtype, merge)


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


# ---- Feature probes: what this PEFT build can do, asked of it (conformance.model.features). A pull
# request's build carries the version string of the release it follows, so recipes ask probes, not versions.
def _lora_fields() -> set[str]:
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)}


def _field(name: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        return None if name in _lora_fields() else f"LoraConfig has no field {name}"

    return probe


def _wrap(**lora: object) -> object:
    """get_peft_model on a fresh tied 1-layer Llama with these LoraConfig arguments."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    unknown = sorted(set(lora) - _lora_fields())
    if unknown:
        raise features.Absent(f"LoraConfig has no field {', '.join(unknown)}")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, lora_alpha=4, **lora))


def _names(model: object) -> list[str]:
    return [name for name, _ in model.named_parameters(remove_duplicate=False)]  # type: ignore[attr-defined]


def _tokens_dict_lm_head() -> str | None:
    # 0.17 wraps the dict's lm_head entry as an embedding and fails on `embedding_dim`.
    model = _wrap(
        target_modules=["q_proj"], trainable_token_indices={"embed_tokens": [3, 5], "lm_head": [9, 11]}
    )
    if not any("lm_head" in n and "trainable_tokens" in n for n in _names(model)):
        return "a dict naming lm_head gives lm_head no trainable-token rows"
    return None


def _ewt_target_modules() -> str | None:
    # 0.18 accepts the flag but only warns: LoRA lands on embed_tokens, lm_head stays a plain Linear.
    model = _wrap(target_modules=["embed_tokens"], ensure_weight_tying=True)
    if not any(".lm_head.lora_" in n for n in _names(model)):
        return "with ensure_weight_tying, LoRA on embed_tokens leaves the tied lm_head without an adapter"
    return None


def _ewt_trainable_tokens() -> str | None:
    # The documented answer to different rows on the tied pair is a ValueError; 0.18 never reads the flag
    # for trainable tokens and accepts them as two separate adapters.
    _wrap(target_modules=["q_proj"], ensure_weight_tying=True, trainable_token_indices=[3, 5])
    try:
        _wrap(
            target_modules=["q_proj"],
            ensure_weight_tying=True,
            trainable_token_indices={"embed_tokens": [3, 5], "lm_head": [9, 11]},
        )
    except ValueError:
        return None
    return "ensure_weight_tying accepts different trainable-token rows on the tied layers (not applied)"


for _feature in (
    features.Feature(
        "trainable-tokens", "peft", "LoraConfig.trainable_token_indices", _field("trainable_token_indices")
    ),
    features.Feature(
        "trainable-tokens-dict-lm-head",
        "peft",
        "trainable_token_indices in dict form naming lm_head",
        _tokens_dict_lm_head,
    ),
    features.Feature(
        "ewt-modules-to-save",
        "peft",
        "ensure_weight_tying for modules_to_save (PEFT PR #2803)",
        _field("ensure_weight_tying"),
    ),
    features.Feature(
        "ewt-target-modules",
        "peft",
        "ensure_weight_tying for target_modules (PEFT PR #2879)",
        _ewt_target_modules,
    ),
    features.Feature(
        "ewt-trainable-tokens",
        "peft",
        "ensure_weight_tying for trainable_token_indices (PEFT PR #2870)",
        _ewt_trainable_tokens,
    ),
):
    features.register(_feature)


def script_pieces(case: Case, recipe: Recipe) -> tuple[set[tuple[str, str]], dict[str, object]]:
    """The adapter of a standalone script: the recipe's LoraConfig, its rows, its scaling."""
    family = case.family_def()
    values = {
        "adapter": pprint.pformat(recipe.adapter_kwargs(family.module_names), sort_dicts=False),
        "touches": tuple(sorted(recipe.touches)),
        "shared": recipe.on_tied_model == "shared",
        "rows": recipe.token_indices(),
        "scaling": recipe.scaling,
        "noise": effective.ADAPTER_SCALE,
        "autocast": case.precision.autocast is not False,
    }
    return {("peft", "LoraConfig"), ("peft", "PeftModel"), ("peft", "get_peft_model")}, values


IMPLEMENTATION = Implementation(
    name="peft",
    package="peft",
    about="PEFT adapters on HF models: merge_and_unload, save_pretrained, from_pretrained",
    runners=dict.fromkeys(WORKFLOWS, pipeline.runner(_steps)),
    order=1,
    autocast_axis=True,
    standalone=Standalone("repro_peft.py.j2", "peft", script_pieces),
)
