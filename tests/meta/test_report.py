"""The HTML report and the diff, rendered from real runs; and the page driven in headless Chromium."""

import json
import os
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conformance.base import casefiles
from conformance.cli import EXIT_BAD_INPUT, EXIT_OK, main
from conformance.pages import diff, gate, report
from conformance.reading import expectations


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


def _embedded(page: str, name: str):
    """The JSON a page hands its script (`data-records`, `data-links`)."""
    return json.loads(page.split(f'<script type="application/json" id="{name}">')[1].split("</script>")[0])


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def _write(folder: Path, records: list[dict], **meta) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if meta:
        (folder / "run.json").write_text(json.dumps(meta))
    return folder / "results.jsonl"


# The cell whose checks show an expectation with its link, shared warnings, and a standalone command.
MERGE = "peft llama tT lora_embed merge"
# The same non-pass in a workflow without a standalone script.
RESIZE_MERGE = "peft llama tT lora_embed resize-merge"


def _case(run: Path, title: str) -> str:
    impl, family, flags, recipe, workflow = title.split()
    return next(
        r["case_id"]
        for r in _records(run)
        if (r["implementation"], r["family"], r["recipe"], r["workflow"]) == (impl, family, recipe, workflow)
        and r["case_id"].startswith(f"{impl}-{family}-{flags}-{recipe}-{workflow}@")
    )


@pytest.fixture(scope="module")
def not_reported(real_run, tmp_path_factory) -> tuple[Path, expectations.Expectation]:
    """The real run's page with one non-pass of the merge cell matched, by hand, to an expectation that is
    not reported upstream (the real run's own expectations all have links)."""
    not_reported = [e for e in expectations.load(None).entries if e.link == expectations.NOT_REPORTED]
    entry = next(e for e in not_reported if e.implementation == "peft")
    records = _records(real_run)
    case = _case(real_run, MERGE)
    for record in records:
        if record["case_id"] == case and record["check"] == "roundtrip-fidelity":
            record.update(expected=entry.id, expected_outcome=entry.outcome)
    folder = tmp_path_factory.mktemp("not-reported")
    results = _write(folder, records, **json.loads((real_run / "run.json").read_text()))
    assert main(["report", str(results), "-o", str(folder / "index.html")]) == EXIT_OK
    return folder / "index.html", entry


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
    # The same versions: each run is named by its folder.
    heads = (tmp_path / "both.html").read_text().split('<table class="matrix"')[1].split("</tr>")[0]
    assert f"run 1: {real_run.name}<" in heads and "run 2: second<" in heads, heads
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


def test_two_runs_are_labelled_by_the_versions_that_differ(real_run, tmp_path):
    old = {"transformers": "4.57.6", "peft": "0.18.1"}
    records = [{**r, "versions": {**r["versions"], **old}} for r in _records(real_run)]
    meta = json.loads((real_run / "run.json").read_text())
    older = _write(tmp_path / "older", records, **{**meta, "versions": {**meta["versions"], **old}})
    assert main(["report", str(older), str(real_run), "-o", str(tmp_path / "two.html")]) == EXIT_OK
    page = (tmp_path / "two.html").read_text()
    new = report.load(real_run).versions
    labels = ["transformers 4.57.6 · peft 0.18.1", f"transformers {new['transformers']} · peft {new['peft']}"]
    heads = page.split('<table class="matrix"')[1].split("</tr>")[0]
    assert f"run 1: {labels[0]}<" in heads and f"run 2: {labels[1]}<" in heads, heads
    runs = page.split('id="runs"')[1].split("</table>")[0]
    assert f"1: {labels[0]}<" in runs and f"2: {labels[1]}<" in runs and ">1: results.jsonl" not in runs
    # Records alone (no run.json) say the same; torch differing alone names torch.
    (tmp_path / "older" / "run.json").unlink()
    assert report.labels([report.load(older), report.load(real_run)]) == labels
    torch = [{**r, "versions": {**r["versions"], "torch": "0.0.1"}} for r in _records(real_run)]
    other = report.load(_write(tmp_path / "torch", torch))
    assert report.labels([other, report.load(real_run)])[0] == "torch 0.0.1"


