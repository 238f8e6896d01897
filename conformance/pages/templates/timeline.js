(function () {
  "use strict";
  // Filters only: rows are hidden by package, family and check; nothing is written into the page.
  const value = (id) => document.getElementById(id).value;
  function apply() {
    const impl = value("f-impl"), family = value("f-family"), check = value("f-check");
    document.body.classList.toggle("all", document.getElementById("f-all").checked);
    document.querySelectorAll("#timeline tbody tr").forEach((tr) => {
      tr.hidden = (impl && tr.dataset.impl !== impl) || (family && tr.dataset.family !== family) ||
        (check && tr.dataset.check !== check);
    });
  }
  document.querySelectorAll(".filters select, .filters input").forEach((node) => node.addEventListener("change", apply));
})();
