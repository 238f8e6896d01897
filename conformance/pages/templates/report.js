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
  const quiet = ["pass", "skipped"];  // every other outcome is a non-pass: where it is known upstream, and its repro
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

  const nonPass = (r) => !quiet.includes(r.outcome);

  // An expectation in full: its upstream link, or "not reported upstream" and its one-line repro.
  function expectation(id, implementation) {
    const entry = links[implementation + "|" + id];
    if (!entry) return el("span", "(not in this checkout's cases/expectations)");
    const shown = el("span");
    if (/^https:\/\/[^\s"'<>]+$/.test(entry.link)) {
      const anchor = el("a", entry.link);
      anchor.href = entry.link;
      anchor.rel = "noopener noreferrer";
      shown.append(anchor);
    } else {
      shown.append(el("em", entry.link || settings.not_reported));
    }
    shown.append(" · " + show(entry.class) + ": " + show(entry.reason));
    if (entry.repro) shown.append(el("br"), "repro: ", el("code", entry.repro));
    return shown;
  }

  // Said once per cell, with the checks each belongs to: the checks of one case often share an
  // expectation and its warnings (a crash fails every check alike).
  function onceEach(found, values) {
    const checks = new Map();
    for (const r of found) {
      for (const v of values(r)) {
        if (!checks.has(v)) checks.set(v, new Set());
        checks.get(v).add(r.check);
      }
    }
    const every = new Set(found.map((r) => r.check));
    return [...checks].map(([v, names]) => [v, names.size === every.size && every.size > 1
      ? "every check" : [...names].join(", ")]);
  }

  function listOf(title, items) {
    if (!items.length) return "";
    const list = el("ul");
    list.className = "once";
    items.forEach((item) => list.append(item));
    return el("div", el("strong", title), list);
  }

  function expectationList(found) {
    const outcomes = new Map(found.map((r) => [r.expected, r.expected_outcome]));
    const items = onceEach(found, (r) => (r.expected && nonPass(r) ? [r.expected] : []))
      .map(([id, where]) => el("li", el("em", "[" + where + "] "), id + " (" + show(outcomes.get(id)) + "): ",
        expectation(id, found[0].implementation)));
    return listOf("expectations", items);
  }

  function warningList(run, found) {
    const items = onceEach(found, (r) => r.warnings || [])
      .map(([w, where]) => el("li", el("em", "[" + where + "] "), run.warnings[w]));
    return listOf("warnings (" + items.length + " distinct)", items);
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

  function checkRow(r) {
    const expected = r.expected ? r.expected + " (" + show(r.expected_outcome) + ")"
      : nonPass(r) ? "none: " + settings.not_reported : "";
    return el("tr",
      el("td", r.check),
      el("td", r.outcome, el("br"), r.verdict),
      el("td", r.max_abs_diff === null ? "" : show(r.max_abs_diff) + " vs " + show(r.tolerance), tolerance(r)),
      el("td", r.detail),
      el("td", expected));
  }

  function showDetails(td) {
    document.querySelectorAll("td.cell.selected").forEach((node) => node.classList.remove("selected"));
    td.classList.add("selected");
    const run = runs[Number(td.dataset.run) - 1];
    const keys = JSON.parse(td.dataset.keys).filter((key) => run.records[key]);
    const found = keys.map((key) => Object.assign(
      {case_id: key.slice(0, key.lastIndexOf("|")), implementation: td.dataset.impl}, run.records[key]));
    const panel = document.getElementById("details");
    panel.replaceChildren(el("strong", td.title), " (run " + td.dataset.run + ")");
    // A cell may hold several cases (configs); what they share is shown once per case.
    for (const caseId of new Set(found.map((r) => r.case_id))) {
      const about = run.cases[caseId] || {};
      // The standalone script's command: only where the case has a non-pass and its workflow has a script.
      const standalone = about.standalone ? [el("br"), "standalone: ", el("code", about.standalone)] : [];
      panel.append(el("p", el("code", caseId), el("br"), "config ", el("code", JSON.stringify(about.config)),
        ", seed " + show(about.seed) + ", " + show(about.dtype || "float32")
        + (about.autocast === null || about.autocast === undefined ? "" : ", autocast_adapter_dtype=" + show(about.autocast))
        + (about.device ? ", on " + show(about.device) : ""), el("br"), "repro: ", el("code", about.repro), ...standalone));
      const table = el("table", el("tr", el("th", "check"), el("th", "outcome"), el("th", "max |Δ| vs tolerance"),
        el("th", "detail"), el("th", "expectation")));
      found.filter((r) => r.case_id === caseId).forEach((r) => table.append(checkRow(r)));
      panel.append(table);
    }
    panel.append(expectationList(found), warningList(run, found));
    panel.hidden = false;
  }

  document.querySelectorAll(".filters select").forEach((node) => node.addEventListener("change", applyFilters));
  document.querySelectorAll("td.cell[data-keys]").forEach((td) => {
    td.addEventListener("click", () => showDetails(td));
    td.addEventListener("keydown", (event) => { if (event.key === "Enter") showDetails(td); });
  });
})();
