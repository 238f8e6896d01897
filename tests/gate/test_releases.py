"""The gate on released transformers: a fix told from its parent by release, through a cross-version pair.

transformers #45857 (in 5.16.0): a Qwen2-VL checkpoint whose text_config says tied but whose top-level
flag says untied (4.57 wrote such configs and tied by the text flag) loaded on 5.0-5.15 with a random
lm_head, because those releases tie Qwen2-VL by the top-level flag alone. The suite exports the family
under 4.57.6 (with PEFT 0.18, the row tf4.57-peft0.18), imports the same folder under 5.15.1 and 5.16.0,
and `gate` must call 5.16 an improvement over 5.15 on those cells, and the way back a regression.
The environments are built with uv as tools/gate.py builds a side (kept under .tox/gate/sides).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gate as gate_tool  # noqa: E402
from test_source_trees import EXIT_REGRESSION, section  # noqa: E402  (tests/gate/ is on the path)

pytestmark = pytest.mark.gate
FAMILY = "qwen2-vl"
SIDES = {  # env -> (transformers, peft): the specs of the matrix rows tf4.57-peft0.18, tf5.15 and tf5.16
    "save-tf4.57": ("transformers==4.57.6", "peft==0.18.1"),
    "load-tf5.15": ("transformers==5.15.1", "peft"),
    "load-tf5.16": ("transformers==5.16.0", "peft"),
}


def _python(name: str) -> Path:
    transformers, peft = SIDES[name]
    specs = {
        "torch": os.environ.get("TORCH_SPEC") or "torch",
        "transformers": transformers,
        "peft": peft,
        "python": sys.executable,
        "suite": f"{ROOT}[engine]",
    }
    return gate_tool.build(ROOT / ".tox" / "gate" / "sides" / f"xver-{name}", specs, "peft")


def _conformance(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "conformance", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def imports(tmp_path_factory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("xver-45857")
    saved = _conformance(_python("save-tf4.57"), "export", "--family", FAMILY, "--out", str(top / "export"))
    assert saved.returncode == 0, saved.stdout[-2000:] + saved.stderr[-2000:]
    results = {}
    for name in ("load-tf5.15", "load-tf5.16"):
        done = _conformance(_python(name), "import", str(top / "export"), "--out", str(top / name))
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
        results[name] = top / name / "results.jsonl"
    return results


def _gate(before: Path, after: Path, page: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conformance", "gate", str(before), str(after), "-o", str(page), "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_transformers_45857_is_an_improvement_by_release(imports):
    fix = _gate(imports["load-tf5.15"], imports["load-tf5.16"], imports["load-tf5.16"].parent / "fix.html")
    improved = section(fix.stdout, "IMPROVED")
    # Untied at the top, tied in text_config: 5.15 reloads a random head, 5.16 ties it again.
    cells = [c for c in improved if f"-{FAMILY}-tF-xT-" in c]
    assert cells, fix.stdout[-3000:]
    assert any(c.endswith("roundtrip-fidelity:") for c in cells), cells
    # The way back is the regression a PR bringing back the old rule would show, on the same cells.
    back = _gate(imports["load-tf5.16"], imports["load-tf5.15"], imports["load-tf5.15"].parent / "back.html")
    assert back.returncode == EXIT_REGRESSION, back.stdout[-3000:]
    assert set(cells) <= set(section(back.stdout)), (cells, back.stdout[-3000:])


def test_transformers_48238_is_an_improvement_by_release(tmp_path):
    """transformers #48154 (fixed by #48238, after 5.16): a T5 checkpoint holding the embedding only under
    the stacks' names (google/madlad400) loaded `shared` and the encoder from lm_head.weight. The layout
    workflows write that checkpoint; 5.16.0 against this environment's release must be an improvement."""
    selection = ["--family", "t5", "--impl", "hf", "--workflow", "layout-stack-names"]
    selection += ["--workflow", "layout-decoder-name", "--no-report"]
    runs = {}
    for name, python in (("tf5.16", _python("load-tf5.16")), ("here", Path(sys.executable))):
        done = _conformance(python, "run", *selection, "--out", str(tmp_path / name))
        assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
        runs[name] = tmp_path / name / "results.jsonl"
    fix = _gate(runs["tf5.16"], runs["here"], tmp_path / "fix.html")
    cells = [c for c in section(fix.stdout, "IMPROVED") if "-t5-tT-" in c and c.endswith("layout-load:")]
    assert any("layout-decoder-name" in c for c in cells), fix.stdout[-3000:]
    back = _gate(runs["here"], runs["tf5.16"], tmp_path / "back.html")
    assert back.returncode == EXIT_REGRESSION, back.stdout[-3000:]
