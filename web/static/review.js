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
