"""Hostile text from results files renders inert, as text, on every page (report, diff, gate).

Results files carry strings written by the code under test (warnings, exception messages, versions) or
by another machine; for a PR gate that is the pull request's code. Each page is opened in headless
Chromium with records whose every free-text field tries to run script; nothing may run, and the text
must show as written.
"""

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from test_report import _browser

from conformance.base.errors import ConformanceError
from conformance.cli import EXIT_OK, main
from conformance.engine.core import vocabulary
from conformance.reading import expectations

SCRIPT = "</script><script>window.__pwned='script';document.title='PWNED'</script>"
IMAGE = "<img src=x onerror=\"window.__pwned='img'\">"
SVG = "<svg onload=\"window.__pwned='svg'\"></svg>"
LINK = "<a href=\"javascript:window.__pwned='link'\">click</a>"
ATTRIBUTE = 'x" onmouseover="window.__pwned=\'attribute\'" data-x="'


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A real small run, and the same run with hostile text in every free-text field."""
    top = tmp_path_factory.mktemp("hostile")
    base = top / "base"
    argv = ["run", "--impl", "peft", "--family", "llama", "--recipe", "lora_embed", "--workflow", "merge"]
    assert main([*argv, "--jobs", "1", "--no-report", "--out", str(base)]) in (0, 1)
    hostile = top / "hostile"
    hostile.mkdir()
    records = [json.loads(line) for line in (base / "results.jsonl").read_text().splitlines()]
    for record in records:
        record.update(
            outcome="diverged-silent",
            verdict="unexpected",
            detail=SCRIPT + " " + LINK,
            warnings=[IMAGE, SVG, ATTRIBUTE],
            expected=f"{ATTRIBUTE}{SVG}",
            expected_outcome=IMAGE,
            versions={"peft": SCRIPT, IMAGE: "1"},
            repro=f"python -m conformance repro {LINK}",
        )
        record["case_id"] += ATTRIBUTE + IMAGE
    (hostile / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = json.loads((base / "run.json").read_text())
    meta["versions"] = {"peft": SCRIPT + SVG}
    meta["sources"] = {"peft": IMAGE}
    (hostile / "run.json").write_text(json.dumps(meta))
    return base, hostile


def _pages(runs, folder: Path) -> dict[str, Path]:
    base, hostile = runs
    pages = {name: folder / f"{name}.html" for name in ("report", "diff", "gate", "timeline")}
    old, new = str(base / "results.jsonl"), str(hostile / "results.jsonl")
    assert main(["report", new, "-o", str(pages["report"])]) == EXIT_OK
    assert main(["diff", old, new, "-o", str(pages["diff"])]) == EXIT_OK
    main(["gate", old, new, "-o", str(pages["gate"])])
    again = folder / "again"
    if not again.exists():
        shutil.copytree(base, again)
    view = ["--view", "timeline", "-o", str(pages["timeline"])]
    assert main(["report", old, new, str(again / "results.jsonl"), *view]) == EXIT_OK
    return pages


def test_pages_embed_no_live_markup_from_records(runs, tmp_path):
    for name, page in _pages(runs, tmp_path).items():
        text = page.read_text()
        for payload in (SCRIPT, IMAGE, SVG, LINK):
            assert payload not in text, f"{name}: {payload!r} is in the page as markup"
        assert text.count("<script>") <= 1, f"{name}: only the page's own script"
        assert "Content-Security-Policy" in text


def test_hostile_text_is_inert_in_a_real_browser(runs, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        for name, page in _pages(runs, tmp_path).items():
            driver.get(page.as_uri())
            title = driver.title
            if name == "report":
                for cell in driver.find_elements(By.CSS_SELECTOR, "td.cell[data-keys]"):
                    cell.click()
                    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseover'))", cell)
                shown = driver.find_element(By.ID, "details").text
            elif name == "timeline":
                driver.find_element(By.ID, "f-all").click()
                cells = driver.find_elements(By.CSS_SELECTOR, "td.o[title]")
                shown = " ".join(c.get_attribute("title") for c in cells)
            else:
                shown = driver.find_element(By.TAG_NAME, "body").text
            for element in driver.find_elements(By.CSS_SELECTOR, "td, code, a, span"):
                driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseover'))", element)
            assert driver.execute_script("return window.__pwned === undefined"), f"{name}: injected code ran"
            assert driver.title == title and "PWNED" not in driver.title, name
            planted = driver.find_elements(By.CSS_SELECTOR, "img, svg [onload], a[href^='javascript']")
            assert planted == [], name
            # The text is there, shown as written.
            assert "</script><script>window.__pwned='script'" in shown, (name, shown[:500])
            if name in ("report", "gate"):  # the diff lists outcomes; the timeline shows no warnings
                assert "onerror=" in shown or (name == "gate" and "<svg onload" in shown), name
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert severe == [], (name, severe)
    finally:
        driver.quit()


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "http://example.com/x", "data:text/html,<b>", "//evil"]
)
def test_expectation_links_must_be_https(tmp_path, link):
    path = tmp_path / "peft.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            expectations:
              - id: e1
                when: {{recipe: lora_embed}}
                outcome: diverged-warned
                class: bug
                link: "{link}"
                reason: one line
            """
        )
    )
    with pytest.raises(ConformanceError) as caught:
        expectations.load_file(path, "peft", vocabulary())
    assert "\n" not in str(caught.value) and "https://" in str(caught.value)
