"""Faults injected into the real libraries: a native crash, a hang, a stop signal; each costs no results.

The faults are patched into PEFT at import (as the detection tests do): workers are forked from this
process, so they run the patched library. Runs are small (Llama, two recipes, the merge workflow).
"""

import faulthandler
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from peft.tuners.lora import LoraModel

from conformance.base.outcomes import CRASHED, PASS
from conformance.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, main
from conformance.engine.testing import assert_timed_out, run_hanging

SMALL = ["--impl", "peft", "--family", "llama", "--recipe", "lora_attn", "--recipe", "mts_embed"]
SMALL += ["--workflow", "merge", "--no-report"]
ROOT = Path(__file__).resolve().parents[2]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _fault_on_modules_to_save(monkeypatch, fault) -> None:
    """merge_and_unload runs `fault` for the modules_to_save recipe only; every other case is healthy.

    The worker's fatal-error dump (pytest's faulthandler, inherited by forked workers) is switched off just
    before the fault: these crashes are the point, and their dumps would read as failures in the test
    output. A crash anywhere else still dumps."""
    original = LoraModel.merge_and_unload

    def merge(self, *args, **kwargs):
        if self.peft_config["default"].modules_to_save:
            faulthandler.disable()
            fault()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_native_crash_costs_its_case_only(tmp_path, monkeypatch, jobs):
    _fault_on_modules_to_save(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGSEGV))
    code = main(["run", *SMALL, "--jobs", jobs, "--out", str(tmp_path)])
    assert code == EXIT_UNEXPECTED  # the crashes are unexpected; the run itself completed
    records = _records(tmp_path)
    crashed = [r for r in records if r["recipe"] == "mts_embed"]
    assert crashed and all(r["outcome"] == CRASHED and "SIGSEGV" in r["detail"] for r in crashed), crashed
    assert {r["case_id"] for r in crashed} == {
        f"peft-llama-{flags}-mts_embed-merge@v128.h32.i64.L2.H2.K1.s0" for flags in ("tT", "tF")
    }
    healthy = [r for r in records if r["recipe"] == "lora_attn"]
    assert healthy and all(r["outcome"] == PASS for r in healthy), "cases after the crash ran on a new worker"
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["incomplete"] is False and meta["not_run"] == 0


def test_an_exit_in_the_library_is_recorded_with_its_code(tmp_path, monkeypatch):
    _fault_on_modules_to_save(monkeypatch, lambda: os._exit(7))
    main(["run", *SMALL, "--jobs", "2", "--out", str(tmp_path)])
    crashed = [r for r in _records(tmp_path) if r["recipe"] == "mts_embed"]
    assert crashed and all("exited with code 7" in r["detail"] for r in crashed)


def test_a_hang_is_stopped_at_the_case_time_limit(tmp_path, monkeypatch):
    _fault_on_modules_to_save(monkeypatch, lambda: time.sleep(600))
    records = run_hanging(SMALL, tmp_path)
    assert_timed_out([r for r in records if r["recipe"] == "mts_embed"])
    assert all(r["outcome"] == PASS for r in records if r["recipe"] == "lora_attn")
    assert json.loads((tmp_path / "run.json").read_text())["case_timeout"] == 4


def test_an_expectation_can_name_a_worker_crash(tmp_path, monkeypatch):
    cases = tmp_path / "cases"
    subprocess.run(["cp", "-r", str(ROOT / "cases"), str(cases)], check=True)
    with (cases / "expectations" / "peft.yaml").open("a") as handle:
        handle.write(
            textwrap.indent(
                textwrap.dedent(
                    """
                    - id: test-merge-segfaults
                      when: {recipe: mts_embed, workflow: merge}
                      outcome: crashed
                      class: bug
                      link: https://github.com/huggingface/peft/issues/1
                      reason: injected by the test
                    """
                ),
                "  ",
            )
        )
    monkeypatch.setenv("CONFORMANCE_CASES", str(cases))
    _fault_on_modules_to_save(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGABRT))
    assert main(["run", *SMALL, "--jobs", "2", "--out", str(tmp_path / "out")]) == EXIT_OK
    crashed = [r for r in _records(tmp_path / "out") if r["recipe"] == "mts_embed"]
    assert crashed and all(
        r["verdict"] == "expected" and r["expected"] == "test-merge-segfaults" for r in crashed
    )


