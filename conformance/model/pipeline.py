"""Pipeline machinery shared by the implementations: steps with warning capture, artifacts, workspace.

Each step runs inside `CaseRun.step`, which records warnings per step and turns the first exception into a
StepFailure; artifacts remember the step that made them, so a check knows which warnings it may cite.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from conformance.base import contract, device, outcomes, versions
from conformance.base.flags import TieFlags
from conformance.model import effective
from conformance.model.cases import Case
from conformance.model.families import Family
from conformance.model.recipes import Recipe


class _Stop(Exception):
    """Raised inside the pipeline after a step failed: later steps need its output."""


@dataclass
class CaseRun:
    """Everything one case produced: artifacts by name, the step that made each, warnings, the failure."""

    case: Case
    artifacts: dict[str, Any] = field(default_factory=dict)
    made_in: dict[str, int] = field(default_factory=dict)
    capture: outcomes.Capture = field(default_factory=outcomes.Capture)
    failure: outcomes.StepFailure | None = None
    kept: Path | None = None  # the case's folder, where the workspace keeps them
    _current: int = -1

    def put(self, name: str, value: Any) -> None:
        if name not in contract.ARTIFACTS:  # a misspelt name would only show as a missing artifact later
            raise KeyError(f"{name!r} is not an artifact declared in conformance.base.contract")
        if name not in contract.WORKFLOWS[self.case.workflow].produces:
            return  # shared steps make more than some workflows declare; checks see only what is declared
        self.artifacts[name] = value
        self.made_in[name] = self._current

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        with self.capture.step(name) as index:
            self._current = index
            try:
                yield
            except (_Stop, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # torch's CheckpointException, for one, is no Exception
                self.failure = outcomes.failure(name, index, exc)
                raise _Stop from exc


@dataclass
class Workspace:
    """State shared by the cases of one run: temporary files, and base and reference models.

    Cases with the same base (family, config, flags, seed, dtype) reuse one built model (each case gets a
    deep copy, so no case sees another's changes), its logits and its checkpoint on disk.
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conformance-")))
    reuse: bool = True  # False rebuilds everything per case (the benchmark measures both)
    keep: Path | None = None  # where each case's folder is moved instead of deleted (export)
    _models: dict[tuple, torch.nn.Module] = field(default_factory=dict)
    _logits: dict[tuple, torch.Tensor] = field(default_factory=dict)
    _checkpoints: dict[tuple, Path] = field(default_factory=dict)

    def case_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    def model(self, key: tuple, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """A private copy of the model `build` makes; the deep copy keeps shared (tied) tensors shared."""
        return copy.deepcopy(self.shared(key, build)) if self.reuse else build()

    def shared(self, key: tuple, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """One model reused as is by every case (callers overwrite all its weights before use)."""
        if not self.reuse:
            return build()
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]

    def logits(self, key: tuple, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Logits of the base model under `key` for these ids (computed once per key and ids)."""
        if not self.reuse:
            return logits(model, ids)
        key = (*key, tuple(ids.flatten().tolist()))
        if key not in self._logits:
            self._logits[key] = logits(model, ids)
        return self._logits[key]

    def checkpoint(self, key: tuple, model: torch.nn.Module) -> Path:
        if key not in self._checkpoints:
            path = self.root / f"base-{len(self._checkpoints)}"
            model.save_pretrained(path)
            self._checkpoints[key] = path
        return self._checkpoints[key]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def dtype_kwarg() -> str:
    # transformers renamed `torch_dtype` to `dtype` in 4.56.
    spec = versions.parse_spec(">=4.56", "dtype_kwarg")
    return "dtype" if versions.satisfies("transformers", spec) else "torch_dtype"


def inputs(vocab_size: int, seed: int) -> torch.Tensor:
    """Two sequences of 12 tokens; the first starts with every trainable token row of any recipe, so
    those rows matter, and the same ids serve every case of a base model, whatever its workflow."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (2, 12), generator=gen)
    rows = [r for r in recipe_rows() if r < vocab_size][:12]
    if rows:
        ids[0, : len(rows)] = torch.tensor(rows)
    return ids


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits on `ids`, back on the CPU in float64 whatever device and precision it runs in."""
    where = next(model.parameters()).device
    with torch.no_grad():
        return effective.output_logits(effective.forward(model, ids.to(where))).to(torch.float64).cpu()


def measure_noise(
    run: CaseRun, model: torch.nn.Module, ids: torch.Tensor, measured: torch.Tensor | None = None
) -> None:
    """The case's noise floors: `model` in its own precision against the same weights in float64.

    The same weights, so the difference is the rounding of the case's precision alone (a float64 model
    has none: both floors are 0 there). A tolerance that scales with it grows with the precision, not
    with what the code under test did to the weights. `measured`: the model's logits, if already taken.
    """
    exact = _float64_twin(model)
    measured = logits(model, ids) if measured is None else measured
    run.put(contract.LOGITS_NOISE, float((measured - logits(exact, ids)).abs().max()))
    vocab = model.config.get_text_config().vocab_size
    rows, cols = effective.probe(model, vocab)
    exact_rows, exact_cols = effective.probe(exact, vocab)
    run.put(
        contract.PROBE_NOISE,
        float(max((rows - exact_rows).abs().max(), (cols - exact_cols).abs().max())),
    )


# A float64 copy per model measured: the shared reference models are measured once per case, and a deep
# copy of a module tree costs more than the forward passes it serves.
_TWINS: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()


def _float64_twin(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in float64 with its current weights: a deep copy the first time, then the same copy with
    the weights copied in (and cast) while the model keeps its shapes; buffers outside the state dict
    (rotary frequencies, embedding scales) come from the config and stay as first copied."""
    twin = _TWINS.get(model)
    state = model.state_dict()
    if twin is not None:
        held = twin.state_dict()
        if held.keys() == state.keys() and all(held[k].shape == v.shape for k, v in state.items()):
            twin.load_state_dict(state)
            return twin
    twin = copy.deepcopy(model).to(torch.float64)
    _TWINS[model] = twin
    return twin


def untied_flags(family: Family) -> TieFlags:
    return TieFlags(False, False if family.nested else None)


def reference_model(
    family: Family, knobs: dict, flags: TieFlags, seed: int, dtype: torch.dtype
) -> torch.nn.Module:
    """A model of `flags`'s config whose every parameter name holds a tensor of its own, whatever the
    config ties, so the reference's state dict sets each name independently."""
    model = family.build(knobs, flags, seed, dtype)
    seen: set[int] = set()
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        if id(param) in seen:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, torch.nn.Parameter(param.detach().clone()))
        seen.add(id(param))
    return model


def saved_flags(folder: Path, family: Family) -> TieFlags:
    """The tie flags a checkpoint's config.json carries, as written."""
    data = json.loads((folder / "config.json").read_text())
    top = data.get("tie_word_embeddings")
    text = (data.get("text_config") or {}).get("tie_word_embeddings") if family.nested else None
    if top is None or (family.nested and text is None):
        from transformers import AutoConfig

        # Left out of the file: the config class's default applies.
        return family.flags_of(AutoConfig.from_pretrained(folder))
    return TieFlags(bool(top), None if text is None else bool(text))


def execute(case: Case, steps: Callable[[CaseRun, Path], None], workspace: Workspace) -> CaseRun:
    """Run `steps(run, folder)` for one case; stops at the first failing step, never raises."""
    outcomes.reset_once_caches()
    run = CaseRun(case)
    folder = workspace.case_dir()
    try:
        steps(run, folder)
    except _Stop:
        pass
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # outside any step: the suite's own code broke; record it, go on
        run.failure = outcomes.failure("suite", len(run.capture.steps), exc)
        run.failure.outcome = outcomes.CRASHED
    finally:
        if workspace.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            run.kept = Path(shutil.move(str(folder), str(workspace.keep / folder.name)))
    return run


def runner(
    steps: Callable[[CaseRun, Recipe, torch.dtype, Workspace, Path], None],
) -> Callable[[Case, Recipe, torch.dtype, Workspace], CaseRun]:
    """A workflow's steps `(run, recipe, dtype, workspace, folder)` as an implementation's runner."""

    def run(case: Case, recipe: Recipe, dtype: torch.dtype, workspace: Workspace) -> CaseRun:
        return execute(case, lambda run, folder: steps(run, recipe, dtype, workspace, folder), workspace)

    return run


# How many rows resize_token_embeddings adds (a tokenizer's new special tokens, say).
RESIZE_BY = 8


@dataclass(frozen=True)
class Resized:
    """What resize_token_embeddings did to the rows a model had: probed matrices and tie, before and after."""

    before: tuple[torch.Tensor, torch.Tensor]
    after: tuple[torch.Tensor, torch.Tensor]  # the old rows only
    tied_before: bool
    tied_after: bool


def resize(run: CaseRun, model: torch.nn.Module, init: str) -> int:
    """resize_token_embeddings by RESIZE_BY rows with `init` ("mean" or "normal"); returns the new size."""
    with run.step("resize"):
        vocab = model.config.get_text_config().vocab_size
        before, tied_before = effective.probe(model, vocab), is_tied(model)
        torch.manual_seed(run.case.seed)  # the new rows are drawn from the global RNG
        model.resize_token_embeddings(vocab + RESIZE_BY, mean_resizing=init == "mean")
        rows, cols = effective.probe(model, vocab)
        run.put(contract.RESIZED, Resized(before, (rows, cols[:vocab]), tied_before, is_tied(model)))
        return vocab + RESIZE_BY


def merge_save_reload(
    run: CaseRun,
    model: torch.nn.Module,
    family: Family,
    folder: Path,
    ids: torch.Tensor,
    dtype: torch.dtype,
    merge: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> None:
    """merge_and_unload (or `merge`) -> save_pretrained -> from_pretrained, with every artifact the checks
    compare."""
    vocab = model.config.get_text_config().vocab_size
    with run.step("merge"):
        merged = merge(model) if merge else model.merge_and_unload()
        run.put(contract.MERGED_LOGITS, logits(merged, ids))
        matrices = effective.probe(merged, vocab)
        run.put(contract.GAP_MERGED, effective.gap(matrices))
        run.put(contract.SAVED_MATRICES, matrices)

    with run.step("save"):
        merged.save_pretrained(folder / "merged")
        read_checkpoint(run, folder / "merged", family)

    reload(run, folder / "merged", family, ids, dtype)


def read_checkpoint(run: CaseRun, folder: Path, family: Family) -> None:
    """What a saved checkpoint holds: its tensor names and the tie flags its config.json carries."""
    run.put(contract.CHECKPOINT_KEYS, checkpoint_keys(folder))
    run.put(contract.SAVED_FLAGS, saved_flags(folder, family))


def reload(run: CaseRun, folder: Path, family: Family, ids: torch.Tensor, dtype: torch.dtype) -> None:
    """from_pretrained of a merged checkpoint, with what the checks compare (this or another version's)."""
    with run.step("reload"):
        # A weight missing from the checkpoint is initialised from the global RNG: seed it here, so its
        # values do not depend on which cases ran before in this process (or on a standalone repro).
        torch.manual_seed(run.case.seed)
        reloaded, info = load_hf(folder, family, dtype, output_loading_info=True)
        reloaded.eval()
        run.put(contract.RELOADED_TIED, is_tied(reloaded))
        run.put(contract.MISSING_KEYS, sorted(info.get("missing_keys", [])))
        run.put(contract.RELOADED_LOGITS, logits(reloaded, ids))
        matrices = effective.probe(reloaded, reloaded.config.get_text_config().vocab_size)
        run.put(contract.GAP_FINAL, effective.gap(matrices))
        run.put(contract.RELOADED_MATRICES, matrices)


def load_kwargs(family: Family, dtype: torch.dtype) -> dict:
    """from_pretrained kwargs for a family at a dtype, onto the run's device (as GPU users load: with a
    device map, whose loading path places and ties weights its own way)."""
    placed = {} if device.current() == "cpu" else {"device_map": device.current()}
    return {dtype_kwarg(): dtype, **family.load_kwargs, **placed}


def load_hf(folder: Path, family: Family, dtype: torch.dtype, **extra: Any) -> Any:
    """transformers' `from_pretrained` of a checkpoint through the family's Auto class, as every workflow
    loads one: safetensors only, never a pickle (conformance.base.checkpoints)."""
    import transformers

    auto = getattr(transformers, family.auto_class)
    return auto.from_pretrained(folder, use_safetensors=True, **load_kwargs(family, dtype), **extra)


def is_tied(model: torch.nn.Module) -> bool:
    """Tied as the reference defines it: the head uses the storage of the embedding the forward uses."""
    return model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def recipe_rows() -> list[int]:
    from conformance.model import recipes

    book = recipes.load()
    # Rows counted from the end (new rows after a resize) are placed by `with_rows` once they are known.
    return sorted(
        {
            r
            for recipe in book.recipes.values()
            for rows in recipe.token_indices().values()
            for r in rows
            if r >= 0
        }
    )


def with_rows(ids: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The probe ids with the second sequence starting at `recipe`'s token rows (resolved: after a resize,
    the new ones), so the rows it trains reach the logits through the embedding as well as the head."""
    rows = sorted({r for found in recipe.token_indices().values() for r in found})[: ids.shape[1]]
    ids = ids.clone()
    ids[1, : len(rows)] = torch.tensor(rows)
    return ids


def checkpoint_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    keys: list[str] = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            keys.extend(handle.keys())
    return sorted(keys)
