"""Expectation files: parsing with one-line errors, matching on conditions, verdicts, the shipped files."""

import textwrap

import pytest

from conformance.base.errors import CaseFileError, ConformanceError
from conformance.base.outcomes import PASS, SILENT, SKIPPED, WARNED
from conformance.engine.core import vocabulary
from conformance.reading import expectations
from conformance.reading.expectations import Subject

ENTRY = """
expectations:
  - id: e1
    when:
      family: gemma4*
      flags: "tT-*"
      tied: true
      recipe: [lora_embed, lora_head]
      workflow: merge
      check: merge-fidelity
      versions: {peft: ">=0.19,<0.30"}
    outcome: diverged-warned
    class: limitation
    link: https://github.com/huggingface/peft/issues/2864
    reason: one line
"""
CHECK = "      check: merge-fidelity"


def _load(tmp_path, text, name="peft.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return expectations.load_file(path, path.stem, vocabulary())


def _subject(**changes):
    base = dict(
        implementation="peft",
        family="gemma4-moe",
        flags="tT-xF",
        recipe="lora_head",
        workflow="merge",
        check="merge-fidelity",
        tied=True,
        versions={"peft": "0.21.2", "transformers": "5.23.0"},
    )
    return Subject(**{**base, **changes})


def test_conditions_match_and_each_one_can_exclude(tmp_path):
    (entry,) = _load(tmp_path, ENTRY)
    assert entry.matches(_subject())
    for change in [
        dict(family="llama"),
        dict(flags="tF-xT"),
        dict(tied=False),
        dict(recipe="mts_head"),
        dict(workflow="adapter"),
        dict(check="reference"),
        dict(implementation="nemo-automodel"),
        dict(versions={"peft": "0.18.1"}),
        dict(versions={"transformers": "5.23.0"}),
    ]:
        assert not entry.matches(_subject(**change)), change


def test_first_matching_entry_wins_and_usage_is_tracked(tmp_path):
    entries = _load(tmp_path, ENTRY + ENTRY.split("expectations:")[1].replace("id: e1", "id: e2"))
    found = expectations.ExpectationSet(entries)
    assert found.match(_subject()).id == "e1"
    assert [e.id for e in found.unused({"peft"}, {"peft": "0.21.2"})] == ["e2"]
    assert found.unused({"peft"}, {"peft": "0.18.1"}) == [], "out of its version range: not stale"


@pytest.mark.parametrize(
    ("outcome", "has_entry", "entry_outcome", "verdict"),
    [
        (PASS, False, None, expectations.OK),
        (SKIPPED, True, WARNED, expectations.OK),
        (SILENT, False, None, expectations.UNEXPECTED),
        (WARNED, True, WARNED, expectations.EXPECTED),
        (SILENT, True, WARNED, expectations.UNEXPECTED),  # the warning disappeared: a regression
        (PASS, True, WARNED, expectations.UNEXPECTED_PASS),
    ],
)
def test_verdicts(tmp_path, outcome, has_entry, entry_outcome, verdict):
    entry = _load(tmp_path, ENTRY.replace("diverged-warned", entry_outcome or "diverged-warned"))[0]
    assert expectations.verdict(outcome, entry if has_entry else None) == verdict


@pytest.mark.parametrize(
    ("delta", "verdict"),
    [
        (0.5, expectations.EXPECTED),  # the defect is there, under a tolerance noise set: no fix shown
        (0.3, expectations.EXPECTED),  # half the stated defect still shows it
        (0.01, expectations.UNEXPECTED_PASS),  # down to the noise: a fix
        (None, expectations.UNEXPECTED_PASS),  # a check without a |Δ| shows nothing either way
    ],
)
def test_a_pass_that_still_shows_the_defect_is_expected(tmp_path, delta, verdict):
    (entry,) = _load(tmp_path, ENTRY.replace(CHECK, f"{CHECK}\n      defect: 0.6"))
    assert entry.defect == 0.6 and entry.matches(_subject()), "defect is no condition"
    assert expectations.verdict(PASS, entry, delta) == verdict
    assert expectations.verdict(WARNED, entry, delta) == expectations.EXPECTED
    (plain,) = _load(tmp_path, ENTRY)
    assert expectations.verdict(PASS, plain, 0.5) == expectations.UNEXPECTED_PASS, "without one, any pass"


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (
            ("recipe: [lora_embed, lora_head]", "recipe: [lora_embedd]"),
            "when.recipe",
            "unknown recipe 'lora_embedd'",
        ),
        (("check: merge-fidelity", "check: merge"), "when.check", "unknown check 'merge'"),
        (("family: gemma4*", "family: falcon"), "when.family", "unknown family 'falcon'"),
        (("outcome: diverged-warned", "outcome: pass"), "outcome", "expected one of"),
        (("class: limitation", "class: feature"), "class", "expected one of bug, limitation"),
        (
            ("link: https://github.com/huggingface/peft/issues/2864", "link: not reported upstream"),
            "repro",
            "required when link is",
        ),
        (("link: https://github.com/huggingface/peft/issues/2864", "link: peft#2864"), "link", "https://"),
        (
            ('versions: {peft: ">=0.19,<0.30"}', 'versions: {peft: "newest"}'),
            "versions.peft",
            "not a version range",
        ),
        (("    reason: one line", "    reason: one line\n    colour: red"), "colour", "unknown field"),
        (("    reason: one line", ""), "reason", "required field is missing"),
        ((CHECK, f"{CHECK}\n      defect: -1"), "defect", "above 0"),
        ((CHECK, f"{CHECK}\n      defect: big"), "defect", "expected"),
    ],
)
def test_malformed_entries_get_one_line_naming_the_field(tmp_path, edit, field, words):
    with pytest.raises(ConformanceError) as info:
        _load(tmp_path, ENTRY.replace(*edit))
    text = str(info.value)
    assert "\n" not in text and field in text and words in text and "peft.yaml" in text


