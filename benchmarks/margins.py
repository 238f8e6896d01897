"""Noise floors, tolerances and defect margins per family × precision, from results files.

    python benchmarks/margins.py reports/results.jsonl [MORE.jsonl ...] [--markdown]

For the logits checks (every numeric check but tie-preserved, whose floor is the probed matrices'):
the case's noise floor (median and largest), the tolerance applied (median and largest), the smallest
|Δ| among the results that diverged (a real defect: each is an expectation or an unexpected result),
and the margin: the smallest |Δ| / tolerance over those results. A margin under 10× is flagged. Reads
results files only: no torch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

DIVERGED = ("diverged-warned", "diverged-silent")
# Checks whose Δ is a logit difference; adapter-effect is a lower bound (a defect there is a small Δ).
SKIP = ("tie-preserved", "adapter-effect")


def records(paths: list[str]) -> list[dict]:
    found = []
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(Path(path), "rt") as handle:
            found.extend(json.loads(line) for line in handle if line.strip())
    return found


def table(found: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in found:
        if r.get("max_abs_diff") is None or r["check"] in SKIP or r.get("tolerance") is None:
            continue
        groups[(r["family"], r.get("dtype") or "float32")].append(r)
    rows = []
    for (family, dtype), mine in sorted(groups.items()):
        floors = [r["noise_floor"] for r in mine if r.get("noise_floor") is not None]
        tolerances = [r["tolerance"] for r in mine]
        defects = [r for r in mine if r["outcome"] in DIVERGED]
        margin = min((r["max_abs_diff"] / r["tolerance"] for r in defects), default=None)
        rows.append(
            {
                "family": family,
                "dtype": dtype,
                "floor": (statistics.median(floors), max(floors)) if floors else None,
                "tolerance": (statistics.median(tolerances), max(tolerances)),
                "smallest_defect": min((r["max_abs_diff"] for r in defects), default=None),
                "margin": margin,
                "results": len(mine),
                "defects": len(defects),
            }
        )
    return rows


def _pair(values: tuple[float, float] | None) -> str:
    return "–" if values is None else f"{values[0]:.3g} / {values[1]:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--markdown", action="store_true", help="a table for the README")
    args = parser.parse_args()
    rows = table(records(args.results))
    head = ("family", "dtype", "noise floor (median / max)", "tolerance (median / max)",
            "smallest defect |Δ|", "margin")  # fmt: skip
    lines = []
    for row in rows:
        margin = "–" if row["margin"] is None else f"{row['margin']:.3g}×"
        if row["margin"] is not None and row["margin"] < 10:
            margin += " (under 10×)"
        smallest = "–" if row["smallest_defect"] is None else f"{row['smallest_defect']:.3g}"
        lines.append(
            (row["family"], row["dtype"], _pair(row["floor"]), _pair(row["tolerance"]), smallest, margin)
        )
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(str(x)) for x in column) for column in zip(head, *lines, strict=True)]
        for line in (head, *lines):
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
