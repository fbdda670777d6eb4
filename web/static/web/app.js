// rbee web faces: behaviour shared by every page. No inline script anywhere (the CSP
// forbids it): pages declare what they need with data- attributes.
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  // htmx requests carry the CSRF token (Django checks it on every unsafe method).
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRFToken"] = csrf();
  });
  // <button data-copy="#id"> or data-copy-text="...": copy to the clipboard, say so.
  document.addEventListener("click", function (e) {
    var btn = e.target.closest("[data-copy], [data-copy-text]");
    if (!btn) return;
    var text = btn.getAttribute("data-copy-text");
    if (text === null) {
      var src = document.querySelector(btn.getAttribute("data-copy"));
      text = src ? (src.value !== undefined && src.tagName !== "CODE" && src.tagName !== "PRE" ? src.value : src.textContent) : "";
    }
    var done = function () {
      var old = btn.textContent;
      btn.textContent = "Copied";
      btn.setAttribute("aria-live", "polite");
      setTimeout(function () { btn.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, done);
    } else {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); } catch (err) { /* nothing to do */ }
      area.remove(); done();
    }
  });
  // <form data-confirm="Revoke this key?">: ask before submitting.
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  }, true);
  // <select data-autosubmit>: submit its form on change (range pickers).
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("[data-autosubmit]")) e.target.form.requestSubmit();
  });
  // A live region ([data-live-status]) shows whether the page's websocket is connected.
  function liveState(connected) {
    document.querySelectorAll("[data-live-status]").forEach(function (el) {
      el.classList.toggle("connected", connected);
      el.textContent = connected ? "live" : "reconnecting…";
    });
  }
  document.addEventListener("htmx:wsOpen", function () { liveState(true); });
  document.addEventListener("htmx:wsClose", function () { liveState(false); });
  document.addEventListener("htmx:wsError", function () { liveState(false); });
})();
