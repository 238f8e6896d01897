"""The suite installed from its wheel runs anywhere: it carries cases/ and its templates, needs no checkout.

The wheel is built as `pip install <path or git URL>` builds it (an sdist, then the wheel from that sdist)
and installed with its engine extra in a fresh venv, pinned to this environment's versions. Both offline,
from the cache uv filled building this test environment (tox-uv builds its packages with uv too), so
nothing is downloaded and torch is hard-linked: the install takes under a second.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conformance.base import casefiles, casesdir
from conformance.base.errors import EXIT_OK, ConformanceError
from conformance.reading import matrix

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "tied-embeddings-conformance"


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _shipped(folder: Path) -> list[Path]:
    """The files under `folder` a build must carry (no caches, no dotfiles)."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [_uv(), "build", "--quiet", "--offline", "--out-dir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = dist.glob("*.whl")
    return found


def test_the_wheel_carries_every_module_the_cases_and_the_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every file under conformance/ (a sub-package without __init__.py, or a data file no package-data
    # glob names, would be missing) and every file of cases/, as conformance/_cases.
    wanted = [p.relative_to(ROOT).as_posix() for p in _shipped(ROOT / "conformance")]
    wanted += [
        f"conformance/_cases/{p.relative_to(ROOT / 'cases').as_posix()}" for p in _shipped(ROOT / "cases")
    ]
    assert not [name for name in wanted if name not in names], sorted(set(wanted) - names)
    for pattern in ("conformance/_cases/expectations/*.yaml", "conformance/_cases/matrix.toml"):
        assert any(Path(name).match(pattern) for name in names), pattern
    for suffix in (".j2", ".js"):
        assert any("/templates/" in name and name.endswith(suffix) for name in names), suffix


def test_installed_from_the_wheel_it_runs_and_reports_from_anywhere(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    # Every version this environment holds, except the suite's own editable install.
    freeze = subprocess.run(
        [_uv(), "pip", "freeze", "--python", sys.executable], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    pins = tmp_path / "pins.txt"
    pins.write_text("".join(f"{line}\n" for line in freeze if not line.startswith(DISTRIBUTION)))
    install = [_uv(), "pip", "install", "--quiet", "--offline", "--python", str(python), "-c", str(pins)]
    done = subprocess.run([*install, f"{wheel}[engine]"], capture_output=True, text=True)
    # Offline, uv finds only what it cached from the sources that built this environment: a torch from
    # UV_FIND_LINKS (CI's CPU wheel) needs the same UV_FIND_LINKS here (tox passes UV_* through).
    assert done.returncode == 0, "installing the wheel offline from uv's cache:\n" + done.stderr[-3000:]
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    packaged = Path(purelib) / "conformance" / "_cases"

    work = tmp_path / "elsewhere"  # under the temporary folder: no cases/ anywhere near it
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONFORMANCE_CASES")}
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("CONFORMANCE_FAMILY", None)

    def conformance(*argv: str) -> str:
        done = subprocess.run(
            [str(venv / "bin" / "conformance"), *argv],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == EXIT_OK, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    version = conformance("--version")
    assert "0.1.0" in version and str(Path(purelib) / "conformance") in version, version
    out = work / "out"
    argv = ["--impl", "peft", "--family", "llama", "--recipe", "lora_embed", "--workflow", "merge"]
    shown = conformance("run", *argv, "--jobs", "1", "--no-report", "--out", str(out))
    assert f"conformance: cases from {packaged} (installed package)" in shown, shown
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert records and {r["outcome"] for r in records} >= {"pass"}, records
    # The page from the packaged templates (report.html.j2 and report.js), and the timeline, which orders
    # its columns by the packaged matrix.toml.
    conformance("report", str(out / "results.jsonl"), "-o", str(work / "index.html"))
    page = (work / "index.html").read_text()
    assert "lora_embed" in page and "<script" in page
    conformance("report", "--view", "timeline", str(out / "results.jsonl"), "-o", str(work / "timeline.html"))
    assert (work / "timeline.html").stat().st_size > 0


def test_a_checkout_reads_its_own_live_cases_wherever_it_runs_from(tmp_path, monkeypatch):
    monkeypatch.delenv("CONFORMANCE_CASES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert casesdir.located() == (ROOT / "cases", "checkout")
    assert matrix.load().rows  # the timeline's and the nightly's matrix.toml, from the same folder


def test_conformance_cases_comes_first_and_a_wrong_one_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    shutil.copytree(ROOT / "cases", folder)
    monkeypatch.setenv("CONFORMANCE_CASES", str(folder))
    assert casesdir.located() == (folder, "CONFORMANCE_CASES")
    monkeypatch.setenv("CONFORMANCE_CASES", str(tmp_path / "typo"))
    with pytest.raises(ConformanceError, match=r"CONFORMANCE_CASES=.*typo: no recipes\.yaml there"):
        casefiles.cases_dir()
