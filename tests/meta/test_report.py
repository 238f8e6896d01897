"""The HTML report and the diff, rendered from real runs; and the page driven in headless Chromium."""

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conformance.base import casefiles
from conformance.cli import EXIT_BAD_INPUT, EXIT_OK, main
from conformance.pages import report


def _llama_run(*recipes: str) -> list[str]:
    """A small real run: peft and hf on tiny llama, the given recipes, one process."""
    return ["run", "--impl", "peft", "--impl", "hf", "--family", "llama", "--jobs", "1"] + [
        arg for recipe in recipes for arg in ("--recipe", recipe)
    ]


RUN = _llama_run("lora_attn", "lora_embed", "no_adapter")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """results.jsonl (and index.html) of a small real run."""
    out = tmp_path_factory.mktemp("run")
    assert main([*RUN, "--out", str(out)]) == EXIT_OK
    return out


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "td" and "data-keys" in attributes:
            self.cells.append(attributes)


def _cells(page: Path) -> list[dict[str, str]]:
    parser = _Cells()
    parser.feed(page.read_text())
    return parser.cells


def test_a_run_writes_a_page_whose_cells_match_the_results_one_for_one(real_run):
    records = [json.loads(line) for line in (real_run / "results.jsonl").read_text().splitlines()]
    cells = _cells(real_run / "index.html")
    keys = [key for cell in cells for key in json.loads(cell["data-keys"])]
    assert sorted(keys) == sorted(report.record_key(r) for r in records), "every result in exactly one cell"
    by_key = {report.record_key(r): r for r in records}
    for cell in cells:
        mine = [by_key[k] for k in json.loads(cell["data-keys"])]
        assert cell["data-outcome"] == report.worst([r["outcome"] for r in mine])
        assert {(r["implementation"], r["recipe"], r["workflow"]) for r in mine} == {
            (cell["data-impl"], *cell["title"].split(":")[0].split()[-2:])
        }
        if any(r["verdict"] == "expected" for r in mine) and all(r["verdict"] != "unexpected" for r in mine):
            assert "expected" in cell["class"].split()
    assert any(c["data-outcome"] == "diverged-warned" for c in cells), "lora_embed on a tied llama diverges"


