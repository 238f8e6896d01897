"""The engine: plan cases from a selection, run each through its implementation, judge every check."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from conformance import implementations
from conformance.base import contract, device, outcomes
from conformance.base.contract import PROFILES, WORKFLOWS
from conformance.base.errors import ConformanceError
from conformance.base.flags import TieFlags, combinations
from conformance.base.precision import AUTOCAST_CHOICES, DTYPES, Precision, parse_dtypes, variants
from conformance.base.versions import installed
from conformance.engine import cover
from conformance.model import cases, families, features, generators, oracles
from conformance.model import recipes as recipe_book
from conformance.model.cases import Case
from conformance.model.oracles.base import spacing
from conformance.model.pipeline import CaseRun, Workspace
from conformance.reading import expectations
from conformance.reading.expectations import Subject
from conformance.reading.results import Record, attach, rounded

# --tie-states: the storage the flags rule only, or also each combination's other storage
# (conformance.base.flags).
TIE_STATES = ("natural", "all")


@dataclass
class Selection:
    """What to run; empty lists mean everything."""

    implementations: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    workflows: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    profile: str = "ci"
    seed: int = 0
    dtypes: list[str] = field(default_factory=list)  # empty: float32
    device: str = "cpu"
    autocast: str = "on"  # PEFT's autocast_adapter_dtype in half precision: on, off or both
    tie_states: str = "natural"  # natural: storage as the flags rule; all: also apart and alias
    cover: int = 0  # 0: every case; t: a t-wise cover of the plan (conformance.engine.cover)

    @property
    def filtered(self) -> bool:
        """Fewer cases than everything: an expectation it never used may still apply elsewhere."""
        return bool(self.families or self.recipes or self.workflows or self.checks or self.cover)

    @property
    def precisions(self) -> list[str]:
        return parse_dtypes(self.dtypes, "--dtype")


def vocabulary() -> expectations.Vocabulary:
    every_family = families.all_families()
    flag_ids = sorted({f.id for nested in (True, False) for f in combinations(nested)})
    return expectations.Vocabulary(
        family=tuple(f.name for f in every_family),
        flags=tuple(flag_ids),
        recipe=tuple(recipe_book.load().recipes),
        workflow=tuple(WORKFLOWS),
        check=tuple(oracles.CHECKS),
        dtype=DTYPES,
    )


def validate(selection: Selection) -> None:
    """Reject unknown names before anything runs (each raises one clear line)."""
    implementations.selected(selection.implementations)
    for name in selection.families:
        families.get(name, "--family")
    book = recipe_book.load()
    for name in selection.recipes:
        book.get(name, "--recipe")
    for name in selection.workflows:
        if name not in WORKFLOWS:
            raise ConformanceError(f"--workflow: unknown workflow {name!r}; known: {', '.join(WORKFLOWS)}")
    for name in selection.checks:
        oracles.get(name, "--check")
    if selection.profile not in PROFILES:
        raise ConformanceError(
            f"--profile: unknown profile {selection.profile!r}; known: {', '.join(PROFILES)}"
        )
    parse_dtypes(selection.dtypes, "--dtype")  # one line for an unknown dtype
    if selection.autocast not in AUTOCAST_CHOICES:
        raise ConformanceError(f"--autocast: {selection.autocast!r}; known: {', '.join(AUTOCAST_CHOICES)}")
    if selection.tie_states not in TIE_STATES:
        raise ConformanceError(f"--tie-states: {selection.tie_states!r}; known: {', '.join(TIE_STATES)}")
    cover.check_strength(selection.cover)
    if selection.device not in device.DEVICES:
        raise ConformanceError(
            f"--device: unknown device {selection.device!r}; known: {', '.join(device.DEVICES)}"
        )


def plan(selection: Selection) -> list[Case]:
    """The cases the selection runs, in a fixed order: every case, or the t-wise cover it asks for."""
    return covered(selection, full_plan(selection))


def covered(selection: Selection, planned: list[Case]) -> list[Case]:
    """The selection's cover of its full plan (conformance.engine.cover), over the cases that run here."""
    if not selection.cover:
        return planned
    return cover.select(
        planned, selection.cover, runs=lambda case: skip_reason(case, selection.device) is None
    )


