"""Known non-pass outcomes, as data: cases/expectations/<implementation>.yaml, matched on conditions.

An entry names its conditions (family, flags, storage, tied, recipe, workflow, check, dtype as names or
globs, "!glob" to leave some out; autocast; version ranges), or a list of such clauses (any of them), the
outcome it expects, a class (bug | limitation), an upstream link or "not reported upstream" with a
one-line repro, and a reason. The first entry whose conditions hold decides.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.base import casefiles, versions
from conformance.base.errors import CaseFileError, UnknownName
from conformance.base.outcomes import OUTCOMES, PASS, SKIPPED, SUPPORT, SUPPORTED
from conformance.base.precision import DEFAULT, DTYPES

CLASSES = ("bug", "limitation")
NOT_REPORTED = "not reported upstream"
_NAME_FIELDS = ("family", "flags", "storage", "recipe", "workflow", "check", "dtype", "device")
# How a condition names the tie state's storage (conformance.base.flags): `natural` where the flags rule it.
STORAGE_WORDS = ("natural", "apart", "alias")
_FIELDS = {"id", "when", "outcome", "class", "link", "repro", "reason"}
# `defect` is no condition: the |Δ| the clause's bug gives its check (see `hidden`).
_WHEN = {*_NAME_FIELDS, "tied", "support", "autocast", "versions", "saved_with", "defect"}


@dataclass(frozen=True)
class Subject:
    """What an expectation can be matched against: one (case, check) of a run."""

    implementation: str
    family: str
    flags: str
    recipe: str
    workflow: str
    check: str
    tied: bool
    versions: dict[str, str] = field(hash=False)
    support: str = SUPPORTED
    saved_with: dict[str, str] | None = field(default=None, hash=False)  # cross-version: the saver's
    dtype: str = DEFAULT  # the case's precision (conformance.base.precision)
    storage: str = "natural"  # the tie state's storage (STORAGE_WORDS)
    autocast: bool | None = None  # PEFT's autocast_adapter_dtype, where the case has that axis
    device: str = "cpu"  # where the models lived: cpu or cuda (conformance.base.device.DEVICES)


@dataclass(frozen=True)
class Expectation:
    id: str
    implementation: str
    names: dict[str, tuple[str, ...]] = field(hash=False)  # field -> globs
    tied: bool | None
    support: str | None
    autocast: bool | None
    version_specs: dict[str, str] = field(hash=False)
    saved_with_specs: dict[str, str] = field(hash=False)  # cross-version records: ranges on the saver
    outcome: str
    kind: str
    link: str
    repro: str
    reason: str
    source: str
    defect: float | None = None  # the |Δ| this clause's bug gives its check, where noise may hide it

    def matches(self, subject: Subject) -> bool:
        if subject.implementation != self.implementation:
            return False
        if self.tied is not None and subject.tied != self.tied:
            return False
        if self.support is not None and subject.support != self.support:
            return False
        if self.autocast is not None and subject.autocast != self.autocast:
            return False
        for name, globs in self.names.items():
            if not name_matches(getattr(subject, name), globs):
                return False
        # A cross-version record is matched directly only by entries written for one (naming the saver's
        # versions); the others describe a single environment and reach it through the saver's versions
        # (engine.expect).
        if (subject.saved_with is None) != (not self.saved_with_specs):
            return False
        if self.saved_with_specs and not self._within(self.saved_with_specs, subject.saved_with or {}):
            return False
        return self.versions_match(subject.versions)

    def versions_match(self, installed: dict[str, str]) -> bool:
        return self._within(self.version_specs, installed)

    def _within(self, specs: dict[str, str], found: dict[str, str]) -> bool:
        return all(
            versions.satisfies(pkg, versions.parse_spec(spec, self.source), found, releases_only=True)
            for pkg, spec in specs.items()
        )


def name_matches(value: str, globs: tuple[str, ...]) -> bool:
    """`value` matches one of the globs and none of the "!glob" exclusions (only exclusions: any other)."""
    wanted = [g for g in globs if not g.startswith("!")] or ["*"]
    unwanted = [g[1:] for g in globs if g.startswith("!")]
    return any(fnmatch.fnmatchcase(value, g) for g in wanted) and not any(
        fnmatch.fnmatchcase(value, g) for g in unwanted
    )


@dataclass(frozen=True)
class Vocabulary:
    """Known names per condition field, to reject typos when a file is loaded."""

    family: tuple[str, ...]
    flags: tuple[str, ...]
    recipe: tuple[str, ...]
    workflow: tuple[str, ...]
    check: tuple[str, ...]
    dtype: tuple[str, ...] = DTYPES
    storage: tuple[str, ...] = STORAGE_WORDS
    device: tuple[str, ...] = ("cpu", "cuda")


def load_file(path: Path, implementation: str, vocab: Vocabulary | None) -> list[Expectation]:
    data = casefiles.load(path)
    if data is None:
        return []
    top = casefiles.Fields(data, str(path), {"expectations"})
    found = []
    ids: list[str] = []
    for i, raw in enumerate(top.get("expectations", list, [])):
        parts = _parse(raw, f"{path}:expectations[{i}]", implementation, vocab)
        if parts[0].id in ids:
            raise CaseFileError(f"{path}:expectations[{i}].id", f"duplicate id {parts[0].id!r}")
        ids.append(parts[0].id)
        found.extend(parts)
    return found


def _parse(raw: Any, where: str, implementation: str, vocab: Vocabulary | None) -> list[Expectation]:
    """One entry; a `when` given as a list of clauses (any of them) gives one Expectation per clause,
    all with the entry's id, so one bug whose cells no single cross product covers stays one entry."""
    entry = casefiles.Fields(raw, where, _FIELDS)
    ident = entry.get("id", str)
    entry.where = f"{where}({ident})"
    raw_when = entry.get("when", (dict, list))
    if isinstance(raw_when, dict):
        return [_clause(entry, raw_when, entry.at("when"), implementation, vocab)]
    if not raw_when:
        raise CaseFileError(entry.at("when"), "an empty list of clauses matches nothing")
    return [
        _clause(entry, clause, f"{entry.at('when')}[{k}]", implementation, vocab)
        for k, clause in enumerate(raw_when)
    ]


