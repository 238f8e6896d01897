"""The native checks' judgement on hand-made artifacts: each problem it names must fail the check."""

import pytest
import torch

from conformance.base.flags import TieFlags
from conformance.model import families
from conformance.model.oracles import CHECKS, CheckContext

LLAMA = families.get("llama")
LOGITS = torch.zeros(1, 2, 3, dtype=torch.float64)


def _context(tied: bool, support: str = "supported") -> CheckContext:
    return CheckContext(LLAMA, "native", tied, False, support)


@pytest.mark.parametrize(
    ("hf", "impl", "rule", "support", "passes", "words"),
    [
        (True, True, True, "supported", True, "tied, as HF"),
        (True, False, True, "supported", False, "the model is untied"),
        (False, False, True, "supported", False, "the HF model is untied but the HF rule"),
        (False, False, False, "refused-by-design", False, "declared refused-by-design"),
    ],
)
def test_tie_status(hf, impl, rule, support, passes, words):
    got = CHECKS["tie-status"].evaluate({"hf_tied": hf, "impl_tied": impl}, None, _context(rule, support))
    assert got.passed is passes and words in got.detail


def _roundtrip(**changes):
    art = {
        "checkpoint_keys": ["lm_head.weight", "model.embed_tokens.weight"],
        "saved_flags": TieFlags(False),
        "hf_reload_tied": False,
        "hf_reload_logits": LOGITS,
        "reload_tied": False,
        "reload_logits": LOGITS,
        "saved_logits": LOGITS,
    }
    return CHECKS["checkpoint-roundtrip"].evaluate({**art, **changes}, 1e-4, _context(False))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"checkpoint_keys": ["model.embed_tokens.weight"]}, "is not in the checkpoint of a untied model"),
        ({"reload_tied": True}, "own reload is tied"),
        ({"hf_reload_logits": LOGITS + 1}, "HF reload: max |Δlogits| 1"),
        ({"saved_flags": TieFlags(True)}, "is in the checkpoint of a tied model"),
    ],
)
def test_checkpoint_roundtrip_names_each_problem(changes, words):
    assert _roundtrip().passed
    got = _roundtrip(**changes)
    assert not got.passed and words in got.detail


def test_retie_and_hf_checkpoint_load():
    retie = CHECKS["retie"]
    assert retie.evaluate({"retie": (True, True)}, None, _context(True)).passed
    assert "left lm_head apart" in retie.evaluate({"retie": (False, True)}, None, _context(True)).detail
    assert "not seen by lm_head" in retie.evaluate({"retie": (True, False)}, None, _context(True)).detail
    assert retie.not_applicable(_context(False)) is not None
    load = CHECKS["hf-checkpoint-load"]
    art = {"hf_checkpoint_tied": True, "hf_checkpoint_logits": LOGITS, "hf_logits": LOGITS, "hf_tied": True}
    assert load.evaluate(art, 1e-4, _context(True)).passed
    assert not load.evaluate({**art, "hf_checkpoint_tied": False}, 1e-4, _context(True)).passed


def test_weights_kept_names_the_layer_and_the_load():
    kept = CHECKS["weights-kept"]
    saved = (torch.zeros(4, 2), torch.ones(4, 2))
    art = {"saved_matrices": saved, "reloaded_matrices": saved}
    assert kept.evaluate(art, 1e-5, _context(True)).passed
    lost = kept.evaluate({**art, "reloaded_matrices": (saved[0], saved[1] * 0.5)}, 1e-5, _context(True))
    assert not lost.passed and "reload: head max |Δ| 0.5" in lost.detail and lost.max_abs_diff == 0.5
    own = kept.evaluate({**art, "own_reload_matrices": (saved[0] + 1, saved[1])}, 1e-5, _context(True))
    assert not own.passed and "own reload: embedding" in own.detail and "HF reload" not in own.detail


def test_resize_keeps_weights_names_the_overwritten_layer_and_the_tie():
    from conformance.model.pipeline import Resized

    check = CHECKS["resize-keeps-weights"]
    rows, cols = torch.zeros(4, 2), torch.ones(4, 2)
    kept = Resized((rows, cols), (rows, cols), tied_before=False, tied_after=False)
    assert check.evaluate({"resized": kept}, 1e-5, _context(True)).passed
    retied = Resized((rows, cols), (rows, rows), tied_before=False, tied_after=True)
    got = check.evaluate({"resized": retied}, 1e-5, _context(True))
    assert not got.passed and got.max_abs_diff == 1.0
    assert "the head's old rows changed" in got.detail
    assert "untied before the resize and is tied after" in got.detail
