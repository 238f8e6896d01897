"""The PR gate: every (case, check) cell of a baseline run against the same cell of a candidate run.

The verdict reads outcomes only, never expectations: an expectation (or its version range) may excuse a
known bug in a release, but must not hide that a pull request brought one back. Outcomes are ranked
from best to worst, and a cell regresses when its outcome moves down the ranking:

    pass  <  refused  <  diverged-warned  <  crashed  <  diverged-silent

So pass → anything else, warned → silent, refused → crashed or diverged are regressions (and so are
warned → crashed and crashed → silent: a new crash breaks users' code, silent corruption is the worst
there is). A baseline cell that the candidate no longer runs (missing, or newly skipped) is lost
coverage, also a regression. A non-pass that now passes is an improvement, listed with the
expectation ids that need narrowing. Only reads results files: imports neither torch nor transformers.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.base import contract
from conformance.base.errors import ConformanceError
from conformance.base.outcomes import CRASHED, PASS, REFUSED, SILENT, SKIPPED, WARNED
from conformance.pages.report import STYLE, Run, record_key

RANK = {PASS: 0, REFUSED: 1, WARNED: 2, CRASHED: 3, SILENT: 4}
REGRESSED, LOST, IMPROVED, BETTER, GAINED, UNCHANGED = (
    "regressed",
    "lost",
    "improved",
    "better",
    "gained",
    "unchanged",
)
# Page and terminal order: what fails the gate first, then what needs an expectation narrowed.
STATUSES = (REGRESSED, LOST, IMPROVED, BETTER, GAINED, UNCHANGED)
FAILING = (REGRESSED, LOST)
# What run.json must agree on for two runs to be compared cell by cell.
SELECTION_KEYS = (
    "implementations",
    "families",
    "recipes",
    "workflows",
    "checks",
    "profile",
    "seed",
    "dtypes",
    "autocast",
    "tie_states",
    "cover",
)
# What a run.json written before a key existed ran: the same selection as the key's value today.
_SELECTION_DEFAULTS = {"dtypes": ["float32"], "autocast": "on", "tie_states": "natural", "cover": 0}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Cell lines `gate` and `diff` print without --all (the pages list every cell): two nightly rows differ in
# thousands of cells, which only the counts per check, family and expectation make readable.
CELLS_SHOWN = 20
NO_EXPECTATION = "no expectation"


@dataclass(frozen=True)
class Change:
    """One (case, check) cell: its baseline and candidate records (either may be absent) and status."""

    key: str
    status: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    @property
    def record(self) -> dict[str, Any]:
        return self.new or self.old  # type: ignore[return-value]

    @property
    def fails(self) -> bool:
        return self.status in FAILING

    def transition(self) -> str:
        return f"{_outcome(self.old)} -> {_outcome(self.new)}"

    def expectation_ids(self) -> list[str]:
        """Expectations that excused the old outcome: the ones to narrow when a cell now passes."""
        found = [r.get("expected") for r in (self.new, self.old) if r]
        return list(dict.fromkeys(e for e in found if e))

    def line(self) -> str:
        """One terminal line: case, check, old -> new, max |Δ| against tolerance, the repro commands."""
        r = self.record
        parts = [f"{r['case_id']} {r['check']}: {self.transition()}"]
        delta = _delta(self.old, self.new)
        if delta:
            parts.append(delta)
        if self.status == LOST:
            parts.append(f"skipped: {self.new['detail']}" if self.new else "missing from the candidate")
        elif self.status in (REGRESSED, BETTER) and self.new and self.new.get("detail"):
            parts.append(str(self.new["detail"]))
        if self.status == IMPROVED and self.expectation_ids():
            parts.append("narrow: " + ", ".join(self.expectation_ids()))
        if self.fails:
            parts.append(f"repro: {repro_command(r['case_id'])}")
            standalone = standalone_for(r)
            if standalone:
                parts.append(f"standalone: {standalone}")
        return printable(" | ".join(parts))


def repro_command(case_id: str) -> str:
    return f"python -m conformance repro {_quote(case_id)}"


def standalone_command(case_id: str) -> str:
    """A script that needs only torch, transformers and the package under test: for an upstream issue."""
    return f"python -m conformance repro {_quote(case_id)} --standalone -o repro.py && python repro.py"


def standalone_for(record: dict[str, Any]) -> str | None:
    """The standalone command of a record's case, where its workflow has a standalone script (the
    contract says which; workflows an implementation module declares have none, so a reader of results,
    which imports no implementation, knows every workflow that has one)."""
    workflow = contract.WORKFLOWS.get(str(record.get("workflow")))
    return standalone_command(record["case_id"]) if workflow is not None and workflow.standalone else None


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def printable(text: str) -> str:
    """Text from a results file, safe for a terminal: control characters (escape sequences) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _outcome(record: dict[str, Any] | None) -> str:
    return "(none)" if record is None else str(record["outcome"])


