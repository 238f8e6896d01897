"""`tox -e gate`: a pull request's build of the package under test (candidate) against a baseline.

    PEFT_SPEC=/src/peft tox -e gate                 # PEFT checkout vs the newest PEFT release
    NEMO_SPEC=/src/Automodel tox -e gate            # NeMo Automodel checkout vs its newest release
    GATE_BASELINE_SPEC="peft==0.20.0" PEFT_SPEC="peft @ git+https://github.com/huggingface/peft@main" \
        tox -e gate                                 # a git ref against a chosen release
    tox -e gate -- --family llama                   # arguments after -- go to both runs

The package under test is NeMo Automodel when NEMO_SPEC is set, else PEFT. Both sides get the same
torch (TORCH_SPEC) and transformers (TRANSFORMERS_SPEC; for NeMo, each side's own pin unless set), and
run the same selection (GATE_FAMILIES, comma-separated, narrows the families). The two environments
are built with uv under GATE_ENVS (default .tox/gate/sides, a pair per package under test) and kept
while their specs stay the same; a candidate from a path or a git URL is reinstalled on every call.
Results go to GATE_OUT (default reports/gate): baseline/ and candidate/ (results.jsonl, run.json,
index.html) and gate.html; GATE_BASELINE_RESULTS names a baseline results file (with its run.json)
to reuse instead of running the baseline again. A released baseline's results are also kept beside its
environment, keyed by its specs, the selection and the suite's own files, and reused while all three
stay the same: a second gate against the same release runs the candidate only.

Both sides run at once, each with half the cores, so one's imports, planning and page overlap the other's
cases; each writes GATE_OUT/<side>.log, printed whole when both are done. Both run a 3-wise cover of the
plan (conformance.engine.cover: every combination of three axis values, in about a third of the cases);
GATE_COVER=0 runs every case. The verdict prints counts by check, family and expectation and the first
changed cells; GATE_ALL=1 prints every one (gate.html always lists them all). The exit code is the gate's:
0 no regression, 1 regression, 2 bad input.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Package under test -> (the variable naming its candidate, its distribution, its implementations).
PACKAGES = {
    "peft": ("PEFT_SPEC", "peft", "peft"),
    "nemo": ("NEMO_SPEC", "nemo-automodel", "nemo-automodel,nemo-auto"),  # its own classes, its auto class
}
EXIT_BAD_INPUT = 2
DEFAULT_COVER = "3"
# What a run's selection depends on besides its arguments: the kept baseline results are keyed by these too.
RUN_VARIABLES = ("GATE_FAMILIES", "GATE_COVER", "HYPOTHESIS_PROFILE", "TRANSFORMERS_SPEC")


class GateError(Exception):
    """Bad input or a side that could not be built or run: one line, exit 2."""


def uv_bin() -> str:
    """uv from the `uv` wheel (a dependency of the gate and test environments), else from PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise GateError("uv is needed to build the gate's environments: pip install uv") from None
        return found


