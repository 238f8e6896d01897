"""Results: one JSON object per (case, check) in results.jsonl, plus the terminal summary."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

from conformance.base.errors import ConformanceError
from conformance.base.outcomes import OUTCOMES, SKIPPED
from conformance.reading.expectations import EXPECTED, OK, UNEXPECTED, UNEXPECTED_PASS, Expectation

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
    # Where the tolerance came from: factor × the case's noise floor (or the minimum for the precision,
    # where that is larger, or the check does not scale: then both may be None).
    noise_floor: float | None
    tolerance_factor: float | None
    warnings: list[str]
    detail: str
    step: str | None  # the pipeline step that failed, if one did
    tied: bool  # the model under test is tied under the HF rule (untie-first: never)
    support: str  # "supported", or "refused-by-design" where the implementation declares it won't build it
    config: dict[str, int]
    seed: int
    dtype: str  # the case's precision (float32, bfloat16, float16): the axis ids and expectations name
    autocast: bool | None  # PEFT's autocast_adapter_dtype, where the case has that axis
    computed_in: str  # the precision the check's models ran in (float64 where the table says so)
    device: str  # cpu, or cuda (GPU name)
    versions: dict[str, str]
    features: list[str]  # features the probes found in the installed libraries (conformance.model.features)
    repro: str
    # Cross-version records only: the versions that saved what `versions` (the loader) loaded.
    saved_with: dict[str, str] | None = None

    def to_json(self) -> str:
        # Every field is a JSON value already: asdict's deep copy of each was most of the parent's time.
        return json.dumps(vars(self), sort_keys=False, allow_nan=True)


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
    """results.jsonl (replaced whole, through a temporary file) and run.json."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_FILE
    partial = path.with_suffix(".jsonl.tmp")
    with partial.open("w") as handle:
        for record in records:
            handle.write(record.to_json() + "\n")
    os.replace(partial, path)
    write_meta(folder, meta)
    return path


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    partial = folder / (RUN_FILE + ".tmp")
    partial.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(partial, folder / RUN_FILE)


class Appender:
    """results.jsonl kept current as cases finish: one case's records per write, flushed to disk, so a
    run stopped at any moment leaves every finished case on disk (a torn last line is dropped on resume)."""

    def __init__(self, folder: Path, fresh: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = (folder / RESULTS_FILE).open("w" if fresh else "a")

    def add(self, records: list[Record]) -> None:
        self.handle.write("".join(r.to_json() + "\n" for r in records))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def finished_cases(folder: Path) -> dict[str, list[Record]]:
    """The records of each case an interrupted run finished, by case id (a torn last case is left out)."""
    path = folder / RESULTS_FILE
    text = path.read_text() if path.is_file() else ""
    complete, _, torn = text.rpartition("\n")
    by_case: dict[str, list[Record]] = {}
    names = {f.name for f in fields(Record)}
    for number, line in enumerate(complete.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if set(data) != names:
                raise ValueError(f"fields {sorted(set(data) ^ names)} differ from this suite's")
            record = Record(**data)
        except (ValueError, TypeError) as exc:
            raise ConformanceError(f"{path}:{number}: cannot resume from this record ({exc})") from None
        by_case.setdefault(record.case_id, []).append(record)
    if torn.strip():
        # The case being written when the run stopped: its last line is incomplete, so none of it counts.
        last = json.loads(complete.splitlines()[-1])["case_id"] if complete.strip() else None
        by_case.pop(last, None)
    return by_case


SKIP_REASONS_SHOWN = 5


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
    shown = skipped.most_common(SKIP_REASONS_SHOWN)
    for reason, count in shown:
        print(f"  skipped {count}: {reason}", file=out)
    if len(skipped) > len(shown):
        rest = sum(skipped.values()) - sum(count for _, count in shown)
        print(
            f"  skipped {rest} more, for {len(skipped) - len(shown)} other reasons (each record says why: "
            "the results file, the report)",
            file=out,
        )
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
