"""The HTML report: the outcome matrix of one or more results files, and the diff of two runs.

Rendered server-side from Jinja2 templates into one self-contained page (inline CSS, JS and SVG): each
matrix cell carries the keys of its records, so tests can match cells to results without a browser;
the page's script only filters and opens a cell's details.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.base.errors import ConformanceError
from conformance.base.flags import TieFlags
from conformance.base.outcomes import CRASHED, OUTCOMES, PASS, REFUSED, SILENT, SKIPPED, WARNED
from conformance.base.precision import Precision
from conformance.base.versions import SUPPORTING, under_test
from conformance.reading.expectations import EXPECTED, NOT_REPORTED, UNEXPECTED, UNEXPECTED_PASS
from conformance.reading.results import RESULTS_FILE, RUN_FILE

# What a page needs of a record; results from older versions of the suite may lack the rest.
REQUIRED = (
    "case_id",
    "implementation",
    "family",
    "flags",
    "recipe",
    "workflow",
    "check",
    "outcome",
    "verdict",
)
# Worst first: the colour of a cell is its worst outcome.
SEVERITY = (CRASHED, SILENT, WARNED, REFUSED, PASS, SKIPPED)
# Okabe-Ito colours (readable with colour-blindness), and a glyph so colour is never the only cue.
STYLE = {
    PASS: ("#009E73", "✓"),
    WARNED: ("#E69F00", "!"),
    SILENT: ("#D55E00", "✗"),
    REFUSED: ("#0072B2", "⊘"),
    CRASHED: ("#CC79A7", "☠"),
    SKIPPED: ("#BBBBBB", "–"),
}


@dataclass
class Run:
    """One results file: its records and what run.json beside it says about the run."""

    path: Path
    records: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def versions(self) -> dict[str, str]:
        return self.meta.get("versions") or (self.records[0].get("versions", {}) if self.records else {})

    @property
    def label(self) -> str:
        return under_test(self.versions, " · ") or self.path.name


def labels(runs: list[Run]) -> list[str]:
    """Each run named by what sets it apart from the others: the versions that differ between them, those
    under test first (`transformers 4.57.6 · peft 0.18.1`), else its folder; one run, its versions under
    test."""
    folders = [run.path.parent.name or str(run.path) for run in runs]
    if len(runs) == 1:
        return [runs[0].label if under_test(runs[0].versions) else folders[0]]
    packages = list(dict.fromkeys(name for run in runs for name in run.versions))
    differ = [name for name in packages if len({run.versions.get(name) for run in runs}) > 1]
    # A torch of its own says more than a folder's name, but never hides a package under test.
    shown = [name for name in differ if name not in SUPPORTING] or differ
    named = [
        " · ".join(f"{name} {run.versions[name]}" if name in run.versions else f"no {name}" for name in shown)
        for run in runs
    ]
    # Runs of the same versions (a rerun, another precision or selection) are told apart by their folders.
    return [
        folder if not name else f"{name} ({folder})" if named.count(name) > 1 else name
        for name, folder in zip(named, folders, strict=True)
    ]


def abbreviations(names: Iterable[str]) -> dict[str, str]:
    """Short labels, unique among `names`: the initials of a name's parts (`untie-first`: `uf`), longer in
    the parts that tell two names apart where the initials meet (`resize`, `resume`: `resi`, `resu`)."""
    names = list(dict.fromkeys(names))
    parts = {name: re.split(r"[-_]", name) for name in names}
    widths = {name: [1] * len(parts[name]) for name in names}
    whole: set[str] = set()  # names nothing shorter tells apart: shown as they are

    def short(name: str) -> str:
        shown = zip(parts[name], widths[name], strict=True)
        return name if name in whole else "".join(part[:width] for part, width in shown)

    while True:
        meeting: dict[str, list[str]] = defaultdict(list)
        for name in names:
            meeting[short(name)].append(name)
        clashes = [group for group in meeting.values() if len(group) > 1]
        if not clashes:
            return {name: short(name) for name in names}
        for group in clashes:
            for name in group:
                grown = False
                for i, part in enumerate(parts[name]):
                    others = {parts[o][i] if i < len(parts[o]) else "" for o in group if o != name}
                    if others - {part} and widths[name][i] < len(part):
                        widths[name][i] += 1
                        grown = True
                if not grown:
                    whole.add(name)


def load(path: Path) -> Run:
    """Read a results.jsonl (or the results.jsonl in a run's folder); an empty, truncated or foreign
    file raises one ConformanceError line."""
    if path.is_dir():
        if not (path / RESULTS_FILE).is_file():
            raise ConformanceError(f"{path}: a folder without a {RESULTS_FILE}")
        path = path / RESULTS_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConformanceError(f"{path}: cannot read ({exc.strerror})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ConformanceError(f"{path}: empty, no results to report")
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConformanceError(f"{path}:{number}: not JSON (truncated file?)") from None
        missing = [key for key in REQUIRED if not isinstance(record, dict) or key not in record]
        if missing:
            raise ConformanceError(f"{path}:{number}: not a conformance results record (no {missing[0]!r})")
        if not isinstance(record["flags"], dict) or "top" not in record["flags"]:
            raise ConformanceError(
                f"{path}:{number}: field 'flags' is not a flags object: {record['flags']!r}"
            )
        if record["outcome"] not in OUTCOMES:
            raise ConformanceError(f"{path}:{number}: unknown outcome {record['outcome']!r}")
        records.append(record)
    meta_path = path.parent / RUN_FILE
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except json.JSONDecodeError:
        raise ConformanceError(f"{meta_path}: not JSON (truncated file?)") from None
    return Run(path, records, meta)


def worst(outcomes: list[str]) -> str:
    return min(outcomes, key=SEVERITY.index) if outcomes else SKIPPED


@dataclass
class Cell:
    records: list[dict[str, Any]]

    @property
    def outcome(self) -> str:
        return worst([r["outcome"] for r in self.records])

    @property
    def marks(self) -> list[str]:
        verdicts = {r["verdict"] for r in self.records}
        border = _border(verdicts)
        return ([border] if border else []) + ([UNEXPECTED_PASS] if UNEXPECTED_PASS in verdicts else [])

    @property
    def keys(self) -> list[str]:
        # A list (JSON in the page), never a joined string: a case id from another machine may hold spaces.
        return [record_key(r) for r in self.records]

    def by_check(self) -> dict[str, str]:
        """Worst outcome and border mark per check, for the page's check filter."""
        out: dict[str, str] = {}
        for check in dict.fromkeys(r["check"] for r in self.records):
            mine = [r for r in self.records if r["check"] == check]
            out[check] = f"{worst([r['outcome'] for r in mine])}|{_border({r['verdict'] for r in mine})}"
        return out


def _border(verdicts: set[str]) -> str:
    """The cell's border: any unexpected result outweighs the expected ones."""
    return UNEXPECTED if UNEXPECTED in verdicts else EXPECTED if EXPECTED in verdicts else ""


def row_label(record: dict[str, Any]) -> str:
    """`tT-xF`, or `tT-xF · bf16 no-autocast` for a half-precision case: a row of the matrix."""
    precision = Precision.from_record(record)
    flags = TieFlags.from_record(record["flags"]).id
    return f"{flags} · {precision.label}" if precision.half else flags


def matrix(runs: list[Run]) -> dict[str, Any]:
    """Rows (family × flags × precision), column groups (one per run) of columns (implementation × recipe ×
    workflow)."""
    rows: dict[tuple[str, str], None] = {}
    columns: dict[tuple[str, str, str], None] = {}
    cells: dict[tuple, Cell] = {}
    for index, run in enumerate(runs):
        for record in run.records:
            row = (record["family"], row_label(record))
            column = (record["implementation"], record["recipe"], record["workflow"])
            rows.setdefault(row)
            columns.setdefault(column)
            cells.setdefault((index, row, column), Cell([])).records.append(record)
    ordered = sorted(columns, key=lambda c: list(dict.fromkeys(k[0] for k in columns)).index(c[0]))
    spans = [(impl, sum(1 for c in ordered if c[0] == impl)) for impl in dict.fromkeys(c[0] for c in ordered)]
    # Recipes head their columns once, over the run of columns they share; each column under them is
    # named by its workflow's abbreviation (the page's legend and each header's title spell it out):
    # headers a line high, where rotated "recipe · workflow" names took 200 px above the first row.
    recipes: list[list[Any]] = []
    for impl, recipe, _ in ordered:
        if recipes and recipes[-1][:2] == [impl, recipe]:
            recipes[-1][2] += 1
        else:
            recipes.append([impl, recipe, 1])
    short = abbreviations(c[2] for c in ordered)
    return {"rows": list(rows), "columns": ordered, "spans": spans, "recipes": recipes, "short": short,
            "cells": cells}  # fmt: skip


def record_key(record: dict[str, Any]) -> str:
    return f"{record['case_id']}|{record['check']}"


def plot(runs: list[Run], width: int = 900, height: int = 260) -> str:
    """Inline SVG: max |Δ| of every numeric result on a log scale, one lane per check, tolerances as ticks."""
    points = [(r, i) for i, run in enumerate(runs) for r in run.records if r.get("max_abs_diff") is not None]
    if not points:
        return ""
    checks = list(dict.fromkeys(r["check"] for r, _ in points))
    top, bottom = 2.0, -17.0  # log10 range: 100 down to float64 rounding
    lane = (width - 60) / len(checks)

    def y(value: float) -> float:
        # inf (shapes differ) and NaN (NaN logits) are the worst a result can be: drawn at the top.
        exponent = math.log10(max(value, 10**bottom)) if math.isfinite(value) else top
        return 10 + (top - min(exponent, top)) / (top - bottom) * (height - 60)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="max |Δ| per result, log scale">'
    ]
    for exponent in range(int(bottom), int(top) + 1, 3):
        parts.append(
            f'<line x1="50" x2="{width}" y1="{y(10**exponent):.1f}" y2="{y(10**exponent):.1f}" '
            f'stroke="#eee"/><text x="45" y="{y(10**exponent) + 4:.1f}" text-anchor="end" '
            f'font-size="10">1e{exponent}</text>'
        )
    for n, check in enumerate(checks):
        left = 55 + n * lane
        # Names wider than their lane alternate between two rows so neighbours do not overprint.
        row = n % 2 if lane < 6 * max(map(len, checks)) else 0
        parts.append(
            f'<text x="{left + lane / 2:.1f}" y="{height - 17 + 12 * row}" text-anchor="middle" '
            f'font-size="10">{html.escape(str(check))}</text>'
        )
        for tolerance in {r["tolerance"] for r, _ in points if r["check"] == check and r.get("tolerance")}:
            parts.append(
                f'<line x1="{left + 2:.1f}" x2="{left + lane - 4:.1f}" y1="{y(tolerance):.1f}" '
                f'y2="{y(tolerance):.1f}" stroke="#333" stroke-dasharray="4 2"/>'
            )
        mine = [(r, i) for r, i in points if r["check"] == check]
        for k, (record, run_index) in enumerate(mine):
            x = left + 4 + (k * 7.3 % (lane - 10))
            colour = STYLE[record["outcome"]][0]
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y(record["max_abs_diff"]):.1f}" r="2.5" fill="{colour}" '
                f'fill-opacity="0.8"><title>{html.escape(str(record["case_id"]))} (run {run_index + 1}): '
                f"{record['max_abs_diff']:g}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def banner(run: Run) -> dict[str, Any]:
    """Per environment: unexpected N, expected N by expectation (with its link), unexpected-pass N."""
    verdicts = Counter(r["verdict"] for r in run.records)
    expected = Counter(r["expected"] for r in run.records if r["verdict"] == EXPECTED and r.get("expected"))
    return {
        "unexpected": verdicts.get(UNEXPECTED, 0),
        "unexpected_pass": verdicts.get(UNEXPECTED_PASS, 0),
        "expected": verdicts.get(EXPECTED, 0),
        "by_expectation": expected.most_common(),
        "incomplete": bool(run.meta.get("incomplete")),
    }


