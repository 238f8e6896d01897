"""NVIDIA NeMo Automodel's production path: `NeMoAutoModelForCausalLM.from_config` / `from_pretrained`.

What NeMo's users call. The auto class picks NeMo's own class where its registry has the config's
architecture (Llama, Qwen2, Gemma4's MoE class, ...) and HF's class otherwise, initialises or loads it
(through HF's from_pretrained, or NeMo's Checkpointer for its own classes) and re-ties through its own
helpers (`_tie_weights_nemo`); every step the `native` workflow checks against HF. The process first
gets the compatibility patches NeMo's fine-tuning recipes apply (among them the conversion of list-form
`_tied_weights_keys` of remote code written for transformers 4.x).

On CUDA it runs the auto class whole. Its `from_pretrained` calls `torch.cuda.current_device()`
unconditionally, so on CPU it runs what NeMo's own CPU tests drive: `_init_model`, the model init the
auto class calls (custom class or HF class, then NeMo's re-tie), and NeMo's Checkpointer to load the
weights of its own classes, as the auto class's infrastructure step does.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import torch

from conformance.base import device
from conformance.base.flags import TieFlags
from conformance.implementations import native_workflow as native
from conformance.implementations.base import SUPPORTED, Implementation
from conformance.implementations.nemo import classes as nemo
from conformance.implementations.nemo import resume as nemo_resume
from conformance.model import features
from conformance.model.families import Family, Knobs

AUTO_MODULE = "nemo_automodel._transformers.auto_model"
AUTO_CLASS = f"{AUTO_MODULE}:NeMoAutoModelForCausalLM"
features.register(
    features.Feature(
        "nemo-auto-class",
        nemo.PACKAGE,
        "NeMoAutoModelForCausalLM (its import needs torchao)",
        features.imports(AUTO_CLASS),
    )
)


@functools.cache
def auto_class(hf_auto: str) -> Any:
    """NeMo's auto class for a family's HF one (NeMoAutoModelForImageTextToText for a VL wrapper...)."""
    torch._dynamo.config.disable = True  # as for NeMo's own classes (conformance.implementations.nemo)
    return getattr(importlib.import_module(AUTO_MODULE), f"NeMo{hf_auto}")


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


@functools.cache
def _recipe_patches() -> None:
    """What NeMo's fine-tuning recipes patch into transformers before they build a model, once a process."""
    from nemo_automodel._transformers.utils import apply_cache_compatibility_patches

    apply_cache_compatibility_patches()


def _init_model(source: Any, family: Family, config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """NeMo's model init as the auto class calls it (CPU): a config or a checkpoint folder in, a model out."""
    from nemo_automodel._transformers import model_init

    options = _options(family, config, dtype)
    for name in ("dtype", "attn_implementation", "use_liger_kernel", "use_sdpa_patching"):
        options.pop(name)
    cls = auto_class(family.auto_class)
    custom, model = model_init._init_model(cls, source, "sdpa", dtype, None, False, **options)
    # NeMo's own classes come out in their config's dtype (bf16 where unset); the auto class casts them to
    # the requested one before its Checkpointer loads the weights into them, as here.
    model = model.to(dtype)
    if custom and isinstance(source, str):
        nemo.load_base_model(model, Path(source))
    return model


class AutoProvider:
    """The auto class for build and load; NeMo's Checkpointer to save (as NeMoProvider)."""

    def build(
        self, family: Family, knobs: Knobs, flags: TieFlags, seed: int, dtype: torch.dtype
    ) -> torch.nn.Module:
        torch.manual_seed(seed)
        config = _configured(family, knobs, flags)
        if device.current() == "cpu":
            # The auto class builds NeMo's classes on the meta device and computes their buffers in the
            # requested dtype when it materialises them; built eagerly here, the config must name it.
            nemo.name_dtype(config, dtype)
            return _init_model(config, family, config, dtype).eval()
        model = auto_class(family.auto_class).from_config(config, **_options(family, config, dtype))
        return device.place(model).eval()

    def load_hf_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        nemo.PROVIDER.load_hf_weights(model, state)

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        return nemo.PROVIDER.save(model, folder)

    def load(self, family: Family, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder, **family.load_kwargs)
        if device.current() == "cpu":
            return _init_model(str(folder), family, config, dtype).eval()
        model = auto_class(family.auto_class).from_pretrained(str(folder), **_options(family, config, dtype))
        return device.place(model).eval()

    def tie_weights(self, model: torch.nn.Module) -> None:
        model.tie_weights()


PROVIDER = AutoProvider()


def _native(case: Any, recipe: Any, dtype: torch.dtype, workspace: Any) -> Any:
    _recipe_patches()  # before the HF reference and the provider's models: the process is NeMo's throughout
    return native.run(case, PROVIDER, dtype, workspace)


_RESUME = nemo_resume.runner(PROVIDER, nemo._checkpointer)


def _resume(case: Any, recipe: Any, dtype: torch.dtype, workspace: Any) -> Any:
    _recipe_patches()
    return _RESUME(case, recipe, dtype, workspace)


def unavailable(family: Family) -> str | None:
    missing = features.missing("nemo-auto-class")
    if missing is None and not hasattr(importlib.import_module(AUTO_MODULE), f"NeMo{family.auto_class}"):
        return f"{nemo.PACKAGE} has no NeMo{family.auto_class}"
    return missing


def support(family: Family, flags: TieFlags) -> str:
    """What the class the auto class picks declares (NeMo's TieSupport); HF's classes build every flag."""
    cls = _nemo_class(_configured(family, family.canonical, flags))
    return SUPPORTED if cls is None else nemo.declared_support(cls, family, flags)


IMPLEMENTATION = Implementation(
    name="nemo-auto",
    package=nemo.PACKAGE,
    about="NeMo Automodel's NeMoAutoModelForCausalLM (from_config, from_pretrained): its production path",
    runners={"native": _native, "resume": _resume},
    order=2,
    recipes_of=(nemo.IMPLEMENTATION.name,),
    family_unavailable=unavailable,
    support=support,
    converts_legacy_remote_code=True,
    elsewhere="`tox -e nemo` runs it on CPU (its model init); the CUDA leg runs the whole auto class",
    test_marker="nemo",
)
