"""The precision axis: ids, the plan, noise-scaled tolerances, expectations and the pages that pair cells."""

from __future__ import annotations

import json

import pytest

from conformance.base import contract, precision
from conformance.base.errors import ConformanceError
from conformance.base.flags import TieFlags
from conformance.base.precision import Precision
from conformance.cli import EXIT_BAD_INPUT, main
from conformance.engine.core import Engine, Selection, parse_case, plan
from conformance.model import cases, families, oracles
from conformance.pages.report import row_label
from conformance.pages.timeline import cell_key

LLAMA = "v128.h32.i64.L2.H2.K1.s0"


@pytest.mark.parametrize(
    ("chosen", "suffix"),
    [
        (Precision(), ""),
        (Precision("bfloat16", True), "-bf16"),
        (Precision("bfloat16", False), "-bf16-noautocast"),
        (Precision("float16", False), "-fp16-noautocast"),
    ],
)
def test_ids_carry_the_precision_and_float32_ids_are_unchanged(chosen, suffix):
    llama = families.get("llama")
    case = cases.make("peft", llama, TieFlags(True), "lora_attn", "merge", llama.canonical, 0, chosen)
    assert case.case_id == f"peft-llama-tT-lora_attn-merge{suffix}@{LLAMA}"
    assert parse_case(case.case_id) == case


def test_an_implementation_without_the_autocast_axis_has_none():
    case = parse_case("hf-llama-tT-no_adapter-native-bf16@" + LLAMA)
    assert case.precision == Precision("bfloat16") and case.precision.autocast is None
    with pytest.raises(ConformanceError, match="no autocast axis"):
        parse_case("hf-llama-tT-no_adapter-native-bf16-noautocast@" + LLAMA)


def test_the_plan_adds_each_precision_and_autocast_only_where_peft_wraps():
    base = dict(families=["llama"], recipes=["lora_attn", "no_adapter"])
    one = plan(Selection(**base))
    both = plan(Selection(**base, dtypes=["float32", "bfloat16"], autocast="both"))
    by_impl = {impl: [c for c in both if c.implementation == impl] for impl in ("hf", "peft")}
    fp32 = [c for c in one if c.implementation == "peft"]
    assert len(by_impl["peft"]) == 3 * len(fp32)  # float32, bf16 with and without autocast
    assert len(by_impl["hf"]) == 2 * len([c for c in one if c.implementation == "hf"])
    assert {c.precision.autocast for c in by_impl["peft"] if c.precision.half} == {True, False}
    assert [c.case_id for c in both if not c.precision.half] == [c.case_id for c in one]


def test_a_discontinuous_family_routes_every_expert_in_half_precision():
    moe = families.get("gemma4-moe")
    half = [c for c in plan(Selection(families=["gemma4-moe"], dtypes=["float16"])) if c.precision.half]
    assert half and all(c.config["top_k_experts"] == c.config["num_experts"] for c in half)
    assert moe.canonical["top_k_experts"] < moe.canonical["num_experts"]


