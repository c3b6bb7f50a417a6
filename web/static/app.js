// Retinal screening appliance: the page's only script. Local, no framework, no build step.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// fetch() with the session cookie and the CSRF header on every state-changing request.
function send(url, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  opts.headers = Object.assign({ "X-CSRFToken": csrfToken() }, opts.headers || {});
  return fetch(url, opts);
}

// Live regions: <div data-refresh="/url" data-every="2000"> is re-filled from a server-rendered
// fragment. Refreshes are "passive" on the server, so they never keep an idle session alive.
function refresh(el) {
  // Someone is deciding a photograph's eye in this region: do not pull the form from under them.
  const active = document.activeElement;
  if (el.querySelector("details[open]") || (active && active.form && el.contains(active))) {
    return Promise.resolve();
  }
  return fetch(el.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
    .then(function (r) {
      if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
      return r.ok ? r.text() : null;
    })
    .then(function (html) {
      if (html !== null && html !== el.dataset.last) {
        el.dataset.last = html;
        el.innerHTML = html;
      }
      settleUploadStatus();
    })
    .catch(function () { /* offline for a moment: try again next tick */ });
}

function startRefresh() {
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    const every = parseInt(el.dataset.every || "2000", 10);
    refresh(el);
    setInterval(function () { refresh(el); }, every);
  });
}

// An upload's status line says "Checking quality…" only until the live visit shows the photo's
// verdict: then the line says that verdict instead (it never stays beside it).
function settleUploadStatus() {
  document.querySelectorAll("[data-status][data-capture]").forEach(function (status) {
    const item = document.getElementById("capture-" + status.dataset.capture);
    if (!item || item.dataset.state === "checking") { return; }
    const title = item.querySelector(".capture-title strong");
    const verdict = item.querySelector(".verdict");
    status.textContent = "Received. " + (title ? title.textContent + ": " : "") +
      (verdict ? verdict.textContent.replace(/\s+/g, " ").trim() : "checked");
    delete status.dataset.capture;
  });
}

// Upload forms: <form data-upload> posts the file with fetch and reports in its status line.
function startUploads() {
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const status = form.querySelector("[data-status]");
      const button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; }
      if (status) { status.textContent = "Sending…"; delete status.dataset.capture; }
      send(form.action, { method: "POST", body: new FormData(form), headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (status) {
            status.textContent = res.ok
              ? (res.body.duplicate ? "This photo was already received" + (res.body.patient_id ? " for patient " + res.body.patient_id : "") + "." : "Received. Checking quality…")
              : "Not accepted: " + (res.body.message || "unknown error");
          }
          if (status && res.ok && !res.body.duplicate && res.body.id) {
            status.dataset.capture = String(res.body.id);
            settleUploadStatus();  // the live visit may show its verdict already
          }
          if (res.ok) { form.reset(); }
          document.querySelectorAll("[data-refresh]").forEach(refresh);
        })
        .catch(function () { if (status) { status.textContent = "The appliance did not answer. Try again."; } })
        .finally(function () { if (button) { button.disabled = false; } });
    });
  });
}

// Viewer controls (event delegation, so they also work inside refreshed fragments).
document.addEventListener("click", function (event) {
  const target = event.target.closest("[data-toggle-overlay], [data-zoom], [data-confirm]");
  if (!target) { return; }
  if (target.dataset.confirm && !window.confirm(target.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (target.dataset.toggleOverlay) {
    const overlay = document.getElementById(target.dataset.toggleOverlay);
    if (overlay) {
      overlay.hidden = !overlay.hidden;
      target.setAttribute("aria-pressed", overlay.hidden ? "false" : "true");
    }
  }
  if (target.dataset.zoom) {
    const viewer = document.getElementById(target.dataset.zoom);
    if (viewer) {
      const zoomed = viewer.classList.toggle("zoomed");
      target.setAttribute("aria-pressed", zoomed ? "true" : "false");
    }
  }
});

// Forms inside refreshed fragments carry no token of their own (it would change every poll):
// <form data-csrf> gets the page's token as it is submitted.
document.addEventListener("submit", function (event) {
  const form = event.target;
  if (!form.matches || !form.matches("form[data-csrf]")) { return; }
  let field = form.querySelector("input[name=csrf_token]");
  if (!field) {
    field = document.createElement("input");
    field.type = "hidden";
    field.name = "csrf_token";
    form.appendChild(field);
  }
  field.value = csrfToken();
});

document.addEventListener("DOMContentLoaded", function () {
  startRefresh();
  startUploads();
});
