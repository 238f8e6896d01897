"""mergekit (arcee-ai), the model-merging toolkit, driven through its Python API on tiny models on disk.

Two workflows, on every PEFT recipe:
- `lora-passthrough`: the PEFT adapter is saved as usual and mergekit's `passthrough` method merges
  `base+adapter` into a new folder, which HF's `from_pretrained` loads.
- `linear-merge`: two fine-tunes of the case's base, A (the base with its embedding moved, so a tied
  head moves with it) and B (the untied model holding the recipe's effective matrices, so a recipe on
  lm_head gives B its own trained head), merged by `linear` into a folder. The suite's own weighted sum
  of their effective matrices is the reference.

Offline: every model is named by an absolute path (a relative name is looked up on the hub even with
HF_HUB_OFFLINE set, when the model card is written), no model card, no tokenizer.

Both have standalone repro scripts: repro.py.j2 beside this module extends the PEFT script and replaces
its merge and save by these merges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from conformance.base import contract
from conformance.implementations import peft
from conformance.implementations.base import Implementation, Standalone
from conformance.model import effective, oracles, pipeline
from conformance.model.cases import Case
from conformance.model.oracles.base import Check, logits_check
from conformance.model.pipeline import CaseRun, Workspace, logits
from conformance.model.recipes import Recipe

PACKAGE = "mergekit"
# Weights of fine-tunes A and B in the linear merge: unequal, so a head taken from one input alone shows.
WEIGHTS = (0.3, 0.7)
ARITHMETIC_LOGITS = "arithmetic_logits"  # an untied model holding the suite's own weighted sum

contract.declare(
    artifacts=(ARITHMETIC_LOGITS,),
    workflows=(
        contract.workflow(
            "lora-passthrough",
            "PEFT adapter saved -> mergekit `passthrough` of base+adapter into a folder -> from_pretrained",
            *contract.ADAPTER,
            contract.BASE_CHECKPOINT,
            *contract.RELOAD,
        ),
        contract.workflow(
            "linear-merge",
            "two fine-tunes of one base (one with its own trained lm_head) -> mergekit `linear` -> "
            "from_pretrained, against the weighted sum of their effective matrices",
            contract.BASE_CHECKPOINT,
            contract.BASE_LOGITS,
            ARITHMETIC_LOGITS,
            *contract.NOISE,
            *contract.RELOAD,
        ),
    ),
    checks={"merge-arithmetic": (ARITHMETIC_LOGITS, contract.RELOADED_LOGITS)},
)
oracles.register(
    Check(
        "merge-arithmetic",
        "a merge of fine-tunes, loaded by HF, gives the logits of the weighted sum of their weights",
        logits_check(ARITHMETIC_LOGITS, contract.RELOADED_LOGITS, "loaded merge vs weighted sum"),
        # mergekit sums the same float tensors in its own order: rounding, never more.
        tolerance={"factor": 6, "float32": 1.0e-4, "float64": 1.0e-9, "bfloat16": 1.0e-4, "float16": 1.0e-4},
    )
)


def _merge(config: dict[str, Any], out: Path, cache: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    options = MergeOptions(
        copy_tokenizer=False,
        write_model_card=False,
        lora_merge_cache=str(cache),
        cuda=False,
        device="cpu",
        lazy_unpickle=False,
        trust_remote_code=False,
        quiet=True,
    )
    run_merge(MergeConfiguration.model_validate(config), str(out), options)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _load_merged(
    run: CaseRun, config: dict[str, Any], folder: Path, ids: torch.Tensor, dtype: torch.dtype
) -> None:
    """mergekit writes the merge into folder/merged; what it wrote is read, then loaded by HF."""
    family = run.case.family_def()
    with run.step("merge"):
        _merge(config, folder / "merged", folder / "lora-cache")
    with run.step("read-merged"):
        pipeline.read_checkpoint(run, folder / "merged", family)
    pipeline.reload(run, folder / "merged", family, ids, dtype)


def _passthrough(
    run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path
) -> None:
    adapted = peft.adapt(run, recipe, dtype, workspace)
    with run.step("save-adapter"):
        adapted.model.save_pretrained(folder / "adapter")
    # base_model too: mergekit writes the output config from it (else from the first input it meets).
    both = f"{adapted.base_dir}+{(folder / 'adapter').resolve()}"
    config = {
        "merge_method": "passthrough",
        "base_model": both,
        "models": [{"model": both}],
        "dtype": _name(dtype),
    }
    _load_merged(run, config, folder, adapted.ids, dtype)


def _linear(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    case, family = run.case, run.case.family_def()
    adapted = peft.adapt(run, recipe, dtype, workspace)
    untied = pipeline.untied_flags(family)

    with run.step("fine-tunes"):
        # A: the base (as its flags build it) with a moved embedding; a tied head moves with it.
        a = pipeline.load_hf(adapted.base_dir, family, dtype).eval()
        rows = a.get_input_embeddings().weight
        moved = torch.randn(rows.shape, generator=torch.Generator().manual_seed(case.seed))
        with torch.no_grad():
            rows.add_(0.5 * moved.to(rows.device, dtype))
        a.save_pretrained(folder / "a")
        head = effective.module_path(a, a.get_output_embeddings()) + ".weight"
        a_effective = {k: v.detach().clone() for k, v in a.state_dict().items()}
        a_effective[head] = a.get_output_embeddings().weight.detach().clone()  # the tie, made explicit
        # B: an untied model holding the recipe's effective matrices.
        b = family.build(case.config, untied, case.seed, dtype)
        b.load_state_dict(adapted.effective, strict=True)
        b.save_pretrained(folder / "b")

    with run.step("arithmetic"):
        wa, wb = WEIGHTS
        total = {k: wa * a_effective[k] + wb * v for k, v in adapted.effective.items()}
        reference = workspace.shared(
            (case.family, case.knobs, "reference", case.seed, str(dtype)),
            lambda: family.build(case.config, untied, case.seed, dtype),
        )
        reference.load_state_dict(total, strict=True)
        arithmetic = logits(reference, adapted.ids)
        run.put(ARITHMETIC_LOGITS, arithmetic)
        pipeline.measure_noise(run, reference, adapted.ids, arithmetic)  # the weights the merge must hold

    config = {
        "merge_method": "linear",
        "base_model": str(adapted.base_dir),
        # The base at weight 0: it adds nothing, but names the config the output is written with
        # (linear requires a weight for every input, base_model included).
        "models": [
            {"model": str(path), "parameters": {"weight": weight}}
            for path, weight in zip(
                (adapted.base_dir, (folder / "a").resolve(), (folder / "b").resolve()),
                (0.0, *WEIGHTS),
                strict=True,
            )
        ],
        "parameters": {"normalize": False},
        "dtype": _name(dtype),
    }
    _load_merged(run, config, folder, adapted.ids, dtype)


def _script(case: Case, recipe: Recipe) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """The PEFT script's adapter, mergekit's API and the linear merge's weights."""
    imports, values = peft.script_pieces(case, recipe)
    merging = {("mergekit.config", "MergeConfiguration"), ("mergekit.merge", "MergeOptions")}
    return imports | merging | {("mergekit.merge", "run_merge")}, {**values, "weights": WEIGHTS}


IMPLEMENTATION = Implementation(
    name="mergekit",
    package=PACKAGE,
    about="mergekit's passthrough (base+LoRA) and linear merges of fine-tunes of tied models, HF-loaded",
    runners={"lora-passthrough": pipeline.runner(_passthrough), "linear-merge": pipeline.runner(_linear)},
    order=3,
    # The families its findings were written for; mergekit merges by architecture files, and the newer
    # families (multimodal wrappers, Qwen3, Mistral, ...) wait for their own curation.
    families=("llama", "gemma", "qwen2", "gemma4", "gemma4-moe"),
    recipes_of=("peft",),
    elsewhere="`tox -e mergekit` runs it (mergekit needs transformers >= 5) into reports/mergekit/index.html",
    test_marker="mergekit",
    autocast_axis=True,
    standalone=Standalone("repro.py.j2", "peft and mergekit", _script, Path(__file__).parent),
)