def test_unknown_precision_names_are_one_line(capsys):
    assert main(["run", "--dtype", "float8", "--family", "llama"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown dtype 'float8'" in err


def test_tolerance_is_factor_times_floor_never_below_the_minimum():
    rule = oracles.Tolerance(6.0, {"float32": 1e-4, "bfloat16": 1e-4})
    assert rule.at("float32", 2e-6) == 1e-4  # float32: the minimum decides, as the fixed tolerance did
    assert rule.at("bfloat16", 0.01) == pytest.approx(0.06)
    assert oracles.Tolerance(None, {"float64": 1e-5}).at("float64", 3.0) == 1e-5


def test_every_scaled_check_finds_its_noise_floor_wherever_it_applies():
    table = oracles.tolerances()
    for name, check in oracles.CHECKS.items():
        rule = table.rule(name)
        if rule is None or rule.factor is None:
            continue
        for workflow in contract.WORKFLOWS.values():
            if contract.check_applies(name, workflow.name):
                assert check.floor in workflow.produces, f"{name} in {workflow.name}: no {check.floor}"


@pytest.mark.conformance
def test_records_show_floor_factor_and_tolerance_and_float32_keeps_its_minimum():
    llama = families.get("llama")
    engine = Engine(Selection())
    try:
        made = {
            p.dtype: engine.judge(
                cases.make("peft", llama, TieFlags(True), "lora_attn", "merge", llama.canonical, 0, p)
            )
            for p in (Precision(), Precision("bfloat16", True))
        }
    finally:
        engine.close()
    table = oracles.tolerances()
    for dtype, records in made.items():
        merge = next(r for r in records if r.check == "merge-fidelity")
        assert merge.dtype == dtype and merge.computed_in == dtype and merge.device == "cpu"
        rule = table.rule("merge-fidelity")
        assert merge.noise_floor and merge.tolerance_factor == rule.factor
        assert merge.tolerance == pytest.approx(rule.at(dtype, merge.noise_floor), rel=5e-3)
    fp32 = next(r for r in made["float32"] if r.check == "merge-fidelity")
    bf16 = next(r for r in made["bfloat16"] if r.check == "merge-fidelity")
    assert fp32.tolerance == 1e-4 and fp32.noise_floor < 1e-5
    assert bf16.noise_floor > 100 * fp32.noise_floor and bf16.tolerance > 1e-3
    assert bf16.autocast is True and fp32.autocast is None


def test_expectations_condition_on_dtype_and_autocast(tmp_path):
    from conformance.engine.core import vocabulary
    from conformance.reading import expectations
    from conformance.reading.expectations import Subject

    path = tmp_path / "peft.yaml"
    path.write_text(
        "expectations:\n"
        "  - id: half-only\n"
        "    when: {dtype: [bfloat16, float16], autocast: true}\n"
        "    outcome: diverged-silent\n"
        "    class: bug\n"
        "    link: https://github.com/huggingface/peft/issues/1\n"
        "    reason: one line\n"
    )
    (entry,) = expectations.load_file(path, "peft", vocabulary())
    subject = dict(
        implementation="peft", family="llama", flags="tT", recipe="lora_attn", workflow="merge",
        check="reference", tied=True, versions={},
    )  # fmt: skip
    assert entry.matches(Subject(**subject, dtype="bfloat16", autocast=True))
    assert not entry.matches(Subject(**subject, dtype="bfloat16", autocast=False))
    assert not entry.matches(Subject(**subject))  # float32
    path.write_text(path.read_text().replace("bfloat16, float16", "bfloat8"))
    with pytest.raises(ConformanceError, match=r"when\.dtype"):
        expectations.load_file(path, "peft", vocabulary())


def test_pages_and_gate_keep_precisions_apart():
    fp32 = {"flags": {"top": True, "text": None}, "implementation": "peft", "family": "llama"}
    fp32 |= {"recipe": "lora_attn", "workflow": "merge", "check": "reference"}
    bf16 = {**fp32, "dtype": "bfloat16", "autocast": False}
    old = {**fp32, "dtype": "float64"}  # a float32 case's record before the axis: its compute precision
    assert row_label(fp32) == row_label(old) == "tT" and row_label(bf16) == "tT · bf16 no-autocast"
    assert cell_key(fp32) == cell_key(old) != cell_key(bf16)


def test_gate_refuses_runs_of_other_precisions_and_reads_old_runs_as_float32(tmp_path, capsys):
    selection = {
        "implementations": ["peft"], "families": ["llama"], "recipes": [], "workflows": [], "checks": [],
        "profile": "ci", "seed": 0,
    }  # fmt: skip
    record = {
        "case_id": f"peft-llama-tT-lora_attn-merge@{LLAMA}", "implementation": "peft", "family": "llama",
        "flags": {"top": True, "text": None}, "recipe": "lora_attn", "workflow": "merge",
        "check": "reference", "outcome": "pass", "verdict": "ok",
    }  # fmt: skip
    paths = []
    for name, extra in (("old", {}), ("new", {"dtypes": ["float32"]}), ("half", {"dtypes": ["bfloat16"]})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.jsonl").write_text(json.dumps(record) + "\n")
        (folder / "run.json").write_text(json.dumps({"selection": {**selection, **extra}}))
        paths.append(str(folder / "results.jsonl"))
    assert main(["gate", paths[0], paths[1], "-o", str(tmp_path / "g.html")]) == 0
    capsys.readouterr()
    assert main(["gate", paths[1], paths[2], "-o", str(tmp_path / "g.html")]) == EXIT_BAD_INPUT
    assert "dtypes ['float32'] vs ['bfloat16']" in capsys.readouterr().err


def test_precision_suffixes_parse_or_say_why():
    assert Precision.parse("-fp16") == Precision("float16", True)
    with pytest.raises(ValueError, match="not a precision suffix"):
        Precision.parse("-fp8")
    assert precision.parse_dtypes(["bf16", "bfloat16", "fp16"], "--dtype") == ["bfloat16", "float16"]


@pytest.mark.conformance
def test_repro_reruns_a_case_in_another_precision(capsys):
    assert main(["repro", f"peft-llama-tT-lora_attn-merge@{LLAMA}", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "merge-fidelity" in out and "pass" in out
    # its tolerance is the bfloat16 one: far above float32's 1e-4
    tolerance = float(out.split("merge-fidelity", 1)[1].split("tol=", 1)[1].split()[0])
    assert tolerance > 1e-3


def test_a_logits_tolerance_never_falls_below_the_rounding_of_the_values_compared():
    import torch

    from conformance.model.oracles.base import spacing

    # float16 at magnitude 2..4 has a unit in the last place of 2**-9; float32 far below any tolerance.
    values = [torch.tensor([3.3, -1.0], dtype=torch.float64), "not a tensor"]
    assert spacing("float16", values) == 2.0**-9
    assert spacing("float32", values) < 1e-6
    assert spacing("bfloat16", []) == 0.0
