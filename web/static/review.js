// Clinician review: while "Accept" is chosen, the override fields are disabled (so nothing
// half-changed is sent with an acceptance) and the reason is optional; with "Override" the
// reason is required. Without this script the server applies the same rules.
"use strict";

function syncDecision(form) {
  const checked = form.querySelector('input[name="decision"]:checked');
  const override = !checked || checked.value === "override";
  const fields = form.querySelector("#override-fields");
  const reason = form.querySelector("#reason");
  if (fields) { fields.disabled = !override; }
  if (reason) { reason.required = override; }
}

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("decision");
  if (!form) { return; }
  form.querySelectorAll('input[name="decision"]').forEach(function (radio) {
    radio.addEventListener("change", function () { syncDecision(form); });
  });
  syncDecision(form);
});

// OCT B-scan slider: the range input (hidden without this script; the central B-scan and the
// numbers are on the page anyway) swaps the B-scan picture to the frame chosen.
function wireBscan(range) {
  const img = document.getElementById(range.dataset.bscanFor);
  const viewer = range.closest(".bscan-viewer");
  const label = viewer ? viewer.querySelector("output") : null;
  if (!img || !viewer) { return; }
  const frames = Number(range.dataset.frames);
  range.hidden = false;
  range.addEventListener("input", function () {
    const frame = Number(range.value);
    img.src = viewer.dataset.bscanBase + frame + ".png";
    img.alt = "B-scan " + (frame + 1) + " of " + frames + ": ILM red, RPE green, fluid blue";
    if (label) { label.textContent = (frame + 1) + " / " + frames; }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-bscan-for]").forEach(wireBscan);
});
