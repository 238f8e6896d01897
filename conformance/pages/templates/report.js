(function () {
  "use strict";
  // Every string shown here comes from results files, written by the code under test: it is put into
  // the page as text nodes only (never innerHTML), and the page's policy runs no script but this one.
  const read = (id) => JSON.parse(document.getElementById(id).textContent);
  const runs = read("data-records");
  const links = read("data-links");
  const settings = read("data-settings");
  const style = settings.style;
  const severity = settings.severity;  // worst first, as report.SEVERITY
  const value = (id) => document.getElementById(id).value;
  const show = (v) => String(v === null || v === undefined ? "" : v);

  function el(tag, ...children) {
    const node = document.createElement(tag);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(show(child)));
    }
    return node;
  }

  function applyFilters() {
    const impl = value("f-impl"), family = value("f-family"), check = value("f-check"), outcome = value("f-outcome");
    document.querySelectorAll("[data-impl]").forEach((node) => { node.hidden = Boolean(impl) && node.dataset.impl !== impl; });
    document.querySelectorAll("tr[data-family]").forEach((tr) => { tr.hidden = Boolean(family) && tr.dataset.family !== family; });
    document.querySelectorAll("td.cell[data-checks]").forEach((td) => {
      let entries = Object.entries(JSON.parse(td.dataset.checks));
      if (check) entries = entries.filter(([name]) => name === check);
      td.classList.remove(...severity, "expected", "unexpected", "dim");
      if (!entries.length) { td.classList.add("dim"); td.textContent = ""; return; }
      const outcomes = entries.map(([, v]) => v.split("|")[0]);
      const marks = entries.map(([, v]) => v.split("|")[1]);
      const worst = outcomes.reduce((a, b) => (severity.indexOf(a) <= severity.indexOf(b) ? a : b));
      td.classList.add(worst);
      if (marks.includes("unexpected")) td.classList.add("unexpected");
      else if (marks.includes("expected")) td.classList.add("expected");
      td.style.background = style[worst][0];
      td.textContent = style[worst][1];
      td.dataset.outcome = worst;
      if (outcome && worst !== outcome) td.classList.add("dim");
    });
  }

  function expectation(record) {
    if (!record.expected) return null;
    const cell = el("span", record.expected + " (" + show(record.expected_outcome) + ")");
    const entry = links[record.expected];
    if (!entry) return cell;
    if (/^https:\/\/[^\s"'<>]+$/.test(entry.link)) {
      const anchor = el("a", entry.link);
      anchor.href = entry.link;
      anchor.rel = "noopener noreferrer";
      cell.append(" ", anchor);
    }
    cell.append(" " + show(entry.class) + ": " + show(entry.reason));
    return cell;
  }

  // Why the tolerance is what it is: factor × the case's noise floor, or the precision's minimum.
  function tolerance(r) {
    if (r.max_abs_diff === null || r.tolerance === null || r.tolerance === undefined) return null;
    const scaled = r.tolerance_factor && r.noise_floor ? r.tolerance_factor * r.noise_floor : null;
    const why = scaled !== null && scaled >= r.tolerance * 0.999
      ? show(r.tolerance_factor) + " × noise floor " + show(r.noise_floor)
      : "the " + show(r.computed_in) + " minimum" + (r.noise_floor !== null && r.noise_floor !== undefined
        ? " (noise floor " + show(r.noise_floor) + ")" : "");
    return el("small", el("br"), "= " + why + (r.computed_in ? ", in " + show(r.computed_in) : ""));
  }

  function checkRow(run, r) {
    const detail = el("td", r.detail);
    (r.warnings || []).forEach((w) => detail.append(el("br"), el("em", "warning: "), run.warnings[w]));
    return el("tr",
      el("td", r.check),
      el("td", r.outcome, el("br"), r.verdict),
      el("td", r.max_abs_diff === null ? "" : show(r.max_abs_diff) + " vs " + show(r.tolerance), tolerance(r)),
      detail,
      el("td", expectation(r)));
  }

  function showDetails(td) {
    document.querySelectorAll("td.cell.selected").forEach((node) => node.classList.remove("selected"));
    td.classList.add("selected");
    const run = runs[Number(td.dataset.run) - 1];
    const keys = JSON.parse(td.dataset.keys).filter((key) => run.records[key]);
    const found = keys.map((key) => Object.assign({case_id: key.slice(0, key.lastIndexOf("|"))}, run.records[key]));
    const panel = document.getElementById("details");
    panel.replaceChildren(el("strong", td.title), " (run " + td.dataset.run + ")");
    // A cell may hold several cases (configs); what they share is shown once per case.
    for (const caseId of new Set(found.map((r) => r.case_id))) {
      const about = run.cases[caseId] || {};
      panel.append(el("p", el("code", caseId), el("br"), "config ", el("code", JSON.stringify(about.config)),
        ", seed " + show(about.seed) + ", " + show(about.dtype || "float32")
        + (about.autocast === null || about.autocast === undefined ? "" : ", autocast_adapter_dtype=" + show(about.autocast))
        + (about.device ? ", on " + show(about.device) : ""), el("br"), "repro: ", el("code", about.repro)));
      const table = el("table", el("tr", el("th", "check"), el("th", "outcome"), el("th", "max |Δ| vs tolerance"),
        el("th", "detail"), el("th", "expectation")));
      found.filter((r) => r.case_id === caseId).forEach((r) => table.append(checkRow(run, r)));
      panel.append(table);
    }
    panel.hidden = false;
  }

  document.querySelectorAll(".filters select").forEach((node) => node.addEventListener("change", applyFilters));
  document.querySelectorAll("td.cell[data-keys]").forEach((td) => {
    td.addEventListener("click", () => showDetails(td));
    td.addEventListener("keydown", (event) => { if (event.key === "Enter") showDetails(td); });
  });
})();
