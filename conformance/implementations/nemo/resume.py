"""NeMo's training checkpoint and resume: the `resume` workflow of `nemo-automodel` and `nemo-auto`.

A model in its tie state is saved by NeMo's Checkpointer in its distributed format (DCP, `torch_save`,
what a training run writes every N steps), and a fresh model of the same config resumes from it through
the Checkpointer's `load_model`. The resumed model must be the saved one: the same logits and matrices,
whatever the config says about the tie (`resume-fidelity`, `weights-kept`). A resume that re-ties a head
with values of its own, or loads one tensor into two, is caught here and by no HF checkpoint.

No process group: DCP runs on one rank without one, and a group left in a worker changes how NeMo's MoE
classes build and compute in its later cases (measured: NaN logits on 0.4 and 0.6 once a gloo group of
one rank had existed in the process), so cases stay independent of each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from conformance.base import contract
from conformance.implementations import native_workflow
from conformance.implementations.native_workflow import Provider
from conformance.model import effective, families, oracles, pipeline
from conformance.model.oracles.base import Check, CheckContext, Measurement, diff, tie_word
from conformance.model.pipeline import CaseRun, Workspace, is_tied, logits
from conformance.model.recipes import Recipe

SAVED_TIED = "saved_tied"  # resume: the saved model's tie status (its storage)
RESUMED_TIED = "resumed_tied"
RESUMED_LOGITS = "resumed_logits"

contract.declare(
    artifacts=(SAVED_TIED, RESUMED_TIED, RESUMED_LOGITS),
    workflows=(
        contract.workflow(
            "resume",
            "own build (tie state) -> NeMo's DCP training checkpoint -> a fresh model resumes from it",
            *contract.NOISE,
            contract.SAVED_LOGITS,
            contract.SAVED_MATRICES,
            contract.RELOADED_MATRICES,
            SAVED_TIED,
            RESUMED_TIED,
            RESUMED_LOGITS,
            standalone=False,
        ),
    ),
    checks={"resume-fidelity": (contract.SAVED_LOGITS, SAVED_TIED, RESUMED_TIED, RESUMED_LOGITS)},
)


def _resume_fidelity(art: dict[str, Any], tol: float | None, ctx: CheckContext) -> Measurement:
    gap = diff(art[contract.SAVED_LOGITS], art[RESUMED_LOGITS])
    ties = f"saved {tie_word(art[SAVED_TIED])}, resumed {tie_word(art[RESUMED_TIED])}"
    return Measurement(gap <= tol, gap, f"max |Δlogits| resumed vs saved = {gap:.3g} (tol {tol:g}); {ties}")


oracles.register(
    Check(
        "resume-fidelity",
        "NeMo's DCP training checkpoint, resumed into a fresh model of its config, gives the saved logits",
        _resume_fidelity,
        # A resume restores the saved tensors: only the forward's own rounding separates the models.
        tolerance={"factor": 6, "float32": 1.0e-4, "float64": 1.0e-9, "bfloat16": 1.0e-4, "float16": 1.0e-4},
    )
)


def runner(provider: Provider, checkpointer: Any) -> Any:
    """The resume workflow for a provider; `checkpointer(folder, **options)` makes NeMo's Checkpointer."""

    def steps(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
        case, family = run.case, run.case.family_def()
        with run.step("build"):
            # HF's weights, as native gives them: NeMo's eager init leaves some tensors (Gemma4 MoE's
            # experts) as uninitialised memory, which a training run never saves.
            _, hf = native_workflow.hf_model(case, dtype, workspace)
            built = provider.build(family, case.config, case.flags, case.seed, dtype)
            provider.load_hf_weights(built, hf.state_dict())
            model = families.store(built, case.flags, case.seed)
            vocab = model.config.get_text_config().vocab_size
            ids = pipeline.inputs(vocab, case.seed)
            saved = logits(model, ids)
            run.put(contract.SAVED_LOGITS, saved)
            run.put(contract.SAVED_MATRICES, effective.probe(model, vocab))
            run.put(SAVED_TIED, is_tied(model))
            pipeline.measure_noise(run, model, ids, saved)
        with run.step("save"):
            checkpointer(folder, model_save_format="torch_save", save_consolidated=False).save_model(
                model, str(folder / "step")
            )
        with run.step("resume"):
            fresh = provider.build(family, case.config, case.flags, case.seed + 1, dtype)
            checkpointer(folder, model_save_format="torch_save", save_consolidated=False).load_model(
                fresh, str(folder / "step" / "model")
            )
            fresh.eval()
            run.put(RESUMED_TIED, is_tied(fresh))
            run.put(RESUMED_LOGITS, logits(fresh, ids))
            run.put(contract.RELOADED_MATRICES, effective.probe(fresh, vocab))

    return pipeline.runner(steps)
