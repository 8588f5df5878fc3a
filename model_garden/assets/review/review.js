const [wrong, threshold, field, kind, review] = ["wrong", "threshold", "field", "kind", "review"].map(name => document.getElementById("filter-" + name));
function apply() {
  const limit = threshold.value === "" ? null : Number(threshold.value);
  const toReview = review !== null && review.checked;
  const active = wrong.checked || limit !== null || field.value !== "" || kind.value !== "" || toReview;
  let shown = 0;
  for (const record of document.querySelectorAll("section.record")) {
    let rows = 0;
    for (const row of record.querySelectorAll("tr.field")) {
      const c = row.dataset.confidence;
      const show = (!wrong.checked || row.dataset.correct === "false")
        && (limit === null || (c !== "" && Number(c) < limit))
        && (field.value === "" || row.dataset.field === field.value)
        && (kind.value === "" || row.dataset.kind === kind.value)
        && (!toReview || row.dataset.review === "true");
      row.style.display = show ? "" : "none";
      rows += show;
    }
    const visible = !active || rows > 0;  // a filter shows the records that keep a row
    record.style.display = visible ? "" : "none";
    shown += visible;
  }
  document.getElementById("shown").textContent = shown;
}
for (const control of [wrong, threshold, field, kind, review]) if (control !== null) control.addEventListener("input", apply);
