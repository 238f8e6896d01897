"""Standalone repro scripts run on their own and reproduce the suite's own verdicts and numbers.

Each script is written by `repro --standalone`, run in a fresh interpreter that is given no path to the
suite, and its per-check lines are compared with the suite's records of the same case: the same checks,
the same holds/diverges, the same max |Δ| to three digits, and exit 1 exactly where one diverges.
"""

import os
import re
import subprocess
import sys

import pytest

from conformance.base.outcomes import PASS
from conformance.base.versions import installed
from conformance.cli import EXIT_BAD_INPUT, main
from conformance.engine.core import parse_case
from conformance.engine.testing import engine

CASES = {
    # diverges: LoRA on a tied embedding merges into the shared matrix (an expected limitation)
    "peft-llama-tT-lora_embed-merge@v128.h32.i64.L2.H2.K1.s0": 1,
    # passes: the control recipe
    "peft-llama-tF-lora_attn-merge@v128.h32.i64.L2.H2.K1.s0": 0,
    # nested flags, ensure_weight_tying (tie-preserved at every stage), adapter save/load
    "peft-gemma4-tT-xF-lora_embed_head_ewt-adapter@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.s0": 0,
    # the documented workaround on a scaled embedding, with trainable tokens
    "peft-gemma-tT-tokens_embed_head_same-untie-first@v128.h32.i64.L2.H2.K1.d16.s0": 0,
    # diverges silently: trainable tokens with different rows on the tied layers
    "peft-gemma-tT-tokens_embed_head_diff-merge@v128.h32.i64.L2.H2.K1.d16.s0": 1,
    # transformers' own classes against the rule, MoE in float64
    "hf-gemma4-moe-tF-xT-no_adapter-native@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.E4.k2.m32.s0": 0,
    # half precision, tolerances from the case's noise floors: ensure_weight_tying's LoRA tie cut by
    # PEFT's autocast_adapter_dtype (diverges), the same without autocast (holds), HF's own bf16 classes
    "peft-gemma-tT-lora_head_ewt-adapter-bf16@v128.h32.i64.L2.H2.K1.d16.s0": 1,
    "peft-gemma4-tT-xF-lora_embed_head_ewt-adapter-bf16-noautocast@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.s0": 0,
    "hf-gemma4-moe-tF-xT-no_adapter-native-fp16@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.E4.k4.m32.s0": 0,
    # tie states: transformers drops an aliased head on save (diverges); a head apart survives PEFT's merge
    "hf-llama-tF-alias-no_adapter-native@v128.h32.i64.L2.H2.K1.s0": 1,
    "peft-gemma-tT-apart-mts_head-merge@v128.h32.i64.L2.H2.K1.d16.s0": 0,
}
# NeMo's own classes, its checkpointer and its state-dict adapter (tox -e nemo).
NEMO_CASES = {
    "nemo-automodel-gemma4-moe-tT-xF-no_adapter-native@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.E4.k2.m32.s0": 0,
    "nemo-automodel-llama-tF-no_adapter-native@v128.h32.i64.L2.H2.K1.s0": 0,
}
# mergekit's passthrough of base+LoRA and its linear merge, on the PEFT script's adapter (tox -e mergekit).
MERGEKIT_CASES = {
    # passes: ensure_weight_tying's modules_to_save, its tie checked at every stage
    "mergekit-llama-tT-mts_embed_head_ewt-lora-passthrough@v128.h32.i64.L2.H2.K1.s0": 0,
    # diverges silently (expected): gemma.json has no lm_head, an untied Gemma's head loads random
    "mergekit-gemma-tF-lora_attn-lora-passthrough@v128.h32.i64.L2.H2.K1.d16.s0": 1,
    # passes: the weighted sum of an untied base's fine-tunes, one with its own trained head
    "mergekit-llama-tF-mts_head-linear-merge@v128.h32.i64.L2.H2.K1.s0": 0,
    # diverges (expected): the weighted heads under the tied base's config; in bfloat16, tolerances from
    # the weighted sum's noise floor
    "mergekit-llama-tT-lora_head-linear-merge-bf16@v128.h32.i64.L2.H2.K1.s0": 1,
}
_LINE = re.compile(r"^(?P<check>[a-z0-9-]+)\s+(?P<verdict>holds|DIVERGES)\s+observed: (?P<observed>.*)$")


