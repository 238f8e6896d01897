"""Cross-version save → load: export what one environment merged and saved, import it in another.

`export` (environment A) runs PEFT's merge and adapter workflows and keeps, per case, what they wrote:
the merged checkpoint, the adapter and the base it belongs to, and the unmerged logits on the probe ids,
with a manifest naming A's versions. `import` (environment B) vets the folder (conformance.base.checkpoints:
safetensors and JSON only, paths inside it), loads each checkpoint with B's `from_pretrained` (and
PEFT's adapter load) and judges it: roundtrip-fidelity and adapter-roundtrip against A's unmerged
logits, tie-consistency (the HF rule of B on the saved config; lm_head.weight in the checkpoint exactly
when untied; no missing keys). Records carry both version sets: `versions` (the loader, B) and
`saved_with` (the saver, A), and expectations can name ranges of either.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.base import checkpoints, contract, outcomes
from conformance.base.errors import ConformanceError
from conformance.base.versions import installed, sources, under_test
from conformance.engine import execution
from conformance.engine.core import Engine, Selection, expect, plan, skip_reason, vocabulary
from conformance.model import features, oracles, pipeline
from conformance.model.cases import Case
from conformance.model.pipeline import CaseRun, Workspace
from conformance.reading import expectations, results
from conformance.reading.expectations import ExpectationSet

MANIFEST = "manifest.json"
WORKFLOWS = ("merge", "adapter")
# What a cross-version record judges: only what the saver's output and the loader decide.
CHECKS = ("roundtrip-fidelity", "tie-consistency", "adapter-roundtrip")


def export(families: list[str], out: Path, dtypes: list[str] | None = None, cover: int = 0) -> int:
    """Run the merge and adapter cases of PEFT here, in each of `dtypes` (default float32), and keep what
    they saved under `out`; `cover`: a t-wise cover of those cases (conformance.engine.cover)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise ConformanceError(f"{out}: exists, and is not an earlier export; export writes a new folder")
        shutil.rmtree(out)  # last night's export of this row: replaced whole
    selection = Selection(["peft"], families, [], list(WORKFLOWS), dtypes=list(dtypes or []), cover=cover)
    todo = [case for case in plan(selection) if skip_reason(case, selection.device) is None]
    out.mkdir(parents=True, exist_ok=True)
    listed: list[dict[str, Any]] = [{} for _ in todo]
    # In workers, as a run's cases: each saves its case under out/<position in the manifest>.
    tasks = [_Export(case, out, str(i)) for i, case in enumerate(todo)]
    for index, done in execution.judge_all(tasks, selection, execution.default_jobs()):
        if not isinstance(done, dict):  # the worker died: its case's records say why
            done = {"failed": f"crashed: {done[0].detail if done else 'no record'}"}
        listed[index] = {"case_id": todo[index].case_id, "path": str(index), **done}
    manifest = {
        "saved_with": installed(),
        "sources": sources(),
        "features": features.found(),
        "families": families,
        "dtypes": selection.precisions,
        "cases": listed,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"export: {len(listed)} cases ({sum('failed' in e for e in listed)} failed before saving) in {out}")
    return 0


