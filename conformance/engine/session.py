"""One run of the suite: its plan, results kept on disk as cases finish, a clean stop, and resume.

results.jsonl grows case by case while the run goes on, and run.json says `incomplete` until the end,
when both are rewritten in plan order. SIGINT or SIGTERM (what CI sends at its time limit) stops the
run: finished records stay, run.json records how many cases did not run, the summary is printed, and
the exit code is EXIT_INTERRUPTED. `run --resume DIR` runs what is missing with the selection that
run.json recorded; the final results.jsonl is the one an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import implementations
from conformance.base import device, outcomes
from conformance.base.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, ConformanceError
from conformance.base.versions import installed, sources
from conformance.engine import execution
from conformance.engine.core import Selection, applicable_checks, covered, expect, full_plan, vocabulary
from conformance.model import families, features
from conformance.model import recipes as recipe_book
from conformance.pages import report
from conformance.reading import expectations, results
from conformance.reading.results import Record


@dataclass
class Options:
    out: Path
    jobs: int
    case_timeout: float
    strict: bool = False
    report: bool = True
    resume: bool = False


def selection_record(selection: Selection) -> dict[str, Any]:
    """What `gate` requires two runs to share, and what `--resume` runs again (in the order given: the
    order of the plan, so a resumed run writes its records in the same order)."""
    return {
        "implementations": [i.name for i in implementations.selected(selection.implementations)],
        "families": list(selection.families),
        "recipes": list(selection.recipes),
        "workflows": list(selection.workflows),
        "checks": list(selection.checks),
        "profile": selection.profile,
        "seed": selection.seed,
        "dtypes": selection.precisions,
        "autocast": selection.autocast,
        "tie_states": selection.tie_states,
        "device": selection.device,
        "cover": selection.cover,
    }


def resumed_selection(folder: Path) -> Selection:
    """The selection an interrupted run in `folder` recorded; one line if there is nothing to resume."""
    path = folder / results.RUN_FILE
    try:
        meta = json.loads(path.read_text())
        recorded = meta["selection"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConformanceError(
            f"{path}: no run to resume (missing, unreadable or without its selection)"
        ) from None
    if not meta.get("incomplete"):
        raise ConformanceError(f"{path}: that run is complete; nothing to resume")
    return Selection(
        recorded["implementations"],
        recorded["families"],
        recorded["recipes"],
        recorded["workflows"],
        recorded["checks"],
        recorded["profile"],
        recorded["seed"],
        recorded.get("dtypes", []),
        recorded.get("device", "cpu"),
        recorded.get("autocast", "on"),
        recorded.get("tie_states", "natural"),
        recorded.get("cover", 0),
    )


@contextlib.contextmanager
def stop_signals() -> Iterator[list[str]]:
    """SIGINT and SIGTERM ask the run to stop (the list gets the signal's name) instead of killing it."""
    asked: list[str] = []
    previous = {}

    def ask(number: int, frame: Any) -> None:
        asked.append(signal.Signals(number).name)

    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, ask)
    try:
        yield asked
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _complete(case_records: list[Record], case: Any, selection: Selection) -> bool:
    """A case's records on disk are whole: one per check the case has (its write was not torn)."""
    wanted = {c.name for c in applicable_checks(case) if not selection.checks or c.name in selection.checks}
    return sorted(r.check for r in case_records) == sorted(wanted)


def _why_empty(selection: Selection) -> str:
    """Where an empty plan comes from a recipe that only implementations not selected here run (a NeMo
    recipe in an environment without NeMo): which ones, and why they are not planned."""
    chosen = {i.name for i in implementations.selected(selection.implementations)}
    book = recipe_book.load()
    every_family = [f.name for f in families.all_families()]
    for name in selection.recipes:
        runners = [
            i
            for i in implementations.REGISTRY.values()
            if any(i.runs_recipe(book.get(name), f) for f in selection.families or every_family)
        ]
        if runners and not any(i.name in chosen for i in runners):
            why = "; ".join(i.unavailable() or f"{i.name} is not selected" for i in runners)
            return f": recipe {name} runs under {', '.join(i.name for i in runners)} only ({why})"
    return ""