def totals(runs: list[Run]) -> list[Counter]:
    return [Counter(r["outcome"] for r in run.records) for run in runs]


def expectation_links(by_implementation: bool = False) -> dict[str, dict[str, str]]:
    """Expectation id → link, class, reason and repro, from this checkout's cases/ (empty where there is
    none). An id is unique in its implementation's file only (`apart-saved-under-tied-config` is in three,
    each with its own repro): `by_implementation` keys them `implementation|id`."""
    from conformance.reading import expectations

    try:
        entries = expectations.load(None).entries
    except ConformanceError:
        return {}
    return {
        f"{e.implementation}|{e.id}" if by_implementation else e.id: {
            "link": e.link,
            "class": e.kind,
            "reason": e.reason,
            "repro": e.repro,
        }
        for e in entries
    }


def templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    # A path beside this module rather than PackageLoader, which resolves the package through import
    # machinery and failed under pytest here; the file path is the same for a checkout, editable or wheel.
    loader = FileSystemLoader(Path(__file__).parent / "templates")
    # Pages escape every value (their strings come from results files, written by the code under test);
    # the standalone repro scripts are Python source and are not HTML-escaped.
    env = Environment(loader=loader, autoescape=select_autoescape(["html.j2", "html"], default=False))
    env.filters["under_test"] = under_test
    return env