def run_script(case_id: str, folder) -> tuple[int, str, str]:
    from conformance.engine import standalone

    path = folder / "repro.py"
    path.write_text(standalone.script(parse_case(case_id)))
    # No PYTHONPATH and another working directory: the script must not reach the suite.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONFORMANCE_CASES")}
    done = subprocess.run(
        [sys.executable, str(path)], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout, path.read_text()


def assert_reproduces(case_id: str, expected_code: int, folder) -> None:
    code, out, source = run_script(case_id, folder)
    records = {r.check: r for r in engine().records(parse_case(case_id))}
    seen = {m["check"]: m for m in map(_LINE.match, out.splitlines()) if m}
    assert set(seen) == set(records), f"script checks {sorted(seen)} vs suite {sorted(records)}\n{out}"
    for check, record in records.items():
        holds = seen[check]["verdict"] == "holds"
        assert holds == (record.outcome == PASS), (
            f"{check}: script {seen[check]['verdict']}, suite {record.outcome}"
        )
        if record.max_abs_diff is not None:
            observed = seen[check]["observed"]
            numbers = [float(n) for n in re.findall(r"(?<![\w.])(\d[\d.]*(?:e[-+]?\d+)?|inf|nan)", observed)]
            # Float32 noise (a last bit, ~1e-7) may differ with the thread count; real gaps agree to 3 digits.
            assert any(n == pytest.approx(record.max_abs_diff, rel=5e-3, abs=1e-6) for n in numbers), (
                f"{check}: suite max |Δ| {record.max_abs_diff}, script says {observed!r}"
            )
    assert code == expected_code == (0 if all(r.outcome == PASS for r in records.values()) else 1), out
    # What it may import: torch, transformers, the package under test and the standard library.
    imported = set(re.findall(r"^\s*(?:from|import) ([a-z_]+)", source, re.MULTILINE))
    allowed = {"copy", "json", "os", "sys", "tempfile", "zlib", "pathlib", "dataclasses", "inspect"}
    under_test = {"torch", "transformers", "peft", "safetensors", "nemo_automodel", "mergekit"}
    assert imported <= allowed | under_test, imported
    assert "conformance" not in source.split('"""', 2)[2]


@pytest.mark.parametrize("case_id", list(CASES))
def test_script_reproduces_the_suite(tmp_path, case_id):
    assert_reproduces(case_id, CASES[case_id], tmp_path)


@pytest.mark.nemo
@pytest.mark.parametrize("case_id", list(NEMO_CASES))
def test_nemo_script_reproduces_the_suite(tmp_path, case_id):
    if "nemo-automodel" not in installed():
        pytest.skip("nemo-automodel is not installed (tox -e nemo runs this)")
    assert_reproduces(case_id, NEMO_CASES[case_id], tmp_path)


@pytest.mark.mergekit
@pytest.mark.parametrize("case_id", list(MERGEKIT_CASES))
def test_mergekit_script_reproduces_the_suite(tmp_path, case_id):
    if "mergekit" not in installed():
        pytest.skip("mergekit is not installed (tox -e mergekit runs this)")
    assert_reproduces(case_id, MERGEKIT_CASES[case_id], tmp_path)


def test_a_workflow_without_a_standalone_script_is_one_line(capsys):
    case_id = "nemo-automodel-llama-tT-nemo_lora_proj-lora-merge@v128.h32.i64.L2.H2.K1.s0"
    assert main(["repro", case_id, "--standalone"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no standalone script" in err and "python -m conformance repro" in err