def test_workflow_abbreviations_are_short_and_unique():
    names = ["merge", "merge-resize", "resize-merge", "resize", "resume", "resize-normal", "untie-first"]
    names += ["layout-no-top-flag", "layout-no-text-flag", "lora-merge", "linear-merge", "x", "x_y", "xy"]
    short = report.abbreviations(names)
    assert len(set(short.values())) == len(names), short
    assert short["merge"] == "m" and short["untie-first"] == "uf" and short["resize-merge"] == "rm"
    assert {short["resize"], short["resume"]} == {"resi", "resu"}
    assert short["layout-no-top-flag"] != short["layout-no-text-flag"]


def test_the_matrix_heads_are_a_line_high_and_spelled_out_in_the_legend(real_run):
    page = (real_run / "index.html").read_text()
    assert "writing-mode" not in page, "no rotated column heads"
    heads = page.split('<table class="matrix"')[1].split("</thead>")[0]
    legend = page.split('id="legend"')[1].split("</div>")[0]
    columns = [c for c in heads.split('<th class="col"')[1:]]
    assert columns
    for column in columns:
        title, text = column.split('title="')[1].split('"')[0], column.split(">")[1].split("<")[0]
        impl, recipe, workflow = title.split()
        assert len(text) <= 5 and f"<code>{text}</code> {workflow}</span>" in legend, (text, title)
        assert f'title="{impl} {recipe}">' in heads, "its recipe heads the columns above it"


def test_a_non_pass_carries_its_upstream_link_or_repro_and_its_standalone_command(real_run, not_reported):
    page, entry = not_reported
    text = page.read_text()
    cases, links = _embedded(text, "data-records")[0]["cases"], _embedded(text, "data-links")
    merge, resize = _case(real_run, MERGE), _case(real_run, RESIZE_MERGE)
    assert cases[merge]["standalone"] == gate.standalone_command(merge)
    assert f"python -m conformance repro '{merge}' --standalone -o repro.py" in cases[merge]["standalone"]
    assert cases[resize]["standalone"] is None, "resize-merge has no standalone script"
    assert "standalone" not in cases[_case(real_run, "peft llama tT lora_attn merge")], "it passes"
    # Keyed by implementation too: ids are unique in their implementation's file only.
    assert links[f"peft|{entry.id}"]["link"] == "not reported upstream"
    assert links[f"peft|{entry.id}"]["repro"] == entry.repro
    assert links["peft|tied-lora-merge-writes-shared-matrix"]["link"].startswith("https://")


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
    compared = ["diff", str(real_run / "results.jsonl"), str(new / "results.jsonl")]
    assert main([*compared, "-o", str(tmp_path / "short.html")]) == EXIT_OK
    short = capsys.readouterr().out
    assert main([*compared, "--all", "-o", str(tmp_path / "diff.html")]) == EXIT_OK
    out = capsys.readouterr().out
    rows = diff.diff(report.load(real_run / "results.jsonl"), report.load(new / "results.jsonl"))
    differ = [r for r in rows if r["status"] != "unchanged"]
    assert len(differ) > gate.CELLS_SHOWN

    def cells(text: str) -> list[str]:
        listed = [line for line in text.splitlines() if line.startswith("  ")]
        return [line for line in listed if line.split()[0] in ("added", "removed", "changed")]

    # Without --all: the counts, what the cells are made of, the first cells and how many more.
    assert len(cells(out)) == len(differ) and len(cells(short)) == gate.CELLS_SHOWN
    assert cells(short) == cells(out)[: gate.CELLS_SHOWN]
    assert f"... {len(differ) - gate.CELLS_SHOWN} more (--all prints every cell" in short
    assert "more (--all" not in out
    assert short.splitlines()[0] == out.splitlines()[0], "the counts line is the same"
    lines = short.splitlines()
    assert len(lines) <= len(diff.transitions(rows)) + gate.CELLS_SHOWN + 6, short
    by_check = next(line for line in lines if line.startswith("by check: "))
    merge = Counter(r["status"] for r in differ if (r["new"] or r["old"])["check"] == "merge-fidelity")
    split = ", ".join(f"{status} {count}" for status, count in merge.most_common())
    assert f"merge-fidelity {merge.total()} ({split})" in by_check, by_check
    assert any(line.startswith("by family: llama ") for line in lines)
    assert any(
        line.startswith("by expectation: ") and "tied-lora-merge-writes-shared-matrix" in line
        for line in lines
    )
    assert (tmp_path / "short.html").read_text() == (tmp_path / "diff.html").read_text()
    statuses = {row["status"] for row in rows}
    assert statuses == {"added", "removed", "changed", "unchanged"}
    changed = [r for r in rows if r["status"] == "changed"]
    assert all(r["old"]["verdict"] == "expected" and r["new"]["verdict"] == "unexpected" for r in changed)
    assert "removed" in out and "peft-llama-tT-lora_attn" in out and "-> diverged-warned/unexpected" in out
    shape = diff.transitions(rows)
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