def _clause(
    entry: casefiles.Fields, raw_when: Any, at: str, implementation: str, vocab: Vocabulary | None
) -> Expectation:
    ident, where = entry.get("id", str), entry.where
    if not isinstance(raw_when, dict):
        raise CaseFileError(at, f"expected a mapping of conditions, got {type(raw_when).__name__}")
    when = casefiles.Fields(raw_when, at, _WHEN)
    names: dict[str, tuple[str, ...]] = {}
    for name in _NAME_FIELDS:
        globs = when.names(name, None)
        if globs is None:
            continue
        known = getattr(vocab, name) if vocab is not None else None
        for glob in globs if known is not None else ():
            if not fnmatch.filter(known, glob.removeprefix("!")):
                raise UnknownName(name, glob, list(known), when.at(name))
        names[name] = tuple(globs)
    specs = when.get("versions", dict, {})
    saved_with = when.get("saved_with", dict, {})
    for key, table in (("versions", specs), ("saved_with", saved_with)):
        for pkg, spec in table.items():
            versions.parse_spec(str(spec), f"{when.at(key)}.{pkg}")
    outcome = entry.get("outcome", str)
    if outcome not in OUTCOMES or outcome in (PASS, SKIPPED):
        allowed = [o for o in OUTCOMES if o not in (PASS, SKIPPED)]
        raise CaseFileError(entry.at("outcome"), f"{outcome!r}: expected one of {', '.join(allowed)}")
    kind = entry.get("class", str)
    if kind not in CLASSES:
        raise CaseFileError(entry.at("class"), f"{kind!r}: expected one of {', '.join(CLASSES)}")
    link = entry.get("link", str)
    repro = entry.get("repro", str, "")
    if link == NOT_REPORTED:
        if not repro.strip():
            raise CaseFileError(entry.at("repro"), f"required when link is {NOT_REPORTED!r}")
    elif not link.startswith("https://"):
        raise CaseFileError(entry.at("link"), f"expected an https:// link or {NOT_REPORTED!r}")
    reason = entry.get("reason", str)
    if "\n" in reason.strip():
        raise CaseFileError(entry.at("reason"), "keep the reason to one line")
    support = when.get("support", str, None)
    if support is not None and support not in SUPPORT:
        raise CaseFileError(when.at("support"), f"{support!r}: expected one of {', '.join(SUPPORT)}")
    defect = when.get("defect", (int, float), None)
    if defect is not None and not defect > 0:
        raise CaseFileError(when.at("defect"), f"{defect!r}: expected the |Δ| the bug gives, above 0")
    return Expectation(
        ident,
        implementation,
        names,
        when.get("tied", bool, None),
        support,
        when.get("autocast", bool, None),
        {k: str(v) for k, v in specs.items()},
        {k: str(v) for k, v in saved_with.items()},
        outcome,
        kind,
        link,
        repro.strip(),
        reason.strip(),
        where,
        None if defect is None else float(defect),
    )


