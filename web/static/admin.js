// Admin console: small progressive enhancements; every page works without this script.
"use strict";

// A result said in words (notice, chain check, settings check) takes the focus, so screen
// readers and keyboard users land on it after the form posted.
document.addEventListener("DOMContentLoaded", function () {
  const result = document.querySelector("#verify-result, #settings-result, #admin-notice");
  if (result) { result.focus(); }

  // Slow actions (a C-ECHO may wait for the node's timeout): say so and stop double submits.
  document.querySelectorAll("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      const button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = form.dataset.busy;
      }
    });
  });
});
