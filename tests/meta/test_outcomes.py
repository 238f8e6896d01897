"""Outcome classification: refusals vs crashes, warning capture per step, warned vs silent divergence."""

import logging
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conformance.base import outcomes
from conformance.base.flags import TieFlags
from conformance.model import families


def _tied_llama():
    family = families.get("llama")
    return family.build(family.canonical, TieFlags(True), 0, torch.float32)


def test_a_library_value_error_is_a_refusal():
    config = LoraConfig(
        target_modules=["q_proj"],
        ensure_weight_tying=True,
        trainable_token_indices={"embed_tokens": [1, 2], "lm_head": [3]},
    )
    with pytest.raises(ValueError) as info:
        get_peft_model(_tied_llama(), config)
    assert outcomes.classify_exception(info.value) == outcomes.REFUSED


def test_an_error_raised_outside_the_libraries_is_a_crash():
    try:
        raise ValueError("raised by the suite itself")
    except ValueError as exc:
        assert outcomes.classify_exception(exc) == outcomes.CRASHED


def test_the_suites_own_code_is_never_a_library_even_in_a_folder_named_after_one():
    # An implementation's package is named after the library it drives (implementations/<package>/).
    # Through a module: under an editable install `conformance` itself may resolve to a namespace.
    where = Path(outcomes.__file__).parents[1] / "implementations" / "transformers" / "__init__.py"
    try:
        exec(compile("raise ValueError('raised by the suite itself')", str(where), "exec"))
    except ValueError as exc:
        assert outcomes.classify_exception(exc) == outcomes.CRASHED


def test_an_unexpected_exception_type_from_a_library_is_a_crash():
    model = _tied_llama()
    with pytest.raises(RuntimeError) as info:
        model(input_ids=torch.zeros(1, 3, 5, 7, dtype=torch.long))  # wrong rank: torch breaks, nobody refused
    assert outcomes.classify_exception(info.value) == outcomes.CRASHED


@pytest.mark.parametrize(
    ("message", "about_tying"),
    [
        ("Model has `tie_word_embeddings=True` and a tied layer is part of the adapter", True),
        ("Input and output embeddings are no longer tied after merging.", True),
        ("You have requested `ensure_weight_tying`, but no tied modules were found", True),
        ("lm_head.weight | MISSING", False),
        ("`is_gradient_checkpointing` is deprecated", False),
    ],
)
def test_tie_warnings_are_recognised(message, about_tying):
    assert outcomes.is_tie_warning(message) is about_tying


def test_capture_records_python_warnings_and_library_logs_per_step():
    capture = outcomes.Capture()
    with capture.step("first"):
        warnings.warn("weights are no longer tied", UserWarning, stacklevel=1)
    with capture.step("second"):
        logging.getLogger("transformers.modeling_utils").warning("tie_word_embeddings ignored")
        logging.getLogger("transformers").info("not a warning: below WARNING")
    assert capture.tie_warnings(up_to=0) == ["weights are no longer tied"]
    assert capture.tie_warnings(up_to=1) == ["weights are no longer tied", "tie_word_embeddings ignored"]


def test_divergence_is_warned_only_when_the_warning_came_in_time():
    capture = outcomes.Capture()
    with capture.step("merge"):
        pass
    with capture.step("save"):
        warnings.warn("tied weights", UserWarning, stacklevel=1)
    assert outcomes.diverged(capture, horizon=0) == outcomes.SILENT
    assert outcomes.diverged(capture, horizon=1) == outcomes.WARNED


def test_once_only_library_warnings_are_seen_by_every_case():
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.conformance_probe")
    seen = []
    for _ in range(2):
        outcomes.reset_once_caches()
        capture = outcomes.Capture()
        with capture.step("load"):
            logger.warning_once("weights will be tied once")
        seen.append(capture.tie_warnings(0))
    assert seen == [["weights will be tied once"], ["weights will be tied once"]]
