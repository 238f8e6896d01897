"""The GitHub workflows: schema-valid, zizmor-clean, and the gate's inputs reach its jobs only through env.

Other projects call .github/workflows/gate.yml on their pull requests, so a broken or injectable workflow
fails in their CI, not ours: these tests are the only place it is checked before it ships. Both validators
run offline (check-jsonschema's vendored schema, `zizmor --offline`), and a missing validator is a failure,
not a skip, so that a green run always means the workflows were actually checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
GATE = WORKFLOW_DIR / "gate.yml"
# The gate's public interface (README and callers depend on it). Its own checkout needs no input: it comes
# from job.workflow_repository / job.workflow_sha.
GATE_INPUTS = {"peft-spec", "nemo-spec", "transformers-spec", "families", "baseline-spec"}
INSTALL_HINT = "install the suite's `test` extra (pip install -e '.[test]'; it has check-jsonschema, zizmor)"

# An expression `${{ ... }}` (non-greedy: one expression at a time) and, inside one, a reference to data a
# caller or an event author controls. Dashes belong to input names, so `inputs.peft-spec` is one reference.
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
UNTRUSTED = re.compile(r"\binputs\s*(\.|\[)|\bgithub\s*\.\s*event\b|\bgithub\s*\[\s*['\"]event['\"]")


def tool(name: str) -> str:
    """The validator's executable; the test fails (never skips) when it is not installed."""
    # Next to the interpreter first: a venv's scripts are there even when the venv is not activated.
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # NO_COLOR keeps the tool output readable in the assertion message.
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))


def zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("zizmor"), "--offline", "--color", "never", str(path))


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def run_blocks(workflow: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, script) for every `run:` of every job's steps."""
    blocks = []
    for job_id, job in (workflow.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            if "run" in step:
                blocks.append((f"jobs.{job_id}.steps[{index}] ({step.get('name', 'unnamed')})", step["run"]))
    return blocks


def untrusted_in_run(workflow: dict[str, Any]) -> list[str]:
    """Every `${{ inputs.* }}` / `${{ github.event.* }}` expanded straight into a shell script."""
    return [
        f"{where}: ${{{{{expression}}}}}"
        for where, script in run_blocks(workflow)
        for expression in EXPRESSION.findall(str(script))
        if UNTRUSTED.search(expression)
    ]


def test_the_gate_workflow_is_collected() -> None:
    # The parametrized tests below would pass vacuously on an empty glob.
    assert GATE in WORKFLOWS, f"{GATE} missing; found {[p.name for p in WORKFLOWS]}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path: Path) -> None:
    result = check_jsonschema(path)
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_has_no_zizmor_findings(path: Path) -> None:
    result = zizmor(path)
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_untrusted_expression_inside_run(path: Path) -> None:
    # Template injection: the expression is pasted into the script before the shell parses it.
    found = untrusted_in_run(load(path))
    assert not found, "pass these through env: and use the shell variable:\n" + "\n".join(found)


def test_gate_is_a_reusable_workflow_with_exactly_its_inputs() -> None:
    triggers = load(GATE)["on"]
    assert isinstance(triggers, dict) and set(triggers) == {"workflow_call"}, triggers
    inputs = triggers["workflow_call"]["inputs"]
    assert set(inputs) == GATE_INPUTS
    for name, spec in inputs.items():
        assert spec.get("type") == "string", name
        assert not spec.get("required", False), f"{name} must be optional"
        assert str(spec.get("description", "")).strip(), f"{name} needs a description"


def test_every_gate_input_is_used_by_a_job() -> None:
    # An input no job reads is a silently ignored setting for the caller.
    jobs = yaml.safe_dump(load(GATE)["jobs"], width=10**6)
    used = {
        match.group(1)
        for expression in EXPRESSION.findall(jobs)
        for match in re.finditer(r"\binputs\.([A-Za-z0-9_-]+)", expression)
    }
    assert used >= GATE_INPUTS, f"never referenced in jobs: {sorted(GATE_INPUTS - used)}"


def test_gate_checks_out_the_suite_from_its_own_workflow_identity() -> None:
    # In a called workflow `github.*` is the caller's; only job.workflow_* names this repository and commit.
    steps = load(GATE)["jobs"]["gate"]["steps"]
    checkouts = [s.get("with", {}) for s in steps if str(s.get("uses", "")).startswith("actions/checkout@")]
    suite = {"repository": "${{ job.workflow_repository }}", "ref": "${{ job.workflow_sha }}"}
    assert any(suite.items() <= c.items() for c in checkouts), checkouts
    # The caller's token must not stay in .git/config where the PR's code runs.
    assert all(c.get("persist-credentials") is False for c in checkouts), checkouts


def test_check_jsonschema_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "name: broken\non: push\npermissions: {}\njobs:\n  build:\n"
        "    runs_on: ubuntu-latest\n    steps:\n      - run: echo hi\n"
    )
    result = check_jsonschema(broken)
    assert result.returncode != 0, output(result)
    assert "runs-on" in result.stdout + result.stderr, output(result)


def test_zizmor_flags_an_input_expanded_inside_run(tmp_path: Path) -> None:
    injectable = tmp_path / "injectable.yml"
    injectable.write_text(
        "name: injectable\non:\n  workflow_call:\n    inputs:\n      x:\n        type: string\n"
        "permissions: {}\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        '      - run: echo "${{ inputs.x }}"\n'
    )
    # Schema-valid, so the failure below is zizmor's finding and not a parse error.
    assert check_jsonschema(injectable).returncode == 0
    result = zizmor(injectable)
    assert result.returncode != 0, output(result)
    assert "template-injection" in result.stdout + result.stderr, output(result)
    # The structural check above catches it too.
    assert untrusted_in_run(load(injectable)) == ["jobs.build.steps[0] (unnamed): ${{ inputs.x }}"]