def test_broken_yaml_names_the_line(tmp_path):
    with pytest.raises(CaseFileError) as info:
        _load(tmp_path, "expectations:\n  - id: x\n    when: {family: [llama\n")
    assert "peft.yaml" in str(info.value) and "line" in str(info.value)


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(CaseFileError, match="duplicate id 'e1'"):
        _load(tmp_path, ENTRY + ENTRY.split("expectations:")[1])


def test_shipped_expectation_files_load_and_explain_themselves():
    loaded = expectations.load(vocabulary())
    assert loaded.entries, "cases/expectations holds no entry"
    for entry in loaded.entries:
        assert entry.reason and (entry.link.startswith("https://") or entry.repro)


def test_an_exclusion_glob_leaves_names_out_and_a_clause_list_matches_any(tmp_path):
    text = ENTRY.replace("family: gemma4*", 'family: ["!gemma4-moe"]')
    (entry,) = _load(tmp_path, text)
    assert entry.matches(_subject(family="gemma4")) and not entry.matches(_subject(family="gemma4-moe"))
    clauses = """
    expectations:
      - id: two
        when:
          - {family: t5, check: merge-fidelity}
          - {family: bart, check: roundtrip-fidelity}
        outcome: diverged-warned
        class: bug
        link: https://github.com/huggingface/peft/issues/2864
        reason: one line
    """
    parts = _load(tmp_path, clauses)
    assert [p.id for p in parts] == ["two", "two"]
    found = expectations.ExpectationSet(parts)
    assert found.match(_subject(family="t5")) is not None
    assert found.match(_subject(family="bart", check="roundtrip-fidelity")) is not None
    assert found.match(_subject(family="bart")) is None
    with pytest.raises(CaseFileError, match=r"when\[1\]: expected a mapping"):
        _load(tmp_path, clauses.replace("- {family: bart, check: roundtrip-fidelity}", "- bart"))
    with pytest.raises(CaseFileError, match="empty list"):
        _load(
            tmp_path,
            clauses.split("        when:")[0] + "        when: []\n        outcome: crashed\n"
            "        class: bug\n        link: https://x.org/1\n        reason: r\n",
        )
