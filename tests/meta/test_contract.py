"""The declared contract holds: every workflow produces exactly the artifacts it declares, every check
needs only declared artifacts, and implementations are found and registered from their own modules."""

from __future__ import annotations

import dataclasses

import pytest

from conformance import implementations
from conformance.base import contract, outcomes, versions
from conformance.base.flags import TieFlags
from conformance.engine.core import Engine, Selection, plan
from conformance.model import cases, families, oracles
from conformance.model.pipeline import CaseRun


def test_checks_and_their_needs_are_declared_once():
    assert set(oracles.CHECKS) == set(contract.CHECK_NEEDS)
    for name, needs in contract.CHECK_NEEDS.items():
        assert needs <= contract.ARTIFACTS, f"{name} needs undeclared artifacts {needs - contract.ARTIFACTS}"
        assert any(contract.check_applies(name, w) for w in contract.WORKFLOWS), f"{name} applies nowhere"
    for name, extra in contract.CHECK_MAY_USE.items():
        assert name in contract.CHECK_NEEDS and extra <= contract.ARTIFACTS, name


def test_every_workflow_has_an_implementation_and_known_artifacts():
    provided = {w for impl in implementations.REGISTRY.values() for w in impl.workflows}
    assert provided == set(contract.WORKFLOWS)
    for workflow in contract.WORKFLOWS.values():
        assert workflow.produces <= contract.ARTIFACTS
        assert contract.checks_of(workflow.name), f"no check reads what {workflow.name} produces"


def test_an_undeclared_artifact_is_refused_where_it_is_written():
    llama = families.get("llama")
    run = CaseRun(cases.make("peft", llama, TieFlags(True), "lora_attn", "merge", llama.canonical, 0))
    with pytest.raises(KeyError, match="not an artifact"):
        run.put("peft_logit", 1)
    run.put(contract.HF_TIED, True)  # declared, but not by `merge`: checks never see it
    assert contract.HF_TIED not in run.artifacts


def test_implementations_register_their_package_and_code():
    for impl in implementations.REGISTRY.values():
        assert impl.package in versions.TRACKED
        assert all(path in outcomes._LIBRARIES for path in impl.code_paths)
    assert list(implementations.REGISTRY)[:2] == ["hf", "peft"]


def _tokens_checked_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # PEFT before PR #3514: the names of one merge call are checked, adapters merged before are not.
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    check = TrainableTokensLayer._check_overlapping_tokens
    monkeypatch.setattr(
        TrainableTokensLayer,
        "_check_overlapping_tokens",
        lambda self, names: check(self, names) if len(names) > 1 else None,
    )


# Workflows a correct library refuses part way: they run to the end only on the library as it was before
# the refusal was added, which is the state they exist to catch.
_REFUSED_WHEN_RIGHT = {"stack-merge-overlap": _tokens_checked_per_call}


def _sample(engine: Engine, impl: implementations.Implementation, workflow: str) -> cases.Case | None:
    """A canonical, tied case of the workflow that its implementation can run here (llama first)."""
    planned = plan(Selection(implementations=[impl.name], workflows=[workflow]))
    tied = (
        c for c in planned if c.config == c.family_def().canonical and c.family_def().expected_tied(c.flags)
    )
    runnable = (c for c in tied if engine.skip_reason(c) is None)
    return next(iter(sorted(runnable, key=lambda c: c.family != "llama")), None)


@pytest.mark.parametrize(
    ("name", "workflow"),
    [
        # Under the implementation's own marker: its package is installed only in its environment.
        pytest.param(
            impl.name,
            w,
            id=f"{impl.name}-{w}",
            marks=getattr(pytest.mark, impl.test_marker) if impl.test_marker else (),
        )
        for impl in implementations.REGISTRY.values()
        for w in impl.workflows
    ],
)
def test_a_workflow_produces_what_it_declares(name, workflow, monkeypatch):
    impl = implementations.get(name)
    reason = impl.unavailable()
    if reason:
        pytest.skip(reason)
    if workflow in _REFUSED_WHEN_RIGHT:
        _REFUSED_WHEN_RIGHT[workflow](monkeypatch)
    engine = Engine(Selection())
    try:
        case = _sample(engine, impl, workflow)
        if case is None:
            pytest.skip(f"{name} can run no {workflow} case here")
        run = engine.execute(case)
    finally:
        engine.close()
    assert run.failure is None, f"{case.case_id}: {run.failure}"
    declared = contract.WORKFLOWS[workflow].produces
    made = set(run.artifacts)
    assert made == declared, (
        f"{case.case_id}: declared but not made {sorted(declared - made)}; "
        f"python -m conformance repro '{case.case_id}'"
    )


def test_a_check_sees_only_the_artifacts_it_declares(monkeypatch):
    # `merge` makes base_logits, but `reference` does not declare it: reading it must fail on every case,
    # not only where some workflow happens to leave it lying about.
    def reads_undeclared(art, tol, ctx):
        return oracles.Measurement(True, 0.0, str(art[contract.BASE_LOGITS].shape))

    check = oracles.CHECKS["reference"]
    assert contract.BASE_LOGITS not in check.needs
    monkeypatch.setitem(oracles.CHECKS, "reference", dataclasses.replace(check, evaluate=reads_undeclared))
    llama = families.get("llama")
    case = cases.make("peft", llama, TieFlags(True), "lora_attn", "merge", llama.canonical, 0)
    engine = Engine(Selection())
    try:
        records = {r.check: r for r in engine.judge(case)}
    finally:
        engine.close()
    assert records["reference"].outcome == outcomes.CRASHED
    assert records["reference"].detail == "suite error in reference: KeyError('base_logits')"
    assert records["merge-fidelity"].outcome == outcomes.PASS, records["merge-fidelity"].detail


@pytest.mark.parametrize(("workflow", "merged"), [("merge", True), ("adapter", False)])
def test_a_check_reads_what_it_may_use_where_the_workflow_made_it(monkeypatch, workflow, merged):
    seen: list[set[str]] = []
    check = oracles.CHECKS["tie-preserved"]
    original = check.evaluate

    def spying(art, tol, ctx):
        seen.append(set(art))
        return original(art, tol, ctx)

    monkeypatch.setitem(oracles.CHECKS, "tie-preserved", dataclasses.replace(check, evaluate=spying))
    gemma = families.get("gemma")
    case = cases.make("peft", gemma, TieFlags(True), "lora_embed_ewt", workflow, gemma.canonical, 0)
    engine = Engine(Selection())
    try:
        engine.judge(case)
    finally:
        engine.close()
    assert seen == [set(check.needs) | ({contract.GAP_MERGED} if merged else set())]
