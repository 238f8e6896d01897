"""The version timeline: runs in version order, where a cell broke and where it was fixed, the banner.

Three copies of one real run stand for three matrix rows; the middle one has a cell broken by hand,
the way another version would break it.
"""

import json
import shutil

import pytest
from test_report import _browser

from conformance.cli import EXIT_OK, main
from conformance.pages.report import STYLE

CELL = "peft-llama-tT-mts_embed-merge@v128.h32.i64.L2.H2.K1.s0"


@pytest.fixture(scope="module")
def matrix_runs(tmp_path_factory):
    top = tmp_path_factory.mktemp("timeline")
    first = top / "tf4.55-peft0.17"
    argv = ["run", "--impl", "peft", "--family", "llama", "--recipe", "mts_embed", "--recipe", "lora_embed"]
    assert main([*argv, "--workflow", "merge", "--jobs", "1", "--no-report", "--out", str(first)]) == EXIT_OK
    # Given out of order: the page orders them as cases/matrix.toml does.
    for name in ("newest", "tf4.57-peft0.18"):
        shutil.copytree(first, top / name)
    middle = top / "tf4.57-peft0.18" / "results.jsonl"
    records = [json.loads(line) for line in middle.read_text().splitlines()]
    for record in records:
        if record["case_id"] == CELL and record["check"] == "roundtrip-fidelity":
            record.update(outcome="diverged-silent", verdict="unexpected", detail="lm_head lost on reload")
    middle.write_text("".join(json.dumps(r) + "\n" for r in records))
    page = top / "timeline.html"
    names = ["newest", "tf4.57-peft0.18", "tf4.55-peft0.17"]
    assert main(["report", *[str(top / n / "results.jsonl") for n in names], "-o", str(page)]) == EXIT_OK
    return page


def test_columns_come_in_version_order_and_changes_are_named(matrix_runs):
    page = matrix_runs.read_text()
    header = page.split('<table class="timeline"')[1].split("</thead>")[0]
    assert header.index("tf4.55-peft0.17") < header.index("tf4.57-peft0.18") < header.index("newest")
    row = next(r for r in page.split("<tr ")[1:] if "llama tT · mts_embed · merge · roundtrip-fidelity" in r)
    assert "broke in tf4.57-peft0.18" in row and "fixed in newest" in row
    assert 'class="quiet"' not in row.split(">")[0]
    passing = [r for r in page.split("<tr ")[1:] if "llama tF · mts_embed · merge" in r]
    assert passing and all(r.startswith('class="quiet"') for r in passing), "pass everywhere: folded"


def test_the_banner_counts_verdicts_per_environment(matrix_runs):
    banner = matrix_runs.read_text().split('id="banner"')[1].split("</table>")[0]
    rows = banner.split("<tr data-run=")[1:]
    middle = next(r for r in rows if r.startswith('"tf4.57-peft0.18"'))
    assert 'class="bad">1<' in middle
    assert (
        "tied-lora-merge-writes-shared-matrix" in middle
        and "github.com/huggingface/peft/issues/2864" in middle
    )


def test_the_timeline_has_a_legend_for_its_symbols(matrix_runs):
    page = matrix_runs.read_text()
    legend = page.split('<div class="legend" id="legend">')[1].split("</div>")[0]
    for outcome, (_, glyph) in STYLE.items():
        assert f'<span class="o {outcome}">{glyph}</span>{outcome}' in legend, outcome
    # Each mark the table draws, drawn the same way (its classes) and named.
    for sample, words in (
        ("o pass unexpected", "unexpected"),
        ("o diverged-warned expected", "expected (an expectation covers it)"),
        ("o pass fixed", "changed from the environment before"),
        ("o none", "not run in that environment"),
        ("fixed-in", "passes from X on"),
        ("broke-in", "fails from X on"),
        ("changed-in", "became another"),
    ):
        assert f'<span class="{sample}">' in legend and words in legend, (sample, words)
    assert page.index('id="legend"') < page.index('id="timeline"'), "above the table it explains"


def test_the_timeline_filters_in_a_real_browser(matrix_runs):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    try:
        driver.get(matrix_runs.as_uri())
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr") if r.is_displayed()]
        interesting = matrix_runs.read_text().count('<tr class="" ')
        assert interesting and len(visible) == interesting, "only the cells with a non-pass or a change"
        driver.find_element(By.ID, "f-all").click()
        everything = [
            r for r in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr") if r.is_displayed()
        ]
        assert len(everything) > len(visible)
        Select(driver.find_element(By.ID, "f-check")).select_by_visible_text("tie-consistency")
        shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr") if r.is_displayed()]
        assert shown and all("tie-consistency" in r.text for r in shown)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
