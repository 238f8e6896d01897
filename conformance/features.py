"""Feature probes: what the installed libraries can do, asked of the libraries themselves.

A pull request's source build carries the version string of the release it follows (PEFT main said
0.18.2.dev0 while it already had 0.19's ensure_weight_tying for target_modules), so what runs is decided
by probes, never by version numbers: a keyword the config accepts, a class that imports, or one tiny
call on a tiny model (a 1-layer Llama with 64 tokens) that shows the wiring is there. A probe looks for
the feature's presence, not its correctness; correctness is what the checks judge, so a feature that
a change breaks still runs and fails there (and one whose wiring a change removes is lost coverage,
which the gate reports as a regression). Probes run once per process, quietly, with the global RNG,
warning filters, logging and torch's thread count restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from conformance import versions
from conformance.errors import UnknownName


@dataclass(frozen=True)
class Feature:
    name: str
    package: str  # the distribution the feature belongs to
    about: str
    probe: Callable[[], str | None]  # None where the feature is there, else why it is not


class _Absent(Exception):
    """The feature's API is not there (a probe's early exit)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import torch

    threads, disabled = torch.get_num_threads(), logging.root.manager.disable
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        logging.disable(logging.CRITICAL)
        # One thread: the probes' matmuls are tiny, and the run forks its workers after them, which is
        # only safe while no intra-op thread pool has been started.
        torch.set_num_threads(1)
        try:
            torch.manual_seed(0)
            yield
        finally:
            torch.set_num_threads(threads)
            logging.disable(disabled)


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
        raise _Absent(f"LoraConfig has no field {', '.join(unknown)}")
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


def imports(path: str) -> Callable[[], str | None]:
    """A NeMo Automodel object (module:attribute) that must import."""

    def probe() -> str | None:
        import importlib

        module, _, attribute = path.partition(":")
        try:
            getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            return f"no {path} ({type(exc).__name__}: {exc})"
        return None

    return probe


_NEMO = "nemo-automodel"
FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "trainable-tokens",
            "peft",
            "LoraConfig.trainable_token_indices",
            _field("trainable_token_indices"),
        ),
        Feature(
            "trainable-tokens-dict-lm-head",
            "peft",
            "trainable_token_indices in dict form naming lm_head",
            _tokens_dict_lm_head,
        ),
        Feature(
            "ewt-modules-to-save",
            "peft",
            "ensure_weight_tying for modules_to_save (PEFT PR #2803)",
            _field("ensure_weight_tying"),
        ),
        Feature(
            "ewt-target-modules",
            "peft",
            "ensure_weight_tying for target_modules (PEFT PR #2879)",
            _ewt_target_modules,
        ),
        Feature(
            "ewt-trainable-tokens",
            "peft",
            "ensure_weight_tying for trainable_token_indices (PEFT PR #2870)",
            _ewt_trainable_tokens,
        ),
        Feature(
            "nemo-lora",
            _NEMO,
            "NeMo LoRA on linear layers and its PEFT-format export",
            imports("nemo_automodel.components._peft.lora:apply_lora_to_linear_modules"),
        ),
        Feature(
            "nemo-tie-support",
            _NEMO,
            "model classes declare the tie_word_embeddings they build (TieSupport)",
            imports("nemo_automodel.components.models.common.tie_word_embeddings:TieSupport"),
        ),
    )
}


def register(feature: Feature) -> Feature:
    """Add a feature (an implementation's own, such as the model classes it has)."""
    FEATURES.setdefault(feature.name, feature)
    return FEATURES[feature.name]


def get(name: str, where: str = "") -> Feature:
    try:
        return FEATURES[name]
    except KeyError:
        raise UnknownName("feature", name, list(FEATURES), where) from None


@functools.cache
def missing(name: str) -> str | None:
    """Why the installed libraries lack feature `name`, or None where they have it (probed once)."""
    feature = get(name)
    have = versions.installed().get(feature.package)
    if have is None:
        return f"{feature.package} is not installed"
    try:
        with _quiet():
            why = feature.probe()
    except _Absent as exc:
        why = str(exc)
    except Exception as exc:  # the probe's call failed: the feature is not usable in this build
        first = (str(exc).splitlines() or [""])[0][:160]
        why = f"{type(exc).__name__}: {first}"
    return None if why is None else f"{why} ({feature.package} {have})"


def found() -> dict[str, list[str]]:
    """The features present, by package, for packages that are installed (probing each once)."""
    present: dict[str, list[str]] = {}
    for name, feature in FEATURES.items():
        if feature.package in versions.installed():
            present.setdefault(feature.package, [])
            if missing(name) is None:
                present[feature.package].append(name)
    return present