def _delta(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
    values = [r.get("max_abs_diff") for r in (old, new) if r]
    if all(v is None for v in values):
        return ""
    shown = " -> ".join("-" if v is None else f"{v:g}" for v in values)
    tolerance = next((r.get("tolerance") for r in (new, old) if r and r.get("tolerance") is not None), None)
    return f"max |Δ| {shown}" + ("" if tolerance is None else f" (tolerance {tolerance:g})")


def classify(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
    """The gate status of one cell, from its two outcomes alone."""
    ran_before = old is not None and old["outcome"] != SKIPPED
    runs_now = new is not None and new["outcome"] != SKIPPED
    if not ran_before:
        return GAINED if runs_now else UNCHANGED
    if not runs_now:
        return LOST
    before, after = RANK[old["outcome"]], RANK[new["outcome"]]  # type: ignore[index]
    if after > before:
        return REGRESSED
    if after < before:
        return IMPROVED if new["outcome"] == PASS else BETTER  # type: ignore[index]
    return UNCHANGED


def comparable(baseline: Run, candidate: Run) -> None:
    """Two runs can be gated only if they ran the same selection, profile and seed: else one line, exit 2.
    Where a results file came without its run.json, what both ran is read from the records instead."""
    if "selection" not in baseline.meta or "selection" not in candidate.meta:
        old, new = ran(baseline), ran(candidate)
        keys: tuple[str, ...] = tuple(old)
        lacking = ", ".join(
            str(r.path.parent / "run.json") for r in (baseline, candidate) if "selection" not in r.meta
        )
        print(
            f"gate: no selection in {lacking}: the runs are matched by what their records ran",
            file=sys.stderr,
        )
    else:
        old, new, keys = baseline.meta["selection"], candidate.meta["selection"], SELECTION_KEYS
    for key in keys:
        # The order of repeated options changes the plan's order, not its cells.
        before, after = (side.get(key, _SELECTION_DEFAULTS.get(key)) for side in (old, new))
        if _unordered(before) != _unordered(after):
            raise ConformanceError(
                f"baseline and candidate ran different selections: {key} {_short(before)} vs "
                f"{_short(after)}; run both with the same arguments"
            )


def ran(run: Run) -> dict[str, list[Any]]:
    """What a run's records say it ran (skipped cases have records too): its selection, read back."""
    fields = {
        "implementations": "implementation",
        "families": "family",
        "recipes": "recipe",
        "workflows": "workflow",
        "checks": "check",
        "dtypes": "dtype",
        "seed": "seed",
    }
    return {key: sorted({str(r.get(field)) for r in run.records}) for key, field in fields.items()}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "...]"


def _unordered(value: Any) -> Any:
    return sorted(value) if isinstance(value, list) else value


def compare(baseline: Run, candidate: Run) -> list[Change]:
    """Every cell of either run with its status, in baseline order (cells only the candidate has last)."""
    comparable(baseline, candidate)
    before = {record_key(r): r for r in baseline.records}
    after = {record_key(r): r for r in candidate.records}
    keys = list(before) + [k for k in after if k not in before]
    return [Change(k, classify(before.get(k), after.get(k)), before.get(k), after.get(k)) for k in keys]


def counts(changes: list[Change]) -> Counter:
    return Counter(c.status for c in changes)


def tally(
    changes: list[Change], by: Callable[[Change], Iterable[str]], kind: Callable[[Change], str] | None = None
) -> str:
    """`merge-fidelity 30 (changed 20, added 10), tie-consistency 4 (changed 4)`: the changes counted by a
    field (a change may count under several values: its expectations), most first, split by kind."""
    if kind is not None and len({kind(c) for c in changes}) < 2:
        kind = None  # one kind of change in all: its split says nothing
    total: Counter = Counter()
    kinds: dict[str, Counter] = {}
    for change in changes:
        for value in dict.fromkeys(by(change)):
            total[value] += 1
            if kind is not None:
                kinds.setdefault(value, Counter())[kind(change)] += 1
    shown = []
    for value, count in total.most_common():
        split = ", ".join(f"{k} {n}" for k, n in kinds[value].most_common()) if kind is not None else ""
        shown.append(f"{value} {count}" + (f" ({split})" if split else ""))
    return printable(", ".join(shown))


def breakdown(changes: list[Change], kind: Callable[[Change], str] | None = None) -> list[str]:
    """What a set of changed cells is made of, for the terminal: counts by check, family and expectation."""
    fields: dict[str, Callable[[Change], Iterable[str]]] = {
        "check": lambda c: [str(c.record["check"])],
        "family": lambda c: [str(c.record["family"])],
        "expectation": lambda c: c.expectation_ids() or [NO_EXPECTATION],
    }
    return [f"by {name}: {tally(changes, by, kind)}" for name, by in fields.items()]


def listing(lines: list[str], room: int | None) -> tuple[list[str], int | None]:
    """Cell lines as printed: every one where `room` is None (--all), else as many as `room` allows and a
    line saying how many more. Returns them and the room left. Only cell lines are indented, so a
    script can read the cells of a section (with --all, all of them)."""
    if room is None:
        return [f"  {line}" for line in lines], None
    shown = [f"  {line}" for line in lines[:room]]
    if len(lines) > room:
        shown.append(f"... {len(lines) - room} more (--all prints every cell; the page lists them all)")
    return shown, max(room - len(lines), 0)


def side_lines(run: Run, name: str) -> list[str]:
    """`baseline: peft 0.21.2 (path /src/peft @ 1a2b3c) · transformers 5.24.0 · ...` for the header."""
    sources = run.meta.get("sources", {})
    shown = [
        f"{pkg} {version}" + (f" ({sources[pkg]})" if pkg in sources else "")
        for pkg, version in run.versions.items()
    ]
    return [printable(f"{name}: {' · '.join(shown) or '(no versions recorded)'}  [{run.path}]")]


def render(baseline: Run, candidate: Run, changes: list[Change], output: Path) -> Path:
    """The gate page: regressions first, then improvements; static HTML, no script at all."""
    from conformance.pages.report import expectation_links, templates, write

    groups = {status: [c for c in changes if c.status == status] for status in STATUSES}
    page = (
        templates()
        .get_template("gate.html.j2")
        .render(
            baseline=baseline,
            candidate=candidate,
            groups=groups,
            counts=counts(changes),
            statuses=STATUSES,
            failing=FAILING,
            failed=any(c.fails for c in changes),
            style=STYLE,
            links=expectation_links(),
            selection=baseline.meta.get("selection", {}),
            repro=repro_command,
            standalone=standalone_for,
            delta=_delta,
        )
    )
    return write(page, output)


def summary(baseline: Run, candidate: Run, changes: list[Change], show_all: bool = False) -> list[str]:
    """The terminal's account: both sides, counts by status, kind of change, check, family and expectation,
    then the first changed cells of each status (every one with `show_all`)."""
    out = [f"gate: {line}" for line in side_lines(baseline, "baseline") + side_lines(candidate, "candidate")]
    tallied = counts(changes)
    out.append("gate: " + " · ".join(f"{status} {tallied.get(status, 0)}" for status in STATUSES))
    groups = {s: [c for c in changes if c.status == s] for s in STATUSES if s != UNCHANGED}
    for status, shown in groups.items():
        if shown:
            out.append(f"gate: {status}: {tally(shown, lambda c: [c.transition()])}")
            out += [f"gate: {status} {line}" for line in breakdown(shown)]
    room = None if show_all else CELLS_SHOWN
    for status, shown in groups.items():
        if not shown:
            continue
        out.append(f"\n{status.upper()} ({len(shown)}){': fails the gate' if status in FAILING else ''}")
        cells, room = listing([change.line() for change in shown], room)
        out += cells
    return out
