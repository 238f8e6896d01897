"""transformers' own classes: the reference; its `native` run is the reference's self-check, and its
`resize` runs put `resize_token_embeddings` itself under test (in every tie state), its `layout-*` runs
`from_pretrained` on the checkpoint layouts real checkpoints have (conformance.model.layouts)."""

from __future__ import annotations

from pathlib import Path

import torch

from conformance.base import contract
from conformance.implementations import native_workflow as native
from conformance.implementations.base import Implementation, Standalone
from conformance.model import effective, families, layouts, pipeline
from conformance.model.pipeline import CaseRun, Workspace
from conformance.model.recipes import Recipe


def _resize(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    """build (in its tie state) -> resize_token_embeddings -> save_pretrained -> from_pretrained."""
    case, family = run.case, run.case.family_def()
    with run.step("build"):
        model = families.store(family.build(case.config, case.flags, case.seed, dtype), case.flags, case.seed)
        ids = pipeline.inputs(model.config.get_text_config().vocab_size, case.seed)
        pipeline.measure_noise(run, model, ids)
    vocab = pipeline.resize(run, model, contract.WORKFLOWS[case.workflow].resizes)
    with run.step("save"):
        run.put(contract.SAVED_MATRICES, effective.probe(model, vocab))
        model.save_pretrained(folder / "resized")
        pipeline.read_checkpoint(run, folder / "resized", family)
    pipeline.reload(run, folder / "resized", family, ids, dtype)


IMPLEMENTATION = Implementation(
    name="hf",
    package="transformers",
    about="transformers' own classes: tie rule, save/load, re-tie and resize, checked against the rule table",
    runners={
        "native": native.runner(native.HFProvider()),
        "resize": pipeline.runner(_resize),
        "resize-normal": pipeline.runner(_resize),
        **{name: pipeline.runner(layouts.steps) for name in layouts.LAYOUTS},
    },
    order=0,
    standalone=Standalone("repro_native.py.j2", "nothing else"),
)
