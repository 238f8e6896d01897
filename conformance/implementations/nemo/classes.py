"""NVIDIA NeMo Automodel's own model classes (Gemma4 MoE, Llama, Qwen2, Qwen3, Qwen3.5, Qwen3-VL), its
checkpointer and its LoRA.

Imported lazily: `nemo_automodel` is optional and slow to import. Built directly from HF configs on CPU
(`NeMoAutoModelForCausalLM` needs CUDA and torchao), checkpoints through NeMo's Checkpointer without a
process group, LoRA through `apply_lora_to_linear_modules` and NeMo's PEFT-format adapter export.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pprint
from pathlib import Path
from typing import Any

import torch

from conformance.base import contract, device
from conformance.base.flags import TieFlags
from conformance.base.outcomes import REFUSED_BY_DESIGN, SUPPORTED
from conformance.implementations import native_workflow as native
from conformance.implementations.base import Implementation, Standalone
from conformance.implementations.native_workflow import Provider
from conformance.implementations.nemo import resume as nemo_resume
from conformance.model import effective, features, pipeline
from conformance.model.families import Family, Knobs
from conformance.model.pipeline import CaseRun, Workspace, logits
from conformance.model.recipes import Recipe

PACKAGE = "nemo-automodel"
# NeMo's LoRA exported in PEFT's format: judged by the adapter oracles, so its artifacts are the suite's own.
contract.declare(
    workflows=(
        contract.workflow(
            "lora-merge",
            "NeMo LoRA -> NeMo's PEFT-format export -> PeftModel -> merge -> save -> reload",
            *contract.NOISE,
            contract.BASE_LOGITS,
            contract.UNMERGED_LOGITS,
            contract.ADAPTER_LOGITS,
            contract.MERGED_LOGITS,
            contract.SAVED_MATRICES,
            *contract.RELOAD,
            standalone=False,
            tie_states=False,
        ),
    )
)
_MODELS = "nemo_automodel.components.models"
CLASSES = {
    "gemma4-moe": f"{_MODELS}.gemma4_moe.model:Gemma4ForConditionalGeneration",
    "llama": f"{_MODELS}.llama.model:LlamaForCausalLM",
    "qwen2": f"{_MODELS}.qwen2.model:Qwen2ForCausalLM",
    "qwen3": f"{_MODELS}.qwen3.model:Qwen3ForCausalLM",
    "qwen3.5": f"{_MODELS}.qwen3_5.model:Qwen3_5ForCausalLM",
    "qwen3.5-vl": f"{_MODELS}.qwen3_5.model:Qwen3_5ForConditionalGeneration",
    # Not mistral3: NeMo's Mistral3 VLM class claims ministral3 text backbones only (its resolver returns
    # none for the family's mistral one, and the auto class builds HF's class there).
    "ministral3": f"{_MODELS}.mistral3_vlm.model:Mistral3FP8VLMForConditionalGeneration",
    "qwen3-vl": f"{_MODELS}.qwen3_vl.model:Qwen3VLForConditionalGeneration",
}
# Plain-torch kernels everywhere: the CPU reference path, and what the HF model computes too.
_BACKEND = {
    "linear": "torch",
    "attn": "sdpa",
    "rms_norm": "torch",
    "experts": "torch",
    "dispatcher": "torch",
    "fake_balanced_gate": False,
    "enable_hf_state_dict_adapter": True,
    "rope_fusion": False,
}


@functools.cache
def model_class(family: str) -> type:
    module, _, name = CLASSES[family].partition(":")
    # NeMo wraps its expert activation in torch.compile: on CPU that costs 6-14 s per new shape and
    # dtype and changes no value, so dynamo is switched off for the whole run.
    torch._dynamo.config.disable = True
    return getattr(importlib.import_module(module), name)


# One feature per model class, probed by importing it: a source build says which classes it has.
for _family, _path in CLASSES.items():
    features.register(
        features.Feature(f"nemo-{_family}", PACKAGE, f"NeMo's own {_family} class", features.imports(_path))
    )


def unavailable(family: Family) -> str | None:
    if family.name not in CLASSES:
        return f"{PACKAGE} has no {family.name} class"
    return features.missing(f"nemo-{family.name}")


def support(family: Family, flags: TieFlags) -> str:
    """The class's declared TieSupport (from 0.6): TIED_ONLY refuses untied configs, UNTIED_ONLY tied ones."""
    return declared_support(model_class(family.name), family, flags)


