"""`expectations update`: the expectation files rewritten from runs: ranges narrowed, entries drafted, pruned.

The rules are the README's ("Updating expectations"). Reads results files as JSON data, checked field by
field, and imports neither torch nor transformers; reading.yamledit writes the edits so that what they
do not change keeps every byte.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from packaging.version import InvalidVersion, Version

from conformance.base import casefiles
from conformance.base.errors import EXIT_OK, ConformanceError
from conformance.base.flags import STORAGE, TieFlags
from conformance.base.outcomes import PASS, SKIPPED, SUPPORT, SUPPORTED
from conformance.base.versions import SUPPORTING
from conformance.pages import report
from conformance.pages.gate import repro_command
from conformance.reading import yamledit
from conformance.reading.expectations import (
    NOT_REPORTED,
    Expectation,
    ExpectationSet,
    Subject,
    hidden,
    load_file,
    name_matches,
)

# The condition fields a draft writes (expectations._NAME_FIELDS), in the order the files use.
FIELDS = ("family", "flags", "storage", "recipe", "workflow", "check", "dtype", "device")
# Names from a results file end up in YAML, file names and shell lines: plain words only.
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@-]*")


@dataclass(frozen=True)
class Observation:
    """One non-skipped record of a run, as the matcher sees it."""

    case_id: str
    outcome: str
    subject: Subject
    delta: float | None = None  # the check's |Δ|: a pass may still show a bug (expectations.hidden)

    @property
    def failed(self) -> bool:
        return self.outcome != PASS

    @property
    def cell(self) -> tuple:
        s = self.subject
        return (s.implementation, *(getattr(s, f) for f in FIELDS), s.autocast, s.support)


@dataclass
class Scope:
    """What one run ran: the values each condition took, and its versions."""

    values: dict[str, set] = field(default_factory=lambda: defaultdict(set))
    versions: list[dict[str, str]] = field(default_factory=list)


def read_runs(paths: list[Path]) -> tuple[list[Observation], list[Scope]]:
    """Results files or run folders (as gate and diff take them); a malformed record is one error line.
    The scopes are those of the runs that can show an entry unused: complete and not a cover."""
    found, scopes = [], []
    for path in paths:
        run = report.load(path)
        scope = Scope()
        for number, record in enumerate(run.records, 1):
            if record["outcome"] != SKIPPED:
                seen = _observation(record, f"{run.path}: record {number}")
                found.append(seen)
                for name in (*FIELDS, "tied", "autocast", "support", "implementation"):
                    scope.values[name].add(getattr(seen.subject, name))
                if seen.subject.versions not in scope.versions:
                    scope.versions.append(seen.subject.versions)
        selection = run.meta.get("selection")
        if isinstance(selection, dict) and not selection.get("cover") and not run.meta.get("incomplete"):
            scopes.append(scope)
    return found, scopes


def _observation(record: dict[str, Any], where: str) -> Observation:
    def bad(name: str, why: str) -> ConformanceError:
        return ConformanceError(f"{where}: field {name!r} {why}: {str(record.get(name))[:80]!r}")

    extra = {"dtype": record.get("dtype") or "float32", "device": str(record.get("device") or "cpu")}
    extra["device"] = extra["device"].split(" ")[0]  # "cuda (NVIDIA H200)": expectations name cpu or cuda
    names = {n: record.get(n) for n in ("implementation", "family", "recipe", "workflow", "check")} | extra
    for name, value in (*names.items(), ("case_id", record.get("case_id"))):
        if not isinstance(value, str) or not (_CASE_ID if name == "case_id" else _WORD).fullmatch(value):
            raise bad(name, "is not a plain name")
    tables = {}
    for name in ("versions", "saved_with"):
        table = record.get(name) or {}
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in [*table, *table.values()]):
            raise bad(name, "is not a table of versions")
        tables[name] = table
    flags = record["flags"]
    if flags.get("text") not in (None, True, False) or flags.get("storage") not in (*STORAGE, None):
        raise bad("flags", "is not a flags object")
    if not isinstance(record.get("tied"), bool):
        raise bad("tied", "is not true or false")
    if record.get("autocast") not in (None, True, False):
        raise bad("autocast", "is not true, false or null")
    if record.get("support", SUPPORTED) not in SUPPORT:
        raise bad("support", "is not a support word")
    tie = TieFlags.from_record(flags)
    subject = Subject(
        **{k: v for k, v in names.items() if k not in extra},
        flags=tie.config_id,
        tied=record["tied"],
        versions=tables["versions"],
        support=record.get("support", SUPPORTED),
        saved_with=tables["saved_with"] if record.get("saved_with") is not None else None,
        storage=tie.storage or "natural",
        autocast=record.get("autocast"),
        **extra,
    )
    delta = record.get("max_abs_diff")
    delta = float(delta) if isinstance(delta, (int, float)) and not isinstance(delta, bool) else None
    return Observation(record["case_id"], record["outcome"], subject, delta)


def _release(raw: str | None) -> Version | None:
    """A released version (a local build such as 2.13.0+cpu counts as its release); else None: a dev or
    pre-release build says which release it follows, not which fixes it has."""
    try:
        version = Version(raw or "")
    except InvalidVersion:
        return None
    return None if version.is_devrelease or version.is_prerelease else Version(version.public)


def _short(version: Version) -> str:
    """5.25.0 -> 5.25: the same bound, as the files write them."""
    if version.post is not None or version.epoch:
        return str(version)
    release = list(version.release)
    while len(release) > 2 and release[-1] == 0:
        release.pop()
    return ".".join(map(str, release))


def separate(
    clause: Expectation, failing: list[Observation], passing: list[Observation], order: list[str]
) -> tuple[dict[str, str], list[str]] | None:
    """Ranges for the clause that keep every failing record and none of the passing ones (the first
    package of `order` that separates them), and the other packages that would: the maintainer knows
    which one changed."""
    found: list[tuple[dict[str, str], str]] = []
    for package in order:
        seen = [v for o in passing if (v := _release(o.subject.versions.get(package))) is not None]
        for bound, at in (("<", min(seen, default=None)), (">", max(seen, default=None))):
            if at is None:
                continue
            # The new bound replaces a looser one on its side: every passing record lay inside that.
            kept = [s for s in clause.version_specs.get(package, "").split(",") if s and s[0] != bound]
            specs = {**clause.version_specs, package: ",".join([*kept, f"{bound}{_short(at)}"])}
            trial = dataclasses.replace(clause, version_specs=specs)
            if all(trial.versions_match(o.subject.versions) for o in failing) and not any(
                trial.versions_match(o.subject.versions) for o in passing
            ):
                found.append((specs, package))
                break
    return (found[0][0], [p for _, p in found[1:]]) if found else None


def package_order(clause: Expectation, seen: list[Observation]) -> list[str]:
    """The clause's own packages, then the implementation's (its name begins the package's), then the
    others under test, in the order records list them."""
    names = [p for o in seen for p in o.subject.versions if p not in SUPPORTING]
    own = [p for p in names if p.startswith(clause.implementation)]
    return list(dict.fromkeys([*clause.version_specs, *own, *names]))


@dataclass
class Plan:
    """What an update does to the files, and what it reports."""

    narrowed: dict[tuple[str, str, int], dict[str, str]] = field(default_factory=dict)  # impl, id, clause
    drafts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    unused: list[Expectation] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def plan(entries: list[Expectation], observations: list[Observation], scopes: list[Scope]) -> Plan:
    """Narrowings, unused entries and drafts, from the entries of every file (in order) and the runs."""
    done, entries, known = Plan(), list(entries), ExpectationSet(list(entries))
    decided = {o: known.decide(o.subject, o.outcome, count=False) for o in observations}
    alone = [o for o in observations if o.subject.saved_with is None]
    by_cell: dict[tuple, list[Observation]] = defaultdict(list)  # as ExpectationSet indexes its entries
    for o in alone:
        by_cell[(o.subject.implementation, o.subject.check, o.subject.family)].append(o)
    lost = [o for o in observations if o.subject.saved_with is not None and o.failed and decided[o] is None]
    if lost:  # a draft would need the saver's versions too (`saved_with`): written by hand
        done.lines.append(f"not drafted: {len(lost)} failing cross-version records no entry matches")
    numbers: dict[str, int] = defaultdict(int)
    passes_only: dict[tuple[str, str], bool] = {}  # ids are unique per file: keyed with the file's
    for position, clause in enumerate(entries):
        numbers[clause.id] += 1
        if clause.saved_with_specs:
            continue
        # Records another entry decides say nothing about this one's range.
        inside = [
            o
            for (impl, check, family), seen in by_cell.items()
            if impl == clause.implementation
            and name_matches(check, clause.names.get("check", ()))
            and name_matches(family, clause.names.get("family", ()))
            for o in seen
            if clause.matches(o.subject) and decided[o] is not None and decided[o].id == clause.id
        ]
        shown = {o for o in inside if o.failed or hidden(clause, o.outcome, o.delta)}
        failing, passing = [o for o in inside if o in shown], [o for o in inside if o not in shown]
        key = (clause.implementation, clause.id)
        if inside:
            passes_only[key] = passes_only.get(key, True) and not failing
        if failing and passing:
            # First match lends a wide clause the failures of entries after it: one a later entry expects,
            # as it shows, is that entry's evidence, and says nothing of where this one's bug is fixed.
            rest = ExpectationSet([e for e in entries if (e.implementation, e.id) != key])
            failing = [
                o for o in failing if (alt := rest.peek(o.subject)) is None or alt.outcome != o.outcome
            ]
        if not (failing and passing):
            continue
        found = separate(clause, failing, passing, package_order(clause, inside))
        where = f"{clause.id} ({clause.implementation}.yaml)"
        if found is None:
            done.lines.append(f"cannot narrow {where}: its records pass and fail at the same versions")
            continue
        entries[position] = dataclasses.replace(clause, version_specs=found[0])
        done.narrowed[(clause.implementation, clause.id, numbers[clause.id] - 1)] = found[0]
        shown = ", ".join(
            f"{p} {clause.version_specs.get(p, '(any)')!r} -> {s!r}"
            for p, s in found[0].items()
            if clause.version_specs.get(p) != s
        )
        also = f"; {', '.join(found[1])} would separate them too" if found[1] else ""
        done.lines.append(
            f"narrowed {where}: {shown} ({len(passing)} records pass, {len(failing)} fail{also})"
        )
    done.lines += [
        f"passes wherever it applies: {ident} ({impl}.yaml; remove it, or narrow it by hand)"
        for (impl, ident), only in passes_only.items()
        if only
    ]
    used = {(e.implementation, e.id) for e in decided.values() if e is not None}
    for entry in entries:
        key = (entry.implementation, entry.id)
        fresh = key not in used and key not in {(e.implementation, e.id) for e in done.unused}
        if fresh and not entry.saved_with_specs and any(_in_scope(entry, s) for s in scopes):
            done.unused.append(entry)
            done.lines.append(f"unused {entry.id} ({entry.source.rsplit(':', 1)[0]}): no record matched it")
    _draft(done, ExpectationSet(entries), alone)
    return done


def _in_scope(entry: Expectation, scope: Scope) -> bool:
    """The run ran a value of each of the entry's conditions (each alone: no run holds every product)."""
    if entry.implementation not in scope.values["implementation"]:
        return False
    if not any(entry.versions_match(found) for found in scope.versions):
        return False
    for name, wanted in (("tied", entry.tied), ("autocast", entry.autocast), ("support", entry.support)):
        if wanted is not None and wanted not in scope.values[name]:
            return False
    return all(any(name_matches(v, globs) for v in scope.values[n]) for n, globs in entry.names.items())


def _condition(
    impl: str, names: dict[str, set], autocast: bool | None, support: str, specs: dict
) -> Expectation:
    """A draft clause as the matcher reads it."""
    chosen = {f: tuple(sorted(v)) for f, v in names.items()}
    kept = None if support == SUPPORTED else support
    return Expectation(
        "draft", impl, chosen, None, kept, autocast, specs, {}, "", "bug", NOT_REPORTED, "", "", ""
    )


def _draft(done: Plan, known: ExpectationSet, alone: list[Observation]) -> None:
    free = [o for o in alone if known.peek(o.subject) is None]
    by_cell: dict[tuple, list[Observation]] = defaultdict(list)
    for o in free:
        by_cell[o.cell].append(o)
    # Passing records of each implementation's recipe on each family: where a cover ran a failing cell at
    # one version only, the recipe passing on that family at another is what bounds its draft.
    kin: dict[tuple, list[Observation]] = defaultdict(list)
    for o in alone:
        if not o.failed:
            kin[(o.subject.implementation, o.subject.family, o.subject.recipe)].append(o)
    groups: dict[tuple, list[Observation]] = defaultdict(list)
    also: dict[tuple, set[str]] = defaultdict(set)
    for cell, seen in by_cell.items():
        for outcome in dict.fromkeys(o.outcome for o in seen if o.failed):
            failing = [o for o in seen if o.outcome == outcome]
            others = [o for o in seen if o.outcome != outcome]
            found: tuple[dict[str, str], list[str]] | None = ({}, [])
            blank = _condition(cell[0], {}, None, SUPPORTED, {})
            if others:  # the cell shows another outcome at other versions: a range tells them apart
                found = separate(blank, failing, others, package_order(blank, seen))
            else:  # only these versions ran the cell: bounded where the recipe passes on the family
                failed_at = [o.subject.versions for o in failing]
                key = (cell[0], failing[0].subject.family, failing[0].subject.recipe)
                elsewhere = [o for o in kin[key] if o.subject.versions not in failed_at]
                if elsewhere:
                    found = separate(blank, failing, elsewhere, package_order(blank, failing + elsewhere))
                    found = found or ({}, [])
            if found is None:
                done.lines.append(
                    f"not drafted: {failing[0].case_id} {cell[6]}: {outcome} and not, same versions"
                )
                continue
            key = (cell[0], outcome, cell[-2], cell[-1], tuple(found[0].items()))
            groups[key] += failing
            also[key].update(found[1])
    for key, seen in groups.items():
        impl, outcome, autocast, support, specs = key
        # What a clause must not match: a record no entry decides, with another outcome. Clauses only
        # take the group's values (or every value the runs took), so only records within those count.
        values = {f: {getattr(o.subject, f) for o in seen} for f in FIELDS}
        forbidden = [
            o
            for o in free
            if o.subject.implementation == impl
            and o.outcome != outcome
            and all(getattr(o.subject, f) in values[f] for f in FIELDS)
        ]
        clean = functools.partial(_clean, impl, autocast, support, dict(specs), forbidden)
        clauses = _merge([{f: {getattr(o.subject, f)} for f in FIELDS} for o in seen], clean)
        observed = {
            f: {getattr(o.subject, f) for o in alone if o.subject.implementation == impl} for f in FIELDS
        }
        when: list[dict[str, Any]] = []
        for clause in clauses:
            # A field holding every value the runs took says nothing: left out, as the files do. Not the
            # family: a run of some families says nothing of the others.
            for name in FIELDS[1:]:
                if clause[name] >= observed[name] and clean({k: v for k, v in clause.items() if k != name}):
                    del clause[name]
            written: dict[str, Any] = {k: min(v) if len(v) == 1 else sorted(v) for k, v in clause.items()}
            written |= {"autocast": autocast} if autocast is not None else {}
            written |= {"support": support} if support != SUPPORTED else {}
            when.append(written | ({"versions": dict(specs)} if specs else {}))
        note = f"; the range is by {', '.join(dict(specs))}: {', '.join(sorted(also[key]))} would do too"
        done.drafts[impl].append(
            {
                "id": f"todo-{seen[0].subject.family}-{outcome}",
                "when": when[0] if len(when) == 1 else when,
                "outcome": outcome,
                "class": "bug",
                "link": NOT_REPORTED,
                "repro": f"{repro_command(seen[0].case_id)} --standalone",
                "reason": f"TODO: say why (drafted from {len(seen)} records by `conformance expectations "
                f"update`{note if also[key] else ''})",
            }
        )
        done.lines.append(f"drafted for {impl}: {len(seen)} {outcome} records in {len(when)} clause(s)")


def _clean(impl: str, autocast: bool | None, support: str, specs: dict, forbidden: list, names: dict) -> bool:
    trial = _condition(impl, names, autocast, support, specs)
    return not any(trial.matches(o.subject) for o in forbidden)


def _merge(cells: list[dict[str, set]], clean: Callable[[dict[str, set]], bool]) -> list[dict[str, set]]:
    """Clauses that differ in one field become one (exactly their union); then any two whose cross
    product covers no forbidden record, greedily, so cells a cover never ran may join them."""
    clauses = sorted(cells, key=lambda c: [sorted(v) for v in c.values()])
    merged = True
    while merged:
        merged = False
        for name in FIELDS:
            buckets: dict[tuple, dict[str, set]] = {}
            for clause in clauses:
                key = tuple(frozenset(v) for k, v in clause.items() if k != name)
                if key in buckets:
                    buckets[key][name] |= clause[name]
                    merged = True
                else:
                    buckets[key] = {k: set(v) for k, v in clause.items()}
            clauses = list(buckets.values())
    while True:
        for a, b in itertools.combinations(range(len(clauses)), 2):
            union = {f: clauses[a][f] | clauses[b][f] for f in clauses[a]}
            if clean(union):
                clauses[a] = union
                del clauses[b]
                break
        else:
            return clauses


def update(results: list[Path], dry_run: bool, prune: bool, out: TextIO) -> int:
    """Rewrite the expectation files from the runs, or print the diffs (`dry_run`); then a summary."""
    folder = casefiles.cases_dir() / "expectations"
    observations, scopes = read_runs(results)
    files = {path.stem: path for path in sorted(folder.glob("*.yaml"))}
    entries = [entry for impl, path in files.items() for entry in load_file(path, impl, None)]
    done = plan(entries, observations, scopes)
    for impl in sorted(set(done.drafts) - set(files)):
        done.lines.append(f"not drafted: no {impl}.yaml in {folder} for {impl}'s records")
    texts = {}
    for impl, path in files.items():
        old = path.read_text()
        narrowed = [(ident, k, specs) for (owner, ident, k), specs in done.narrowed.items() if owner == impl]
        gone = {e.id for e in done.unused if e.implementation == impl} if prune else set()
        new = yamledit.edit(old, path, narrowed, gone, done.drafts.get(impl, []))
        if new != old:
            yamledit.check(new, path, lambda trial, impl=impl: load_file(trial, impl, None))
            texts[path] = (old, new)
    for path, (old, new) in texts.items():
        if dry_run:
            out.writelines(
                difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), str(path))
            )
        else:
            path.write_text(new)
    drafted = sum(len(d) for impl, d in done.drafts.items() if impl in files)
    print(
        f"expectations update: {len(done.narrowed)} clause(s) narrowed, {drafted} entr(y/ies) drafted, "
        f"{len(done.unused)} unused, {len(done.unused) if prune else 0} pruned; "
        + ("dry run, nothing written" if dry_run else f"{len(texts)} file(s) written"),
        file=out,
    )
    for line in done.lines:
        print(f"  {line}", file=out)
    return EXIT_OK