def skip_reason(case: Case, where: str) -> str | None:
    """Why `case` cannot run here (on device `where`), or None: decided before it runs, from what is
    installed and what the case is."""
    impl, family = implementations.get(case.implementation), case.family_def()
    reason = device.unavailable(where) or impl.device_unavailable(where)
    reason = reason or impl.unavailable() or family.unavailable() or impl.builds_unavailable(family)
    if reason:
        return reason
    reason = recipe_book.load().skip_reason(recipe_book.load().get(case.recipe))
    if reason:
        return reason
    return case.pointless()


def full_plan(selection: Selection) -> list[Case]:
    """Every case of the selection, in a fixed order (before any cover).

    Generated configs are drawn once per family and shared by every implementation; where a family or
    an implementation cannot run here, its cases keep the canonical config only (they will be skipped).
    """
    validate(selection)
    book = recipe_book.load()
    chosen_families = [families.get(n) for n in selection.families] or families.all_families()
    drawn = {
        family.name: generators.draw_configs(family, selection.profile, selection.seed)
        if family.unavailable() is None
        else [(dict(family.canonical), selection.seed)]
        for family in chosen_families
    }
    planned: list[Case] = []
    for dtype in selection.precisions:
        for impl in implementations.selected(selection.implementations):
            for family in (f for f in chosen_families if impl.covers(f)):
                runs = impl.unavailable() is None and impl.builds_unavailable(family) is None
                configs = drawn[family.name] if runs else drawn[family.name][:1]
                pairs = _recipe_workflows(impl, family, book, selection)
                states = family.tie_states() if selection.tie_states == "all" else family.flag_combinations()
                for flags in states:
                    for recipe, workflow in pairs:
                        for precision in variants(dtype, impl.autocast_axis, selection.autocast):
                            for knobs, seed in _unique(family, configs, precision.half):
                                planned.append(
                                    cases.make(
                                        impl.name, family, flags, recipe, workflow, knobs, seed, precision
                                    )
                                )
    return planned


def _unique(family: Any, configs: list[tuple[dict, int]], half: bool) -> list[tuple[dict, int]]:
    """The configs as a precision builds them (family.knobs_for), each once."""
    found: list[tuple[dict, int]] = []
    for knobs, seed in configs:
        made = (family.knobs_for(knobs, half), seed)
        if made not in found:
            found.append(made)
    return found


def parse_case(case_id: str) -> Case:
    """A case id as printed in results.jsonl, checked against every known name; the autocast axis is
    read as the case's implementation has it (a half-precision hf case has none)."""
    case = cases.parse(case_id, list(implementations.REGISTRY), list(recipe_book.load().recipes))
    precision = case.precision
    if precision.half and not implementations.get(case.implementation).autocast_axis:
        if precision.autocast is False:
            raise ConformanceError(f"{case_id}: {case.implementation} has no autocast axis (-noautocast)")
        case = replace(case, precision=Precision(precision.dtype))
    return case


def _recipe_workflows(impl: Any, family: Any, book: Any, selection: Selection) -> list[tuple[str, str]]:
    """The (recipe, workflow) pairs an implementation runs on a family, narrowed by the selection."""
    pairs = []
    for recipe in book.recipes.values():
        if not impl.runs_recipe(recipe, family.name) or (
            selection.recipes and recipe.name not in selection.recipes
        ):
            continue
        rows, copies = bool(recipe.token_indices()), bool(recipe.lora.get("modules_to_save"))
        for workflow in recipe.workflows or impl.workflows:
            chosen = not selection.workflows or workflow in selection.workflows
            if workflow in impl.workflows and chosen and contract.WORKFLOWS[workflow].runs(rows, copies):
                pairs.append((recipe.name, workflow))
    return pairs