def declared_support(cls: type, family: Family, flags: TieFlags) -> str:
    """What a NeMo class declares (`tie_word_embeddings_support`) for a family's flags."""
    declared = getattr(getattr(cls, "tie_word_embeddings_support", None), "name", "BOTH")
    tied = family.expected_tied(flags)
    if (declared == "TIED_ONLY" and not tied) or (declared == "UNTIED_ONLY" and tied):
        return REFUSED_BY_DESIGN
    return SUPPORTED


def _backend() -> Any:
    from nemo_automodel.components.models.common import BackendConfig

    known = {f.name for f in dataclasses.fields(BackendConfig)}
    return BackendConfig(**{k: v for k, v in _BACKEND.items() if k in known})


def _forget_dcp_plans() -> None:
    """Drop DCP's save plans, which NeMo asks it to cache per planner class for the whole process: a
    training run saves one model again and again, the suite saves many, and a plan cached for another
    model's tensors makes the next save fail (measured on 0.5)."""
    from torch.distributed.checkpoint.planner import SavePlanner

    for name in dir(SavePlanner):
        if name.startswith("_cached_") and isinstance(getattr(SavePlanner, name), dict):
            getattr(SavePlanner, name).clear()


def _checkpointer(folder: Path, **options: Any) -> Any:
    """NeMo's Checkpointer for one process (no process group), on every release's config signature."""
    _forget_dcp_plans()
    from nemo_automodel.components.checkpoint.checkpointing import Checkpointer

    try:
        from nemo_automodel.components.checkpoint.config import CheckpointingConfig
    except ImportError:  # 0.4 keeps it beside the Checkpointer
        from nemo_automodel.components.checkpoint.checkpointing import CheckpointingConfig
    # 0.4 requires fields that later releases default; pass only what this release accepts.
    wanted = {
        "enabled": True,
        "checkpoint_dir": str(folder),
        "model_save_format": "safetensors",
        "model_cache_dir": str(folder / "cache"),
        "model_repo_id": None,
        "save_consolidated": False,
        "is_peft": False,
        **options,
    }
    accepted = set(inspect.signature(CheckpointingConfig).parameters)
    config = CheckpointingConfig(**{k: v for k, v in wanted.items() if k in accepted})
    return Checkpointer(config, dp_rank=0, tp_rank=0, pp_rank=0)


def load_base_model(model: torch.nn.Module, folder: Path) -> None:
    """An HF-format checkpoint into a NeMo model through NeMo's Checkpointer (as its recipes resume)."""
    _checkpointer(folder.parent, save_consolidated=False).load_base_model(
        model,
        device=torch.device(device.current()),
        root_dir=str(folder),
        model_name=str(folder),
        load_base_model=True,
    )


def name_dtype(config: Any, dtype: torch.dtype) -> None:
    """The dtype in the config and its text config: NeMo's classes build experts, router, weight adapter
    and buffers (Gemma's embedding scale) in the config's dtype, bf16 where it is unset."""
    for part in {id(c): c for c in (config, config.get_text_config())}.values():
        part.dtype = dtype


