"""Two runs cell by cell: what `diff` prints and its page (reports/diff.html)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from conformance.pages import gate, report

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"
STATUSES = (ADDED, REMOVED, CHANGED, UNCHANGED)


def diff(old: report.Run, new: report.Run) -> list[dict[str, Any]]:
    """Every (case, check) of either run: added, removed, changed (outcome or verdict) or unchanged."""
    before = {report.record_key(r): r for r in old.records}
    after = {report.record_key(r): r for r in new.records}
    rows = []
    for key in list(before) + [k for k in after if k not in before]:
        a, b = before.get(key), after.get(key)
        if a is None:
            status = ADDED
        elif b is None:
            status = REMOVED
        elif (a["outcome"], a["verdict"]) != (b["outcome"], b["verdict"]):
            status = CHANGED
        else:
            status = UNCHANGED
        rows.append({"key": key, "status": status, "old": a, "new": b})
    return rows


def transitions(rows: list[dict[str, Any]]) -> Counter:
    """How many changed results went from each old outcome/verdict to each new one: the shape of a diff."""
    return Counter((state(r["old"]), state(r["new"])) for r in rows if r["status"] == CHANGED)


def state(record: dict[str, Any] | None) -> str:
    """`outcome/verdict` of a record, `-` where the run has none: what the diff compares."""
    return "-" if record is None else f"{record['outcome']}/{record['verdict']}"


def render_diff(old: report.Run, new: report.Run, rows: list[dict[str, Any]], output: Path) -> Path:
    counts = Counter(row["status"] for row in rows)
    template = report.templates().get_template("diff.html.j2")
    shape = transitions(rows).most_common()
    page = template.render(
        old=old,
        new=new,
        labels=report.labels([old, new]),
        rows=rows,
        counts=counts,
        statuses=STATUSES,
        transitions=shape,
        style=report.STYLE,
    )
    return report.write(page, output)


def summary(rows: list[dict[str, Any]], show_all: bool = False) -> list[str]:
    """The terminal's account: counts by status and by kind of change, check, family and expectation, then
    the first changed cells (every one with `show_all`)."""
    counts = Counter(r["status"] for r in rows)
    lines = [" ".join(f"{status} {counts[status]}" for status in STATUSES)]
    lines += [
        f"  {count:>6}  {before} -> {after}" for (before, after), count in transitions(rows).most_common()
    ]
    changes = [
        gate.Change(r["key"], r["status"], r["old"], r["new"]) for r in rows if r["status"] != UNCHANGED
    ]
    lines += gate.breakdown(changes, kind=lambda c: c.status)
    cells = [gate.printable(f"{c.status:<8} {c.key}: {state(c.old)} -> {state(c.new)}") for c in changes]
    return lines + list(gate.listing(cells, None if show_all else gate.CELLS_SHOWN)[0])