def test_several_results_files_make_one_page_with_a_column_group_each(real_run, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(real_run, second)
    # The same cases with other results, as another transformers version would give.
    records = [json.loads(line) for line in (second / "results.jsonl").read_text().splitlines()]
    for record in records:
        record["detail"] = "from the second run"
    (second / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert (
        main(
            [
                "report",
                str(real_run / "results.jsonl"),
                str(second / "results.jsonl"),
                "-o",
                str(tmp_path / "both.html"),
            ]
        )
        == EXIT_OK
    )
    cells = _cells(tmp_path / "both.html")
    assert {c["data-run"] for c in cells} == {"1", "2"}
    assert len(cells) == 2 * len(_cells(real_run / "index.html"))
    # What the page's script shows on a click: each cell's keys looked up in its own run's records.
    page = (tmp_path / "both.html").read_text()
    embedded = page.split('<script type="application/json" id="data-records">')[1].split("</script>")[0]
    per_run = json.loads(embedded)
    for cell in cells:
        records = per_run[int(cell["data-run"]) - 1]["records"]
        details = {records[key]["detail"] for key in json.loads(cell["data-keys"])}
        assert ("from the second run" in details) == (cell["data-run"] == "2"), (cell["title"], details)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "empty"),
        ('{"case_id": "x", "check": "merge-fidelity"', "not JSON (truncated file?)"),
        ('{"name": "something else"}\n', "not a conformance results record"),
        ("[1, 2, 3]\n", "not a conformance results record"),
    ],
)
def test_bad_results_files_get_one_line_and_exit_2(tmp_path, capsys, content, words):
    path = tmp_path / "results.jsonl"
    path.write_text(content)
    assert main(["report", str(path), "-o", str(tmp_path / "x.html")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and str(path) in err
    assert main(["diff", str(path), str(path)]) == EXIT_BAD_INPUT


def _first_record(run: Path) -> dict:
    return json.loads((run / "results.jsonl").read_text().splitlines()[0])


def test_a_bad_field_or_run_json_gets_one_line_and_exit_2(real_run, tmp_path, capsys):
    record = {**_first_record(real_run), "flags": "tT"}
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["report", str(tmp_path / "results.jsonl"), "-o", str(tmp_path / "x.html")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "field 'flags'" in err, err
    (tmp_path / "results.jsonl").write_text((real_run / "results.jsonl").read_text())
    (tmp_path / "run.json").write_text('{"versions": {')
    assert main(["report", str(tmp_path / "results.jsonl"), "-o", str(tmp_path / "x.html")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.json: not JSON" in err, err


def test_infinite_and_nan_differences_keep_the_page_valid(real_run, tmp_path):
    # diff() gives inf for logits of another shape; NaN logits give NaN. Bare NaN would break JSON.parse.
    lines = (real_run / "results.jsonl").read_text().splitlines()
    numeric = [n for n, line in enumerate(lines) if json.loads(line)["max_abs_diff"] is not None][:2]
    for n, value in zip(numeric, (float("inf"), float("nan")), strict=True):
        lines[n] = json.dumps({**json.loads(lines[n]), "max_abs_diff": value, "outcome": "diverged-silent"})
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    page = report.render([report.load(tmp_path / "results.jsonl")], tmp_path / "index.html").read_text()
    embedded = page.split('<script type="application/json" id="data-records">')[1].split("</script>")[0]

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in the page's JSON: JSON.parse rejects it")

    shown = {r["max_abs_diff"] for r in json.loads(embedded, parse_constant=strict)[0]["records"].values()}
    assert {"inf", "nan"} <= shown
    svg = page.split("<svg")[1].split("</svg>")[0]
    assert 'cy="nan"' not in svg and 'cy="inf"' not in svg, "every point has a position"
    assert svg.count('cy="10.0"') >= 2, "inf and NaN are drawn at the top, as the worst results"


def test_diff_of_two_real_runs(real_run, tmp_path, capsys, monkeypatch):
    # The second run adds a recipe, drops one, and loses the expectations: changed verdicts.
    cases = tmp_path / "cases"
    shutil.copytree(casefiles.cases_dir(), cases)
    (cases / "expectations" / "peft.yaml").write_text("expectations: []\n")
    monkeypatch.setenv("CONFORMANCE_CASES", str(cases))
    new = tmp_path / "new"
    argv = [*_llama_run("lora_embed", "no_adapter", "mts_head"), "--out", str(new), "--no-report"]
    main(argv)
    capsys.readouterr()
    assert (
        main(
            [
                "diff",
                str(real_run / "results.jsonl"),
                str(new / "results.jsonl"),
                "-o",
                str(tmp_path / "diff.html"),
            ]
        )
        == EXIT_OK
    )
    out = capsys.readouterr().out
    rows = report.diff(report.load(real_run / "results.jsonl"), report.load(new / "results.jsonl"))
    statuses = {row["status"] for row in rows}
    assert statuses == {"added", "removed", "changed", "unchanged"}
    changed = [r for r in rows if r["status"] == "changed"]
    assert all(r["old"]["verdict"] == "expected" and r["new"]["verdict"] == "unexpected" for r in changed)
    assert "removed" in out and "peft-llama-tT-lora_attn" in out and "-> diverged-warned/unexpected" in out
    shape = report.transitions(rows)
    assert sum(shape.values()) == len(changed) and set(shape) == {
        ("diverged-warned/expected", "diverged-warned/unexpected")
    }
    assert f"{len(changed):>6}  diverged-warned/expected -> diverged-warned/unexpected" in out
    page = (tmp_path / "diff.html").read_text()
    assert page.count('<tr class="added">') == sum(r["status"] == "added" for r in rows)


def _browser():
    """Headless Debian Chromium through Selenium, or a skip naming what is missing."""
    missing = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not Path(p).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"needs {', '.join(missing)} (.ci/run installs Debian's chromium and chromium-driver)"
        if os.environ.get("CONFORMANCE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_page_in_a_real_browser(real_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    try:
        driver.get((real_run / "index.html").as_uri())
        matrix = driver.find_element(By.ID, "matrix")
        assert matrix.is_displayed() and matrix.size["height"] > 50
        cells = driver.find_elements(By.CSS_SELECTOR, "td.cell[data-keys]")
        assert cells and all(c.is_displayed() for c in cells)
        details = driver.find_element(By.ID, "details")
        assert not details.is_displayed()
        warned = driver.find_element(By.CSS_SELECTOR, "td.cell.diverged-warned")
        warned.click()
        assert details.is_displayed()
        assert "merge-fidelity" in details.text and "python -m conformance repro" in details.text
        assert "tied-lora-merge-writes-shared-matrix" in details.text  # the expectation, with its link
        link = details.find_element(By.CSS_SELECTOR, "a").get_attribute("href")
        assert link.startswith("https://github.com/huggingface/peft/issues/")
        # Taken here, with the whole matrix and one cell's details showing, before any filter.
        (ROOT / "reports").mkdir(exist_ok=True)
        driver.save_screenshot(str(ROOT / "reports" / "report-screenshot.png"))
        Select(driver.find_element(By.ID, "f-check")).select_by_visible_text("reference")
        assert driver.find_elements(By.CSS_SELECTOR, "td.cell.diverged-warned") == [], (
            "reference passes there"
        )
        Select(driver.find_element(By.ID, "f-impl")).select_by_visible_text("hf")
        assert not warned.is_displayed(), "peft columns are hidden"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
