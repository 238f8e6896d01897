"""Command line: `python -m conformance run | repro | report | diff | gate | export | import | list |
expectations update`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from conformance.base import outcomes
from conformance.base.contract import PROFILES
from conformance.base.errors import (  # noqa: F401  (the exit codes are the CLI's too)
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    ConformanceError,
)
from conformance.base.versions import installed, is_dev_build, sources

# The verbs that only read results (report, diff, gate) import neither torch nor transformers, so a
# maintainer can render a gate's or a nightly's artifacts anywhere: the engine is imported per verb.


def suite_version() -> str:
    """The installed distribution's version, and where the package runs from (a checkout or a wheel)."""
    from importlib import metadata

    try:
        found = metadata.version("tied-embeddings-conformance")
    except metadata.PackageNotFoundError:
        found = "(not installed)"
    return f"{found} from {Path(__file__).resolve().parent}"


def cases_line() -> str:
    """The cases/ folder read and why that one (CONFORMANCE_CASES, a checkout, the installed package)."""
    from conformance.base import casesdir

    folder, kind = casesdir.located()
    return f"{folder} ({kind})"


def header(selection: Any) -> None:
    from conformance import implementations
    from conformance.base import device
    from conformance.model import features

    impls = ", ".join(i.name for i in implementations.selected(selection.implementations))
    pkgs = " ".join(f"{k}=={v}" for k, v in installed().items())
    print(f"conformance: implementations {impls} | profile {selection.profile} | seed {selection.seed}")
    where = device.describe(selection.device)
    half = [d for d in selection.precisions if d != "float32"]
    autocast = f" (PEFT autocast_adapter_dtype: {selection.autocast})" if half else ""
    print(f"conformance: dtype {', '.join(selection.precisions)}{autocast} | device {where}")
    if selection.tie_states != "natural":
        print("conformance: tie states: every flag combination, also with its head apart or aliased")
    if selection.cover:
        print(f"conformance: a {selection.cover}-wise cover of the plan (--cover 0 runs every case)")
    missing = device.unavailable(selection.device)
    if missing:
        print(f"conformance: every case is skipped: {missing}")
    settings = device.numerics()
    if settings:
        print("conformance: numerics pinned: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"conformance: {pkgs}")
    print(f"conformance: cases from {cases_line()}")
    for name, source in sources().items():
        print(f"conformance: {name} from {source}")
    for name, why in implementations.not_planned(selection.implementations).items():
        print(f"conformance: {name} not planned: {why}")
    for package, version in installed().items():
        if is_dev_build(version):
            print(
                f"conformance: {package} {version} is a dev build: its features are probed, and expectations "
                "whose version range has an upper bound (they describe releases) do not apply"
            )
    for package, names in features.found().items():
        lacking = [
            f.name for f in features.declared().values() if f.package == package and f.name not in names
        ]
        shown = f"conformance: features of {package}: {', '.join(names) or 'none'}"
        print(shown + (f" (not found: {', '.join(lacking)})" if lacking else ""))


def cmd_run(args: argparse.Namespace) -> int:
    from conformance.engine import execution, session
    from conformance.engine.core import Selection

    named = [args.impl, args.family, args.recipe, args.workflow, args.check]
    if args.resume:
        given = [args.dtype, args.device, args.autocast, args.tie_states, args.cover]
        if any(named) or any(g is not None and g != [] for g in given):
            raise ConformanceError(
                "--resume runs the selection recorded in DIR/run.json: drop the other options"
            )
        selection = session.resumed_selection(Path(args.resume))
    else:
        autocast = args.autocast or os.environ.get("CONFORMANCE_AUTOCAST") or "on"
        states = args.tie_states or os.environ.get("CONFORMANCE_TIE_STATES") or "natural"
        # --family, else CONFORMANCE_FAMILY (what a tox environment names): options replace it, not add.
        families = args.family or [
            n.strip() for n in os.environ.get("CONFORMANCE_FAMILY", "").split(",") if n.strip()
        ]
        named = [args.impl, families, args.recipe, args.workflow, args.check]
        selection = Selection(
            *named, args.profile, args.seed, _dtypes(args), _device(args), autocast, states, _cover(args)
        )
    options = session.Options(
        out=Path(args.resume or args.out),
        jobs=args.jobs or execution.default_jobs(),
        case_timeout=args.case_timeout,
        strict=args.strict,
        report=not args.no_report,
        resume=bool(args.resume),
    )
    from conformance.base import device

    device.use(selection.device)  # before the header: it reports the numerics pinned for the device
    header(selection)
    print(f"conformance: {options.jobs} worker(s), case time limit {options.case_timeout:g} s")
    outcomes.quiet_libraries()
    return session.run(selection, options)


def _dtypes(args: argparse.Namespace) -> list[str]:
    """--dtype (repeatable), else CONFORMANCE_DTYPE (comma-separated), else float32; checked once."""
    from conformance.base.precision import parse_dtypes

    given = args.dtype or [n.strip() for n in os.environ.get("CONFORMANCE_DTYPE", "").split(",") if n.strip()]
    return parse_dtypes(given, "--dtype/CONFORMANCE_DTYPE")


def _cover(args: argparse.Namespace) -> int:
    """--cover, else CONFORMANCE_COVER, else 0 (every case); one line for what is not a strength."""
    given = args.cover if args.cover is not None else os.environ.get("CONFORMANCE_COVER") or "0"
    try:
        return int(given)
    except ValueError:
        raise ConformanceError(f"--cover/CONFORMANCE_COVER: {given!r} is not a number") from None


def _device(args: argparse.Namespace) -> str:
    return args.device or os.environ.get("CONFORMANCE_DEVICE") or "cpu"


def cmd_repro(args: argparse.Namespace) -> int:
    from conformance.engine.core import Engine, Selection, parse_case
    from conformance.reading import expectations

    if args.output and not args.standalone:
        raise ConformanceError("repro -o/--output writes the --standalone script: add --standalone")
    case = parse_case(args.case_id)
    if args.dtype:
        case = _in_precision(case, _dtypes(args))
    if args.standalone:
        from conformance.engine import standalone

        script = standalone.script(case)
        if args.output:
            Path(args.output).write_text(script)
            print(f"repro: wrote {args.output}; run it with: python {args.output}")
        else:
            sys.stdout.write(script)
        return EXIT_OK
    outcomes.quiet_libraries()
    engine = Engine(Selection(device=_device(args)))
    try:
        records = engine.records(case)
    finally:
        engine.close()
    for r in records:
        note = f" [expected by {r.expected}]" if r.expected else ""
        diff = "" if r.max_abs_diff is None else f" max|Δ|={r.max_abs_diff:g}"
        diff += "" if r.tolerance is None or r.max_abs_diff is None else f" tol={r.tolerance:g}"
        print(f"{r.check:<20} {r.outcome:<16} {r.verdict}{note}{diff}\n    {r.detail}")
        for w in r.warnings:
            print(f"    warning: {w}")
    return EXIT_UNEXPECTED if any(r.verdict == expectations.UNEXPECTED for r in records) else EXIT_OK


def _in_precision(case: Any, dtypes: list[str]) -> Any:
    """The same case in another precision (repro --dtype): autocast as the case had it, where it has it."""
    import dataclasses

    from conformance import implementations
    from conformance.base.precision import Precision

    if len(dtypes) != 1:
        raise ConformanceError("--dtype: repro reruns one case, in one precision")
    axis = implementations.get(case.implementation).autocast_axis and dtypes[0] != "float32"
    autocast = (case.precision.autocast is not False) if axis else None
    return dataclasses.replace(case, precision=Precision(dtypes[0], autocast))


def cmd_report(args: argparse.Namespace) -> int:
    from conformance.pages import report, timeline

    runs = [report.load(Path(p)) for p in args.results]
    view = args.view or ("timeline" if len(runs) > 2 else "matrix")
    page = (
        timeline.render(runs, Path(args.output))
        if view == "timeline"
        else report.render(runs, Path(args.output))
    )
    print(f"report: {page}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from conformance.pages import diff, report

    old, new = report.load(Path(args.old)), report.load(Path(args.new))
    rows = diff.diff(old, new)
    for line in diff.summary(rows, show_all=args.all):
        print(line)
    print(f"diff: {diff.render_diff(old, new, rows, Path(args.output))}")
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    from conformance.pages import gate, report

    baseline, candidate = report.load(Path(args.baseline)), report.load(Path(args.candidate))
    changes = gate.compare(baseline, candidate)
    for line in gate.summary(baseline, candidate, changes, show_all=args.all):
        print(line)
    failed = any(c.fails for c in changes)
    page = gate.render(baseline, candidate, changes, Path(args.output))
    print(f"\ngate: {'REGRESSION' if failed else 'no regression'}; page: {page}")
    return EXIT_UNEXPECTED if failed else EXIT_OK


def cmd_expectations_update(args: argparse.Namespace) -> int:
    from conformance.reading import update

    return update.update([Path(p) for p in args.results], args.dry_run, args.prune, sys.stdout)


def cmd_export(args: argparse.Namespace) -> int:
    from conformance.engine import crossver

    outcomes.quiet_libraries()
    return crossver.export(args.family, Path(args.out), _dtypes(args), _cover(args))


def cmd_import(args: argparse.Namespace) -> int:
    from conformance.base.precision import parse_dtypes
    from conformance.engine import crossver

    outcomes.quiet_libraries()
    dtypes = parse_dtypes(args.dtype, "--dtype") if args.dtype else None
    return crossver.import_(Path(args.folder), Path(args.out), dtypes)


def cmd_list(args: argparse.Namespace) -> int:
    from conformance.engine import catalog

    print(f"cases: {cases_line()}")
    for line in catalog.lines():
        print(line)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    # Raw: --version's path is printed whole, not wrapped at the terminal's width.
    top = argparse.ArgumentParser(
        prog="python -m conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the conformance cases and write results.jsonl")
    run.add_argument("--impl", action="append", default=[], help="implementation (repeatable)")
    run.add_argument(
        "--family",
        action="append",
        default=[],
        help="family (repeatable; default every family, or CONFORMANCE_FAMILY, comma-separated: a tox "
        "environment's families, which --family replaces)",
    )
    run.add_argument("--recipe", action="append", default=[], help="adapter recipe (repeatable)")
    run.add_argument("--workflow", action="append", default=[], help="workflow (repeatable)")
    run.add_argument("--check", action="append", default=[], help="check (repeatable)")
    run.add_argument(
        "--profile",
        default=os.environ.get("HYPOTHESIS_PROFILE", "ci"),
        help=f"hypothesis profile: {', '.join(PROFILES)} (default ci)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the canonical configs and of non-ci draws")
    _dtype_option(run, "precision the cases run in (repeatable; default float32, or CONFORMANCE_DTYPE)")
    run.add_argument(
        "--autocast",
        choices=("on", "off", "both"),
        help="half precision: PEFT's autocast_adapter_dtype setting(s) to run (default on, PEFT's default; "
        "or CONFORMANCE_AUTOCAST); both doubles the half-precision PEFT cases",
    )
    run.add_argument(
        "--tie-states",
        choices=("natural", "all"),
        help="natural (default, or CONFORMANCE_TIE_STATES): the storage the tie flags rule; all: also a head "
        "apart under a tied config and one tensor under an untied one (ids -apart, -alias)",
    )
    run.add_argument(
        "--cover",
        metavar="T",
        help="run a T-wise cover of the plan: every combination of T axis values (implementation, family, "
        "flags and state, recipe, workflow, precision, config) in at least one case (default 0: every "
        "case, or CONFORMANCE_COVER; the nightly rows use 3)",
    )
    run.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where models and inputs live (default cpu, or CONFORMANCE_DEVICE); without a GPU, cuda "
        "skips every case with the reason",
    )
    run.add_argument("--out", default="reports", help="output folder (default reports/)")
    run.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="worker processes (default: one per core, at most 4)",
    )
    run.add_argument(
        "--case-timeout",
        type=float,
        default=float(os.environ.get("CONFORMANCE_CASE_TIMEOUT") or 60),
        help="seconds one case may take before it is stopped and recorded as crashed "
        "(default 60, or CONFORMANCE_CASE_TIMEOUT; 0: no limit)",
    )
    run.add_argument("--resume", metavar="DIR", help="finish the interrupted run whose results are in DIR")
    run.add_argument("--no-report", action="store_true", help="skip writing index.html beside the results")
    run.add_argument(
        "--strict",
        action="store_true",
        help="also fail on unexpected passes and on expectations a full run never used",
    )
    run.set_defaults(func=cmd_run)
    repro = sub.add_parser("repro", help="rerun one case by its case id")
    repro.add_argument("case_id")
    _dtype_option(repro, "rerun the case in this precision instead of the one its id names")
    repro.add_argument("--device", choices=("cpu", "cuda"), help="where to run it (default cpu)")
    repro.add_argument(
        "--standalone",
        action="store_true",
        help="print a self-contained script (torch, transformers and the package under test only) instead",
    )
    repro.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="with --standalone: write the script to FILE (under tox, whose status lines share stdout)",
    )
    repro.set_defaults(func=cmd_repro)
    page = sub.add_parser("report", help="render results files as one HTML page")
    page.add_argument(
        "results",
        nargs="*",
        default=["reports/results.jsonl"],
        help="results.jsonl files, one column group each (default reports/results.jsonl)",
    )
    page.add_argument("-o", "--output", default="reports/index.html")
    page.add_argument(
        "--view",
        choices=("matrix", "timeline"),
        help="matrix: a column group per run; timeline: a column per run in version order "
        "(default: timeline for more than two runs)",
    )
    page.set_defaults(func=cmd_report)
    compare = sub.add_parser("diff", help="compare two results files: added, removed, changed, unchanged")
    compare.add_argument("old")
    compare.add_argument("new")
    compare.add_argument("-o", "--output", default="reports/diff.html")
    _all_option(compare)
    compare.set_defaults(func=cmd_diff)
    gating = sub.add_parser(
        "gate", help="PR gate: a candidate run against a baseline run, cell by cell; exit 1 on a regression"
    )
    gating.add_argument("baseline", help="results.jsonl of the baseline (e.g. the newest release)")
    gating.add_argument("candidate", help="results.jsonl of the candidate (e.g. the pull request's build)")
    gating.add_argument("-o", "--output", default="reports/gate.html")
    _all_option(gating)
    gating.set_defaults(func=cmd_gate)
    known = sub.add_parser("expectations", help="maintain cases/expectations/ from runs")
    known_verbs = known.add_subparsers(dest="action", required=True)
    updating = known_verbs.add_parser(
        "update",
        help="rewrite cases/expectations/*.yaml from runs: narrow ranges, draft entries, report unused ones",
        description="Rewrite cases/expectations/*.yaml (or CONFORMANCE_CASES's) from runs: narrow an entry's "
        "range to `<` the lowest release seen passing where other records still fail, draft an entry (reason "
        "TODO) for failures no entry matches, report entries no run used. What it does not change keeps "
        "every byte. See README, 'Updating expectations'.",
    )
    updating.add_argument(
        "results",
        nargs="+",
        help="results.jsonl files or run folders (e.g. an old release's row and the newest)",
    )
    updating.add_argument(
        "--dry-run", action="store_true", help="print a unified diff per file; write nothing"
    )
    updating.add_argument(
        "--prune",
        action="store_true",
        help="delete the entries no run used (where a complete run ran something of each condition)",
    )
    updating.set_defaults(func=cmd_expectations_update)
    exporting = sub.add_parser(
        "export", help="cross-version: save PEFT's merged checkpoints and adapters here, for another version"
    )
    exporting.add_argument("--out", required=True, help="a new folder for the checkpoints and manifest.json")
    exporting.add_argument("--family", action="append", default=[], help="family (repeatable; default all)")
    _dtype_option(exporting, "precision the checkpoints are merged and saved in (repeatable; float32)")
    exporting.add_argument(
        "--cover", metavar="T", help="export a T-wise cover of the cases (as `run --cover`; default 0: all)"
    )
    exporting.set_defaults(func=cmd_export)
    importing = sub.add_parser(
        "import", help="cross-version: load and judge what `export` saved (possibly with other versions)"
    )
    importing.add_argument("folder", help="the folder `export` wrote")
    importing.add_argument("--out", default="reports/xver", help="output folder (default reports/xver)")
    _dtype_option(importing, "import only the cases of this precision (repeatable; default all exported)")
    importing.set_defaults(func=cmd_import)
    listing = sub.add_parser("list", help="families, recipes and what the installed versions allow")
    listing.set_defaults(func=cmd_list)
    return top


