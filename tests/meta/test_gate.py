"""The gate's policy, cell by cell, on results files shaped like real runs; bad input; no torch imported.

The end-to-end gate on real source builds of PEFT and NeMo lives in tests/gate/.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.base.outcomes import CRASHED, OUTCOMES, PASS, REFUSED, SILENT, SKIPPED, WARNED
from conformance.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED, main
from conformance.pages import gate

CASE = "peft-llama-tT-mts_embed-merge@v128.h32.i64.L2.H2.K1.s0"
SELECTION = {
    "implementations": ["peft"],
    "families": ["llama"],
    "recipes": [],
    "workflows": [],
    "checks": [],
    "profile": "ci",
    "seed": 0,
}

# The documented policy, one row per (baseline outcome, candidate outcome); None: the cell is missing.
POLICY = {
    # pass -> anything worse
    (PASS, WARNED): gate.REGRESSED,
    (PASS, SILENT): gate.REGRESSED,
    (PASS, REFUSED): gate.REGRESSED,
    (PASS, CRASHED): gate.REGRESSED,
    # warned -> silent (and -> crashed: code that ran now raises)
    (WARNED, SILENT): gate.REGRESSED,
    (WARNED, CRASHED): gate.REGRESSED,
    # refused -> crashed or diverged
    (REFUSED, CRASHED): gate.REGRESSED,
    (REFUSED, WARNED): gate.REGRESSED,
    (REFUSED, SILENT): gate.REGRESSED,
    (CRASHED, SILENT): gate.REGRESSED,
    # lost coverage
    (PASS, SKIPPED): gate.LOST,
    (WARNED, SKIPPED): gate.LOST,
    (PASS, None): gate.LOST,
    (CRASHED, None): gate.LOST,
    # non-pass -> pass
    (WARNED, PASS): gate.IMPROVED,
    (SILENT, PASS): gate.IMPROVED,
    (REFUSED, PASS): gate.IMPROVED,
    (CRASHED, PASS): gate.IMPROVED,
    # better, not yet passing
    (SILENT, WARNED): gate.BETTER,
    (SILENT, REFUSED): gate.BETTER,
    (SILENT, CRASHED): gate.BETTER,
    (CRASHED, REFUSED): gate.BETTER,
    (CRASHED, WARNED): gate.BETTER,
    (WARNED, REFUSED): gate.BETTER,
    # new coverage, and nothing that ran before
    (SKIPPED, PASS): gate.GAINED,
    (SKIPPED, SILENT): gate.GAINED,
    (None, PASS): gate.GAINED,
    (SKIPPED, SKIPPED): gate.UNCHANGED,
    (None, SKIPPED): gate.UNCHANGED,
    (SKIPPED, None): gate.UNCHANGED,
}
for _outcome in OUTCOMES:
    POLICY.setdefault((_outcome, _outcome), gate.UNCHANGED)


def record(outcome: str, check: str = "roundtrip-fidelity", case_id: str = CASE, **extra) -> dict:
    return {
        "case_id": case_id,
        "implementation": "peft",
        "family": "llama",
        "flags": {"top": True, "text": None},
        "recipe": "mts_embed",
        "workflow": "merge",
        "check": check,
        "outcome": outcome,
        "verdict": "ok",
        "expected": None,
        "max_abs_diff": 0.5 if outcome not in (PASS, SKIPPED) else 1e-8,
        "tolerance": 1e-4,
        "detail": f"detail of {outcome}",
        "warnings": [],
        "versions": {"peft": "0.21.2"},
        **extra,
    }


def write_run(folder: Path, records: list[dict], **meta) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = {"selection": SELECTION, "versions": {"peft": "0.21.2"}, **meta}
    (folder / "run.json").write_text(json.dumps(run))
    return folder / "results.jsonl"


@pytest.mark.parametrize(("old", "new"), list(POLICY), ids=[f"{a}->{b}" for a, b in POLICY])
def test_policy_cell(tmp_path, old, new):
    # Every other cell of the run is unchanged, so the exit code is this cell's alone.
    steady = record(PASS, check="merge-fidelity")
    baseline = write_run(tmp_path / "a", [steady] + ([record(old)] if old else []))
    candidate = write_run(tmp_path / "b", [steady] + ([record(new)] if new else []))
    status = POLICY[(old, new)]
    changes = {c.key: c for c in gate.compare(*map(_load, (baseline, candidate)))}
    assert changes[f"{CASE}|roundtrip-fidelity"].status == status
    assert changes[f"{CASE}|merge-fidelity"].status == gate.UNCHANGED
    code = main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "gate.html")])
    assert code == (EXIT_UNEXPECTED if status in gate.FAILING else EXIT_OK), status


def _load(path: Path):
    from conformance.pages import report

    return report.load(path)


def test_regression_lines_name_the_cell_numbers_and_repro(tmp_path, capsys):
    baseline = write_run(tmp_path / "a", [record(PASS), record(PASS, check="tie-consistency")])
    candidate = write_run(
        tmp_path / "b", [record(SILENT), record(PASS, check="tie-consistency", outcome_note="x")]
    )
    assert main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "gate.html")]) == EXIT_UNEXPECTED
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if CASE in line and "roundtrip-fidelity" in line]
    assert len(lines) == 1, out
    line = lines[0]
    assert "pass -> diverged-silent" in line
    assert "max |Δ| 1e-08 -> 0.5 (tolerance 0.0001)" in line
    assert f"repro: python -m conformance repro '{CASE}'" in line
    assert f"python -m conformance repro '{CASE}' --standalone -o repro.py" in line
    assert "tie-consistency" not in out.split("REGRESSED")[1]


def _numbered(n: int, family: str) -> dict:
    workflow = "resize-merge" if n == 0 else "merge"  # the first has no standalone script
    return {"case_id": CASE.replace("-merge@", f"-{workflow}@n{n}."), "family": family, "workflow": workflow}


def test_many_changed_cells_are_counted_then_listed_in_part_or_with_all_in_full(tmp_path, capsys):
    cells = [_numbered(n, family) for n, family in enumerate(["llama"] * 18 + ["gemma4"] * 12)]
    warned = {"check": "tie-consistency", "expected": "mts-merge-keeps-tied-config"}
    old = [record(PASS, **c) for c in cells] + [record(WARNED, verdict="expected", **warned)]
    baseline = write_run(tmp_path / "a", old)
    candidate = write_run(tmp_path / "b", [record(SILENT, **c) for c in cells] + [record(PASS, **warned)])
    outputs = {}
    for mode in ([], ["--all"]):
        page = tmp_path / f"gate{len(mode)}.html"
        assert main(["gate", str(baseline), str(candidate), "-o", str(page), *mode]) == EXIT_UNEXPECTED
        outputs[bool(mode)] = capsys.readouterr().out
    short, every = outputs[False], outputs[True]
    assert (tmp_path / "gate0.html").read_text() == (tmp_path / "gate1.html").read_text()

    def listed(out: str, title: str) -> list[str]:
        block = out.split(f"\n{title} (", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        return [line for line in block if line.startswith("  ")]

    assert len(listed(every, "REGRESSED")) == 30 and len(listed(every, "IMPROVED")) == 1
    assert listed(short, "REGRESSED") == listed(every, "REGRESSED")[: gate.CELLS_SHOWN]
    assert listed(short, "IMPROVED") == [], "the first cells, over every section, are the regressions"
    assert "... 10 more (--all prints every cell" in short and "... 1 more (--all" in short
    assert "more (--all" not in every
    for out in (short, every):
        assert "gate: regressed: pass -> diverged-silent 30" in out
        assert "gate: regressed by check: roundtrip-fidelity 30" in out
        assert "gate: regressed by family: llama 18, gemma4 12" in out
        assert "gate: regressed by expectation: no expectation 30" in out
        assert "gate: improved by expectation: mts-merge-keeps-tied-config 1" in out
    # A standalone command only where the workflow has a standalone script.
    first, second = listed(every, "REGRESSED")[:2]
    assert "-resize-merge@" in first and "repro: " in first and "standalone:" not in first
    assert "standalone: python -m conformance repro" in second
    page = (tmp_path / "gate1.html").read_text()
    resize_row = page.split(f'data-key="{cells[0]["case_id"]}|')[1].split("</tr>")[0]
    assert "repro: " in resize_row and "standalone:" not in resize_row


def test_improvements_list_the_expectations_to_narrow_and_exit_0(tmp_path, capsys):
    old = record(WARNED, verdict="expected", expected="mts-merge-keeps-tied-config-warned")
    new = record(PASS, verdict="unexpected-pass", expected="mts-merge-keeps-tied-config-warned")
    baseline, candidate = write_run(tmp_path / "a", [old]), write_run(tmp_path / "b", [new])
    assert main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "gate.html")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "IMPROVED (1)" in out and "narrow: mts-merge-keeps-tied-config-warned" in out
    page = (tmp_path / "gate.html").read_text()
    assert "mts-merge-keeps-tied-config-warned" in page
    assert "github.com/huggingface/peft/issues/2777" in page  # the link from cases/expectations


def test_the_verdict_ignores_expectations(tmp_path):
    # A regression that an expectation covers (the way a 0.18 range covered the lost lm_head on a dev
    # build) still fails the gate.
    covered = record(SILENT, verdict="expected", expected="mts-merge-keeps-tied-config")
    baseline, candidate = write_run(tmp_path / "a", [record(PASS)]), write_run(tmp_path / "b", [covered])
    assert main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "g.html")]) == EXIT_UNEXPECTED


def test_page_shows_regressions_before_improvements(tmp_path):
    other = "peft-llama-tT-mts_head-merge@v128.h32.i64.L2.H2.K1.s0"
    baseline = write_run(tmp_path / "a", [record(WARNED, case_id=other), record(PASS)])
    candidate = write_run(tmp_path / "b", [record(PASS, case_id=other), record(CRASHED)])
    main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "gate.html")])
    page = (tmp_path / "gate.html").read_text()
    assert page.index('id="regressed"') < page.index('id="improved"')
    assert "REGRESSION" in page.split("<body>")[1].split("</p>")[0]
    assert "<script" not in page.lower()


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("families", ["gemma4"], "different selections: families ['llama'] vs ['gemma4']"),
        ("profile", "dev", "different selections: profile 'ci' vs 'dev'"),
        ("seed", 3, "different selections: seed 0 vs 3"),
        ("recipes", ["mts_embed"], "different selections: recipes"),
    ],
)
def test_runs_of_different_selections_are_bad_input(tmp_path, capsys, key, value, words):
    baseline = write_run(tmp_path / "a", [record(PASS)])
    candidate = write_run(tmp_path / "b", [record(PASS)], selection={**SELECTION, key: value})
    assert main(["gate", str(baseline), str(candidate)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and words in err, err


def test_a_results_file_without_its_run_json_is_matched_by_its_records(tmp_path, capsys):
    # A results file copied alone: what it ran is read from its records (the folder is taken too).
    baseline = write_run(tmp_path / "a", [record(PASS)])
    write_run(tmp_path / "b", [record(SILENT)])
    (tmp_path / "b" / "run.json").unlink()
    code = main(["gate", str(baseline), str(tmp_path / "b"), "-o", str(tmp_path / "g.html")])
    assert code == EXIT_UNEXPECTED
    captured = capsys.readouterr()
    assert "REGRESSED (1)" in captured.out and "matched by what their records ran" in captured.err
    # Records of another family: different selections, one line.
    other = write_run(tmp_path / "c", [record(PASS, family="gemma4")])
    (tmp_path / "c" / "run.json").unlink()
    assert main(["gate", str(baseline), str(other)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "different selections: families ['llama'] vs ['gemma4']" in err, err


def test_a_folder_without_results_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    baseline = write_run(tmp_path / "a", [record(PASS)])
    assert main(["gate", str(baseline), str(tmp_path / "empty")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a folder without a results.jsonl" in err, err


def test_terminal_output_neutralises_control_characters(tmp_path, capsys):
    hostile = record(SILENT, detail="\x1b]8;;https://evil\x07click\x1b[2J")
    baseline, candidate = write_run(tmp_path / "a", [record(PASS)]), write_run(tmp_path / "b", [hostile])
    main(["gate", str(baseline), str(candidate), "-o", str(tmp_path / "g.html")])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b]8;;https://evil\\x07click" in out


def test_the_verbs_that_read_results_import_neither_torch_nor_transformers(tmp_path):
    baseline = write_run(tmp_path / "a", [record(PASS)])
    candidate = write_run(tmp_path / "b", [record(SILENT)])
    a, b = str(baseline), str(candidate)
    code = (
        "import sys; from conformance.cli import main; "
        f"main(['report', {a!r}, {b!r}, '-o', {str(tmp_path / 'r.html')!r}]); "
        f"main(['diff', {a!r}, {b!r}, '-o', {str(tmp_path / 'd.html')!r}]); "
        f"rc = main(['gate', {a!r}, {b!r}, '-o', {str(tmp_path / 'g.html')!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_UNEXPECTED, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