def uv(*args: str) -> None:
    done = subprocess.run([uv_bin(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise GateError(f"uv {' '.join(args[:2])} failed: {tail}")


def resolve_spec(spec: str) -> str:
    """A path becomes absolute (the sides' installs run elsewhere); anything else is a requirement."""
    candidate = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or candidate.exists():
        if not candidate.exists():
            raise GateError(f"spec {spec!r} looks like a path, but there is nothing there")
        return str(candidate.resolve())
    return spec


def moves(spec: str) -> bool:
    """A source that can change between two calls with the same spec: a path or a git URL."""
    return spec.startswith("/") or "git+" in spec


def side_specs() -> tuple[str, dict[str, dict[str, str]]]:
    """The package under test and, per side, what to install."""
    if os.environ.get("NEMO_SPEC"):
        under_test = "nemo"
    elif os.environ.get("PEFT_SPEC"):
        under_test = "peft"
    else:
        raise GateError("set PEFT_SPEC or NEMO_SPEC to the candidate build (a path, a git URL or a version)")
    variable, package, _ = PACKAGES[under_test]
    common = {
        "torch": os.environ.get("TORCH_SPEC") or "torch",
        "transformers": os.environ.get("TRANSFORMERS_SPEC", ""),
        "python": sys.executable,
        # The suite with its engine's dependencies (hypothesis, tqdm, ...): a change here rebuilds the sides.
        "suite": f"{ROOT}[engine]",
    }
    if under_test == "nemo":
        common["peft"] = resolve_spec(os.environ.get("PEFT_SPEC") or "peft")
    sides = {
        "baseline": {**common, package: resolve_spec(os.environ.get("GATE_BASELINE_SPEC") or package)},
        "candidate": {**common, package: resolve_spec(os.environ[variable])},
    }
    return under_test, sides


def build(folder: Path, specs: dict[str, str], under_test: str) -> Path:
    """The side's environment: created once per set of specs, its package under test kept current."""
    python = folder / "bin" / "python"
    stamp = folder / "gate-specs.json"
    package = PACKAGES[under_test][1]
    fresh = not (python.exists() and stamp.is_file() and json.loads(stamp.read_text()) == specs)
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
        uv("venv", "--quiet", "--python", specs["python"], str(folder))
    target = ["--python", str(python)]
    if under_test == "peft":
        wanted = [specs["torch"], specs["peft"], "-e", specs["suite"]]
        if specs["transformers"]:
            wanted.append(specs["transformers"])
        if fresh:
            uv("pip", "install", "--quiet", *target, *wanted)
        elif moves(specs["peft"]):
            again = ["--reinstall-package", "peft", "--no-deps", specs["peft"]]
            uv("pip", "install", "--quiet", *target, *again)
    else:
        if fresh:
            uv("pip", "install", "--quiet", *target, specs["torch"], specs["peft"], "-e", specs["suite"])
        if fresh or moves(specs[package]):
            # NeMo's own dependency set does not install on a CPU machine: the same install as `tox -e nemo`.
            env = {**os.environ, "TRANSFORMERS_SPEC": specs["transformers"], "UV": uv_bin()}
            done = subprocess.run(
                [str(python), str(ROOT / "tools" / "install_nemo.py"), specs[package]],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise GateError(f"installing {specs[package]} failed: {done.stderr.strip()[-300:]}")
    if fresh:
        stamp.write_text(json.dumps(specs, indent=1))
    return python


def side_argv(python: Path, out: Path, under_test: str, extra: list[str], jobs: int) -> list[str]:
    families = [f.strip() for f in os.environ.get("GATE_FAMILIES", "").split(",") if f.strip()]
    impls = [arg for impl in PACKAGES[under_test][2].split(",") for arg in ("--impl", impl)]
    cover = os.environ.get("GATE_COVER") or DEFAULT_COVER
    argv = [str(python), "-m", "conformance", "run", *impls, "--out", str(out), "--cover", cover]
    # Both sides run at once, so each takes its share of the cores (an explicit --jobs after -- wins).
    argv += ["--jobs", str(jobs)] if "--jobs" not in extra else []
    return argv + [arg for family in families for arg in ("--family", family)] + extra


def run_sides(pythons: dict[str, Path], out: Path, under_test: str, extra: list[str]) -> None:
    """Both sides' runs at once, each into a log of its own that is printed whole when both are done: a
    run's serial parts (imports, planning, its page) overlap the other's cases."""
    jobs = max(1, execution_cores() // len(pythons))
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    running = {}
    for side, python in pythons.items():
        log = (out / f"{side}.log").open("w")
        argv = side_argv(python, out / side, under_test, extra, jobs)
        process = subprocess.Popen(argv, cwd=ROOT, env=side_env(), stdout=log, stderr=subprocess.STDOUT)
        running[side] = (process, log)
    print(f"gate: {' and '.join(running)} running at once, {jobs} worker(s) each; logs in {out}", flush=True)
    took: dict[str, float] = {}
    while len(took) < len(running):
        for side, (process, log) in running.items():
            if side not in took and process.poll() is not None:
                log.close()
                took[side] = time.perf_counter() - began
        time.sleep(0.2)
    for side, (process, _) in running.items():
        print(f"\ngate: --- {side} run ---", flush=True)
        print((out / f"{side}.log").read_text(errors="replace"), end="", flush=True)
        print(f"gate: {side} run took {took[side]:.0f}s", flush=True)
        # 1 means unexpected outcomes, which is the gate's business, not the run's; 2 is bad input.
        if process.returncode not in (0, 1) or not (out / side / "results.jsonl").is_file():
            raise GateError(
                f"the run in {pythons[side].parent.parent} exited {process.returncode}: see its output above"
            )


def side_env() -> dict[str, str]:
    # uv installs no bytecode: where PYTHONDONTWRITEBYTECODE is set, every run would compile transformers
    # and peft from source again (~10 s a process). The sides' environments are the gate's own.
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def execution_cores() -> int:
    # As conformance.engine.execution.default_jobs counts them: this driver runs without the suite installed.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def suite_digest() -> str:
    """The suite's own files that decide what a run does and says (its code and its case files)."""
    digest = hashlib.sha256()
    for folder in ("conformance", "cases"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def kept_baseline(envs: Path, under_test: str, specs: dict[str, str], argv: list[str]) -> Path | None:
    """Where a released baseline's results of this selection are kept; None for a moving baseline (a
    path or a git URL), whose results say nothing about its next state."""
    if moves(specs[PACKAGES[under_test][1]]):
        return None
    variables = {name: os.environ.get(name, "") for name in RUN_VARIABLES}
    conformance = {k: v for k, v in os.environ.items() if k.startswith("CONFORMANCE_")}
    key = json.dumps([specs, argv, variables, conformance, suite_digest()], sort_keys=True)
    return envs / f"{under_test}-baseline" / "runs" / hashlib.sha256(key.encode()).hexdigest()[:16]


def remember(run: Path, keep: Path) -> None:
    """Keep a complete baseline run's results for the next gate against the same release."""
    if json.loads((run / "run.json").read_text()).get("incomplete") is not False:
        return
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for name in ("results.jsonl", "run.json"):
        shutil.copy2(run / name, keep / name)


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    try:
        under_test, sides = side_specs()
        envs = Path(os.environ.get("GATE_ENVS") or ROOT / ".tox" / "gate" / "sides")
        out = Path(os.environ.get("GATE_OUT") or ROOT / "reports" / "gate")
        pythons = {}
        # A baseline already run (the release's results of this selection): only the candidate runs.
        reused = os.environ.get("GATE_BASELINE_RESULTS")
        if reused and not Path(reused).is_file():
            raise GateError(f"GATE_BASELINE_RESULTS={reused}: no such results file")
        keep = None if reused else kept_baseline(envs, under_test, sides["baseline"], argv)
        if keep is not None and (keep / "results.jsonl").is_file() and (keep / "run.json").is_file():
            reused = str(keep / "results.jsonl")
            print(f"gate: the baseline's results of this selection are kept from an earlier gate: {keep}")
            keep = None
        if reused:
            sides.pop("baseline")
        for side, specs in sides.items():
            began = time.perf_counter()
            pythons[side] = build(envs / f"{under_test}-{side}", specs, under_test)
            print(f"gate: {side} environment ready in {time.perf_counter() - began:.0f}s", flush=True)
        run_sides(pythons, out, under_test, argv)
        if "baseline" in pythons and keep is not None:
            remember(out / "baseline", keep)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\ngate: --- verdict ---", flush=True)
    results = [reused or str(out / "baseline" / "results.jsonl"), str(out / "candidate" / "results.jsonl")]
    verdict = ["gate", *results, "-o", str(out / "gate.html")]
    verdict += ["--all"] if os.environ.get("GATE_ALL", "") not in ("", "0") else []
    done = subprocess.run([str(pythons["candidate"]), "-m", "conformance", *verdict])
    print(f"gate: {time.perf_counter() - started:.0f}s in all", flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
