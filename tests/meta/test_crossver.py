"""Cross-version save → load: export here, import (here: the same versions), hostile exports refused,
and how a cross-version record is matched against expectations.

The real cross-version pairs (PEFT 0.17/0.18 on transformers 4.x against the newest, and back; NeMo's
pinned transformers against the newest) run in tox environments built from cases/matrix.toml.
"""

import json
import os
import shutil
import textwrap

import pytest
import torch

from conformance.cli import EXIT_BAD_INPUT, EXIT_OK, main
from conformance.engine.core import expect, vocabulary
from conformance.reading import expectations


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xver") / "export"
    assert main(["export", "--out", str(folder), "--family", "llama"]) == EXIT_OK
    return folder


def test_export_keeps_checkpoints_adapters_logits_and_the_savers_versions(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["saved_with"]["peft"] and manifest["saved_with"]["transformers"]
    entries = manifest["cases"]
    assert {e["case_id"].split("@")[0].rsplit("-", 1)[1] for e in entries} == {"merge", "adapter"}
    saved = [e for e in entries if "failed" not in e]
    failed = [e for e in entries if "failed" in e]
    assert failed and all("ValueError" in e["failed"] for e in failed), "the documented refusal is kept"
    for entry in saved:
        folder = exported / entry["path"]
        assert (folder / "logits.safetensors").is_file()
        parts = {"merged"} if entry["case_id"].split("@")[0].endswith("-merge") else {"adapter", "base"}
        assert parts <= {p.name for p in folder.iterdir()}, entry
    warned = [e for e in saved if "lora_embed-merge" in e["case_id"] and "-tT-" in e["case_id"]]
    assert warned and warned[0]["warnings"], "the tie warnings seen while merging travel with the case"


def test_import_with_the_same_versions_agrees_with_the_run(exported, tmp_path):
    assert main(["import", str(exported), "--out", str(tmp_path)]) == EXIT_OK
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["check"] for r in records} == {"roundtrip-fidelity", "tie-consistency", "adapter-roundtrip"}
    assert all(r["saved_with"] == r["versions"] for r in records)
    assert not [r for r in records if r["verdict"] == "unexpected"]
    # A merge that diverged where it was made diverges the same way, warned, wherever it is loaded.
    shared = [r for r in records if r["case_id"].startswith("peft-llama-tT-lora_embed-merge@")]
    assert shared and all(r["outcome"] in ("pass", "diverged-warned") for r in shared)
    assert any(r["outcome"] == "diverged-warned" and r["warnings"] for r in shared)
    skipped = [r for r in records if r["outcome"] == "skipped"]
    assert skipped and all(r["detail"].startswith("not exported: ") for r in skipped)
    assert json.loads((tmp_path / "run.json").read_text())["saved_with"]


def _copy(exported, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(exported, target)
    return target


@pytest.mark.parametrize(
    ("harm", "words"),
    [
        (lambda f: torch.save({}, f / "0" / "merged" / "pytorch_model.bin"), "pickle-format weights"),
        (lambda f: os.symlink("/etc/passwd", f / "0" / "merged" / "evil.json"), "a symlink"),
        (lambda f: _manifest_path(f, "../../etc"), "leads out of"),
        (lambda f: _manifest_path(f, "/etc"), "is not a path relative to"),
        (lambda f: (f / "manifest.json").write_text("{"), "not an export manifest"),
    ],
)
def test_a_hostile_export_is_refused_with_one_line(exported, tmp_path, capsys, harm, words):
    folder = _copy(exported, tmp_path)
    harm(folder)
    assert main(["import", str(folder), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err


def _manifest_path(folder, path):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["cases"][0]["path"] = path
    (folder / "manifest.json").write_text(json.dumps(manifest))


ENTRIES = """
expectations:
  - id: saver-bug
    when: {recipe: mts_embed, versions: {peft: "<0.19"}}
    outcome: diverged-warned
    class: bug
    link: https://github.com/huggingface/peft/issues/2777
    reason: one line
  - id: xver-only
    when: {recipe: mts_head, saved_with: {peft: "<0.19"}, versions: {peft: ">=0.19"}}
    outcome: diverged-silent
    class: bug
    link: https://github.com/huggingface/peft/issues/2777
    reason: one line
"""


def _record(recipe, outcome, versions, saved_with):
    from conformance.reading.results import Record

    return Record(
        case_id=f"peft-llama-tT-{recipe}-merge@v128.h32.i64.L2.H2.K1.s0",
        implementation="peft",
        family="llama",
        flags={"top": True, "text": None},
        recipe=recipe,
        workflow="merge",
        check="roundtrip-fidelity",
        outcome=outcome,
        verdict="ok",
        expected=None,
        expected_outcome=None,
        max_abs_diff=1.0,
        tolerance=1e-4,
        noise_floor=1e-6,
        tolerance_factor=6.0,
        warnings=[],
        detail="",
        step=None,
        tied=True,
        support="supported",
        config={},
        seed=0,
        dtype="float32",
        autocast=None,
        computed_in="float32",
        device="cpu",
        versions=versions,
        features=[],
        repro="",
        saved_with=saved_with,
    )


@pytest.mark.parametrize(
    ("recipe", "outcome", "versions", "saved_with", "verdict"),
    [
        # the saver's own entry explains a divergence made while merging, shown the same way
        ("mts_embed", "diverged-warned", {"peft": "0.21.2"}, {"peft": "0.18.1"}, "expected"),
        # ... but not one the loader changed (then it needs an entry of its own)
        ("mts_embed", "diverged-silent", {"peft": "0.21.2"}, {"peft": "0.18.1"}, "unexpected"),
        # the loader's own entry, the same way
        ("mts_embed", "diverged-warned", {"peft": "0.18.1"}, {"peft": "0.21.2"}, "expected"),
        # an entry naming saved_with matches cross-version records only
        ("mts_head", "diverged-silent", {"peft": "0.21.2"}, {"peft": "0.18.1"}, "expected"),
        ("mts_head", "diverged-silent", {"peft": "0.21.2"}, None, "unexpected"),
        ("mts_head", "diverged-silent", {"peft": "0.21.2"}, {"peft": "0.20.0"}, "unexpected"),
    ],
)
def test_how_a_cross_version_record_meets_expectations(
    tmp_path, recipe, outcome, versions, saved_with, verdict
):
    path = tmp_path / "peft.yaml"
    path.write_text(textwrap.dedent(ENTRIES))
    found = expectations.ExpectationSet(expectations.load_file(path, "peft", vocabulary()))
    (record,) = expect([_record(recipe, outcome, versions, saved_with)], found)
    assert record.verdict == verdict, record.expected