def _all_option(command: argparse.ArgumentParser) -> None:
    from conformance.pages.gate import CELLS_SHOWN

    command.add_argument(
        "--all",
        action="store_true",
        help=f"print every changed cell (default: counts by check, family and expectation, then the first "
        f"{CELLS_SHOWN} cells; the page lists every one)",
    )


def _dtype_option(command: argparse.ArgumentParser, about: str) -> None:
    command.add_argument(
        "--dtype", action="append", default=[], metavar="{float32,bfloat16,float16}", help=about
    )


# Verbs that run cases and so need the engine's libraries (the `engine` extra).
_ENGINE_VERBS = ("run", "repro", "export", "import", "list")
_ENGINE = ("torch", "transformers", "peft", "hypothesis")


def entry() -> int:
    """The `conformance` command and `python -m conformance`: main() under one fixed hash seed.

    Text from the code under test can print a set of names (safetensors' "shared tensors [{...}]"), whose
    order follows the interpreter's string hashing, random per process: the same seed gave two results
    files. Without PYTHONHASHSEED the command starts itself again with 0 (workers inherit it); a seed the
    user set is kept. tox sets a random one per call unless told otherwise: tox.ini sets 0."""
    if os.environ.get("PYTHONHASHSEED") is None:
        os.environ["PYTHONHASHSEED"] = "0"
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return main()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        if args.command not in _ENGINE_VERBS or exc.name not in _ENGINE:
            raise
        print(
            f"error: `{args.command}` runs cases and needs {exc.name}: install the suite with its engine "
            "(pip install -e '.[engine]' in a checkout, or '<path or git URL>[engine]') or use a tox "
            "environment (tox exec -e gemma4 -- python -m conformance ...)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except ConformanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # `... | head` closed the pipe: not an error of ours. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
