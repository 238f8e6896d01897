"""The command line: one clear line for bad input, exit codes, the results file, determinism, repro."""

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import cli
from conformance.base import casefiles
from conformance.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNEXPECTED, main

SMALL = [
    "run",
    "--impl",
    "peft",
    "--family",
    "llama",
    "--recipe",
    "lora_attn",
    "--recipe",
    "lora_embed",
    "--jobs",
    "1",
]
FIELDS = {
    "implementation",
    "versions",
    "family",
    "flags",
    "recipe",
    "workflow",
    "check",
    "outcome",
    "expected",
    "max_abs_diff",
    "tolerance",
    "warnings",
    "case_id",
    "config",
    "seed",
    "repro",
    "verdict",
    "detail",
}


@pytest.fixture
def cases_copy(tmp_path, monkeypatch):
    """A private copy of cases/, selected through CONFORMANCE_CASES, to edit freely."""
    folder = tmp_path / "cases"
    shutil.copytree(casefiles.cases_dir(), folder)
    monkeypatch.setenv("CONFORMANCE_CASES", str(folder))
    return folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--family", "falcon"], "--family: unknown family 'falcon'"),
        (["run", "--recipe", "lora_everything"], "--recipe: unknown recipe 'lora_everything'"),
        (["run", "--workflow", "export"], "--workflow: unknown workflow 'export'"),
        (["run", "--impl", "vllm"], "unknown implementation 'vllm'"),
        (["run", "--profile", "weekly"], "unknown profile 'weekly'"),
        (["repro", "peft-llama-tT-lora_attn-merge"], "not a case id"),
        (["repro", "peft-llama-tT-xF-lora_attn-merge@v128.s0"], "do not fit family llama"),
        (["repro", "peft-llama-tT-lora_attn-merge@v128.z9.s0"], "bad config part 'z9'"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(capsys, argv, words):
    assert main(argv) == EXIT_BAD_INPUT
    assert words in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("file", "edit", "words"),
    [
        ("recipes.yaml", ("on_tied_model: separate", "on_tied_model: maybe"), "on_tied_model"),
        (
            "recipes.yaml",
            ("lora: {target_modules: [q_proj, v_proj]}", "lora: [q_proj]"),
            ".lora: expected dict",
        ),
        (
            "recipes.yaml",
            ("requires: [trainable-tokens]", "requires: [time-travel]"),
            "unknown feature 'time-travel'",
        ),
        ("recipes.yaml", ("\nrecipes:\n", "\nrecipes: [\n"), "line"),
        (
            "tolerances.yaml",
            ("reference: {factor: 6, float32: 1.0e-4", "reference: {factor: 6, float32: tiny"),
            "checks.reference.float32",
        ),
        (
            "expectations/peft.yaml",
            ("workflow: merge-resize", "workflow: mrege-resize"),
            "unknown workflow 'mrege-resize'",
        ),
    ],
)
def test_malformed_case_files_name_file_and_field(capsys, cases_copy, file, edit, words):
    path = cases_copy / file
    text = path.read_text()
    assert edit[0] in text, f"fixture drifted: {edit[0]!r} not in {file}"
    path.write_text(text.replace(edit[0], edit[1], 1))
    assert main([*SMALL, "--out", str(cases_copy.parent / "out")]) == EXIT_BAD_INPUT
    err = _one_line_error(capsys)
    assert file.split("/")[-1] in err and words in err, err