@dataclass
class Engine:
    """Runs cases and turns them into records; one per run (it owns the temporary workspace)."""

    selection: Selection = field(default_factory=Selection)
    workspace: Workspace = field(default_factory=Workspace)
    expectation_set: expectations.ExpectationSet | None = None

    def __post_init__(self) -> None:
        if self.expectation_set is None:
            self.expectation_set = expectations.load(vocabulary())
        device.use(self.selection.device)

    def close(self) -> None:
        self.workspace.close()

    def records(self, case: Case) -> list[Record]:
        """Run one case and judge every applicable check, with expectations attached."""
        return self.expect(self.judge(case))

    def expect(self, records: list[Record]) -> list[Record]:
        return expect(records, self.expectation_set)

    def judge(self, case: Case, execute: Callable[[Case], CaseRun] | None = None) -> list[Record]:
        """Run one case and judge every applicable check (no expectations yet); `execute` replaces the
        implementation's own workflow (the cross-version import judges what it loaded)."""
        records, checks, skip, context = self._blank(case)
        if skip:
            return records
        run = (execute or self.execute)(case)
        for record, check in zip(records, checks, strict=True):
            self._judge(record, check, run, context)
        return records

    def execute(self, case: Case) -> CaseRun:
        """The case's workflow, run by its implementation (no skip check, no judging)."""
        impl = implementations.get(case.implementation)
        recipe = recipe_book.load().get(case.recipe)
        dtype = oracles.tolerances().run_dtype(case.precision, case.family, case.workflow)
        return impl.execute(case, recipe, dtype, self.workspace)

    def skip_reason(self, case: Case) -> str | None:
        return skip_reason(case, self.selection.device)

    def unfinished(self, case: Case, detail: str, outcome: str = outcomes.CRASHED) -> list[Record]:
        """The records of a case that never finished (its worker died or ran out of time): each check
        crashed (or `outcome`), with why; a case that would have been skipped stays skipped."""
        records, _, skip, _ = self._blank(case)
        if not skip:
            for record in records:
                record.outcome, record.detail = outcome, detail
        return records

    def _blank(self, case: Case) -> tuple[list[Record], list[Any], str | None, Any]:
        """One record per applicable check, before the case runs (skipped ones already say why)."""
        impl = implementations.get(case.implementation)
        family = case.family_def()
        tolerances = oracles.tolerances()
        skip = skip_reason(case, self.selection.device)
        support = implementations.SUPPORTED if skip else impl.support(family, case.flags)
        context = check_context(case, support)
        wanted = self.selection.checks
        checks = [check for check in applicable_checks(case) if not wanted or check.name in wanted]
        run_dtype = tolerances.run_dtype(case.precision, case.family, case.workflow)
        records = []
        for check in checks:
            computed_in = tolerances.computed_in(check, run_dtype)
            rule = tolerances.rule(check.name)
            # Before the case runs its floor is unknown: the minimum stands until the check is judged.
            tol = None if rule is None else rule.at(computed_in, None)
            record = self._record(case, check, tol, computed_in, context)
            if skip:
                record.outcome, record.detail = outcomes.SKIPPED, skip
            records.append(record)
        return records, checks, skip, context

    def _record(self, case: Case, check: Any, tol: float | None, computed_in: str, context: Any) -> Record:
        return Record(
            case_id=case.case_id,
            implementation=case.implementation,
            family=case.family,
            flags=case.flags.as_record(),
            recipe=case.recipe,
            workflow=case.workflow,
            check=check.name,
            outcome=outcomes.PASS,
            verdict=expectations.OK,
            expected=None,
            expected_outcome=None,
            max_abs_diff=None,
            tolerance=tol,
            noise_floor=None,
            tolerance_factor=None,
            warnings=[],
            detail="",
            step=None,
            tied=context.tied,
            support=context.support,
            config=case.config,
            seed=case.seed,
            dtype=case.precision.dtype,
            autocast=case.precision.autocast,
            computed_in=computed_in,
            device=device.describe(self.selection.device),
            versions=dict(installed()),
            features=found_features(),
            repro=case.repro,
        )

    def _judge(self, record: Record, check: Any, run: CaseRun, context: Any) -> None:
        needs = check.needs
        rule = oracles.tolerances().rule(check.name)
        scaled = rule is not None and rule.factor is not None
        # A scaled check needs its noise floor too: a case stopped before the floor was measured (a refusal
        # at the wrap, after a resize the check could read) has no tolerance to judge it with.
        missing = [n for n in (*needs, *([check.floor] if scaled else [])) if n not in run.artifacts]
        if missing:
            failure = run.failure
            if failure is None:
                record.outcome, record.detail = outcomes.CRASHED, f"suite error: no artifact {missing[0]}"
                return
            record.outcome, record.step = failure.outcome, failure.step
            record.detail = self._clean(f"{failure.step}: {failure.message}")
            record.warnings = [self._clean(w) for w in run.capture.tie_warnings(failure.index)]
            return
        horizon = max(run.made_in[n] for n in needs)
        tol = None
        if rule is not None:
            floor = run.artifacts[check.floor] if scaled else None
            tol = rounded(rule.at(record.computed_in, floor))
            if scaled and check.floor == contract.LOGITS_NOISE:  # never below the values' own rounding
                tol = max(tol, 2 * spacing(record.computed_in, [run.artifacts[n] for n in needs]))
            record.tolerance, record.noise_floor, record.tolerance_factor = tol, rounded(floor), rule.factor
        try:
            # Only what it declared: a check reading anything else fails on every case, not on some.
            seen = {n: run.artifacts[n] for n in check.reads if n in run.artifacts}
            measured = check.evaluate(seen, tol, context)
        except Exception as exc:  # a bug in the oracle must show up, not stop the run
            record.outcome, record.detail = outcomes.CRASHED, f"suite error in {check.name}: {exc!r}"
            return
        record.max_abs_diff = rounded(measured.max_abs_diff)
        record.detail = measured.detail
        record.warnings = [self._clean(w) for w in run.capture.tie_warnings(horizon)]
        record.outcome = outcomes.PASS if measured.passed else outcomes.diverged(run.capture, horizon)

    def _clean(self, text: str) -> str:
        # Temporary paths would make two runs of the same seed differ.
        return re.sub(re.escape(str(self.workspace.root)) + r"[^\s'\"]*", "<tmp>", text)


