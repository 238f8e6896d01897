"""Standalone repro scripts: one case as a self-contained Python file for an upstream issue.

The script imports only torch, transformers and the package under test (each implementation declares its
template and pieces: conformance.implementations.base.Standalone). It
builds the same tiny config through the same constructor call, seeds the same values, runs the same
workflow steps in the same order and judges the case's checks with the same tolerances, so its numbers
are the suite's: it prints observed against expected per check and exits 1 where one diverges.
"""

from __future__ import annotations

import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance import implementations
from conformance.base import contract
from conformance.base.contract import WORKFLOWS
from conformance.base.errors import ConformanceError
from conformance.base.flags import TieFlags
from conformance.base.versions import SUPPORTING, installed
from conformance.engine.core import applicable_checks, check_context
from conformance.model import oracles, pipeline
from conformance.model import recipes as recipe_book
from conformance.model.cases import Case


@dataclass(frozen=True)
class _Code:
    """A value whose repr is a bare name, so a config's tie flags become the script's parameters."""

    name: str

    def __repr__(self) -> str:
        return self.name


def _imports(*pairs: tuple[str, str]) -> list[tuple[str, list[str]]]:
    by_module: dict[str, set[str]] = {}
    for module, name in pairs:
        by_module.setdefault(module, set()).add(name)
    return [(module, sorted(names)) for module, names in sorted(by_module.items())]


_STORAGE_WORDS = {
    "apart": "the head has values of its own, though the config ties it",
    "alias": "the head is the embedding's tensor, though the config unties it",
}


def _flag_words(flags: TieFlags) -> list[tuple[str, bool]]:
    return [("top-level", flags.top)] + ([] if flags.text is None else [("text_config", flags.text)])


def _rule(tolerances: Any, check: Any, dtype: Any) -> tuple[float | None, float, str] | None:
    """(factor, minimum, floor) of a numeric check at the case's precision, as the script applies it."""
    rule = tolerances.rule(check.name)
    if rule is None:
        return None
    computed_in = tolerances.computed_in(check, dtype)
    floor = "probe" if check.floor == contract.PROBE_NOISE else "logits"
    return (rule.factor, rule.minimum[computed_in], floor)


def script(case: Case) -> str:
    """The standalone script of `case` (its workflow must be declared `standalone` in the contract)."""
    if not WORKFLOWS[case.workflow].standalone:
        raise ConformanceError(
            f"{case.case_id}: the {case.workflow} workflow has no standalone script (it needs the suite's "
            f"own steps); rerun it with: {case.repro}"
        )
    impl = implementations.get(case.implementation)
    if impl.standalone is None:
        raise ConformanceError(
            f"{case.case_id}: {impl.name} declares no standalone script; rerun it with: {case.repro}"
        )
    family = case.family_def()
    reason = family.unavailable()
    if reason:
        raise ConformanceError(f"{case.case_id}: {reason}")
    recipe = recipe_book.load().get(case.recipe)
    tolerances = oracles.tolerances()
    dtype = tolerances.run_dtype(case.precision, case.family, case.workflow)
    checks = [check.name for check in applicable_checks(case)]
    spec = family.config_spec(case.config, TieFlags(_Code("tied_top"), _Code("tied_text")))  # type: ignore[arg-type]
    context = check_context(case)
    versions = installed()
    # What is under test, and the torch it ran on (the script imports it too).
    shown = {k: v for k, v in versions.items() if k == "torch" or k not in SUPPORTING}
    values: dict[str, Any] = {
        "case_id": case.case_id,
        "summary": [
            f"{family.name} ({family.model_class}), tie flags {case.flags.id}: "
            + ", ".join(f"{where} tie_word_embeddings={flag}" for where, flag in _flag_words(case.flags)),
            *(
                [f"storage {case.flags.storage}: {_STORAGE_WORDS[case.flags.storage]}"]
                if case.flags.storage
                else []
            ),
            f"recipe {recipe.name}: {recipe.about or recipe.adapter}",
            f"workflow {case.workflow}, {str(dtype).removeprefix('torch.')}"
            + (
                ""
                if case.precision.autocast is None
                else f", autocast_adapter_dtype={case.precision.autocast}"
            )
            + f", seed {case.seed}",
        ],
        "versions": ", ".join(f"{k} {v}" for k, v in shown.items()),
        "transformers": versions.get("transformers", "?"),
        "seed": case.seed,
        "dtype": str(dtype).removeprefix("torch."),
        "ids": pipeline.inputs(case.config["vocab_size"], case.seed).tolist(),
        "dtype_kwarg": pipeline.dtype_kwarg(),
        "load_kwargs": family.load_kwargs,
        "ruling": family.ruling_flag(),
        "model_class": family.model_class,
        "auto_class": family.auto_class,
        "forward_reads_tie_flag": family.forward_reads_tie_flag,
        "flags": case.flags,
        "storage": case.flags.storage,
        "config_source": spec.source(indent=4),
        "tolerances": pprint.pformat(
            {name: rule for name in checks if (rule := _rule(tolerances, oracles.CHECKS[name], dtype))},
            sort_dicts=False,
        ),
        "checks": checks,
        "workflow": case.workflow,
        "implementation": case.implementation,
        "tied": context.tied,
        "rule": context.rule,
    }
    pairs, own = impl.standalone.pieces(case, recipe)
    values.update(own, package=impl.standalone.package)
    values["imports"] = _imports(
        *spec.imports(),
        ("transformers", family.model_class),
        ("transformers", family.auto_class),
        *pairs,
    )
    return _templates(impl.standalone.folder).get_template(impl.standalone.template).render(**values)


def _templates(folder: Path | None) -> Any:
    from jinja2 import Environment, FileSystemLoader

    # Python source, not HTML: nothing is escaped. An implementation's own template extends these.
    paths = [Path(__file__).parent / "templates", *([folder] if folder else [])]
    return Environment(loader=FileSystemLoader(paths), autoescape=False)
