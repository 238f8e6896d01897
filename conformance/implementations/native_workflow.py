"""The `native` workflow: an implementation's own model classes against the HF reference, no adapter.

Construction and tie status, logits parity with identical weights (in the case's precision and in
float64), checkpoint save → HF load and own load, an HF checkpoint loaded by the implementation, and
re-tying after the tie was broken by hand. Generic over a Provider, so HF itself runs it too (as the
reference's self-check).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from conformance.base import contract
from conformance.base.flags import TieFlags
from conformance.model import effective, families, pipeline
from conformance.model.cases import Case
from conformance.model.families import Family, Knobs
from conformance.model.pipeline import CaseRun, Workspace, is_tied, logits


def runner(provider: Provider) -> Callable[..., CaseRun]:
    """The native workflow as an implementation's runner: (case, recipe, dtype, workspace) -> CaseRun."""
    return lambda case, recipe, dtype, workspace: run(case, provider, dtype, workspace)


class Provider(Protocol):
    """How an implementation builds, fills, saves, loads and re-ties its models."""

    def build(
        self, family: Family, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype
    ) -> torch.nn.Module:
        """A model from a config (may raise to refuse the configuration)."""

    def load_hf_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Give `model` the weights of an HF model of the same config."""

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        """Write an HF-format checkpoint with the implementation's own saver; returns its folder."""

    def load(self, family: Family, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
        """Load an HF-format checkpoint with the implementation's own loader."""

    def tie_weights(self, model: torch.nn.Module) -> None:
        """The implementation's public re-tie hook."""


def hf_model(case: Case, dtype: torch.dtype, workspace: Workspace) -> tuple[tuple, torch.nn.Module]:
    """HF's model as the case's config builds it (a private copy), and its workspace key. The tie state's
    storage comes later, on the implementation's model: the key is that of a base built from the flags
    alone, never that of a base in another storage."""
    family = case.family_def()
    key = (case.family, case.knobs, case.flags.built, case.seed, str(dtype))
    return key, workspace.model(key, lambda: family.build(case.config, case.flags, case.seed, dtype))


def run(case: Case, provider: Provider, dtype: torch.dtype, workspace: Workspace) -> CaseRun:
    return pipeline.execute(
        case, lambda run, folder: _steps(run, provider, dtype, workspace, folder), workspace
    )


def _steps(run: CaseRun, provider: Provider, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    case, family = run.case, run.case.family_def()
    fp64 = torch.float64

    with run.step("reference"):
        key, hf = hf_model(case, dtype, workspace)
        vocab = hf.config.get_text_config().vocab_size
        ids = pipeline.inputs(vocab, case.seed)
        run.put(contract.HF_TIED, is_tied(hf))
        hf_logits = workspace.logits(key, hf, ids)
        run.put(contract.HF_LOGITS, hf_logits)
        pipeline.measure_noise(run, hf, ids, hf_logits)
        hf_dir = workspace.checkpoint(key, hf)

    with run.step("build"):
        model = provider.build(family, case.config, case.flags, case.seed, dtype)
        run.put(contract.IMPL_TIED, is_tied(model))

    with run.step("load-weights"):
        provider.load_hf_weights(model, hf.state_dict())
        run.put(contract.IMPL_LOGITS, logits(model, ids))

    if case.flags.storage:
        with run.step("storage"):
            # The tie state: a head of its own under a tied config, or one tensor under an untied one.
            families.store(model, case.flags, case.seed)

    with run.step("float64"):
        hf64 = family.build(case.config, case.flags, case.seed, fp64)
        model64 = provider.build(family, case.config, case.flags, case.seed, fp64)
        provider.load_hf_weights(model64, hf64.state_dict())
        run.put(contract.HF64_LOGITS, logits(hf64, ids))
        run.put(contract.IMPL64_LOGITS, logits(model64, ids))

    with run.step("save"):
        run.put(contract.SAVED_LOGITS, logits(model, ids))
        run.put(contract.SAVED_MATRICES, effective.probe(model, vocab))
        saved = provider.save(model, folder / "saved")
        run.put(contract.CHECKPOINT_KEYS, pipeline.checkpoint_keys(saved))
        run.put(contract.SAVED_FLAGS, pipeline.saved_flags(saved, family))

    with run.step("reload-hf"):
        by_hf = pipeline.load_hf(saved, family, dtype).eval()
        run.put(contract.HF_RELOAD_TIED, is_tied(by_hf))
        run.put(contract.HF_RELOAD_LOGITS, logits(by_hf, ids))
        run.put(contract.RELOADED_MATRICES, effective.probe(by_hf, vocab))

    with run.step("reload"):
        again = provider.load(family, saved, dtype).eval()
        run.put(contract.RELOAD_TIED, is_tied(again))
        run.put(contract.RELOAD_LOGITS, logits(again, ids))
        run.put(contract.OWN_RELOAD_MATRICES, effective.probe(again, vocab))

    if family.expected_tied(case.flags):
        with run.step("retie"):
            head = model.get_output_embeddings()
            head.weight = torch.nn.Parameter(head.weight.detach().clone())  # a tie broken by hand
            provider.tie_weights(model)
            retied = is_tied(model)
            with torch.no_grad():  # a training-like update of the embedding the forward uses
                model.get_input_embeddings().weight.add_(0.5)
            follows = torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
            run.put(contract.RETIE, (retied, follows))

    with run.step("load-hf-checkpoint"):
        from_hf = provider.load(family, hf_dir, dtype).eval()
        run.put(contract.HF_CHECKPOINT_TIED, is_tied(from_hf))
        run.put(contract.HF_CHECKPOINT_LOGITS, logits(from_hf, ids))


class HFProvider:
    """transformers' own classes: the reference, run through the same steps as a self-check."""

    def build(
        self, family: Family, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype
    ) -> torch.nn.Module:
        return family.build(knobs, flags, seed, dtype)

    def load_hf_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(state, strict=True)

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        model.save_pretrained(folder)
        return folder

    def load(self, family: Family, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
        return pipeline.load_hf(folder, family, dtype)

    def tie_weights(self, model: torch.nn.Module) -> None:
        model.tie_weights()