class NeMoProvider:
    def build(
        self, family: Family, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype
    ) -> torch.nn.Module:
        torch.manual_seed(seed)
        return self._from_config(family, family.config(knobs, flags), dtype)

    def _from_config(self, family: Family, config: Any, dtype: torch.dtype) -> torch.nn.Module:
        name_dtype(config, dtype)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            cls = model_class(family.name)
            # Subclasses of HF's classes (Qwen3-VL) take no backend: NeMo passes one only to constructors
            # that name it (model_init._filter_kwargs_for_init).
            named = "backend" in inspect.signature(cls.__init__).parameters
            model = cls(config, **({"backend": _backend()} if named else {}))
        finally:
            torch.set_default_dtype(previous)
        return device.place(model.to(dtype).eval())

    def load_hf_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        adapter = getattr(model, "state_dict_adapter", None)
        model.load_state_dict(adapter.from_hf(dict(state)) if adapter is not None else state, strict=True)

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        _checkpointer(folder, save_consolidated=True).save_model(model, str(folder / "step"))
        return folder / "step" / "model" / "consolidated"

    def load(self, family: Family, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoConfig

        model = self._from_config(family, AutoConfig.from_pretrained(folder), dtype)
        load_base_model(model, folder)
        return model

    def tie_weights(self, model: torch.nn.Module) -> None:
        model.tie_weights()


PROVIDER: Provider = NeMoProvider()


def _lora_steps(run: CaseRun, recipe: Recipe, dtype: torch.dtype, workspace: Workspace, folder: Path) -> None:
    """NeMo LoRA on NeMo's model → NeMo's PEFT-format export → HF PeftModel → merge → save → reload."""
    from nemo_automodel.components._peft.lora import PeftConfig, apply_lora_to_linear_modules
    from peft import PeftModel

    case, family = run.case, run.case.family_def()
    key = (case.family, case.knobs, case.flags, case.seed, str(dtype))

    with run.step("reference"):
        hf = workspace.model(key, lambda: family.build(case.config, case.flags, case.seed, dtype))
        ids = pipeline.inputs(hf.config.get_text_config().vocab_size, case.seed)
        run.put(contract.BASE_LOGITS, workspace.logits(key, hf, ids))
        hf_dir = workspace.checkpoint(key, hf)

    with run.step("build"):
        model = PROVIDER.build(family, case.config, case.flags, case.seed, dtype)
        PROVIDER.load_hf_weights(model, hf.state_dict())

    with run.step("wrap"):
        torch.manual_seed(case.seed)
        peft_config = PeftConfig(**recipe.adapter_kwargs())
        apply_lora_to_linear_modules(model, peft_config)

    with run.step("train"):
        effective.fill_adapter(model, case.seed)
        effective.train_step(model, ids)
        run.put(contract.UNMERGED_LOGITS, logits(model, ids))

    with run.step("save-adapter"):
        _checkpointer(folder, is_peft=True, save_consolidated=False).save_model(
            model, str(folder / "lora"), peft_config=peft_config
        )

    with run.step("load-adapter"):
        fresh = pipeline.load_hf(hf_dir, family, dtype)
        loaded = PeftModel.from_pretrained(fresh, folder / "lora" / "model").eval()
        loaded_logits = logits(loaded, ids)
        run.put(contract.ADAPTER_LOGITS, loaded_logits)
        # HF's model of the adapter: the weights every later check compares in the case's precision.
        pipeline.measure_noise(run, loaded, ids, loaded_logits)

    pipeline.merge_save_reload(run, loaded, family, folder, ids, dtype)


def _script(case: Any, recipe: Recipe) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """NeMo's class and kernels in a standalone script (its template: repro.py.j2 beside this module)."""
    module, _, name = CLASSES[case.family].partition(":")
    return {(module, f"{name} as NeMoModel")}, {
        "backend": pprint.pformat(_BACKEND, sort_dicts=False),
        "impl_class": "NeMoModel",
    }


IMPLEMENTATION = Implementation(
    name="nemo-automodel",
    package=PACKAGE,
    about="NeMo Automodel's own model classes (Gemma4 MoE, Llama, Qwen2/3/3.5, Qwen3-VL), checkpointer, LoRA",
    runners={
        "native": native.runner(PROVIDER),
        "lora-merge": pipeline.runner(_lora_steps),
        "resume": nemo_resume.runner(PROVIDER, _checkpointer),
    },
    order=2,
    families=tuple(CLASSES),
    family_unavailable=unavailable,
    support=support,
    elsewhere="`tox -e nemo` runs it, with its pinned transformers, into reports/nemo/index.html",
    test_marker="nemo",
    standalone=Standalone("repro.py.j2", "nemo_automodel", _script, Path(__file__).parent),
)