@dataclass
class ExpectationSet:
    entries: list[Expectation]
    used: set[str] = field(default_factory=set)
    _by_cell: dict[tuple, list[Expectation]] = field(default_factory=dict, repr=False, compare=False)

    def match(self, subject: Subject) -> Expectation | None:
        entry = self.peek(subject)
        if entry is not None:
            self.used.add(entry.id)
        return entry

    def decide(self, subject: Subject, outcome: str, count: bool = True) -> Expectation | None:
        """The entry that decides a record (`count`: and mark it used). A cross-version record (saved_with)
        no entry names falls back to the saver's known behaviour (what it did wrong while merging shows
        wherever the result is loaded), else the loader's; each only where it shows the same way
        (otherwise the other version changed it, which needs its own entry)."""
        entry = self.peek(subject)
        if entry is None and subject.saved_with is not None:
            for versions in (subject.saved_with, subject.versions):
                alone = self.peek(replace(subject, versions=versions, saved_with=None))
                if alone is not None and alone.outcome == outcome:
                    entry = alone
                    break
        if entry is not None and count:
            self.used.add(entry.id)
        return entry

    def peek(self, subject: Subject) -> Expectation | None:
        """The entry that decides `subject`, without counting it as used."""
        return next((entry for entry in self._candidates(subject) if entry.matches(subject)), None)

    def _candidates(self, subject: Subject) -> list[Expectation]:
        """The entries that may match a subject of this implementation, check and family, in file order
        (so the first match is the same): a run matches every record, and most entries name another."""
        key = (subject.implementation, subject.check, subject.family, len(self.entries))
        found = self._by_cell.get(key)
        if found is None:
            found = self._by_cell[key] = [
                e
                for e in self.entries
                if e.implementation == subject.implementation
                and ("check" not in e.names or name_matches(subject.check, e.names["check"]))
                and ("family" not in e.names or name_matches(subject.family, e.names["family"]))
            ]
        return found

    def unused(
        self, implementations: set[str], installed: dict[str, str], ran: set[str] | None = None
    ) -> list[Expectation]:
        """Entries in scope for this run that matched nothing: implementation selected, versions matching,
        not a cross-version entry, and (given `ran`, the recipes that ran here) naming a recipe that ran, so
        an entry about a feature this build lacks is not called stale."""
        return [
            e
            for e in self.entries
            if e.implementation in implementations
            and e.id not in self.used
            and not e.saved_with_specs
            and e.versions_match(installed)
            and (
                ran is None or "recipe" not in e.names or any(name_matches(r, e.names["recipe"]) for r in ran)
            )
        ]


@functools.cache
def _load_all(folder: Path, vocab: Vocabulary | None) -> tuple[Expectation, ...]:
    entries: list[Expectation] = []
    for path in sorted(folder.glob("*.yaml")):
        entries.extend(load_file(path, path.stem, vocab))
    return tuple(entries)


def load(vocab: Vocabulary | None, folder: Path | None = None) -> ExpectationSet:
    """The expectation files; names are checked against `vocab` (None: not checked, for readers of
    results such as the report, which must not import the engine to learn the known names)."""
    folder = folder or casefiles.cases_dir() / "expectations"
    return ExpectationSet(list(_load_all(folder, vocab)))


# Verdicts: how an outcome relates to the expectations.
OK, EXPECTED, UNEXPECTED, UNEXPECTED_PASS = "ok", "expected", "unexpected", "unexpected-pass"


def hidden(entry: Expectation | None, outcome: str, delta: float | None) -> bool:
    """A pass that still shows the clause's bug: its |Δ| is at least half the defect the clause states, and
    only the case's tolerance (set by its precision's noise) let it through. Not evidence of a fix, which
    takes |Δ| down to the noise; so it is expected, where a pass at noise level is an unexpected pass."""
    defect = entry.defect if entry is not None else None
    return outcome == PASS and defect is not None and delta is not None and delta >= defect / 2


def verdict(outcome: str, entry: Expectation | None, delta: float | None = None) -> str:
    """`delta`: the check's measured |Δ|, where it has one (see `hidden`)."""
    if outcome == SKIPPED:
        return OK
    if entry is None:
        return OK if outcome == PASS else UNEXPECTED
    if outcome == PASS:
        return EXPECTED if hidden(entry, outcome, delta) else UNEXPECTED_PASS
    return EXPECTED if outcome == entry.outcome else UNEXPECTED
