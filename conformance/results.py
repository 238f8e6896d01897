"""Results: one JSON object per (case, check) in results.jsonl, plus the terminal summary."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from conformance.expectations import EXPECTED, OK, UNEXPECTED, UNEXPECTED_PASS, Expectation
from conformance.outcomes import OUTCOMES, SKIPPED

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


@dataclass
class Record:
    case_id: str
    implementation: str
    family: str
    flags: dict[str, bool | None]
    recipe: str
    workflow: str
    check: str
    outcome: str
    verdict: str  # ok | expected | unexpected | unexpected-pass
    expected: str | None  # id of the matching expectation
    expected_outcome: str | None
    max_abs_diff: float | None
    tolerance: float | None
    warnings: list[str]
    detail: str
    step: str | None  # the pipeline step that failed, if one did
    tied: bool  # the model under test is tied under the HF rule (untie-first: never)
    support: str  # "supported", or "refused-by-design" where the implementation declares it won't build it
    config: dict[str, int]
    seed: int
    dtype: str
    versions: dict[str, str]
    features: list[str]  # features the probes found in the installed libraries (conformance.features)
    repro: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False, allow_nan=True)


def rounded(value: float | None) -> float | None:
    """Three significant digits: enough to read, and stable from run to run on the same machine."""
    if value is None:
        return None
    return float(f"{value:.3g}")


def attach(record: Record, entry: Expectation | None, verdict: str) -> Record:
    record.expected = entry.id if entry else None
    record.expected_outcome = entry.outcome if entry else None
    record.verdict = verdict
    return record


def write(records: Iterable[Record], folder: Path, meta: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_FILE
    with path.open("w") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")
    (folder / RUN_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def summary(records: list[Record], out: TextIO, unused: list[Expectation], limit: int = 15) -> None:
    """Counts per check and outcome, then every unexpected result with its repro."""
    by_check: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        by_check[r.check][r.outcome] += 1
    width = max([len(c) for c in by_check] + [5])
    header = f"{'check':<{width}} " + " ".join(f"{o:>15}" for o in OUTCOMES)
    print("\n" + header, file=out)
    print("-" * len(header), file=out)
    totals: Counter = Counter()
    for check, counts in by_check.items():
        totals.update(counts)
        print(f"{check:<{width}} " + " ".join(f"{counts.get(o, 0):>15}" for o in OUTCOMES), file=out)
    print("-" * len(header), file=out)
    print(f"{'total':<{width}} " + " ".join(f"{totals.get(o, 0):>15}" for o in OUTCOMES), file=out)

    verdicts = Counter(r.verdict for r in records)
    print(
        f"\n{len(records)} results: {verdicts.get(OK, 0)} ok, {verdicts.get(EXPECTED, 0)} expected, "
        f"{verdicts.get(UNEXPECTED, 0)} unexpected, {verdicts.get(UNEXPECTED_PASS, 0)} unexpectedly passing",
        file=out,
    )
    skipped = Counter(r.detail for r in records if r.outcome == SKIPPED)
    for reason, count in skipped.most_common(5):
        print(f"  skipped {count}: {reason}", file=out)
    for title, wanted in (("UNEXPECTED", UNEXPECTED), ("UNEXPECTEDLY PASSING", UNEXPECTED_PASS)):
        hits = [r for r in records if r.verdict == wanted]
        if not hits:
            continue
        print(f"\n{title} ({len(hits)}):", file=out)
        for r in hits[:limit]:
            note = f" [expected {r.expected_outcome} by {r.expected}]" if r.expected else ""
            print(f"  {r.check} {r.outcome}{note}: {r.case_id}\n    {r.detail}\n    {r.repro}", file=out)
        if len(hits) > limit:
            print(f"  ... and {len(hits) - limit} more in {RESULTS_FILE}", file=out)
    if unused:
        print(f"\nexpectations that matched nothing in this run ({len(unused)}):", file=out)
        for entry in unused[:limit]:
            print(f"  {entry.id} ({entry.source})", file=out)
