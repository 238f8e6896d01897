"""NVIDIA NeMo Automodel's production path: `NeMoAutoModelForCausalLM.from_config` / `from_pretrained`.

What NeMo's users call. The auto class picks NeMo's own class where its registry has the config's
architecture (Llama, Qwen2, Gemma4's MoE class, ...) and HF's class otherwise, builds on the meta device,
initialises or loads through NeMo's Checkpointer and re-ties through its own helpers; every step the
`native` workflow checks against HF. It calls `torch.cuda.current_device()` unconditionally, so it runs
in the CUDA leg (`--device cuda`) only; on a CPU run its cases are skipped with that reason.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from conformance import device, features
from conformance.families import Family, Knobs
from conformance.flags import TieFlags
from conformance.implementations import native_workflow as native
from conformance.implementations import nemo
from conformance.implementations.base import SUPPORTED, Implementation

AUTO_CLASS = "nemo_automodel._transformers.auto_model:NeMoAutoModelForCausalLM"
features.register(
    features.Feature(
        "nemo-auto-class",
        nemo.PACKAGE,
        "NeMoAutoModelForCausalLM (its import needs torchao)",
        features.imports(AUTO_CLASS),
    )
)


@functools.cache
def auto_class() -> Any:
    module, _, name = AUTO_CLASS.partition(":")
    import importlib

    torch._dynamo.config.disable = True  # as for NeMo's own classes (conformance.implementations.nemo)
    return getattr(importlib.import_module(module), name)


def _nemo_class(config: Any) -> type | None:
    """NeMo's own class the auto class builds for this config, or None where it builds HF's."""
    from nemo_automodel._transformers.model_init import _resolve_custom_model_cls_for_config

    return _resolve_custom_model_cls_for_config(config)


def _configured(family: Family, knobs: Knobs, flags: TieFlags) -> Any:
    config = family.config(knobs, flags)
    # The registry looks at architectures[0]; HF configs built in code leave it empty.
    config.architectures = [family.model_class]
    return config


def _options(family: Family, config: Any, dtype: torch.dtype) -> dict[str, Any]:
    # Plain-torch kernels and no kernel patching: what HF computes too (on a GPU with TransformerEngine
    # NeMo's defaults would pick TE layers and DeepEP). HF's classes take the family's runtime kwargs
    # instead of a backend.
    options: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": "sdpa",
        "use_liger_kernel": False,
        "use_sdpa_patching": False,
    }
    if _nemo_class(config) is not None:
        options["backend"] = nemo._backend()
    else:
        options.update(family.load_kwargs)
    return options


class AutoProvider:
    """The auto class for build and load; NeMo's Checkpointer to save (as NeMoProvider)."""

    def build(
        self, family: Family, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype
    ) -> torch.nn.Module:
        torch.manual_seed(seed)
        config = _configured(family, knobs, flags)
        model = auto_class().from_config(config, **_options(family, config, dtype))
        return device.place(model).eval()

    def load_hf_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        nemo.PROVIDER.load_hf_weights(model, state)

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        return nemo.PROVIDER.save(model, folder)

    def load(self, family: Family, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        model = auto_class().from_pretrained(str(folder), **_options(family, config, dtype))
        return device.place(model).eval()

    def tie_weights(self, model: torch.nn.Module) -> None:
        model.tie_weights()


def unavailable(family: Family) -> str | None:
    return features.missing("nemo-auto-class")


def support(family: Family, flags: TieFlags) -> str:
    """What the class the auto class picks declares (NeMo's TieSupport); HF's classes build every flag."""
    cls = _nemo_class(_configured(family, family.canonical, flags))
    return SUPPORTED if cls is None else nemo.declared_support(cls, family, flags)


IMPLEMENTATION = Implementation(
    name="nemo-auto",
    package=nemo.PACKAGE,
    about="NeMo Automodel's NeMoAutoModelForCausalLM (from_config, from_pretrained): its production path",
    runners={"native": native.runner(AutoProvider())},
    order=2,
    recipes_of=(nemo.IMPLEMENTATION.name,),
    family_unavailable=unavailable,
    support=support,
    devices=("cuda",),
    elsewhere="the CUDA leg runs it (`tox -e gpu` with nemo-automodel and torchao installed)",
    test_marker="nemo",
)