def _json_safe(value: Any) -> Any:
    """inf and NaN as strings: JSON.parse in the page rejects the bare Infinity/NaN Python writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def script_json(value: Any) -> str:
    """JSON to embed in a <script type="application/json">: `<`, `>` and `&` as \\u escapes, so no string
    from a results file can close the element (`</script>`) or open a comment; JSON.parse reads them back."""
    text = json.dumps(value, sort_keys=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# What a details row needs of a record (its key names the case); what every record of a case shares is
# kept once per case, and each distinct warning once per run: the page stays small for a nightly's runs.
# A case with a non-pass also carries its standalone command, where its workflow has a standalone script.
_CHECK_FIELDS = ("check", "outcome", "verdict", "expected", "expected_outcome", "max_abs_diff", "tolerance",
                 "noise_floor", "tolerance_factor", "computed_in", "detail")  # fmt: skip
_CASE_FIELDS = ("config", "seed", "dtype", "autocast", "device", "repro")


def details(run: Run) -> dict[str, Any]:
    """One run's records for the page: per (case, check) the check's own fields, per case the rest."""
    from conformance.pages.gate import standalone_for

    warnings: dict[str, int] = {}
    records = {}
    cases: dict[str, dict[str, Any]] = {}
    for r in run.records:
        shown = {k: r.get(k) for k in _CHECK_FIELDS}
        shown["warnings"] = [warnings.setdefault(w, len(warnings)) for w in r.get("warnings") or []]
        records[record_key(r)] = _json_safe(shown)
        if r["case_id"] not in cases:
            cases[r["case_id"]] = _json_safe({k: r.get(k) for k in _CASE_FIELDS})
        if r["outcome"] not in (PASS, SKIPPED) and "standalone" not in cases[r["case_id"]]:
            cases[r["case_id"]]["standalone"] = standalone_for(r)
    return {"records": records, "cases": cases, "warnings": list(warnings)}


@functools.cache
def page_script(name: str = "report.js") -> tuple[str, str]:
    """A page's one script and its CSP hash: no other script may run on a page that shows text written
    by the code under test."""
    script = (Path(__file__).parent / "templates" / name).read_text()
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return script, f"'sha256-{digest}'"


def render(runs: list[Run], output: Path) -> Path:
    """Write the report page for `runs` (one column group each) and return its path."""
    grid = matrix(runs)
    links = expectation_links()
    script, script_hash = page_script()
    template = templates().get_template("report.html.j2")
    page = template.render(
        script=script,
        script_hash=script_hash,
        settings=script_json({"style": STYLE, "severity": list(SEVERITY), "not_reported": NOT_REPORTED}),
        runs=runs,
        labels=labels(runs),
        grid=grid,
        style=STYLE,
        outcomes=OUTCOMES,
        severity=list(SEVERITY),
        totals=totals(runs),
        banners=[banner(run) for run in runs],
        plot=plot(runs),
        checks=sorted({r["check"] for run in runs for r in run.records}),
        implementations=sorted({r["implementation"] for run in runs for r in run.records}),
        families=list(dict.fromkeys(row[0] for row in grid["rows"])),
        details=script_json([details(run) for run in runs]),
        links=script_json(expectation_links(by_implementation=True)),
        links_by_id=links,
    )
    return write(page, output)


def write(page: str, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page)
    return output