# Slows every merge down (results unchanged), so a signal arrives with cases still to run.
_SLOW_RUN = """
import sys, time
from peft.tuners.lora import LoraModel
original = LoraModel.merge_and_unload
def slow(self, *args, **kwargs):
    time.sleep(0.4)
    return original(self, *args, **kwargs)
LoraModel.merge_and_unload = slow
from conformance.cli import main
sys.exit(main(sys.argv[1:]))
"""
WIDER = ["--impl", "peft", "--family", "llama", "--family", "gemma", "--workflow", "merge", "--no-report"]


def test_sigterm_keeps_finished_records_and_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, "run", *WIDER, "--jobs", "2", "--out", str(stopped)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    results = stopped / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (
        not results.is_file() or len(results.read_text().splitlines()) < 20
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, out[-2000:]
    assert "stopped by SIGTERM" in out and f"--resume {stopped}" in out
    meta = json.loads((stopped / "run.json").read_text())
    assert meta["incomplete"] is True and 0 < meta["not_run"] < meta["cases"], meta
    kept = results.read_text().splitlines()
    assert kept and all(json.loads(line)["case_id"] for line in kept)

    resumed = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--resume", str(stopped), "--jobs", "2", "--no-report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == EXIT_OK, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming:" in resumed.stdout
    whole = tmp_path / "whole"
    assert main(["run", *WIDER, "--jobs", "2", "--out", str(whole)]) == EXIT_OK
    assert results.read_text() == (whole / "results.jsonl").read_text()
    assert json.loads((stopped / "run.json").read_text())["incomplete"] is False


def test_resume_of_a_complete_run_is_one_line(tmp_path, capsys):
    assert main(["run", *SMALL, "--out", str(tmp_path)]) == EXIT_OK
    capsys.readouterr()
    assert main(["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing to resume" in err


# Spawned workers (the CUDA leg's) import everything afresh: a fault reaches them through sitecustomize,
# which every new interpreter on PYTHONPATH runs at start.
_SPAWNED_FAULT = """
import faulthandler, os, signal
from peft.tuners.lora import LoraModel
_original = LoraModel.merge_and_unload
def merge(self, *args, **kwargs):
    if self.peft_config["default"].modules_to_save:
        faulthandler.disable()  # an expected crash: no dump in the test output
        os.kill(os.getpid(), signal.SIGSEGV)
    return _original(self, *args, **kwargs)
LoraModel.merge_and_unload = merge
"""


def test_spawned_workers_judge_as_forked_ones_and_a_crash_costs_one_case(tmp_path, monkeypatch):
    from conformance.engine.core import Selection, plan
    from conformance.engine.execution import judge_all, start_method

    selection = Selection(["peft"], ["llama"], ["lora_attn", "mts_embed"], ["merge"], dtypes=["bfloat16"])
    assert start_method(selection) == "fork" and start_method(Selection(device="cuda")) == "spawn"
    cases = plan(selection)
    forked = {i: [r.to_json() for r in records] for i, records in judge_all(cases, selection, 2)}
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SPAWNED_FAULT)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    spawned = {
        i: [r.to_json() for r in records] for i, records in judge_all(cases, selection, 2, method="spawn")
    }
    for i, case in enumerate(cases):
        if case.recipe == "lora_attn":
            assert spawned[i] == forked[i], case.case_id
        else:
            records = [json.loads(line) for line in spawned[i]]
            assert records and all(r["outcome"] == CRASHED and "SIGSEGV" in r["detail"] for r in records)