@dataclass(frozen=True)
class _Export:
    """One case's merge or adapter workflow, and what it saved, kept under out/<path> (in a worker)."""

    case: Case
    out: Path
    path: str

    def judge(self, engine: Engine) -> dict[str, Any]:
        engine.workspace.keep = Path(tempfile.mkdtemp(dir=engine.workspace.root, prefix="kept-"))
        run = engine.execute(self.case)
        # The tie warnings the user saw while merging and saving here: they belong to the case's history
        # wherever it is loaded, so a divergence they announced stays "warned".
        saved_at = max(run.made_in.get(a, -1) for a in (contract.SAVED_FLAGS, contract.UNMERGED_LOGITS))
        entry: dict[str, Any] = {"warnings": run.capture.tie_warnings(saved_at)}
        # The noise floors of the saver's weights in the case's precision: the loader's tolerances.
        entry["noise"] = {name: run.artifacts.get(name) for name in contract.NOISE}
        target = self.out / self.path
        if run.failure is not None or contract.UNMERGED_LOGITS not in run.artifacts:
            failure = run.failure
            entry["failed"] = f"{failure.step}: {failure.message}" if failure else "no unmerged logits"
        else:
            assert run.kept is not None
            shutil.move(str(run.kept), str(target))
            if self.case.workflow == "adapter":
                shutil.copytree(run.artifacts[contract.BASE_CHECKPOINT], target / "base")
            ids = pipeline.inputs(self.case.config["vocab_size"], self.case.seed)
            from safetensors.torch import save_file

            tensors = {"unmerged": run.artifacts[contract.UNMERGED_LOGITS], "ids": ids}
            save_file(tensors, str(target / "logits.safetensors"))
        shutil.rmtree(engine.workspace.keep, ignore_errors=True)
        engine.workspace.keep = None
        return entry


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    checkpoints.vet(folder)
    try:
        manifest = json.loads(path.read_text())
        cases = manifest["cases"]
        saved_with = manifest["saved_with"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConformanceError(f"{path}: not an export manifest ({exc})") from None
    if not isinstance(cases, list) or not isinstance(saved_with, dict):
        raise ConformanceError(f"{path}: not an export manifest (cases, saved_with)")
    # Every path is checked before anything is loaded: a manifest from elsewhere may point anywhere.
    for i, entry in enumerate(cases):
        where = f"{path}:cases[{i}]"
        if not isinstance(entry, dict) or "case_id" not in entry:
            raise ConformanceError(f"{where}: not a case entry")
        if not entry.get("failed"):
            checkpoints.inside(folder, entry.get("path"), f"{where}.path")
    return manifest


def _loader(folder: Path, entry: dict[str, Any], where: str) -> Any:
    """The steps that load what A saved for one case, here, with what the checks compare."""

    def steps(run: CaseRun, scratch: Path) -> None:
        case, family = run.case, run.case.family_def()
        dtype = oracles.tolerances().run_dtype(case.precision, case.family, case.workflow)
        with run.step("read"):
            for message in entry.get("warnings") or []:
                run.capture.warnings.append((0, str(message)))
            for name, value in (entry.get("noise") or {}).items():
                if name in contract.NOISE and isinstance(value, (int, float)):
                    run.put(name, float(value))
            base = checkpoints.inside(folder, str(entry.get("path")), where)
            from safetensors.torch import load_file

            saved = load_file(str(checkpoints.inside(base, "logits.safetensors", where)))
            ids, unmerged = saved["ids"], saved["unmerged"]
            run.put(contract.UNMERGED_LOGITS, unmerged)
            if case.workflow == "merge":
                pipeline.read_checkpoint(run, checkpoints.inside(base, "merged", where), family)
        if case.workflow == "merge":
            pipeline.reload(run, checkpoints.inside(base, "merged", where), family, ids, dtype)
            return
        with run.step("load-adapter"):
            from peft import PeftModel

            fresh = pipeline.load_hf(checkpoints.inside(base, "base", where), family, dtype)
            adapter = checkpoints.inside(base, "adapter", where)
            autocast = case.precision.autocast
            loaded = PeftModel.from_pretrained(
                fresh, adapter, **({} if autocast is None else {"autocast_adapter_dtype": autocast})
            ).eval()
            run.put(contract.ADAPTER_LOGITS, pipeline.logits(loaded, ids))

    return steps


@dataclass(frozen=True)
class _Import:
    """Load and judge what one case saved (in a worker)."""

    case: Case
    folder: Path
    entry: dict[str, Any]
    where: str
    position: int  # in the manifest: records keep its order

    def judge(self, engine: Engine) -> list[results.Record]:
        steps = _loader(self.folder, self.entry, self.where)
        return engine.judge(self.case, lambda c: pipeline.execute(c, steps, engine.workspace))


def import_(folder: Path, out: Path, dtypes: list[str] | None = None) -> int:
    """Load and judge every case an export saved (those of `dtypes` only, where given), each in the
    precision its case id names; records in `out` (results.jsonl, run.json)."""
    from conformance.engine import session
    from conformance.engine.core import parse_case
    from conformance.pages import report

    manifest = _manifest(folder)

    saved_in = [str(d) for d in manifest.get("dtypes") or ["float32"]]
    wanted = list(dtypes or saved_in)
    families = list(manifest.get("families") or [])
    selection = Selection(["peft"], families, [], list(WORKFLOWS), list(CHECKS), dtypes=wanted)
    known = expectations.load(vocabulary())
    engine = Engine(selection, Workspace(), ExpectationSet([]))  # judges what was not saved, here
    judged: dict[int, list[results.Record]] = {}
    tasks: list[_Import] = []
    try:
        for i, entry in enumerate(manifest["cases"]):
            case: Case = parse_case(str(entry["case_id"]))
            if case.precision.dtype not in selection.precisions:
                continue
            if entry.get("failed"):
                # Nothing was saved: not a cross-version case (the saver's own run records the failure).
                reason = f"not exported: the saving environment stopped at {entry['failed']}"
                judged[i] = engine.unfinished(case, reason, outcome=outcomes.SKIPPED)
            else:
                tasks.append(_Import(case, folder, entry, f"{folder / MANIFEST}:cases[{i}]", i))
    finally:
        engine.close()
    # In workers, as a run's cases (a crash costs one case).
    for index, done in execution.judge_all(tasks, selection, execution.default_jobs()):
        judged[tasks[index].position] = done
    records: list[results.Record] = []
    for i in sorted(judged):
        for record in judged[i]:
            record.saved_with = dict(manifest["saved_with"])
        records.extend(expect(judged[i], known))
    meta = {
        "selection": session.selection_record(selection),
        "versions": installed(),
        "sources": sources(),
        "features": features.found(),
        "saved_with": manifest["saved_with"],
        "imported_from": str(folder),
        "cases": len(manifest["cases"]),
        "results": len(records),
        "incomplete": False,
    }
    path = results.write(records, out, meta)
    results.summary(records, sys.stdout, [])
    saver, loader = under_test(manifest["saved_with"]), under_test(installed())
    print(f"\nimport: {len(manifest['cases'])} cases saved with {saver}, loaded with {loader}")
    print(f"results in {path}")
    print(f"report: {report.render([report.load(path)], out / 'index.html')}")
    return 1 if any(r.verdict == expectations.UNEXPECTED for r in records) else 0
