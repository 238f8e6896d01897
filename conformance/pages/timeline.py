"""The version timeline: many runs (a nightly's matrix rows and cross-version pairs) on one page.

Rows are cells (implementation · family · flags · recipe · workflow · check); columns are the runs in
version order (the order of cases/matrix.toml where a run's folder is named after a row, then by
versions). Where a cell's outcome changes between adjacent columns the page says so: "fixed in" (a
non-pass becomes pass), "broke in" (pass becomes a non-pass), "changed in" otherwise; cross-version
columns (save in one environment, load in another) show their outcomes but are no step. Rows whose every
column passes (or skips) are folded away by default. Reads results files only: no torch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.base.outcomes import PASS, SKIPPED
from conformance.pages.report import STYLE, Run, banner, expectation_links, page_script, row_label, worst
from conformance.reading import matrix
from conformance.reading.expectations import EXPECTED, UNEXPECTED, UNEXPECTED_PASS

# implementation, family, flags (and precision: `tT · bf16`), recipe, workflow, check
CellKey = tuple[str, str, str, str, str, str]
FIXED, BROKE, CHANGED = "fixed", "broke", "changed"


def cell_key(record: dict[str, Any]) -> CellKey:
    flags = row_label(record)
    return (
        record["implementation"],
        record["family"],
        flags,
        record["recipe"],
        record["workflow"],
        record["check"],
    )


def column_name(run: Run) -> str:
    """A run's column title: its matrix row's name (its folder), else its folder and versions."""
    return run.path.parent.name or run.label


def order(runs: list[Run]) -> list[Run]:
    """Matrix rows in matrix.toml order (rows before the cross-version pairs), the rest after, by versions."""
    try:
        known = matrix.load()
        names = [*known.rows, *known.pairs]
    except matrix.MatrixError:
        names = []
    rank = {name: i for i, name in enumerate(names)}
    return sorted(runs, key=lambda run: (rank.get(column_name(run), len(rank)), sorted(run.versions.items())))


@dataclass
class Line:
    key: CellKey
    outcomes: list[str | None]  # per column, worst outcome of the cell's records (None: not in that run)
    verdicts: list[str | None]
    details: list[str]
    events: list[tuple[int, str]]  # (column index, fixed | broke | changed) where the outcome moved

    @property
    def interesting(self) -> bool:
        return bool(self.events) or any(o not in (PASS, SKIPPED, None) for o in self.outcomes)


def lines(runs: list[Run]) -> list[Line]:
    by_cell: dict[CellKey, list[list[dict[str, Any]]]] = defaultdict(lambda: [[] for _ in runs])
    for index, run in enumerate(runs):
        for record in run.records:
            by_cell[cell_key(record)][index].append(record)
    found = []
    for key, columns in by_cell.items():
        outcomes = [worst([r["outcome"] for r in records]) if records else None for records in columns]
        verdicts = [_verdict(records) for records in columns]
        details = [records[0].get("detail", "") if records else "" for records in columns]
        events = []
        previous = None
        for index, outcome in enumerate(outcomes):
            # Cross-version columns are not a step in the version order: they show, they do not move.
            if outcome in (None, SKIPPED) or runs[index].meta.get("saved_with"):
                continue
            if previous is not None and outcome != previous:
                kind = FIXED if outcome == PASS else BROKE if previous == PASS else CHANGED
                events.append((index, kind))
            previous = outcome
        found.append(Line(key, outcomes, verdicts, details, events))
    return found


def _verdict(records: list[dict[str, Any]]) -> str | None:
    verdicts = {r["verdict"] for r in records}
    for verdict in (UNEXPECTED, UNEXPECTED_PASS, EXPECTED):
        if verdict in verdicts:
            return verdict
    return None


def render(runs: list[Run], output: Path) -> Path:
    from conformance.pages.report import templates, write

    ordered = order(runs)
    found = lines(ordered)
    script, script_hash = page_script("timeline.js")
    page = (
        templates()
        .get_template("timeline.html.j2")
        .render(
            runs=ordered,
            names=[column_name(run) for run in ordered],
            banners=[banner(run) for run in ordered],
            lines=sorted(found, key=lambda line: line.key),
            style=STYLE,
            links=expectation_links(),
            implementations=sorted({line.key[0] for line in found}),
            families=sorted({line.key[1] for line in found}),
            checks=sorted({line.key[5] for line in found}),
            folded=sum(not line.interesting for line in found),
            script=script,
            script_hash=script_hash,
        )
    )
    return write(page, output)