def test_a_run_writes_records_and_exits_0_when_everything_is_explained(tmp_path, capsys):
    assert main([*SMALL, "--out", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "conformance: implementations peft" in out and "results:" in out and "0 unexpected" in out
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert records and all(set(r) >= FIELDS for r in records)
    assert {r["outcome"] for r in records} >= {"pass", "diverged-warned"}  # lora_embed on a tied llama
    warned = [r for r in records if r["outcome"] == "diverged-warned"]
    assert all(r["expected"] and r["warnings"] and r["max_abs_diff"] > r["tolerance"] for r in warned)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["cases"] > 0 and meta["results"] == len(records)


def test_an_unexplained_divergence_exits_1_and_is_listed_with_its_repro(tmp_path, capsys, cases_copy):
    (cases_copy / "expectations" / "peft.yaml").write_text("expectations: []\n")
    assert main([*SMALL, "--out", str(tmp_path)]) == EXIT_UNEXPECTED
    out = capsys.readouterr().out
    assert "UNEXPECTED (" in out and "python -m conformance repro 'peft-llama-tT-lora_embed-merge@" in out


def test_an_unexpected_pass_fails_only_in_strict_mode(tmp_path, capsys, cases_copy):
    path = cases_copy / "expectations" / "peft.yaml"
    path.write_text(
        path.read_text() + "\n  - id: wrongly-expected\n    when: {recipe: lora_attn, check: reference}\n"
        "    outcome: diverged-silent\n    class: bug\n    link: https://example.org/1\n    reason: test\n"
    )
    assert main([*SMALL, "--out", str(tmp_path)]) == EXIT_OK
    assert "UNEXPECTEDLY PASSING" in capsys.readouterr().out
    assert main([*SMALL, "--out", str(tmp_path), "--strict"]) == EXIT_UNEXPECTED


def test_repro_reruns_one_case(capsys):
    case_id = "peft-llama-tT-lora_embed-merge@v128.h32.i64.L2.H2.K1.s0"
    assert main(["repro", case_id]) == EXIT_OK
    out = capsys.readouterr().out
    assert (
        "merge-fidelity" in out and "diverged-warned" in out and "tied-lora-merge-writes-shared-matrix" in out
    )


def test_repro_prints_a_check_with_a_difference_but_no_tolerance(capsys):
    # layout-load measures a Δ but has no tolerance rule: printing it once raised a TypeError.
    assert main(["repro", "hf-llama-tT-no_adapter-layout-head@v128.h32.i64.L2.H2.K1.s0"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "layout-load" in out and "max|Δ|=" in out and "Traceback" not in out


def test_same_seed_same_results_file_in_one_process_or_two(tmp_path):
    # Separate interpreters, as users run it; the second run forks two workers.
    argv = [
        sys.executable,
        "-m",
        "conformance",
        *SMALL[:-2],
        "--recipe",
        "tokens_embed_head_diff",
        "--seed",
        "7",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parents[2]
    for jobs, out in (("1", "a"), ("2", "b")):
        done = subprocess.run(
            [*argv, "--jobs", jobs, "--out", str(tmp_path / out)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == EXIT_OK, done.stdout[-2000:] + done.stderr[-2000:]
    first = (tmp_path / "a" / "results.jsonl").read_bytes()
    assert first and first == (tmp_path / "b" / "results.jsonl").read_bytes()


def test_an_untied_load_does_not_depend_on_the_cases_before_it():
    # untie-first loads T5 with tie_word_embeddings=False: its stack embeddings are then missing from the
    # checkpoint and drawn from the global RNG, whose state the cases before had left (jobs=1 and jobs=2
    # once gave different results files).
    from conformance.engine.core import Engine, Selection, plan

    def by_check(engine, case):
        return {r.check: (r.outcome, r.max_abs_diff, r.noise_floor) for r in engine.records(case)}

    selection = Selection(["peft"], ["t5"], ["lora_attn", "lora_embed"], ["untie-first"])
    first, second = plan(selection)[:2]
    alone, after = Engine(Selection()), Engine(Selection())
    try:
        expected = by_check(alone, second)
        after.records(first)
        assert by_check(after, second) == expected, f"{second.case_id} after {first.case_id}"
    finally:
        alone.close()
        after.close()


def test_a_case_does_not_change_the_next_one_in_the_same_process():
    # PEFT's ensure_weight_tying rewrites modules_to_save=["lm_head"] in place; if that reached the
    # shared recipe, mts_head would run with the embedding saved instead, depending on case order.
    from conformance.engine.core import Engine, Selection, plan
    from conformance.model import recipes

    def by_check(engine, case):
        return {r.check: (r.outcome, r.max_abs_diff) for r in engine.records(case)}

    selection = Selection(families=["llama"], recipes=["mts_head", "mts_head_ewt"], workflows=["merge"])
    planned = {case.case_id: case for case in plan(selection)}
    tied = "peft-llama-tT-mts_head{}-merge@v128.h32.i64.L2.H2.K1.s0"
    alone, after = Engine(Selection()), Engine(Selection())
    try:
        expected = by_check(alone, planned[tied.format("")])
        after.records(planned[tied.format("_ewt")])
        assert recipes.load().get("mts_head").adapter["modules_to_save"] == ["lm_head"]
        assert by_check(after, planned[tied.format("")]) == expected
    finally:
        alone.close()
        after.close()


def test_a_standalone_repro_can_be_written_to_a_file(tmp_path, capsys):
    # Under tox, stdout also carries tox's status lines: `> repro.py` made a script that did not parse.
    target = tmp_path / "repro.py"
    case_id = "peft-llama-tT-lora_embed-merge@v128.h32.i64.L2.H2.K1.s0"
    assert main(["repro", case_id, "--standalone", "-o", str(target)]) == EXIT_OK
    compile(target.read_text(), str(target), "exec")  # a whole script, nothing else in it
    assert f"wrote {target}" in capsys.readouterr().out
    assert main(["repro", case_id, "-o", str(target)]) == EXIT_BAD_INPUT
    assert "add --standalone" in capsys.readouterr().err


def test_the_skip_summary_says_how_many_skips_it_does_not_list():
    import io

    from conformance.reading.results import SKIP_REASONS_SHOWN, Record, summary

    records = []
    for n in range(SKIP_REASONS_SHOWN + 2):
        record = Record.__new__(Record)
        record.__dict__.update(check="reference", outcome="skipped", verdict="ok", detail=f"reason {n}")
        records.extend([record] * (n + 1))
    out = io.StringIO()
    summary(records, out, [])
    assert "skipped 3 more, for 2 other reasons" in out.getvalue(), out.getvalue()


def test_family_options_replace_the_environments_families(monkeypatch):
    # tox -e gemma4 names its families in CONFORMANCE_FAMILY: `-- --family llama` runs Llama alone.
    from conformance import cli

    seen = {}
    monkeypatch.setattr(
        "conformance.engine.session.run", lambda selection, options: seen.setdefault("s", selection) and 0
    )
    monkeypatch.setattr(cli, "header", lambda selection: None)
    monkeypatch.setenv("CONFORMANCE_FAMILY", "gemma4,gemma4-moe")
    main(["run", "--family", "llama"])
    assert seen.pop("s").families == ["llama"]
    main(["run"])
    assert seen.pop("s").families == ["gemma4", "gemma4-moe"]


def test_a_recipe_of_an_implementation_not_installed_names_it(capsys):
    from conformance import implementations

    if implementations.get("nemo-automodel").unavailable() is None:
        pytest.skip("NeMo Automodel is installed here: its recipes plan cases")
    assert main(["run", "--recipe", "nemo_lora_proj", "--family", "llama"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "matched no case: recipe nemo_lora_proj runs under nemo-auto, nemo-automodel only" in err, err
    assert "is not installed" in err and "\n" not in err, err


def test_without_its_dependencies_the_module_says_what_to_install():
    # -S: no site-packages, so not even `packaging` (a dependency of the package) can be imported.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-S", "-m", "conformance", "list"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "install the package first: pip install -e ." in done.stderr


def test_version_names_the_distribution_and_where_it_runs_from(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith("python -m conformance ")
    assert str(Path(__file__).resolve().parents[2] / "conformance") in out


def test_the_command_fixes_the_hash_seed_before_it_runs(monkeypatch):
    # Library messages print sets of tensor names in hash order: without one seed, one seed's results
    # differed between runs (safetensors' "shared tensors [{...}]" for Qwen2-Audio with an aliased head).
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    started = {}

    def execv(path, args):
        started.update(path=path, args=args, seed=os.environ.get("PYTHONHASHSEED"))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(cli, "main", lambda: pytest.fail("ran before the hash seed was fixed"))
    with pytest.raises(SystemExit):
        cli.entry()
    assert started == {"path": sys.executable, "args": [sys.executable, *sys.orig_argv[1:]], "seed": "0"}


def test_a_hash_seed_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("started again though the seed was set"))
    monkeypatch.setattr(cli, "main", lambda: 3)
    assert cli.entry() == 3


def test_every_tox_environment_runs_under_one_hash_seed():
    # tox gives each call a random PYTHONHASHSEED, which the command keeps as a user's: [testenv] fixes it,
    # and an environment with a set_env of its own must take the base's along.
    config = configparser.ConfigParser(interpolation=None)
    config.read(Path(__file__).resolve().parents[2] / "tox.ini")
    base = [line.split("=")[0].strip() for line in config["testenv"]["set_env"].splitlines() if "=" in line]
    assert "PYTHONHASHSEED" in base, base
    # And bytecode is written (uv installs none; PYTHONDONTWRITEBYTECODE would recompile per process).
    assert "PYTHONDONTWRITEBYTECODE" in base, base
    for name in (s for s in config.sections() if s.startswith("testenv:")):
        own = config[name].get("set_env")
        assert own is None or "{[testenv]set_env}" in own, f"tox.ini [{name}] set_env drops the hash seed"