def found_features() -> list[str]:
    """Every feature found, by name (names are unique across packages)."""
    return sorted(name for names in features.found().values() for name in names)


def check_context(case: Case, support: str = outcomes.SUPPORTED) -> oracles.CheckContext:
    """What the checks may know about a case before it runs."""
    ewt = recipe_book.load().get(case.recipe).ensure_weight_tying
    rule = case.family_def().expected_tied(case.flags)
    return oracles.CheckContext(case.family_def(), case.workflow, case.tied, ewt, support, rule)


def applicable_checks(case: Case) -> list[oracles.Check]:
    """The checks whose artifacts the case's workflow produces (conformance.base.contract), less those that
    say nothing about its recipe and tie."""
    context = check_context(case)
    return [
        check
        for check in oracles.CHECKS.values()
        if check.applies_to(case.workflow) and check.not_applicable(context) is None
    ]


def expect(records: list[Record], expectation_set: expectations.ExpectationSet) -> list[Record]:
    """Attach the matching expectation and the verdict to each record (skips never match one)."""
    for record in records:
        entry = None
        if record.outcome != outcomes.SKIPPED:
            flags = TieFlags.from_record(record.flags)
            subject = Subject(
                record.implementation,
                record.family,
                flags.config_id,
                record.recipe,
                record.workflow,
                record.check,
                record.tied,
                record.versions,
                record.support,
                record.saved_with,
                dtype=record.dtype,
                autocast=record.autocast,
                storage=flags.storage or "natural",
                device=(record.device or "cpu").split(" ", 1)[0],
            )
            entry = expectation_set.decide(subject, record.outcome)
        attach(record, entry, expectations.verdict(record.outcome, entry, record.max_abs_diff))
    return records
