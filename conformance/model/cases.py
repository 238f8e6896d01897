"""A case (implementation × family × flags × recipe × workflow × precision × tiny config × seed), its ids.

Cell id:  peft-gemma4-tT-xF-lora_embed_head-merge         (what expectations and pytest ids name)
          peft-gemma4-tT-xF-lora_embed_head-merge-bf16-noautocast   (a half-precision cell)
Case id:  peft-gemma4-tT-xF-lora_embed_head-merge@v128.h32.i64.L2.H2.K1.d16.g16.w8.f2.s0
The part after '@' is the tiny config and seed, so a case id alone is enough to rerun the case; float32
cells carry no precision suffix, so their ids are those of the suite before the precision axis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conformance.base.contract import WORKFLOWS
from conformance.base.errors import ConformanceError
from conformance.base.flags import ID_PATTERN, TieFlags
from conformance.base.precision import FLOAT32, Precision
from conformance.base.precision import ID_PATTERN as PRECISION_PATTERN
from conformance.model import families
from conformance.model.families import Family, Knobs

_SEED = re.compile(r"(.*)\.s(\d+)")


@dataclass(frozen=True)
class Case:
    implementation: str
    family: str
    flags: TieFlags
    recipe: str
    workflow: str
    knobs: tuple[tuple[str, int], ...]
    seed: int
    precision: Precision = FLOAT32

    @property
    def cell_id(self) -> str:
        return (
            f"{self.implementation}-{self.family}-{self.flags.id}-{self.recipe}-{self.workflow}"
            f"{self.precision.id}"
        )

    @property
    def config(self) -> Knobs:
        return dict(self.knobs)

    @property
    def case_id(self) -> str:
        return f"{self.cell_id}@{families.get(self.family).config_id(self.config)}.s{self.seed}"

    @property
    def repro(self) -> str:
        return f"python -m conformance repro '{self.case_id}'"

    def family_def(self) -> Family:
        return families.get(self.family)

    @property
    def tied(self) -> bool:
        """Whether the model under test shares one tensor between embedding and head: the HF rule on the
        base's flags, or the storage its tie state names (conformance.base.flags), unless the workflow unties
        the base first."""
        return self.family_def().tied_storage(self.flags) and not WORKFLOWS[self.workflow].unties_base

    def pointless(self) -> str | None:
        """Why the case's workflow has nothing to do on its base (then the case is skipped), or None."""
        workflow = WORKFLOWS[self.workflow]
        if workflow.unties_base and not self.family_def().tied_storage(self.flags):
            return f"{self.workflow} is the workaround for tied bases; this base's head is already its own"
        if self.flags.storage and not workflow.tie_states:
            return f"{self.workflow} starts from a config, not from weights: storage states do not apply"
        if self.workflow.startswith("layout-"):
            from conformance.model import layouts

            return layouts.pointless(self.family_def(), self.flags, self.workflow)
        return None


def make(
    implementation: str,
    family: Family,
    flags: TieFlags,
    recipe: str,
    workflow: str,
    knobs: Knobs,
    seed: int,
    precision: Precision = FLOAT32,
) -> Case:
    # Knobs are stored in the family's declared order so equal configs give equal ids.
    ordered = tuple((name, knobs[name]) for name in family.knob_codes if name in knobs)
    return Case(implementation, family.name, flags, recipe, workflow, ordered, seed, precision)


def parse(case_id: str, implementations: list[str], recipes: list[str]) -> Case:
    """Inverse of Case.case_id; every part is checked against the known names."""
    cell, sep, token = case_id.partition("@")
    names = sorted(f.name for f in families.all_families())
    pattern = re.compile(
        rf"(?P<impl>{_alternatives(implementations)})-(?P<family>{_alternatives(names)})"
        rf"-(?P<flags>{ID_PATTERN})-(?P<recipe>{_alternatives(recipes)})-(?P<workflow>{_alternatives(WORKFLOWS)})"
        rf"(?P<precision>{PRECISION_PATTERN})"
    )
    match = pattern.fullmatch(cell)
    if match is None or not sep:
        raise ConformanceError(
            f"not a case id: {case_id!r}; expected IMPL-FAMILY-FLAGS-RECIPE-WORKFLOW[-bf16|-fp16]"
            "@CONFIG.sSEED as printed in results.jsonl (known recipes and families are listed by "
            "`python -m conformance list`)"
        )
    family = families.get(match["family"])
    flags = TieFlags.parse(match["flags"])
    if (flags.text is None) == family.nested:
        raise ConformanceError(f"{case_id}: flags {flags.id} do not fit family {family.name}")
    seeded = _SEED.fullmatch(token)
    if seeded is None:
        raise ConformanceError(f"{case_id}: config part must end with .s<seed>")
    try:
        knobs = family.parse_config_id(seeded.group(1))
    except ValueError as exc:
        raise ConformanceError(f"{case_id}: {exc}") from None
    precision = Precision.parse(match["precision"])
    seed = int(seeded.group(2))
    return make(match["impl"], family, flags, match["recipe"], match["workflow"], knobs, seed, precision)


def _alternatives(names: list[str] | tuple[str, ...]) -> str:
    # Longest first, so 'gemma4-moe' is tried before 'gemma4'.
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