def _first_row_bottom(driver) -> tuple[float, float]:
    """Where the matrix's first row ends, and the height of the window's viewport."""
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.CSS_SELECTOR, "#matrix tbody tr").rect
    return row["y"] + row["height"], driver.execute_script("return window.innerHeight")


def _cell(driver, title: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'td.cell[title^="{title}:"]')


def test_the_page_in_a_real_browser(real_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    try:
        # The matrix starts on the first screen of a 1280x800 window (its heads were 200 px of rotated names).
        driver.set_window_size(1280, 800)
        driver.get((real_run / "index.html").as_uri())
        bottom, screen = _first_row_bottom(driver)
        assert bottom <= min(screen, 800), (bottom, screen)
        driver.set_window_size(1600, 1000)
        matrix = driver.find_element(By.ID, "matrix")
        assert matrix.is_displayed() and matrix.size["height"] > 50
        cells = driver.find_elements(By.CSS_SELECTOR, "td.cell[data-keys]")
        assert cells and all(c.is_displayed() for c in cells)
        details = driver.find_element(By.ID, "details")
        assert not details.is_displayed()
        warned = _cell(driver, MERGE)
        assert "diverged-warned" in warned.get_attribute("class").split()
        warned.click()
        assert details.is_displayed()
        assert "merge-fidelity" in details.text and "python -m conformance repro" in details.text
        assert "tied-lora-merge-writes-shared-matrix" in details.text  # the expectation, with its link
        links = details.find_elements(By.CSS_SELECTOR, "a")
        assert len(links) == 1, "its two non-pass checks share one expectation: said once"
        assert links[0].get_attribute("href").startswith("https://github.com/huggingface/peft/issues/")
        case = _case(real_run, MERGE)
        assert f"standalone: {gate.standalone_command(case)}" in details.text
        # Each warning once, though every check of the case came with it.
        warnings = {w for r in _records(real_run) if r["case_id"] == case for w in r["warnings"]}
        assert len(warnings) == 2, warnings
        for warning in warnings:
            assert details.text.count(warning.splitlines()[0]) == 1, warning
        assert "[every check]" in details.text
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


def test_details_say_what_is_not_reported_upstream_in_a_real_browser(real_run, not_reported, tmp_path):
    from selenium.webdriver.common.by import By

    page, entry = not_reported
    driver = _browser()
    try:
        driver.get(page.as_uri())
        _cell(driver, MERGE).click()
        details = driver.find_element(By.ID, "details")
        assert "not reported upstream" in details.text and f"repro: {entry.repro}" in details.text
        assert "github.com/huggingface/peft/issues/" in details.text, (
            "merge-fidelity's expectation has a link"
        )
        assert "standalone: python -m conformance repro" in details.text
        _cell(driver, RESIZE_MERGE).click()
        assert "diverged-warned" in details.text and "repro: python -m conformance repro" in details.text
        assert "standalone:" not in details.text, "resize-merge has no standalone script"
        # Two runs, each with its versions' label above its columns, still start on the first screen.
        other = tmp_path / "older"
        old = {"transformers": "4.57.6", "peft": "0.18.1"}
        _write(other, [{**r, "versions": {**r["versions"], **old}} for r in _records(real_run)])
        both = tmp_path / "both.html"
        assert main(["report", str(other), str(real_run), "-o", str(both)]) == EXIT_OK
        driver.set_window_size(1280, 800)
        driver.get(both.as_uri())
        bottom, screen = _first_row_bottom(driver)
        assert bottom <= min(screen, 800), (bottom, screen)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