def run(selection: Selection, options: Options) -> int:
    everything = full_plan(selection)
    planned = covered(selection, everything)
    if not planned:
        raise ConformanceError(
            f"the selection matched no case{_why_empty(selection)} (see `python -m conformance list`)"
        )
    known = expectations.load(vocabulary())  # a malformed expectation file stops the run before any case
    done: dict[int, list[Record]] = {}
    if options.resume:
        finished = results.finished_cases(options.out)
        for index, case in enumerate(planned):
            if case.case_id in finished and _complete(finished[case.case_id], case, selection):
                done[index] = finished[case.case_id]
    todo = [i for i in range(len(planned)) if i not in done]
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "profile": selection.profile,
        "seed": selection.seed,
        "implementations": sorted(selection_record(selection)["implementations"]),
        "selection": selection_record(selection),
        "versions": installed(),
        "sources": sources(),
        "features": features.found(),
        "not_planned": implementations.not_planned(selection.implementations),
        "dtypes": selection.precisions,
        "device": device.describe(selection.device),
        "device_unavailable": device.unavailable(selection.device),
        "numerics": device.numerics(),
        "cases": len(planned),
        "cases_without_cover": len(everything),
        "jobs": options.jobs,
        "case_timeout": options.case_timeout,
        "incomplete": True,
        "not_run": len(todo),
    }
    options.out.mkdir(parents=True, exist_ok=True)
    results.write_meta(options.out, meta)
    appender = results.Appender(options.out, fresh=not options.resume)
    if options.resume:
        print(f"conformance: resuming: {len(done)} cases already finished, {len(todo)} to run")
    progress = execution.Progress(len(todo))
    started = time.perf_counter()
    stopped = None
    with stop_signals() as asked:
        try:
            cases = [planned[i] for i in todo]
            for position, case_records in execution.judge_all(
                cases, selection, options.jobs, options.case_timeout, stop=lambda: bool(asked)
            ):
                done[todo[position]] = expect(case_records, known)
                appender.add(done[todo[position]])
                progress.update()
        except execution.Interrupted:
            stopped = asked[0]
        finally:
            progress.close()
            appender.close()
    elapsed = time.perf_counter() - started
    records = [r for index in sorted(done) for r in expect(done[index], known)]
    meta.update(results=len(records), seconds=round(elapsed, 2), not_run=len(planned) - len(done))
    chosen = implementations.selected(selection.implementations)
    # Entries of an implementation that is not installed here say nothing about this run.
    present = {i.name for i in chosen if i.unavailable() is None}
    complete = stopped is None
    ran = {r.recipe for r in records if r.outcome != outcomes.SKIPPED}
    unused = known.unused(present, installed(), ran) if complete and not selection.filtered else []
    meta.update(incomplete=not complete, unused_expectations=[e.id for e in unused])
    if complete:
        path = results.write(records, options.out, meta)
    else:
        results.write_meta(options.out, meta)
        path = options.out / results.RESULTS_FILE
    results.summary(records, sys.stdout, unused)
    if not complete:
        print(
            f"\nstopped by {stopped}: {len(done)} of {len(planned)} cases finished, {meta['not_run']} not "
            f"run; results so far in {path}; finish with: python -m conformance run --resume {options.out}"
        )
        return EXIT_INTERRUPTED
    of_all = (
        f" (a {selection.cover}-wise cover of {len(everything)}; --cover 0 runs them all)"
        if len(planned) < len(everything)
        else ""
    )
    print(f"\n{len(planned)} cases{of_all} in {elapsed:.1f}s; results in {path}")
    if options.report:
        print(f"report: {report.render([report.load(path)], options.out / 'index.html')}")
    bad = {expectations.UNEXPECTED} | ({expectations.UNEXPECTED_PASS} if options.strict else set())
    failed = any(r.verdict in bad for r in records) or (options.strict and bool(unused))
    return EXIT_UNEXPECTED if failed else EXIT_OK
